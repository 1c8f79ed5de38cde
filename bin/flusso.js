#!/usr/bin/env node
// Entry point of the `flusso` command: runs the compiled JavaScript in dist/ (made by `npm ci` or
// `npm run build`) when it is at least as new as every source; otherwise, as while developing, the
// TypeScript sources through tsx, which compiles them at every start (about half a second).
// FLUSSO_FROM_SOURCES=1 takes the sources whatever dist/ holds (to compare the two: bench/startup.bench.ts).
import { isBuildCurrent } from "./build.js";

const isFromSources = process.env.FLUSSO_FROM_SOURCES === "1" || !isBuildCurrent();
const { main } = isFromSources ? await fromSources() : await import("../dist/pipelines/cli.js");
try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`flusso: ${error?.stack ?? error}\n`);
  process.exitCode = 1;
}

async function fromSources() {
  const { register } = await import("tsx/esm/api");
  register();
  return import("../pipelines/cli.ts");
}
