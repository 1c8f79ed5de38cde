// What a running job does when it is not alone, not fed, or asked to stop: one job per state dir,
// a stop honoured within its timeout whatever the job is doing, --reset only where flusso wrote,
// state refused under another pseudonymisation key, and errors named once.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StateKeyChanged } from "../../engine/errors.ts";
import { lockStateDir } from "../../engine/stateDir.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { PROJECT_ROOT, removeTempDirs, runCli, tempDir, writeNatsCountPipeline } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20, 9);

function eventLines(count: number): string {
  return Array.from({ length: count }, (_, i) => JSON.stringify({ user_id: `u${i % 7}`, timestamp: T0 + i * 1000, event_type: "view" })).join("\n") + "\n";
}

/** A window pipeline over `source` (a path relative to `dir`), with its state in `state`. */
function pipeline(dir: string, { source = "events.jsonl", state = "state", extra = "" } = {}): string {
  const file = join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: reliable
source: { file: { path: ${source}, format: jsonl } }
${eventSchemaYaml()}state: { dir: ${state}, checkpointInterval: 50ms }
${extra}windows:
  - { name: minute, type: tumbling, size: 1m, aggregate: { events: count } }
sinks:
  - file: { path: out/results.jsonl }
deadLetter: { file: { path: out/dead.jsonl } }
`,
  );
  return file;
}

/** A job started on the CLI, with its stderr collected and its exit awaited (SIGKILLed after `limitMs` at most). */
function started(args: string[], env: NodeJS.ProcessEnv = {}, limitMs = 30_000) {
  const child: ChildProcess = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  const limit = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.on("exit", (code, signal) => {
      clearTimeout(limit);
      done({ code, signal });
    }),
  );
  return { child, exited, stderr: () => stderr, waitFor: (pattern: RegExp) => waitFor(() => pattern.test(stderr), `stderr to match ${pattern}`) };
}

async function waitFor(check: () => boolean, what: string, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A pipeline whose first batch keeps the job's thread busy for seconds: 100 events, each with a list
 * of 10,000 entries that 50 features scan (every expression within the cost limits).
 */
function busyPipeline(dir: string): string {
  const tags = JSON.stringify(Array.from({ length: 10_000 }, () => "a"));
  const lines = Array.from({ length: 100 }, (_, i) => `{"user_id":"u${i % 5}","timestamp":${T0 + i * 1000},"tags":${tags}}`);
  writeFileSync(join(dir, "busy.jsonl"), lines.join("\n") + "\n");
  const features = Array.from({ length: 50 }, (_, i) => `  f${i}: 'tags.exists(t, t == "needle${i}") ? 1.0 : 0.0'`).join("\n");
  const file = join(dir, "busy.yaml");
  writeFileSync(
    file,
    `name: busy
source: { file: { path: busy.jsonl, format: jsonl } }
schema:
  user_id: { type: string, required: true }
  timestamp: { type: timestamp, required: true }
  tags: { type: list }
key: user_id
time: timestamp
state: { dir: state }
features:
${features}
sinks:
  - file: { path: out/busy.jsonl }
`,
  );
  return file;
}

describe("one job per state dir", () => {
  it("refuses a second job on a state dir in use, naming the dir and the holder's pid, and leaves the first one's state alone", async () => {
    const dir = tempDir("flusso-lock-");
    writeFileSync(join(dir, "events.jsonl"), eventLines(500));
    const file = pipeline(dir);
    const lock = await lockStateDir(join(dir, "state"));
    try {
      const second = runCli(["run", file]);
      expect(second.status).toBe(1);
      expect(second.stderr).toContain(`StateDirLocked: ${join(dir, "state")} is in use by another flusso process (pid ${process.pid})`);
      expect(existsSync(join(dir, "out/results.jsonl"))).toBe(false);
    } finally {
      await lock.release();
    }
    expect(runCli(["run", file, "--quiet"]).status).toBe(0);
  });

  it("is held by a job too busy to answer, and not left behind by a job killed with SIGKILL", async () => {
    const dir = tempDir("flusso-lock-");
    const file = busyPipeline(dir);
    const job = started(["run", file, "--quiet"]);
    await waitFor(() => existsSync(join(dir, "state", "holder.pid")), "the job to lock its state");
    const blocked = runCli(["run", file]);
    expect(blocked.stderr).toContain(`is in use by another flusso process (pid ${job.child.pid})`);
    job.child.kill("SIGKILL");
    await job.exited;
    writeFileSync(join(dir, "events.jsonl"), eventLines(50));
    const again = runCli(["run", pipeline(dir), "--quiet"]);
    expect(again.stderr).toBe("");
    expect(again.status).toBe(0);
  });
});

describe("stopping", () => {
  it("honours SIGTERM within the stop timeout while the job's thread is busy with a long batch, exiting 130", async () => {
    const dir = tempDir("flusso-stop-");
    const job = started(["run", busyPipeline(dir)], { FLUSSO_STOP_TIMEOUT_MS: "800" });
    await waitFor(() => existsSync(join(dir, "state", "holder.pid")), "the job to start");
    job.child.kill("SIGTERM");
    const { code } = await job.exited;
    expect(code, job.stderr()).toBe(130);
    expect(job.stderr()).toMatch(/SIGTERM: stopping after a last checkpoint/);
    expect(job.stderr()).toMatch(/not stopped within 0\.8 s: stopping now, without a last checkpoint; the next run resumes from the last one/);
    // What the batch would have written never reached the output: the next run starts it over.
    expect(existsSync(join(dir, "out/busy.jsonl")) ? readFileSync(join(dir, "out/busy.jsonl"), "utf8") : "").toBe("");
  });

  it("says it is waiting for an unreachable NATS server, and a SIGINT then stops it at once", async () => {
    const port = await closedPort();
    const dir = tempDir("flusso-nats-down-");
    const file = writeNatsCountPipeline(dir, "waits", `nats://127.0.0.1:${port}`);
    const job = started(["run", file]);
    await job.waitFor(/NATS at nats:\/\/127\.0\.0\.1:\d+ cannot be reached \(.*\); retrying every 0\.5 s until it can/);
    job.child.kill("SIGINT");
    const { code } = await job.exited;
    expect(code, job.stderr()).toBe(0);
    expect(job.stderr()).toMatch(/stopped before the job started: nothing was read/);
  });
});

describe("--reset", () => {
  it("refuses a state dir holding files flusso did not write, and deletes nothing", () => {
    const dir = tempDir("flusso-reset-");
    writeFileSync(join(dir, "events.jsonl"), eventLines(20));
    writeFileSync(join(dir, "unrelated.txt"), "keep me");
    const file = pipeline(dir, { state: "." });
    const run = runCli(["run", file, "--reset"]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/StateDirForeign: .* holds files flusso did not write \(events\.jsonl, pipeline\.yaml, unrelated\.txt\)/);
    expect(readdirSync(dir).sort()).toEqual(["events.jsonl", "pipeline.yaml", "unrelated.txt"]);
  });

  it("starts over in a state dir of its own", () => {
    const dir = tempDir("flusso-reset-");
    writeFileSync(join(dir, "events.jsonl"), eventLines(200));
    const file = pipeline(dir);
    expect(runCli(["run", file, "--quiet"]).status).toBe(0);
    const again = runCli(["run", file, "--reset", "--log", "text"]);
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/^flusso: fresh start: --reset dropped the checkpoint/m);
    expect(again.stderr).toMatch(/^done: 200 events/m);
  });
});

describe("errors", () => {
  it("names an error once: StateMismatch, not StateMismatch: StateMismatch", () => {
    const dir = tempDir("flusso-names-");
    writeFileSync(join(dir, "events.jsonl"), eventLines(20));
    writeFileSync(join(dir, "other.jsonl"), eventLines(20));
    expect(runCli(["run", pipeline(dir), "--quiet"]).status).toBe(0);
    const changed = runCli(["run", pipeline(dir, { source: "other.jsonl" }), "--log", "text"]);
    expect(changed.status).toBe(2);
    expect(changed.stderr).toMatch(/^flusso: StateMismatch: .* holds state this pipeline cannot resume:\n {2}- source: /);
    expect(changed.stderr.match(/StateMismatch/g)).toHaveLength(1);
    expect(changed.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("refuses to resume under another pseudonymisation key: the same users would get new ids", async () => {
    const dir = tempDir("flusso-key-");
    writeFileSync(join(dir, "events.jsonl"), eventLines(50));
    const privacy = "privacy: { pseudonymise: { keyEnv: FLUSSO_TEST_KEY_CHECK } }\n";
    const file = pipeline(dir, { extra: privacy });
    process.env.FLUSSO_TEST_KEY_CHECK = "the-first-key-of-the-state-0123";
    await runPipeline(loadPipeline(file));
    process.env.FLUSSO_TEST_KEY_CHECK = "another-key-altogether-45678901";
    const resumed = runPipeline(loadPipeline(file));
    await expect(resumed).rejects.toThrow(StateKeyChanged);
    await expect(runPipeline(loadPipeline(file))).rejects.toThrow(/was written with another privacy\.pseudonymise key/);
    process.env.FLUSSO_TEST_KEY_CHECK = "the-first-key-of-the-state-0123";
    const same = await runPipeline(loadPipeline(file));
    expect(same.restoredFromCheckpoint).toBeGreaterThan(0);
  });
});

/** A loopback port nothing listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
