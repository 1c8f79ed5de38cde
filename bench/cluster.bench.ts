// A group of cluster workers against one process: how draining a pre-filled NATS stream scales from one
// worker to two (config/retention.yaml and config/nats/clickstream.yaml's windows, in cluster mode), how
// long a survivor takes to serve a SIGKILLed worker's partitions again, and what keeping checkpoints in
// NATS costs against plain LMDB. Starts its own nats-server; prints tables, writes
// bench/results/cluster-<date>.json (a part run alone replaces only its own part there).
// Run: npm run bench:cluster [-- --part scaling|takeover|checkpoint]
//      (BENCH_EVENTS=1000000 BENCH_REPEATS=2 BENCH_TAKEOVER_USERS=25000 BENCH_TRICKLE_RATE=200)
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { parseDocument } from "yaml";
import { partitionOf } from "../engine/partitioning.ts";
import { freePort } from "../test/natsServer.ts";
import { fmt, machineInfo, table, verdict } from "./benchUtil.ts";
import { freshStream, killChildren, spawnNode, stopChild, waitUntil, type ChildRun } from "./children.ts";

const ROOT = resolve(import.meta.dirname, "..");
const CLI = join(ROOT, "bin/flusso.js");
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 2);
/** Users of retention state each partition holds before the takeover (one event each). */
const TAKEOVER_USERS_PER_PARTITION = Number(process.env.BENCH_TAKEOVER_USERS ?? 25_000);
/** Events per second, across all partitions, published during the takeover. */
const TRICKLE_RATE = Number(process.env.BENCH_TRICKLE_RATE ?? 200);
const PARTITIONS = 8;
const LEASE_TTL_MS = 5_000;
const TARGET_SPEEDUP = 1.6;
const TARGET_TAKEOVER_MARGIN_MS = 3_000;
/** A drain run that takes longer than this is stopped and reported as failed. */
const RUN_LIMIT_MS = 15 * 60_000;
const STAMP = "published_at_ms";
const PART_NAMES = ["scaling", "takeover", "checkpoint"] as const;
type Part = (typeof PART_NAMES)[number];

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

function loadLine(): string {
  return `load average (1/5/15 min): ${loadavg().map((x) => fmt(x, 2)).join(" / ")}`;
}

// ---------------------------------------------------------------------------------------------
// The private nats-server

type Server = { url: string; child: ChildProcess; storeDir: string; version: string };

/** `nats-server -js` on a free loopback port (never 4222, where a developer's own server may listen) with a temp store. */
async function startServer(dir: string): Promise<Server> {
  const version = spawnSync("nats-server", ["--version"], { encoding: "utf8" }).stdout?.trim();
  if (!version) throw new Error("nats-server is not installed: this benchmark needs it (apt-get install nats-server)");
  let port = await freePort();
  while (port === 4222) port = await freePort();
  const storeDir = join(dir, "nats-store");
  const child = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], { stdio: "ignore" });
  const url = `nats://127.0.0.1:${port}`;
  const isUp = await waitUntil(async () => {
    const nc = await connect({ servers: url, maxReconnectAttempts: 0 }).catch(() => undefined);
    await nc?.close();
    return nc !== undefined;
  }, 10_000, 100);
  if (!isUp) throw new Error(`nats-server did not listen on ${url} within 10 s`);
  return { url, child, storeDir, version };
}

/** Deletes every stream (checkpoints, KV buckets, outputs) named after `group`: runs share nothing and the store stays small. */
async function dropGroup(jsm: JetStreamManager, group: string, outStream: string): Promise<void> {
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  for (const name of names) if (name === outStream || name.includes(group)) await jsm.streams.delete(name).catch(() => false);
}

// ---------------------------------------------------------------------------------------------
// Pipelines

type Kind = "retention" | "window";

type PipelineOptions = {
  kind: Kind;
  url: string;
  inStream: string;
  outStream: string;
  stateDir: string;
  isBounded: boolean;
  /** Without it the pipeline runs as one plain process (LMDB state only). */
  group?: string;
  checkpointInterval?: string;
};

/**
 * config/retention.yaml or config/nats/clickstream.yaml with their stages as shipped: the source is the
 * bench's stream over 8 partitions, every output (sinks, late, dead letters) goes to `outStream`, the state
 * to `stateDir`, and with a group a `cluster:` section (leaseTtl 5 s).
 */
function writePipeline(dir: string, o: PipelineOptions): string {
  const file = o.kind === "retention" ? "config/retention.yaml" : "config/nats/clickstream.yaml";
  const doc = parseDocument(readFileSync(join(ROOT, file), "utf8"));
  const subject = o.inStream.toLowerCase();
  const out = o.outStream.toLowerCase();
  doc.set("source", { nats: { servers: o.url, stream: o.inStream, subjects: [`${subject}.>`], partitions: PARTITIONS, format: "json", ...(o.isBounded ? { bounded: true } : {}) } });
  if (o.kind === "retention") doc.setIn(["schema", STAMP], { type: "number" });
  doc.setIn(["state", "dir"], o.stateDir);
  if (o.checkpointInterval) doc.setIn(["state", "checkpointInterval"], o.checkpointInterval);
  const sink = { servers: o.url, stream: o.outStream, subject: `${out}.out`, format: "json", ...(o.kind === "window" ? { duplicateWindow: "2m" } : {}) };
  doc.set("sinks", [{ nats: sink }]);
  if (o.kind === "window") doc.set("late", { nats: { ...sink, subject: `${out}.late` } });
  doc.set("deadLetter", { nats: { ...sink, subject: `${out}.dead` } });
  if (o.group) doc.set("cluster", { group: o.group, leaseTtl: `${LEASE_TTL_MS / 1000}s` });
  const path = join(dir, `${o.group ?? `plain-${o.outStream}`}.yaml`);
  writeFileSync(path, doc.toString());
  return path;
}

type LogLine = { event?: string; partition?: number; [field: string]: unknown };

/** Calls `onLine` with each JSON log line the child writes on stderr, and the time it was heard. */
function onLogLines(run: ChildRun, onLine: (line: LogLine, heardAtMs: number) => void): void {
  createInterface({ input: run.child.stderr!, crlfDelay: Infinity }).on("line", (text) => {
    try {
      onLine(JSON.parse(text) as LogLine, Date.now());
    } catch {
      // Not a log line.
    }
  });
}

/** The summary (`"event":"done"`) a run logged last: the supervisor's when there is one. */
function summaryOf(stderr: string): LogLine | undefined {
  const lines = stderr.split("\n").filter((l) => l.includes('"event":"done"'));
  for (const line of lines.reverse()) {
    try {
      return JSON.parse(line) as LogLine;
    } catch {
      // A line cut by the kept tail's start.
    }
  }
  return undefined;
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<undefined>((done) => (timer = setTimeout(() => done(undefined), ms)));
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// The pre-filled stream

async function fillEvents(server: Server, jsm: JetStreamManager): Promise<number> {
  log(`filling EVENTS with ${fmt(EVENTS)} generated events over ${PARTITIONS} partitions`);
  await freshStream(jsm, "EVENTS", ["events.>"]);
  const startedMs = performance.now();
  const filler = spawnNode([CLI, "publish", "generator", "--events", String(EVENTS), "--subject", "events", "--stream", "EVENTS", "--partitions", String(PARTITIONS), "--servers", server.url, "--quiet"]);
  const exit = await withTimeout(filler.exited, 10 * 60_000);
  if (exit?.code !== 0) throw new Error(`flusso publish did not finish: ${filler.stderr().slice(-2000)}`);
  const held = (await jsm.streams.info("EVENTS")).state;
  log(`  ${fmt(held.messages)} messages, ${fmt(held.bytes / 1e6, 1)} MB in ${fmt((performance.now() - startedMs) / 1000, 1)} s`);
  return held.messages;
}

/** CPU seconds (user + system) `pid` and its descendants have used so far, from /proc (0 for a process gone). */
function treeCpuSeconds(pid: number): number {
  const ticks = 100;
  const stats = new Map<number, { ppid: number; cpu: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      stats.set(Number(entry), { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / ticks });
    } catch {
      // Gone meanwhile.
    }
  }
  let total = 0;
  const visit = (p: number) => {
    total += stats.get(p)?.cpu ?? 0;
    for (const [child, s] of stats) if (s.ppid === p) visit(child);
  };
  visit(pid);
  return total;
}

// ---------------------------------------------------------------------------------------------
// 1. Scaling: draining the stream with --workers 1 and --workers 2

type DrainRun = {
  kind: Kind;
  workers: number;
  repeat: number;
  group: string;
  exitCode: number | null;
  wallMs: number;
  read: number;
  outputs: number;
  /** Messages in the output stream at the end: the outputs, each once (a rebalance re-reads and writes again what its last checkpoint had not covered). */
  outputMessages: number;
  eventsPerSecond: number;
  loadAverageAtStart: number[];
  /** CPU seconds of the supervisor and its workers (the last sample, every 500 ms, before they exited), and of nats-server over the run. */
  flussoCpuSeconds: number;
  natsServerCpuSeconds: number;
};

async function drainRun(dir: string, server: Server, jsm: JetStreamManager, kind: Kind, workers: number, repeat: number, events: number): Promise<DrainRun> {
  const group = `scale_${kind}_w${workers}_r${repeat}`;
  const outStream = `OUT_${group}`;
  const stateDir = join(dir, group);
  const yaml = writePipeline(dir, { kind, url: server.url, inStream: "EVENTS", outStream, stateDir, isBounded: true, group });
  const loadAverageAtStart = loadavg();
  const natsCpuAtStart = treeCpuSeconds(server.child.pid!);
  const startedMs = performance.now();
  const run = spawnNode([CLI, "run", yaml, "--workers", String(workers), "--log", "json"]);
  // Workers exit before their supervisor: the largest sample of the tree is what they used.
  let flussoCpuSeconds = 0;
  const sampler = setInterval(() => (flussoCpuSeconds = Math.max(flussoCpuSeconds, treeCpuSeconds(run.child.pid!))), 500);
  const exit = await withTimeout(run.exited, RUN_LIMIT_MS);
  const wallMs = performance.now() - startedMs;
  clearInterval(sampler);
  const natsServerCpuSeconds = treeCpuSeconds(server.child.pid!) - natsCpuAtStart;
  if (exit === undefined) await stopChild(run);
  const summary = summaryOf(run.stderr());
  const read = Number(summary?.read ?? NaN);
  if (exit?.code !== 0 || !(read >= events)) log(`  run ended ${JSON.stringify(exit)} having read ${read} of ${events}: ${run.stderr().slice(-1500)}`);
  const outputMessages = (await jsm.streams.info(outStream).catch(() => undefined))?.state.messages ?? NaN;
  await dropGroup(jsm, group, outStream);
  rmSync(stateDir, { recursive: true, force: true });
  return { kind, workers, repeat, group, exitCode: exit?.code ?? null, wallMs, read, outputs: Number(summary?.outputs ?? NaN), outputMessages, eventsPerSecond: (events * 1000) / wallMs, loadAverageAtStart, flussoCpuSeconds, natsServerCpuSeconds };
}

async function scalingPart(dir: string, server: Server, jsm: JetStreamManager, events: number): Promise<object> {
  const runs: DrainRun[] = [];
  for (const kind of ["retention", "window"] as const) {
    log(loadLine());
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const workers of [1, 2]) {
        log(`scaling: ${kind}, --workers ${workers}, run ${repeat + 1} of ${REPEATS}`);
        const run = await drainRun(dir, server, jsm, kind, workers, repeat, events);
        log(`  ${fmt(run.wallMs / 1000, 1)} s, ${fmt(run.eventsPerSecond)} events/s (read ${fmt(run.read)}, ${fmt(run.outputs)} outputs written, ${fmt(run.outputMessages)} in the output stream, exit ${run.exitCode})`);
        runs.push(run);
      }
    }
  }
  const ratios = (["retention", "window"] as const).map((kind) => {
    const mean = (w: number) => {
      const of = runs.filter((r) => r.kind === kind && r.workers === w && r.exitCode === 0 && r.read >= events);
      return of.reduce((s, r) => s + r.eventsPerSecond, 0) / of.length;
    };
    const speedup = mean(2) / mean(1);
    const streams = new Set(runs.filter((r) => r.kind === kind).map((r) => r.outputMessages));
    if (streams.size > 1) log(`  ${kind}: the output streams differ between runs (${[...streams].join(", ")} messages): the outputs must not depend on the workers`);
    return { kind, outputStreamsAgree: streams.size === 1, oneWorkerEventsPerSecond: mean(1), twoWorkersEventsPerSecond: mean(2), speedup, target: `>= ${TARGET_SPEEDUP}x`, verdict: verdict(speedup >= TARGET_SPEEDUP) };
  });
  process.stdout.write(`\nScaling: ${fmt(events)} events over ${PARTITIONS} partitions drained by \`flusso run --workers N\` (wall time from spawn to the supervisor's exit)\n`);
  process.stdout.write(`${table(
    ["pipeline", "workers", "run", "wall s", "events/s", "read", "outputs written", "in the stream", "exit", "load 1 min at start", "flusso CPU s", "nats-server CPU s", "cores busy (ours)"],
    runs.map((r) => [r.kind, String(r.workers), String(r.repeat + 1), fmt(r.wallMs / 1000, 2), fmt(r.eventsPerSecond), fmt(r.read), fmt(r.outputs), fmt(r.outputMessages), String(r.exitCode), fmt(r.loadAverageAtStart[0], 2), fmt(r.flussoCpuSeconds, 1), fmt(r.natsServerCpuSeconds, 1), fmt((r.flussoCpuSeconds + r.natsServerCpuSeconds) / (r.wallMs / 1000), 2)]),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
  )}\n`);
  process.stdout.write(`${table(["pipeline", "1 worker events/s (mean)", "2 workers events/s (mean)", "speedup", "target", "verdict"], ratios.map((r) => [r.kind, fmt(r.oneWorkerEventsPerSecond), fmt(r.twoWorkersEventsPerSecond), `${fmt(r.speedup, 2)}x`, r.target, r.verdict]), [1, 2, 3])}\n`);
  return { events, runs, ratios };
}

// ---------------------------------------------------------------------------------------------
// 2. Takeover: two `flusso run` workers, one SIGKILLed

type Worker = { run: ChildRun; held: Set<number>; events: Array<LogLine & { heardAtMs: number }> };

function startWorker(yaml: string): Worker {
  const run = spawnNode([CLI, "run", yaml, "--log", "json"]);
  const worker: Worker = { run, held: new Set(), events: [] };
  onLogLines(run, (line, heardAtMs) => {
    if (line.event === undefined || line.event === "progress") return;
    worker.events.push({ ...line, heardAtMs });
    if (line.event === "partition-taken") worker.held.add(line.partition!);
    if (line.event === "partition-released" || line.event === "partition-lost") worker.held.delete(line.partition!);
  });
  return worker;
}

/** One event per user, users spread over the partitions by the hash the engine uses, published with acks. */
async function publishUsers(nc: NatsConnection, subject: string, users: number, timeMs: number): Promise<void> {
  const js = jetstream(nc);
  const BATCH = 2_000;
  for (let at = 0; at < users; at += BATCH) {
    const sends: Array<Promise<unknown>> = [];
    for (let i = at; i < Math.min(users, at + BATCH); i++) {
      const user = `u${i}`;
      const event = { user_id: user, timestamp: timeMs + i, event_type: "page_view", page: "/home", session_duration_sec: 30 };
      sends.push(js.publish(`${subject}.${partitionOf(user, PARTITIONS)}`, JSON.stringify(event)));
    }
    await Promise.all(sends);
  }
}

async function takeoverPart(dir: string, server: Server, nc: NatsConnection, jsm: JetStreamManager): Promise<object> {
  log(loadLine());
  const group = "takeover";
  const inStream = "TAKE_IN";
  const outStream = "TAKE_OUT";
  await dropGroup(jsm, group, outStream);
  await freshStream(jsm, inStream, ["take_in.>"]);
  const users = TAKEOVER_USERS_PER_PARTITION * PARTITIONS;
  log(`takeover: publishing ${fmt(users)} users (${fmt(TAKEOVER_USERS_PER_PARTITION)} a partition on average), one event each`);
  await publishUsers(nc, "take_in", users, Date.now() - users);
  const yaml = writePipeline(dir, { kind: "retention", url: server.url, inStream, outStream, stateDir: join(dir, "takeover-state"), isBounded: false, group, checkpointInterval: "1s" });

  // Outputs of trickle users (t<n>, each new) as they arrive: which partition, published when.
  const trickle = new Map<string, { partition: number; publishedAtMs: number }>();
  const outputs: Array<{ partition: number; atMs: number; latencyMs: number }> = [];
  const outSub = nc.subscribe(`${outStream.toLowerCase()}.out`, {
    callback: (_err, msg) => {
      const user = (msg.json() as { user_id?: string }).user_id;
      const sent = user === undefined ? undefined : trickle.get(user);
      if (sent) outputs.push({ partition: sent.partition, atMs: Date.now(), latencyMs: Date.now() - sent.publishedAtMs });
    },
  });
  const workers = [startWorker(yaml), startWorker(yaml)];
  const js = jetstream(nc);
  let sent = 0;
  const TICK_MS = 50;
  const perTick = Math.max(1, Math.round((TRICKLE_RATE * TICK_MS) / 1000));
  let trickleTimer: ReturnType<typeof setInterval> | undefined;
  try {
    const isShared = await waitUntil(() => workers.every((w) => w.held.size === PARTITIONS / 2), 180_000, 100);
    if (!isShared) throw new Error(`the workers never held ${PARTITIONS / 2} partitions each: ${workers.map((w) => [...w.held].join(",")).join(" / ")}`);
    log(`  each worker holds 4 partitions (${workers.map((w) => [...w.held].sort().join(",")).join(" / ")}); trickle of ${TRICKLE_RATE}/s starts`);
    trickleTimer = setInterval(() => {
      for (let i = 0; i < perTick; i++) {
        const user = `t${sent++}`;
        const partition = partitionOf(user, PARTITIONS);
        const nowMs = Date.now();
        trickle.set(user, { partition, publishedAtMs: nowMs });
        const event = { user_id: user, timestamp: nowMs, event_type: "page_view", page: "/home", session_duration_sec: 30, [STAMP]: nowMs };
        js.publish(`take_in.${partition}`, JSON.stringify(event)).catch(() => undefined);
      }
    }, TICK_MS);
    // Caught up: every partition has shown, in the last 2 s, the output of a trickle event published < 3 s before.
    const caughtUpStartMs = Date.now();
    const isCaughtUp = await waitUntil(() => {
      const recent = outputs.filter((o) => o.atMs > Date.now() - 2_000 && o.latencyMs < 3_000);
      return new Set(recent.map((o) => o.partition)).size === PARTITIONS;
    }, 300_000, 250);
    if (!isCaughtUp) throw new Error("the workers did not catch up with the trickle within 300 s");
    const stateInfo = (await jsm.streams.info(`flusso_${group}_checkpoints`)).state;
    log(`  caught up after ${fmt((Date.now() - caughtUpStartMs) / 1000, 1)} s; checkpoint stream holds ${fmt(stateInfo.bytes / 1e6, 1)} MB in ${stateInfo.messages} messages`);
    await new Promise((r) => setTimeout(r, 3_000));
    const [survivor, victim] = workers;
    const killed = [...victim.held].sort((a, b) => a - b);
    const killedAtMs = Date.now();
    victim.run.child.kill("SIGKILL");
    await victim.run.exited;
    log(`  SIGKILLed the worker holding partitions ${killed.join(",")}`);
    const firstOutput = (p: number) => outputs.find((o) => o.partition === p && o.atMs > killedAtMs + 50);
    const isBack = await waitUntil(() => killed.every((p) => firstOutput(p) !== undefined), 120_000, 20);
    const after = (event: string, p: number) => survivor.events.find((e) => e.event === event && e.partition === p && e.heardAtMs > killedAtMs);
    const perPartition = killed.map((p) => ({
      partition: p,
      takenMs: (after("partition-taken", p)?.heardAtMs ?? NaN) - killedAtMs,
      restoredFrom: after("partition-taken", p)?.restoredFrom,
      transactions: after("partition-taken", p)?.transactions,
      restoredMs: (after("restored", p)?.heardAtMs ?? NaN) - killedAtMs,
      freshStartMs: (after("fresh-start", p)?.heardAtMs ?? NaN) - killedAtMs,
      restoredCheckpointId: after("partition-taken", p)?.checkpointId,
      firstOutputMs: (firstOutput(p)?.atMs ?? NaN) - killedAtMs,
    }));
    const takeoverMs = Math.max(...perPartition.map((p) => p.firstOutputMs));
    const targetMs = LEASE_TTL_MS + TARGET_TAKEOVER_MARGIN_MS;
    process.stdout.write(`\nTakeover: 2 workers (separate \`flusso run\`), ${fmt(TAKEOVER_USERS_PER_PARTITION)} users of retention state a partition, leaseTtl ${LEASE_TTL_MS / 1000} s, checkpointInterval 1 s, trickle ${TRICKLE_RATE}/s of new users\n`);
    process.stdout.write(`checkpoint stream before the kill: ${fmt(stateInfo.bytes)} bytes in ${stateInfo.messages} messages (jsm.streams.info state.bytes)\n`);
    process.stdout.write(`${table(["partition", "partition-taken ms", "restored from", "checkpoint", "txns applied", "restored ms", "fresh-start ms", "first output ms"], perPartition.map((p) => [String(p.partition), fmt(p.takenMs), String(p.restoredFrom), String(p.restoredCheckpointId), String(p.transactions), fmt(p.restoredMs), fmt(p.freshStartMs), fmt(p.firstOutputMs)]), [1, 3, 4, 5, 6, 7])}\n`);
    const survivorTrouble = survivor.events.filter((e) => e.heardAtMs > killedAtMs && (e.level === "error" || e.event === "failed"));
    const survivorExit = survivor.run.child.exitCode ?? survivor.run.child.signalCode;
    process.stdout.write(`survivor after the kill: ${survivorTrouble.length} error lines (${[...new Set(survivorTrouble.map((e) => `${e.event}: ${String(e.error ?? e.msg).split("\n")[0]}`))].join("; ")}); ${survivorExit === null ? "still running" : `exited (${survivorExit})`}\n`);
    const result = { target: `all killed partitions' outputs again within leaseTtl + 3 s = ${targetMs} ms`, measured: `${fmt(takeoverMs)} ms`, verdict: verdict(isBack && takeoverMs <= targetMs) };
    process.stdout.write(`${table(["target", "measured", "verdict"], [[result.target, result.measured, result.verdict]])}\n`);
    return {
      usersPerPartition: TAKEOVER_USERS_PER_PARTITION,
      leaseTtlMs: LEASE_TTL_MS,
      trickleRate: TRICKLE_RATE,
      checkpointStreamBeforeKill: { bytes: stateInfo.bytes, messages: stateInfo.messages },
      killedPartitions: killed,
      survivorExit: survivor.run.child.exitCode ?? survivor.run.child.signalCode,
      victimTroubleBeforeKill: victim.events.filter((e) => e.level !== "info").map(({ heardAtMs, ...e }) => ({ ...e, beforeKillMs: killedAtMs - heardAtMs })),
      isBack,
      perPartition,
      takeoverMs,
      result,
      survivorEventsAfterKill: survivor.events.filter((e) => e.heardAtMs > killedAtMs).map(({ heardAtMs, ...e }) => ({ ...e, sinceKillMs: heardAtMs - killedAtMs })),
    };
  } finally {
    clearInterval(trickleTimer);
    outSub.unsubscribe();
    for (const w of workers) await stopChild(w.run, 15_000);
    await dropGroup(jsm, group, outStream);
    await jsm.streams.delete(inStream).catch(() => false);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Checkpoint cost: the same retention job with and without `cluster:`

/** The process's write_bytes (what it sent to the block layer) and wchar (what it passed to write calls), from /proc. */
function processIo(pid: number): { writeBytes: number; wchar: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/io`, "utf8");
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1] ?? NaN);
    return { writeBytes: field("write_bytes"), wchar: field("wchar") };
  } catch {
    return undefined;
  }
}

/** The apparent size of every data.mdb under `dir`. */
function dataMdbBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name === "data.mdb") total += statSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

function duBytes(dir: string): number {
  const out = spawnSync("du", ["-sk", dir], { encoding: "utf8" }).stdout;
  return Number(out.split("\t")[0]) * 1024;
}

type CostRun = {
  mode: "cluster" | "plain";
  repeat: number;
  exitCode: number | null;
  wallMs: number;
  read: number;
  eventsPerSecond: number;
  checkpoints: number;
  /** Cluster: payload bytes of the messages published to flusso.<group>.checkpoints.>, heard on a core subscription. */
  checkpointMessagesBytes?: number;
  checkpointMessages?: number;
  /** Cluster: the checkpoint stream's state.bytes, the largest sample (every 250 ms) and at the end (after purges). */
  checkpointStreamMaxBytes?: number;
  checkpointStreamEndBytes?: number;
  /** Every data.mdb's apparent size under the state dir at the end, and `du -sk` of the state dir. */
  dataMdbBytes: number;
  stateDirDuBytes: number;
  /** /proc/<pid>/io of the job's process, last sample before its exit. */
  processWriteBytes?: number;
  processWchar?: number;
};

async function costRun(dir: string, server: Server, nc: NatsConnection, jsm: JetStreamManager, mode: "cluster" | "plain", repeat: number, events: number): Promise<CostRun> {
  const group = `cost_${mode}_r${repeat}`;
  const outStream = `OUT_${group}`;
  const stateDir = join(dir, group);
  const yaml = writePipeline(dir, { kind: "retention", url: server.url, inStream: "EVENTS", outStream, stateDir, isBounded: true, checkpointInterval: "1s", ...(mode === "cluster" ? { group } : {}) });
  let bytes = 0;
  let messages = 0;
  const sub = mode === "cluster" ? nc.subscribe(`flusso.${group}.checkpoints.>`, { callback: (_err, msg) => {
    bytes += msg.data.length;
    messages++;
  } }) : undefined;
  await nc.flush();
  const startedMs = performance.now();
  const run = spawnNode([CLI, "run", yaml, "--log", "json"]);
  let io: ReturnType<typeof processIo>;
  let streamMaxBytes = 0;
  const sampler = setInterval(() => {
    io = processIo(run.child.pid!) ?? io;
    if (mode === "cluster") {
      jsm.streams.info(checkpointStream(group)).then((i) => (streamMaxBytes = Math.max(streamMaxBytes, i.state.bytes))).catch(() => undefined);
    }
  }, 250);
  const exit = await withTimeout(run.exited, RUN_LIMIT_MS);
  const wallMs = performance.now() - startedMs;
  clearInterval(sampler);
  if (exit === undefined) await stopChild(run);
  await nc.flush();
  sub?.unsubscribe();
  const summary = summaryOf(run.stderr());
  const read = Number(summary?.read ?? NaN);
  if (exit?.code !== 0 || read !== events) log(`  run ended ${JSON.stringify(exit)} having read ${read} of ${events}: ${run.stderr().slice(-1500)}`);
  const endBytes = mode === "cluster" ? (await jsm.streams.info(checkpointStream(group)).catch(() => undefined))?.state.bytes : undefined;
  const result: CostRun = {
    mode,
    repeat,
    exitCode: exit?.code ?? null,
    wallMs,
    read,
    eventsPerSecond: (events * 1000) / wallMs,
    checkpoints: Number(summary?.checkpoints ?? NaN),
    ...(mode === "cluster" ? { checkpointMessagesBytes: bytes, checkpointMessages: messages, checkpointStreamMaxBytes: streamMaxBytes, checkpointStreamEndBytes: endBytes } : {}),
    dataMdbBytes: dataMdbBytes(stateDir),
    stateDirDuBytes: duBytes(stateDir),
    processWriteBytes: io?.writeBytes,
    processWchar: io?.wchar,
  };
  await dropGroup(jsm, group, outStream);
  rmSync(stateDir, { recursive: true, force: true });
  return result;
}

function checkpointStream(group: string): string {
  return `flusso_${group}_checkpoints`;
}

async function checkpointPart(dir: string, server: Server, nc: NatsConnection, jsm: JetStreamManager, events: number): Promise<object> {
  log(loadLine());
  const runs: CostRun[] = [];
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    for (const mode of ["cluster", "plain"] as const) {
      log(`checkpoint cost: retention, 1 worker, checkpointInterval 1s, ${mode === "cluster" ? "with cluster: (checkpoints in NATS)" : "without cluster: (LMDB only)"}, run ${repeat + 1} of ${REPEATS}`);
      const run = await costRun(dir, server, nc, jsm, mode, repeat, events);
      log(`  ${fmt(run.wallMs / 1000, 1)} s, ${fmt(run.eventsPerSecond)} events/s, ${run.checkpoints} checkpoints` + (run.checkpointMessagesBytes !== undefined ? `, ${fmt(run.checkpointMessagesBytes / 1e6, 1)} MB published to the checkpoint stream` : "") + `, process write_bytes ${fmt((run.processWriteBytes ?? NaN) / 1e6, 1)} MB`);
      runs.push(run);
    }
  }
  const mb = (x: number | undefined) => (x === undefined ? "" : fmt(x / 1e6, 1));
  const perS = (x: number | undefined, r: CostRun) => (x === undefined ? "" : fmt(x / 1e6 / (r.wallMs / 1000), 2));
  process.stdout.write(`\nCheckpoint cost: retention over ${fmt(events)} events, one process, checkpointInterval 1 s, with and without cluster:\n`);
  process.stdout.write(
    `${table(
      ["mode", "run", "wall s", "events/s", "checkpoints", "ckpt msgs MB (MB/s)", "ckpt stream max / end MB", "data.mdb MB", "du state MB", "proc write_bytes MB (MB/s)", "proc wchar MB"],
      runs.map((r) => [
        r.mode,
        String(r.repeat + 1),
        fmt(r.wallMs / 1000, 1),
        fmt(r.eventsPerSecond),
        String(r.checkpoints),
        r.checkpointMessagesBytes === undefined ? "" : `${mb(r.checkpointMessagesBytes)} (${perS(r.checkpointMessagesBytes, r)})`,
        r.checkpointStreamMaxBytes === undefined ? "" : `${mb(r.checkpointStreamMaxBytes)} / ${mb(r.checkpointStreamEndBytes)}`,
        mb(r.dataMdbBytes),
        mb(r.stateDirDuBytes),
        `${mb(r.processWriteBytes)} (${perS(r.processWriteBytes, r)})`,
        mb(r.processWchar),
      ]),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    )}\n`,
  );
  const mean = (mode: string) => {
    const of = runs.filter((r) => r.mode === mode && r.exitCode === 0);
    return of.reduce((s, r) => s + r.eventsPerSecond, 0) / of.length;
  };
  const throughputRatio = mean("cluster") / mean("plain");
  process.stdout.write(`cluster / plain throughput: ${fmt(throughputRatio, 3)}\n`);
  return { events, checkpointInterval: "1s", runs, throughputRatio };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const partArg = process.argv.indexOf("--part");
  const parts: Part[] = partArg > 0 ? [process.argv[partArg + 1] as Part] : [...PART_NAMES];
  if (!parts.every((p) => PART_NAMES.includes(p))) throw new Error(`--part: one of ${PART_NAMES.join(", ")}`);
  const dir = mkdtempSync(join(tmpdir(), "flusso-cluster-bench-"));
  let server: Server | undefined;
  process.once("exit", () => {
    killChildren();
    server?.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));
  server = await startServer(dir);
  const machine = { ...machineInfo(ROOT), natsServer: server.version };
  process.stdout.write(`${machine.cpuModel}, ${machine.cores} cores, ${fmt(machine.totalMemoryBytes / 2 ** 30, 1)} GiB, node ${machine.node}, ${machine.natsServer} at ${server.url}\n`);
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  const results: Record<string, unknown> = {};
  try {
    const needsEvents = parts.includes("scaling") || parts.includes("checkpoint");
    const events = needsEvents ? await fillEvents(server, jsm) : 0;
    for (const part of parts) {
      const loadAverageBefore = loadavg();
      process.stdout.write(`\n[${part}] ${loadLine()}\n`);
      const result =
        part === "scaling" ? await scalingPart(dir, server, jsm, events)
        : part === "takeover" ? await takeoverPart(dir, server, nc, jsm)
        : await checkpointPart(dir, server, nc, jsm, events);
      results[part === "takeover" ? `takeover_${TAKEOVER_USERS_PER_PARTITION}_users` : part] = { loadAverageBefore, ...result };
    }
  } finally {
    await nc.close();
    server.child.kill("SIGTERM");
  }
  const out = join(ROOT, `bench/results/cluster-${machine.date.slice(0, 10)}.json`);
  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  // A part run alone replaces only its own part of the day's file.
  const previous = existsSync(out) ? (JSON.parse(readFileSync(out, "utf8")) as { parts?: Record<string, unknown> }) : {};
  const merged = { machine, settings: { events: EVENTS, repeats: REPEATS, partitions: PARTITIONS, leaseTtlMs: LEASE_TTL_MS, takeoverUsersPerPartition: TAKEOVER_USERS_PER_PARTITION, trickleRate: TRICKLE_RATE }, parts: { ...previous.parts, ...Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { machine, ...(v as object) }])) } };
  writeFileSync(out, `${JSON.stringify(merged, null, 2)}\n`);
  log(`wrote ${out}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
