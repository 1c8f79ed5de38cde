// Test helpers for pipeline files on disk: temp folders, JSON-lines outputs, and the `flusso` CLI.
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/**
 * Runs `flusso run <pipeline> --quiet`, killing it with SIGKILL after `killAfterMs`, or as soon as
 * `isTimeToKill()` holds (polled every 10 ms); resolves with how it ended.
 */
export function runCliUntilKilled(
  pipeline: string,
  killAfterMs: number,
  isTimeToKill: () => boolean = () => false,
): Promise<{ code: number | null; killed: boolean; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", pipeline, "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    let killed = false;
    const kill = () => (killed = child.kill("SIGKILL"));
    const timer = setTimeout(kill, killAfterMs);
    const poll = setInterval(() => isTimeToKill() && kill(), 10);
    child.on("exit", (code) => {
      clearTimeout(timer);
      clearInterval(poll);
      done({ code, killed: killed && code === null, stderr });
    });
  });
}

/** A pipeline file reading the NATS stream EVENTS at `natsUrl` into 1-minute counts per user, written to out/results.jsonl. */
export function writeNatsCountPipeline(dir: string, name: string, natsUrl: string): string {
  const file = join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: ${name}
source: { nats: { servers: "${natsUrl}", stream: EVENTS, subjects: ["events.>"] } }
schema: { user_id: { type: string, required: true }, timestamp: { type: timestamp, required: true } }
key: user_id
time: timestamp
state: { dir: state }
windows: [{ name: m, type: tumbling, size: 1m, aggregate: { events: count } }]
sinks: [{ file: { path: out/results.jsonl } }]
`,
  );
  return file;
}
