// Test helpers for pipeline files on disk: temp folders, JSON-lines outputs, and the `flusso` CLI.
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const PROJECT_ROOT = resolve(import.meta.dirname, "../..");

const made: string[] = [];

/** A fresh folder under the OS temp dir, removed by `removeTempDirs`. */
export function tempDir(prefix = "flusso-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Every line of a JSON-lines output file, parsed; a missing file is an error, not an empty list. */
export function readJsonLines<T = Record<string, unknown>>(path: string): T[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as T);
}

/** Runs `node bin/flusso.js ...args` from the project root and waits for it. */
export function runCli(args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ["bin/flusso.js", ...args], { cwd: PROJECT_ROOT, encoding: "utf8", timeout: 20_000 });
}
