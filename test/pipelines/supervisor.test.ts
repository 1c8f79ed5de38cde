// `flusso run --workers N`: refused without a cluster: section or with a bad N; the supervision itself
// (restarts with backoff, a refusal stopping everything, signals forwarded, results added up) driven on
// fake children and virtual time; and the real command with two workers started, tagged and stopped.
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { JobCounters, JobResult } from "../../engine/job.ts";
import { parseCommandLine } from "../../pipelines/cliArgs.ts";
import { JobLog, type LogEvent } from "../../pipelines/jobLog.ts";
import { superviseWorkers, workerArgs, workerLine, type SupervisorOutcome, type WorkerProcess } from "../../pipelines/supervisor.ts";
import { freePort } from "../natsServer.ts";
import { PROJECT_ROOT, removeTempDirs, runCli, tempDir } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

/** A worker process the test ends as it likes; it records the signals it was sent. */
class FakeWorker extends EventEmitter implements WorkerProcess {
  readonly signalsSent: NodeJS.Signals[] = [];
  constructor(readonly pid: number) {
    super();
  }
  kill(signal: NodeJS.Signals): boolean {
    this.signalsSent.push(signal);
    return true;
  }
  end(code: number | null, signal: NodeJS.Signals | null = null): void {
    this.emit("close", code, signal);
  }
  report(result: JobResult): void {
    this.emit("message", { type: "flusso-result", result });
  }
}

/** Supervises `workers` fakes; `started` lists every start in order, `latest(i)` worker i's current process. */
function supervised(workers: number) {
  const started: Array<{ index: number; isRestart: boolean; child: FakeWorker }> = [];
  const events: LogEvent[] = [];
  const signals = new EventEmitter();
  let outcome: SupervisorOutcome | undefined;
  const done = superviseWorkers({
    workers,
    start: (index, isRestart) => {
      const child = new FakeWorker(1000 + started.length);
      started.push({ index, isRestart, child });
      return child;
    },
    log: (event) => events.push(event),
    signals,
    nowMs: () => Date.now(),
  }).then((o) => (outcome = o));
  const latest = (index: number) => started.filter((s) => s.index === index).at(-1)!.child;
  const startsOf = (index: number) => started.filter((s) => s.index === index).length;
  return { started, events, signals, done, latest, startsOf, outcome: () => outcome };
}

function resultOf(thisRun: Partial<JobCounters>, isComplete = true): JobResult {
  const counters = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0, ...thisRun } as JobCounters;
  return { counters, thisRun: counters, elapsedMs: 1000, isComplete, restoredFromCheckpoint: undefined };
}

describe("the supervision of workers", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("restarts a worker that exits 1 after 1 s, then 2 s, then 4 s, never before", async () => {
    const s = supervised(2);
    for (const delayMs of [1000, 2000, 4000]) {
      const starts = s.startsOf(1);
      s.latest(1).end(1);
      await vi.advanceTimersByTimeAsync(delayMs - 1);
      expect(s.startsOf(1)).toBe(starts);
      await vi.advanceTimersByTimeAsync(1);
      expect(s.startsOf(1)).toBe(starts + 1);
      expect(s.started.at(-1)).toMatchObject({ index: 1, isRestart: true });
    }
    expect(s.events.filter((e) => e.event === "worker-restarting")).toEqual([
      { event: "worker-restarting", worker: 1, exitCode: 1, signal: null, delayMs: 1000 },
      { event: "worker-restarting", worker: 1, exitCode: 1, signal: null, delayMs: 2000 },
      { event: "worker-restarting", worker: 1, exitCode: 1, signal: null, delayMs: 4000 },
    ]);
    expect(s.startsOf(0)).toBe(1);
    expect(s.outcome()).toBeUndefined();
  });

  it("caps the restart delay at 30 s, and goes back to 1 s after a run that lasted 30 s", async () => {
    const s = supervised(1);
    const delays = () => s.events.flatMap((e) => (e.event === "worker-restarting" ? [e.delayMs] : []));
    for (let i = 0; i < 7; i++) {
      s.latest(0).end(1);
      await vi.advanceTimersByTimeAsync(delays().at(-1)!);
    }
    expect(delays()).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    await vi.advanceTimersByTimeAsync(30_000);
    s.latest(0).end(1);
    expect(delays().at(-1)).toBe(1000);
  });

  it("restarts a worker killed by a signal the supervisor did not send", async () => {
    const s = supervised(1);
    s.latest(0).end(null, "SIGKILL");
    expect(s.events.at(-1)).toEqual({ event: "worker-restarting", worker: 0, exitCode: null, signal: "SIGKILL", delayMs: 1000 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.startsOf(0)).toBe(2);
  });

  it("does not restart a worker that exits 0, and ends with 0 once every worker has", async () => {
    const s = supervised(2);
    s.latest(0).end(0);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.startsOf(0)).toBe(1);
    expect(s.outcome()).toBeUndefined();
    s.latest(1).end(0);
    await s.done;
    expect(s.outcome()).toEqual({ exitCode: 0, result: undefined });
  });

  it("stops the other workers with SIGTERM and exits 2 when one is refused, restarting none", async () => {
    const s = supervised(3);
    s.latest(2).end(1);
    s.latest(1).end(2);
    expect(s.latest(0).signalsSent).toEqual(["SIGTERM"]);
    expect(s.events).toContainEqual({ event: "worker-refused", worker: 1 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.startsOf(2)).toBe(1);
    // Still waiting for worker 0 to stop.
    expect(s.outcome()).toBeUndefined();
    s.latest(0).end(0);
    await s.done;
    expect(s.outcome()!.exitCode).toBe(2);
  });

  it("forwards SIGINT as SIGTERM to every live worker, cancels a pending restart, and exits 0 when all stopped cleanly", async () => {
    const s = supervised(3);
    s.latest(2).end(1);
    s.signals.emit("SIGINT", "SIGINT");
    expect([0, 1].map((i) => s.latest(i).signalsSent)).toEqual([["SIGTERM"], ["SIGTERM"]]);
    expect(s.events).toContainEqual({ event: "workers-stopping", signal: "SIGINT", workers: 2 });
    s.latest(0).end(0);
    s.latest(1).end(0);
    await s.done;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.startsOf(2)).toBe(1);
    expect(s.outcome()!.exitCode).toBe(0);
    expect(s.signals.listenerCount("SIGINT") + s.signals.listenerCount("SIGTERM")).toBe(0);
  });

  it("does not restart a worker that fails while stopping, and exits 1", async () => {
    const s = supervised(2);
    s.signals.emit("SIGTERM", "SIGTERM");
    s.latest(0).end(0);
    s.latest(1).end(1);
    await s.done;
    expect(s.startsOf(1)).toBe(1);
    expect(s.outcome()!.exitCode).toBe(1);
  });

  it("kills the workers with SIGKILL and ends with 130 on a second signal", async () => {
    const s = supervised(2);
    s.signals.emit("SIGINT", "SIGINT");
    s.latest(0).end(0);
    s.signals.emit("SIGINT", "SIGINT");
    await s.done;
    expect(s.latest(1).signalsSent).toEqual(["SIGTERM", "SIGKILL"]);
    expect(s.latest(0).signalsSent).toEqual(["SIGTERM"]);
    expect(s.outcome()!.exitCode).toBe(130);
  });

  it("adds up the workers' counters, across a restarted worker's runs, in a summary naming the workers", async () => {
    const s = supervised(2);
    s.latest(0).report(resultOf({ read: 100, outputs: 10, late: 1, deadLettered: 2, checkpoints: 3, duplicates: 5 }, false));
    s.latest(0).end(1);
    await vi.advanceTimersByTimeAsync(1000);
    s.latest(0).report(resultOf({ read: 50, outputs: 5, checkpoints: 1 }));
    s.latest(0).end(0);
    s.latest(1).report(resultOf({ read: 200, outputs: 20, late: 4, checkpoints: 2, duplicates: 1 }));
    await vi.advanceTimersByTimeAsync(1000);
    s.latest(1).end(0);
    await s.done;
    const result = s.outcome()!.result!;
    expect(result.thisRun).toEqual({ read: 350, outputs: 35, late: 5, deadLettered: 2, checkpoints: 6, duplicates: 6 });
    expect(result.isComplete).toBe(true);
    expect(result.elapsedMs).toBe(2000);
    let text = "";
    new JobLog("text", { isTerminal: false, quiet: false, write: (t) => (text += t) }).summary(result, 2);
    expect(text).toBe("done: 350 events in 2.0 s (175 events/s), 35 outputs, 5 late, 2 dead-lettered; 2 workers\n  pipeline: 6 duplicates\n");
    let json = "";
    new JobLog("json", { isTerminal: false, quiet: false, write: (t) => (json += t) }).summary(result, 2);
    expect(JSON.parse(json)).toMatchObject({ event: "done", read: 350, outputs: 35, checkpoints: 6, workers: 2, pipeline: { duplicates: 6 } });
  });
});

describe("a worker's command line and log lines", () => {
  const line = { command: "run" as const, file: "p.yaml", reset: true, quiet: true, resetStages: ["scores"], workers: 4 };

  it("is the supervisor's without --workers, with the log format said and the HTTP port plus the worker's index", () => {
    expect(workerArgs(line, 3, "json", { host: "127.0.0.1", port: 9464 }, false)).toEqual([
      "run", "p.yaml", "--log", "json", "--quiet", "--http", "127.0.0.1:9467", "--reset", "--reset-stage", "scores",
    ]);
    expect(workerArgs(line, 1, "text", { host: "::1", port: 0 }, false).slice(4, 7)).toEqual(["--quiet", "--http", "[::1]:0"]);
  });

  it("leaves out --reset and --reset-stage when a worker is restarted: it resumes from its checkpoint", () => {
    expect(workerArgs(line, 0, "text", undefined, true)).toEqual(["run", "p.yaml", "--log", "text", "--quiet"]);
  });

  it("gives a JSON log line the worker's index, and prefixes any other line", () => {
    expect(JSON.parse(workerLine('{"level":"info","time":"t","event":"started","msg":"m"}', 2, "json"))).toEqual({ level: "info", time: "t", worker: 2, event: "started", msg: "m" });
    expect(workerLine("flusso: started", 2, "text")).toBe("[w2] flusso: started");
    expect(workerLine("TypeError: x", 0, "json")).toBe("[w0] TypeError: x");
  });
});

/** A pipeline reading NATS at `natsUrl`, with (or without) a cluster: section; each worker in its own state dir. */
function writePipeline(dir: string, natsUrl: string, hasCluster: boolean): string {
  const file = join(dir, hasCluster ? "cluster.yaml" : "single.yaml");
  const nats = `servers: "${natsUrl}"`;
  writeFileSync(
    file,
    `name: clustered
source: { nats: { ${nats}, stream: EVENTS, subjects: ["events.>"] } }
schema: { user_id: { type: string, required: true }, timestamp: { type: timestamp, required: true } }
key: user_id
time: timestamp
state: { dir: "state-\${FLUSSO_WORKER_INDEX:-0}" }
windows: [{ name: m, type: tumbling, size: 1m, aggregate: { events: count } }]
sinks: [{ nats: { ${nats}, stream: OUT, subject: out.results } }]
deadLetter: { nats: { ${nats}, stream: DEAD, subject: dead.events } }
${hasCluster ? "cluster: { group: g1 }\n" : ""}`,
  );
  return file;
}

describe("flusso run --workers", () => {
  it("is refused with 2, naming --workers, when the pipeline has no cluster: section", () => {
    const run = runCli(["run", writePipeline(tempDir(), "nats://127.0.0.1:1", false), "--workers", "2"]);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^flusso run: --workers needs a cluster: section in /);
    expect(run.stderr).not.toContain("worker-started");
  });

  it("reports a bad pipeline once, as flusso run does, and starts no worker", () => {
    const file = join(tempDir(), "bad.yaml");
    writeFileSync(file, "name: bad\nkey: [\n");
    const run = runCli(["run", file, "--workers", "3", "--log", "json"]);
    expect(run.status).toBe(2);
    expect(run.stderr.match(/YAML syntax error/g)).toHaveLength(1);
    expect(run.stderr).not.toContain("worker");
  });

  it.each(["0", "65", "1.5", "two", "-1"])("refuses --workers %s with 2 before reading the pipeline", (n) => {
    expect(parseCommandLine(["run", "p.yaml", "--workers", n])).toEqual({
      command: "mistake",
      message: `flusso run: --workers: expected a whole number from 1 to 64, got ${JSON.stringify(n)}`,
    });
  });

  it("reads --workers 64", () => {
    expect(parseCommandLine(["run", "p.yaml", "--workers", "64"])).toMatchObject({ command: "run", workers: 64 });
  });

  it("exits 2 on a bad --workers with the usage naming it", () => {
    const run = runCli(["run", "missing.yaml", "--workers", "0"]);
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe('flusso run: --workers: expected a whole number from 1 to 64, got "0"');
    expect(run.stderr).toContain("--workers N");
  });

  // End to end with NATS out of reach: what is asserted (two workers started, each with its HTTP port,
  // their log lines tagged, a SIGTERM stopping both cleanly) does not depend on how workers share partitions.
  it("starts two workers serving HTTP at PORT and PORT+1, tags their log lines, and stops both cleanly on SIGTERM", async () => {
    const [natsPort, httpPort] = [await freePort(), await freePort()];
    const file = writePipeline(tempDir(), `nats://127.0.0.1:${natsPort}`, true);
    const child = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", file, "--workers", "2", "--http", `127.0.0.1:${httpPort}`, "--log", "json"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    const lines = () => stderr.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
    const urlsServed = () => lines().filter((l) => l.event === "http").map((l) => [l.worker, l.url]);
    const deadline = Date.now() + 30_000;
    while (urlsServed().length < 2 && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    expect(urlsServed().sort()).toEqual([
      [0, `http://127.0.0.1:${httpPort}/`],
      [1, `http://127.0.0.1:${httpPort + 1}/`],
    ]);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const all = lines();
    expect(all.filter((l) => l.event === "worker-started").map((l) => [l.worker, l.http])).toEqual([
      [0, `127.0.0.1:${httpPort}`],
      [1, `127.0.0.1:${httpPort + 1}`],
    ]);
    expect(all.filter((l) => l.event === "stop-asked").map((l) => [l.worker, l.signal]).sort()).toEqual([[0, "SIGTERM"], [1, "SIGTERM"]]);
    expect(all.filter((l) => l.event === "worker-ended").map((l) => [l.worker, l.exitCode, l.isStopAsked]).sort()).toEqual([[0, 0, true], [1, 0, true]]);
  });
});
