// Many workers on one NATS source: partitions leased in KV, checkpoints in NATS, takeovers after
// crashes, stops and pauses; the outputs of any number of workers, crashing or not, are the outputs
// of one worker, each once.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { readStream, startNatsServer, type NatsServer } from "../natsServer.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runClusterPipeline } from "../../pipelines/cluster.ts";
import { clusterEvents, publishPartitioned } from "../fixtures/clusterEvents.ts";
import { checkpointStreamName, KIND_HEADER, WORKER_HEADER } from "../../engine/cluster/checkpointLog.ts";
import { STATE_EVICTIONS_COUNTER, STATE_READ_BACKS_COUNTER } from "../../engine/job.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const PARTITIONS = 8;

let server: NatsServer;
beforeAll(async () => {
  server = await startNatsServer();
}, 30_000);
const children = new Set<ChildProcess>();
afterAll(async () => {
  // A failed test must not leave workers behind, retrying a server that is gone.
  for (const child of children) child.kill("SIGKILL");
  await server?.stop();
  removeTempDirs();
});

const events = (count: number, seed: number, users = 500) => clusterEvents(count, seed, users);
const publish = (stream: string, all: object[]) => publishPartitioned(server.url, stream, all, PARTITIONS);

function pipelineYaml(name: string, input: string, output: string, stateDir: string, leaseTtl = "2s"): string {
  return `name: ${name}
source: { nats: { servers: "${server.url}", stream: ${input}, subjects: ["${input.toLowerCase()}.>"], partitions: ${PARTITIONS}, bounded: true } }
${eventSchemaYaml({ fields: { price: "{ type: number }" } })}watermark: { maxOutOfOrderness: 10s }
state: { dir: ${stateDir}, checkpointInterval: 50ms }
windows:
  - name: hourly
    type: tumbling
    size: 1h
    aggregate: { events: count, spent: { sum: price }, carts: { count: 'event_type == "cart"' } }
sinks:
  - { nats: { servers: "${server.url}", stream: ${output}, subject: ${output.toLowerCase()}.out } }
deadLetter: { nats: { servers: "${server.url}", stream: ${output}, subject: ${output.toLowerCase()}.dead } }
cluster: { group: ${name}, leaseTtl: ${leaseTtl} }
`;
}

/** The outputs' bodies, sorted: what a run delivered, whatever the order. */
async function bodies(stream: string): Promise<string[]> {
  return (await readStream(server.url, stream)).sort();
}

describe("a cluster of workers", () => {
  it("one worker reads every partition and writes what a single process does, each output once", async () => {
    const all = events(20_000, 1);
    await publish("IN1", all);
    const dir = tempDir("flusso-cluster-one-");
    const file = join(dir, "p.yaml");
    writeFileSync(file, pipelineYaml("one", "IN1", "OUT1", join(dir, "state")));
    const result = await runClusterPipeline(loadPipeline(file));
    expect(result.isComplete).toBe(true);
    expect(result.thisRun.read).toBe(all.length);
    const clustered = await bodies("OUT1");
    // The same pipeline without the cluster section, one job over all partitions.
    writeFileSync(file, pipelineYaml("single", "IN1", "OUT1S", join(dir, "state-single")).replace(/cluster:.*\n/, ""));
    const { runPipeline } = await import("../../pipelines/compile.ts");
    await runPipeline(loadPipeline(file));
    const single = await bodies("OUT1S");
    expect(clustered.length).toBeGreaterThan(1000);
    expect(clustered).toEqual(single);
  }, 60_000);

  it("with a memory budget, one worker's windows leave memory and it writes what a single process does without one", async () => {
    // Users seen ~4 times each over 5.5 hours of event time: most keys' windows lie untouched between
    // two cuts (so they may leave memory) and are read back when they fire or their user comes back.
    const all = events(20_000, 2, 5_000);
    await publish("IN1B", all);
    const dir = tempDir("flusso-cluster-budget-");
    const file = join(dir, "p.yaml");
    // 1MB: the windows laid out key by key, their puts and deletes mirrored to the checkpoint log.
    // A checkpoint after (nearly) every batch whatever the machine's speed: with 50ms, a fast run
    // took too few cuts for any window to be idle across one, and nothing left memory.
    writeFileSync(file, pipelineYaml("budget", "IN1B", "OUT1B", join(dir, "state")).replace("checkpointInterval: 50ms }", "checkpointInterval: 1ms, memoryBudget: 1MB }"));
    // Small batches: many cuts, at each of which windows of the last durable checkpoint may leave memory.
    const result = await runClusterPipeline(loadPipeline(file), { batchSize: 100 });
    expect(result.isComplete).toBe(true);
    expect(result.thisRun[STATE_EVICTIONS_COUNTER]).toBeGreaterThan(0);
    expect(result.thisRun[STATE_READ_BACKS_COUNTER]).toBeGreaterThan(0);
    const clustered = await bodies("OUT1B");
    writeFileSync(file, pipelineYaml("single", "IN1B", "OUT1BS", join(dir, "state-single")).replace(/cluster:.*\n/, ""));
    const { runPipeline } = await import("../../pipelines/compile.ts");
    await runPipeline(loadPipeline(file));
    const single = await bodies("OUT1BS");
    expect(clustered.length).toBeGreaterThan(1000);
    expect(clustered).toEqual(single);
  }, 60_000);
});

type WorkerProcess = { child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>; stderr: () => string };

function startWorker(file: string): WorkerProcess {
  const child = spawn(process.execPath, [CLI, "run", file, "--log", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  if (process.env.FLUSSO_TEST_LOGS) child.on("exit", () => writeFileSync(`${process.env.FLUSSO_TEST_LOGS}/worker-${child.pid}.log`, stderr));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on("exit", (code, signal) => done({ code, signal })));
  return { child, exited, stderr: () => stderr };
}

/** Waits (bounded) until the stream holds at least `count` messages. */
async function untilMessages(stream: string, count: number, limitMs = 150_000): Promise<number> {
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + limitMs;
  try {
    for (;;) {
      const held = (await jsm.streams.info(stream).catch(() => undefined))?.state.messages ?? 0;
      if (held >= count) return held;
      if (Date.now() > deadline) throw new Error(`${stream} holds ${held} messages after ${limitMs} ms, waiting for ${count}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await nc.close();
  }
}

describe("workers that crash, join and leave", () => {
  it("three workers over 8 partitions, one SIGKILLed mid-stream, a fourth started later, one stopped with SIGTERM: every output once", async () => {
    const all = events(300_000, 2, 2000);
    await publish("IN2", all);
    const dir = tempDir("flusso-cluster-crash-");
    const file = join(dir, "p.yaml");
    // The reference: one process, no cluster.
    writeFileSync(file, pipelineYaml("single2", "IN2", "OUT2S", join(dir, "state-single")).replace(/cluster:.*\n/, ""));
    const { runPipeline } = await import("../../pipelines/compile.ts");
    await runPipeline(loadPipeline(file));
    const expected = await bodies("OUT2S");
    writeFileSync(file, pipelineYaml("crash", "IN2", "OUT2", join(dir, "state")));
    const workers = [startWorker(file), startWorker(file), startWorker(file)];
    const atKill = await untilMessages("OUT2", Math.floor(expected.length * 0.15));
    workers[1].child.kill("SIGKILL");
    expect((await workers[1].exited).signal).toBe("SIGKILL");
    await untilMessages("OUT2", Math.floor(expected.length * 0.35));
    workers.push(startWorker(file));
    const atStop = await untilMessages("OUT2", Math.floor(expected.length * 0.55));
    workers[0].child.kill("SIGTERM");
    for (const w of [workers[0], workers[2], workers[3]]) expect((await w.exited).code, w.stderr()).toBe(0);
    // The crash and the stop came while work was left.
    expect(atKill).toBeLessThan(expected.length);
    expect(atStop).toBeLessThan(expected.length);
    const delivered = await bodies("OUT2");
    expect(delivered.length).toBe(expected.length);
    expect(delivered).toEqual(expected);
    // The survivors took over the killed worker's partitions from NATS or a cache.
    expect(workers.slice(2).map((w) => w.stderr()).join("")).toMatch(/"event":"partition-taken"/);
  }, 300_000);
});

/** Each partition's checkpoint log as (kind, worker) pairs, in order. */
async function checkpointLogs(group: string): Promise<Map<string, Array<{ kind: string; worker: string }>>> {
  const nc = await connect({ servers: server.url });
  const logs = new Map<string, Array<{ kind: string; worker: string }>>();
  try {
    const consumer = await jetstream(nc).consumers.get(checkpointStreamName(group));
    const pending = (await consumer.info()).num_pending;
    for (let read = 0; read < pending; ) {
      for await (const msg of await consumer.fetch({ max_messages: 500, expires: 2000 })) {
        read++;
        const log = logs.get(msg.subject) ?? [];
        log.push({ kind: msg.headers!.get(KIND_HEADER), worker: msg.headers!.get(WORKER_HEADER) });
        logs.set(msg.subject, log);
      }
    }
  } finally {
    await nc.close();
  }
  return logs;
}

describe("a worker paused past its lease", () => {
  it("cannot commit once resumed: its partitions were taken over, nothing is lost or written twice", async () => {
    const all = events(200_000, 3, 2000);
    await publish("IN3", all);
    const dir = tempDir("flusso-cluster-pause-");
    const file = join(dir, "p.yaml");
    writeFileSync(file, pipelineYaml("single3", "IN3", "OUT3S", join(dir, "state-single")).replace(/cluster:.*\n/, ""));
    const { runPipeline } = await import("../../pipelines/compile.ts");
    await runPipeline(loadPipeline(file));
    const expected = await bodies("OUT3S");
    writeFileSync(file, pipelineYaml("pause", "IN3", "OUT3", join(dir, "state")));
    // Made before the workers do, without purges, so that the log keeps who wrote what after each base.
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: checkpointStreamName("pause"), subjects: ["flusso.pause.checkpoints.>"], deny_purge: true });
    await nc.close();
    const paused = startWorker(file);
    const other = startWorker(file);
    // Paused while it holds partitions and has checkpointed them (every 50 ms), whoever started first.
    await untilLogged(paused, /"event":"restored"|"event":"fresh-start"/);
    await new Promise((r) => setTimeout(r, 500));
    while (heldPartitions(paused.stderr()).size === 0) await new Promise((r) => setTimeout(r, 20));
    paused.child.kill("SIGSTOP");
    const otherLogAtPause = other.stderr().length;
    // What the paused worker wrote before it stopped may still be in the pipe (a partition released
    // just then): read all of it before telling what it holds.
    await new Promise((r) => setTimeout(r, 300));
    const held = heldPartitions(paused.stderr());
    // Past its 2 s lease, the other worker takes one of the partitions it held over (a partition it
    // gave back just before the pause, in a rebalance, is taken at once: hence the wait for the lease).
    await new Promise((r) => setTimeout(r, 2_500));
    const takenOver = new RegExp(`"event":"partition-taken","partition":(${[...held].join("|")}),`);
    await untilLogged(other, takenOver, otherLogAtPause);
    paused.child.kill("SIGCONT");
    for (const w of [paused, other]) expect((await exitWithin(w, 150_000)).code, w.stderr()).toBe(0);
    expect(paused.stderr()).toMatch(/"event":"partition-lost"/);
    expect(await bodies("OUT3")).toEqual(expected);
    // The fence held: after another worker's claim on a partition, the paused worker wrote nothing there.
    const pausedId = /"workerId":"([^"]+)"/.exec(paused.stderr())![1];
    let claimsOverPaused = 0;
    for (const log of (await checkpointLogs("pause")).values()) {
      const takenAt = log.findIndex((m, i) => m.kind === "claim" && m.worker !== pausedId && log.slice(0, i).some((earlier) => earlier.worker === pausedId));
      if (takenAt < 0) continue;
      claimsOverPaused++;
      // It may take the partition again later, with a claim of its own; nothing of it comes before that claim.
      const firstOfPaused = log.slice(takenAt).find((m) => m.worker === pausedId);
      expect(firstOfPaused?.kind ?? "claim").toBe("claim");
    }
    expect(claimsOverPaused).toBeGreaterThan(0);
  }, 480_000);
});

/** The partitions a worker's JSON log says it holds: taken, and neither released nor lost since. */
function heldPartitions(log: string): Set<number> {
  const held = new Set<number>();
  for (const match of log.matchAll(/"event":"partition-(taken|released|lost)","partition":(\d+)/g)) {
    if (match[1] === "taken") held.add(Number(match[2]));
    else held.delete(Number(match[2]));
  }
  return held;
}

/** The worker's exit, or a failure with its log after `limitMs`. */
async function exitWithin(worker: WorkerProcess, limitMs: number): Promise<Awaited<WorkerProcess["exited"]>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the worker did not exit within ${limitMs} ms:\n${worker.stderr()}`)), limitMs)));
  try {
    return await Promise.race([worker.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (bounded) until the worker's log has a line matching `pattern`. */
async function untilLogged(worker: WorkerProcess, pattern: RegExp, fromChar = 0, limitMs = 150_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!pattern.test(worker.stderr().slice(fromChar))) {
    if (Date.now() > deadline) throw new Error(`no log line matching ${pattern} after ${limitMs} ms:\n${worker.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("a cluster's command line", () => {
  it("refuses --reset and --reset-stage, naming what to do instead: the state lives in NATS", async () => {
    const dir = tempDir("flusso-cluster-reset-");
    const file = join(dir, "p.yaml");
    writeFileSync(file, pipelineYaml("resetme", "IN9", "OUT9", join(dir, "state")));
    for (const flags of [["--reset"], ["--reset-stage", "hourly"]]) {
      const run = spawnSync(process.execPath, [CLI, "run", file, ...flags], { encoding: "utf8" });
      expect(run.status).toBe(2);
      expect(run.stderr).toContain("do not apply to a cluster");
      expect(run.stderr).toContain("flusso_resetme_checkpoints");
    }
  });

  it("refuses a stream holding subjects no worker reads (a partition beyond the count), naming them", async () => {
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "IN10", subjects: ["in10.>"] });
    await jetstream(nc).publish("in10.3", JSON.stringify(events(1, 10)[0]));
    await jetstream(nc).publish("in10.9", JSON.stringify(events(1, 11)[0]));
    await nc.close();
    const dir = tempDir("flusso-cluster-subjects-");
    const file = join(dir, "p.yaml");
    writeFileSync(file, pipelineYaml("subjects", "IN10", "OUT10", join(dir, "state")));
    const run = spawnSync(process.execPath, [CLI, "run", file], { encoding: "utf8", timeout: 60_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain("in10.9");
    expect(run.stderr).not.toContain("in10.3,");
  });
});
