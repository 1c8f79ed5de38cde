// What `flusso run`, `flusso publish` and `flusso validate` tell as they go, with stderr a pipe (as under
// a service manager): JSON lines as things happen (a server out of reach, with its address; a server
// gone and back), text with --log text, the summary's two lines, and validate's answer with no side effects.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { runPipeline } from "../../pipelines/compile.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { freePort, startNatsServer } from "../natsServer.ts";
import { PROJECT_ROOT, removeTempDirs, runCli, tempDir, writeNatsCountPipeline } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

type LogLine = { level: string; time: string; msg: string; event?: string; [field: string]: unknown };

/** A command started with stderr a pipe; its stderr collected, its JSON lines parsed as they come. */
function started(args: string[], limitMs = 60_000) {
  const child: ChildProcess = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  let stdout = "";
  child.stderr!.on("data", (d) => (stderr += d));
  child.stdout!.on("data", (d) => (stdout += d));
  const limit = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const exited = new Promise<number | null>((done) =>
    child.on("exit", (code) => {
      clearTimeout(limit);
      done(code);
    }),
  );
  const lines = () => stderr.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as LogLine);
  /** Waits (bounded: 20 s) for a log line that `matches`, and returns it. */
  const waitForLine = async (matches: (line: LogLine) => boolean, what: string): Promise<LogLine> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const line = lines().find(matches);
      if (line !== undefined) return line;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no log line ${what}; stderr:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, exited, lines, waitForLine, stderr: () => stderr, stdout: () => stdout };
}

/** Waits (bounded: 20 s) until `stream` has a consumer: the NATS source has opened and reads. */
async function consumerStarted(url: string, stream: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const deadline = Date.now() + 20_000;
    while ((await jsm.streams.info(stream).catch(() => undefined))?.state.consumer_count !== 1) {
      if (Date.now() > deadline) throw new Error(`no consumer on ${stream} after 20 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await nc.close();
  }
}

function natsPipeline(dir: string, url: string): string {
  return writeNatsCountPipeline(dir, "logs", url);
}

const T0 = Date.UTC(2024, 4, 20);

/** A file pipeline over `count` events, every third one sent twice (dedup counts the duplicates). */
function filePipeline(dir: string, count = 300): string {
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const line = JSON.stringify({ user_id: `u${i % 5}`, timestamp: new Date(T0 + i * 60_000).toISOString(), event_type: "view", page: `/p/${i % 4}` });
    lines.push(line);
    if (i % 3 === 0) lines.push(line);
  }
  writeFileSync(join(dir, "events.jsonl"), lines.join("\n") + "\n");
  const file = join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: logs-file
source: { file: { path: events.jsonl, format: jsonl } }
schema: { user_id: { type: string, required: true }, timestamp: { type: timestamp, required: true }, event_type: { type: string }, page: { type: string } }
key: user_id
time: timestamp
state: { dir: state }
dedup: { within: 1m }
sessions: { gap: 30m }
sinks: [{ file: { path: out/results.jsonl } }]
deadLetter: { file: { path: out/dead.jsonl } }
`,
  );
  return file;
}

describe("with stderr a pipe: JSON lines as things happen", { timeout: 60_000 }, () => {
  it("flusso run says, with the address, that the NATS server cannot be reached and it retries", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    const job = started(["run", natsPipeline(tempDir("flusso-logs-"), url)]);
    const retrying = await job.waitForLine((l) => l.event === "retrying", "retrying");
    expect(retrying).toMatchObject({ level: "warn", address: url, client: "source EVENTS", msg: expect.stringContaining(`NATS at ${url} cannot be reached`) });
    expect(job.lines()[0]).toMatchObject({ event: "started", source: "nats:EVENTS", stateDir: expect.stringMatching(/state$/) });
    job.child.kill("SIGINT");
    expect(await job.exited, job.stderr()).toBe(0);
    expect(job.lines().at(-1)).toMatchObject({ event: "stopped-waiting" });
    expect(job.stdout()).toBe("");
  });

  it("flusso publish says so too", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    const publisher = started(["publish", "generator", "--events", "10", "--servers", url]);
    const retrying = await publisher.waitForLine((l) => l.event === "retrying", "retrying");
    expect(retrying).toMatchObject({ level: "warn", address: url, client: "publish" });
    publisher.child.kill("SIGKILL");
    await publisher.exited;
  });

  it("a NATS server stopped and started again mid-run: disconnected, then reconnected", async () => {
    const server = await startNatsServer();
    try {
      const job = started(["run", natsPipeline(tempDir("flusso-logs-"), server.url)]);
      await job.waitForLine((l) => l.event === "connected" && l.client === "source EVENTS", "connected");
      // Gone only once the job reads (its consumer exists): a server lost while the source still opens fails the run instead.
      await consumerStarted(server.url, "EVENTS");
      await server.stop();
      expect(await job.waitForLine((l) => l.event === "disconnected", "disconnected")).toMatchObject({ level: "warn", address: server.url, client: "source EVENTS" });
      await server.restart();
      expect(await job.waitForLine((l) => l.event === "reconnected", "reconnected")).toMatchObject({ level: "info", address: server.url });
      job.child.kill("SIGINT");
      expect(await job.exited, job.stderr()).toBe(0);
      const events = job.lines().map((l) => l.event);
      expect(events.indexOf("disconnected")).toBeLessThan(events.indexOf("reconnected"));
      expect(events).toContain("stopping");
    } finally {
      await server.stop();
    }
  });
});

describe("--log", { timeout: 60_000 }, () => {
  it("json: every line parses, with level, time and msg, from the start to the summary", () => {
    const startedAtMs = Date.now();
    const run = runCli(["run", filePipeline(tempDir("flusso-logs-")), "--log", "json"]);
    const wallMs = Date.now() - startedAtMs;
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stderr.trimEnd().split("\n").map((l) => JSON.parse(l) as LogLine);
    for (const line of lines) {
      expect(line).toMatchObject({ level: expect.stringMatching(/^(info|warn|error)$/), msg: expect.any(String) });
      expect(Number.isNaN(Date.parse(line.time))).toBe(false);
    }
    expect(lines.map((l) => l.event)).toEqual(["started", "fresh-start", "input-ended", "done"]);
    expect(lines.at(-1)).toMatchObject({ read: 400, late: 0, deadLettered: 0, pipeline: { duplicates: 100 } });
    // The time to the first event: after the process started, within the run's own length.
    const { firstEventAfterStartMs } = lines.at(-1) as unknown as { firstEventAfterStartMs: number };
    expect(firstEventAfterStartMs).toBeGreaterThan(0);
    expect(firstEventAfterStartMs).toBeLessThan(wallMs);
  });

  it("text: lines for a person, the summary's engine counters on one line and the pipeline's on a second", () => {
    const dir = tempDir("flusso-logs-");
    const file = filePipeline(dir);
    runCli(["run", file, "--quiet"]);
    const run = runCli(["run", file, "--reset", "--log", "text"]);
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stderr.trimEnd().split("\n");
    expect(lines.slice(0, 2)).toEqual([
      `flusso: started: reading ${join(dir, "events.jsonl")} (1 partition), writing to file:out/dead.jsonl, file:out/results.jsonl; state in ${join(dir, "state")}`,
      "flusso: fresh start: --reset dropped the checkpoint; reading the source from its beginning",
    ]);
    expect(lines.slice(-2)).toEqual([expect.stringMatching(/^done: 400 events in [\d.]+ s \(\d+ events\/s\), \d+ outputs, 0 late, 0 dead-lettered$/), "  pipeline: 100 duplicates"]);
    expect(run.stderr).not.toContain("{");
  });

  it("says when a run resumes from a checkpoint", () => {
    const dir = tempDir("flusso-logs-");
    const file = filePipeline(dir);
    runCli(["run", file, "--quiet"]);
    const again = runCli(["run", file, "--log", "json"]);
    expect(again.stderr.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as LogLine)[1]).toMatchObject({ event: "restored", checkpointId: 1 });
  });

  it("refuses a format it does not know", () => {
    const run = runCli(["run", "config/default.yaml", "--log", "xml"]);
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe('flusso run: --log: expected text or json, got "xml"');
  });
});

describe("the progress of a file source", () => {
  it("goes from a share of the file to all of it (Source.progress, through the job's view)", async () => {
    const dir = tempDir("flusso-logs-");
    const spec = loadPipeline(filePipeline(dir, 3_000));
    let source: (() => { progress?: { done: number; total: number } }) | undefined;
    const shares: number[] = [];
    await runPipeline(spec, {
      batchSize: 200,
      progressIntervalMs: 0,
      onView: (view) => (source = () => view.source()),
      onProgress: () => {
        const progress = source!().progress!;
        shares.push(progress.done / progress.total);
      },
    });
    expect(shares.length).toBeGreaterThan(5);
    expect(shares).toEqual([...shares].sort((a, b) => a - b));
    expect(shares[0]).toBeGreaterThan(0);
    expect(shares[0]).toBeLessThan(0.2);
    expect(source!().progress).toEqual({ done: expect.any(Number), total: expect.any(Number) });
    expect(source!().progress!.done).toBe(source!().progress!.total);
  });
});

describe("flusso validate", { timeout: 30_000 }, () => {
  it("prints what the pipeline compiles to, exits 0, and creates no state dir and no output", () => {
    const dir = tempDir("flusso-validate-");
    const file = filePipeline(dir);
    const run = runCli(["validate", file]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toBe("");
    expect(run.stdout.split("\n")).toEqual(
      expect.arrayContaining([
        `pipeline logs-file (${file})`,
        "  source:     jsonl file events.jsonl",
        "  stage 1:    dedup",
        "  stage 2:    sessions",
        "  sink 1:     file out/results.jsonl <- every output",
        "  deadLetter: file out/dead.jsonl",
        "  http:       off",
      ]),
    );
    expect(run.stdout.indexOf("stage 1:")).toBeLessThan(run.stdout.indexOf("stage 2:"));
    expect(readdirSync(dir).sort()).toEqual(["events.jsonl", "pipeline.yaml"]);
    expect(existsSync(join(dir, "state"))).toBe(false);
  });

  it("lists windows in order and the HTTP address", () => {
    const run = runCli(["validate", "config/default.yaml"]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/ {2}window 1: {3}hourly: tumbling 1 h, .*\n {2}window 2: {3}sessions: session, gap 30 min/);
  });

  it("names every error with its path on stderr and exits 2, printing nothing on stdout", () => {
    const dir = tempDir("flusso-validate-");
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "name: bad\nsource: { file: { path: missing.jsonl, format: jsonl } }\nkey: user_id\ntime: ts\nwindows: [{ name: w, type: tumbling, size: fast }]\n");
    const run = runCli(["validate", file]);
    expect(run.status).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain(`${file}: invalid pipeline`);
    expect(run.stderr).toMatch(/^ {2}source\.file\.path: .*does not exist$/m);
    expect(run.stderr).toMatch(/^ {2}sinks: is required$/m);
    expect(run.stderr).toMatch(/^ {2}windows\[0\]\.size: expected a duration like "15m", got "fast"$/m);
    expect(readdirSync(dir)).toEqual(["bad.yaml"]);
  });

  it("is in flusso --help", () => {
    expect(runCli(["--help"]).stdout).toMatch(/^ {7}flusso validate <pipeline\.yaml>$/m);
  });
});
