// The layers of the code map hold: each folder imports only the folders below it (engine/ nothing of
// flusso; operators/ and simulator/ only engine/; pipelines/ no bench or test code).
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");

/** What each source folder may import, besides itself and node_modules. */
const ALLOWED: Record<string, string[]> = {
  engine: [],
  operators: ["engine"],
  simulator: ["engine"],
  pipelines: ["engine", "operators", "simulator"],
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? tsFiles(path) : name.endsWith(".ts") ? [path] : [];
  });
}

/** The top folders a file's relative imports reach (`import ... from "../x/y.ts"`, `import("./z.ts")`). */
function importedFolders(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]);
  return specifiers.map((s) => relative(ROOT, resolve(dirname(file), s)).split(/[\\/]/)[0]);
}

describe("layering", () => {
  it.each(Object.keys(ALLOWED))("%s/ imports only what the code map allows", (folder) => {
    const breaches = tsFiles(join(ROOT, folder)).flatMap((file) =>
      importedFolders(file)
        .filter((target) => target !== folder && !ALLOWED[folder].includes(target))
        .map((target) => `${relative(ROOT, file)} imports ${target}/`),
    );
    expect(breaches).toEqual([]);
  });

  it("sees a breach when there is one (the check itself can fail)", () => {
    expect(importedFolders(join(ROOT, "pipelines/compile.ts"))).toContain("engine");
  });
});
