// Whether dist/ holds a build of the current sources: it exists and is at least as new as every
// TypeScript source it is made from (a developer's edit since the last build falls back to tsx).
import { existsSync, readdirSync, statSync } from "node:fs";

const ROOT = new URL("../", import.meta.url);
/** What the build compiles (tsconfig.build.json's include). */
const SOURCES = ["index.ts", "engine/", "operators/", "pipelines/", "simulator/"];
const BUILT = new URL("dist/pipelines/cli.js", ROOT);

export function isBuildCurrent() {
  if (!existsSync(BUILT)) return false;
  const builtMs = statSync(BUILT).mtimeMs;
  return SOURCES.every((source) => newestMs(new URL(source, ROOT)) <= builtMs);
}

/** The newest modification time of a file, or of the .ts files under a folder. */
function newestMs(url) {
  const stats = statSync(url);
  if (!stats.isDirectory()) return stats.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(url, { withFileTypes: true })) {
    if (entry.isDirectory()) newest = Math.max(newest, newestMs(new URL(`${entry.name}/`, url)));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(new URL(entry.name, url)).mtimeMs);
  }
  return newest;
}
