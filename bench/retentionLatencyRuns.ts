// The engine runs of `npm run bench:latency`: config/retention.yaml as shipped (every stage unchanged),
// read from a NATS stream and writing every output it makes to another, in a `flusso run` child that
// tells each checkpoint (FLUSSO_LOG_LEVEL=debug); the bench reads the outputs as they arrive, and the
// events back from their stream afterwards, to join each features output to its event's publish stamp.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { DeliverPolicy, jetstream, type JetStreamManager } from "@nats-io/jetstream";
import { parse, stringify } from "yaml";
import { freshStream, stopChild, waitUntil, type Exit } from "./children.ts";
import { summarizeLatencies, tapStream, type LatencySummary } from "./natsConsumer.ts";
import {
  afterWarmUp,
  CATCH_UP_TIMEOUT_MS,
  CHECKPOINT_INTERVAL,
  KEEP_UP_END_LAG_MS,
  KEEP_UP_SLOPE_MS_PER_S,
  latencyBySecond,
  markedRunEnd,
  parseSummary,
  PARTITIONS,
  publishMarkerEvents,
  runBoundedEngine,
  runPublisher,
  spawnFlusso,
  STAMP,
  type BenchNats,
  type EngineSummary,
  type Published,
} from "./natsLatencyRuns.ts";

const ROOT = resolve(import.meta.dirname, "..");
/** The pipeline measured: its stages as shipped; source, sinks, state dir and dead letters are the bench's. */
export const RETENTION_YAML = "config/retention.yaml";
/** End markers' users, one per partition: new users, so each one's first event has a features output. */
const MARKER_USER = "~end-marker";
const OUT_SUBJECT = "out.retention";
/**
 * How much faster than the wall clock the generator's event time runs (BENCH_EVENT_TIME_SPEEDUP,
 * default 300): its pace is `rate / speedup` events per second of event time, so at every rate the
 * clusters stage (every 30 min of event time) runs every 6 s of the run. 0: the generator's own pace
 * (200 events per event-time second), as `flusso publish` sends by default.
 */
export const EVENT_TIME_SPEEDUP = Number(process.env.BENCH_EVENT_TIME_SPEEDUP ?? 300);

/** The publisher's `--pace` for `rate` (none at full speed or without a speedup). */
function paceArgs(rate: number): string[] {
  return rate > 0 && EVENT_TIME_SPEEDUP > 0 ? ["--pace", String(rate / EVENT_TIME_SPEEDUP)] : [];
}

/**
 * The `steady` figures leave out events published in a run's first this many seconds
 * (BENCH_WARMUP_SECONDS, default 5 here): the engine starts just before each run with no state, so
 * every user is new at first (several outputs each) and the code is cold; it catches up within 3-4 s
 * at 5k/s. A job that runs on pays this once.
 */
export const RETENTION_WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 5);

/** BENCH_ENGINE_CPU_PROF=<dir>: each engine run writes V8 CPU profiles there (every thread; bench/cpuProfileTop.ts reads one). */
const CPU_PROF_DIR = process.env.BENCH_ENGINE_CPU_PROF;

/**
 * config/retention.yaml with its generator source replaced by the NATS stream `stream` (4 partitions,
 * as `flusso publish` writes them), its file sinks by one NATS sink taking every output kind, its state
 * and dead letters in `dir`, and its checkpoint interval `checkpointInterval` (the shipped 2 s suits
 * files; 100 ms is the default with a NATS sink, as config/nats/retention-cluster.yaml runs it). Every
 * other section is the shipped file's, untouched.
 */
export function writeRetentionPipeline(dir: string, url: string, p: { label: string; stream: string; subject: string; bounded: boolean; checkpointInterval: string }): string {
  const spec = parse(readFileSync(join(ROOT, RETENTION_YAML), "utf8")) as Record<string, unknown>;
  spec.source = { nats: { servers: url, stream: p.stream, subjects: [`${p.subject}.>`], partitions: PARTITIONS, ...(p.bounded ? { bounded: true } : {}) } };
  spec.state = { ...(spec.state as object), dir: `./state-${p.label}`, checkpointInterval: p.checkpointInterval };
  spec.sinks = [{ nats: { servers: url, stream: "OUT", subject: OUT_SUBJECT } }];
  spec.deadLetter = { file: { path: `./out-${p.label}/dead-letter.jsonl` } };
  const path = join(dir, `${p.label}.yaml`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, `# ${RETENTION_YAML} through NATS (bench:latency): ${p.label}\n${stringify(spec)}`);
  return path;
}

/** A checkpoint as the engine told it (the `checkpoint` debug line): when it began and how long its parts took. */
export type CheckpointMark = { checkpointId: number; startedAtMs: number; waitMs: number; flushMs: number; snapshotMs: number; totalMs: number; entries: number; bytes: number };
/** A `clusters` output (one k-means run) as it arrived. */
export type ClusterMark = { receivedAtMs: number; run: number; users: number; timeMs: number };

export type RetentionRun = {
  label: string;
  requestedRate: number;
  checkpointInterval: string;
  publisher: Published;
  /** Features outputs joined to a published event (same user, time = the event's timestamp). */
  eventOutputs: number;
  /** Outputs by kind, markers' included. */
  outputsByKind: Record<string, number>;
  /** Features outputs of no published event: wake-ups (a lookback emptying, a timer) and the markers'. */
  otherFeatures: number;
  isCaughtUp: boolean;
  /** Published events over the time from the first stamp to the last marker's output. */
  engineEventsPerSecond: number;
  /** Receive time of a features output minus its event's publish stamp. */
  latency: LatencySummary;
  /** The same for events published after the first RETENTION_WARMUP_SECONDS (the engine starts just before a run). */
  steady: LatencySummary;
  latencySlopeMsPerS: number;
  bySecond: ReturnType<typeof latencyBySecond>;
  /** From the end markers' publish to the last of their outputs. */
  endLagMs: number;
  keptUp: boolean;
  checkpoints: { count: number; totalMs: LatencySummary; heldMs: LatencySummary; intervalMs: LatencySummary };
  /**
   * Where each output's latency went, by the checkpoint durable last before it arrived (the one that
   * released it): `toCut` = from its event's publish to that checkpoint's start (the engine reading and
   * processing it, and waiting for the cut), `checkpoint` = that checkpoint's start to durable,
   * `delivery` = durable to received (publishing what it held, the server, the consumer).
   */
  breakdown: { toCut: LatencySummary; checkpoint: LatencySummary; delivery: LatencySummary };
  clusterRuns: ClusterMark[];
  engine?: EngineSummary;
  engineExit: string;
  /** The run's first publish stamp (epoch ms): the origin of `series` and of the marks. */
  originMs: number;
  /** Per joined output: its event's publish stamp (ms after `originMs`) and its latency (ms). Kept for one run only. */
  series?: { stampMs: number[]; latencyMs: number[] };
  checkpointMarks?: CheckpointMark[];
};

type Output = { output?: string; user_id?: string; time_ms?: number; run?: number; users?: number };

/** The newest event timestamp the stream's partitions end with: the markers come at it, so none is late. */
async function lastEventTimeMs(jsm: JetStreamManager, stream: string, subject: string): Promise<number> {
  let newestMs = -Infinity;
  for (let p = 0; p < PARTITIONS; p++) {
    const msg = await jsm.streams.getMessage(stream, { last_by_subj: `${subject}.${p}` }).catch(() => null);
    const timestamp = Number(msg?.json<Record<string, unknown>>().timestamp);
    if (Number.isFinite(timestamp)) newestMs = Math.max(newestMs, timestamp);
  }
  return newestMs;
}

/** One page view per partition, each by a new user, at the newest event time: their outputs end a run. */
function publishEndMarkers(nats: BenchNats, subject: string, timestampMs: number): Promise<number> {
  return publishMarkerEvents(nats.nc, subject, (user) => ({ user_id: user, timestamp: timestampMs, event_type: "page_view", page: "/", session_duration_sec: 1 }));
}

/** Every event of `stream`, read back after a run: user and event time to publish stamp. */
async function stampsByEvent(nats: BenchNats, stream: string): Promise<Map<string, number>> {
  const expected = (await nats.jsm.streams.info(stream)).state.messages;
  const stamps = new Map<string, number>();
  const consumer = await jetstream(nats.nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume({ max_messages: 5000 });
  let read = 0;
  for await (const msg of messages) {
    const event = JSON.parse(msg.string()) as Record<string, unknown>;
    const key = `${event.user_id}\u0000${event.timestamp}`;
    // A user's two events in one millisecond: the first one's stamp (its output comes no earlier).
    if (!stamps.has(key)) stamps.set(key, Number(event[STAMP]));
    if (++read >= expected) break;
  }
  await messages.close().catch(() => undefined);
  return stamps;
}

/**
 * 1. empties EVENTS and OUT, starts reading OUT, starts the engine on retention (told to log every
 *    checkpoint) and waits for its consumer on EVENTS;
 * 2. publishes `events` at `rate` (its own process), then one marker per partition;
 * 3. waits for the markers' features outputs (a partition is read and its outputs written in order),
 *    then stops the engine with SIGTERM;
 * 4. joins each features output to its event's stamp, read back from EVENTS.
 */
export async function runRetention(nats: BenchNats, dir: string, label: string, rate: number, events: number, options: { keepSeries?: boolean; checkpointInterval?: string } = {}): Promise<RetentionRun> {
  const checkpointInterval = options.checkpointInterval ?? CHECKPOINT_INTERVAL;
  // 1.
  await freshStream(nats.jsm, "EVENTS", ["events.>"]);
  await freshStream(nats.jsm, "OUT", [`${OUT_SUBJECT}`], 120_000);
  const yaml = writeRetentionPipeline(dir, nats.url, { label, stream: "EVENTS", subject: "events", bounded: false, checkpointInterval });
  const received: Array<{ atMs: number; user: string; timeMs: number }> = [];
  const outputsByKind: Record<string, number> = {};
  const clusterRuns: ClusterMark[] = [];
  let markersSeen = 0;
  let lastMarkerAtMs = NaN;
  const tap = await tapStream(nats.nc, "OUT", (msg, atMs) => {
    const out = JSON.parse(msg.string()) as Output;
    const kind = out.output ?? "trigger";
    outputsByKind[kind] = (outputsByKind[kind] ?? 0) + 1;
    if (kind === "clusters") clusterRuns.push({ receivedAtMs: atMs, run: out.run ?? NaN, users: out.users ?? NaN, timeMs: out.time_ms ?? NaN });
    if (kind !== "features" || out.user_id === undefined || out.time_ms === undefined) return;
    if (out.user_id.startsWith(MARKER_USER)) {
      if (++markersSeen === PARTITIONS) lastMarkerAtMs = atMs;
      return;
    }
    received.push({ atMs, user: out.user_id, timeMs: out.time_ms });
  });
  const checkpoints: CheckpointMark[] = [];
  const engine = spawnFlusso(["run", yaml, "--reset", "--log", "json"], {
    env: { FLUSSO_LOG_LEVEL: "debug" },
    nodeArgs: CPU_PROF_DIR ? ["--cpu-prof", `--cpu-prof-dir=${resolve(CPU_PROF_DIR, label)}`] : [],
    onStderrLine: (line) => {
      if (!line.includes('"event":"checkpoint"')) return;
      const e = JSON.parse(line) as CheckpointMark;
      checkpoints.push({ checkpointId: e.checkpointId, startedAtMs: e.startedAtMs, waitMs: e.waitMs, flushMs: e.flushMs, snapshotMs: e.snapshotMs, totalMs: e.totalMs, entries: e.entries, bytes: e.bytes });
    },
  });
  let published: Published;
  let markerAtMs = NaN;
  let exit: Exit & { isKilled: boolean };
  try {
    const isReady = await waitUntil(async () => engine.child.exitCode !== null || (await nats.jsm.streams.info("EVENTS")).state.consumer_count > 0, 30_000, 50);
    if (!isReady || engine.child.exitCode !== null) throw new Error(`the engine did not start reading EVENTS: ${engine.stderr().slice(-2000)}`);
    // 2.
    published = await runPublisher(nats, "events", "EVENTS", events, rate, paceArgs(rate));
    markerAtMs = await publishEndMarkers(nats, "events", await lastEventTimeMs(nats.jsm, "EVENTS", "events"));
    // 3.
    await waitUntil(() => engine.child.exitCode !== null || markersSeen >= PARTITIONS, CATCH_UP_TIMEOUT_MS, 20);
  } finally {
    exit = await stopChild(engine);
    await tap.stop();
  }
  // 4.
  const stamps = await stampsByEvent(nats, "EVENTS");
  const atMs: number[] = [];
  const stampMs: number[] = [];
  for (const r of received) {
    const stamp = stamps.get(`${r.user}\u0000${r.timeMs}`);
    if (stamp === undefined) continue;
    atMs.push(r.atMs);
    stampMs.push(stamp);
  }
  let firstStampMs = Infinity;
  for (const stamp of stamps.values()) if (stamp < firstStampMs) firstStampMs = stamp;
  const { latencies, isCaughtUp, endLagMs, spanMs, latencySlopeMsPerS } = markedRunEnd({ atMs, stampMs, markersSeen, lastMarkerAtMs, markerAtMs, firstStampMs });
  const starts = checkpoints.map((c) => c.startedAtMs);
  const breakdown = latencyBreakdown(atMs, stampMs, checkpoints);
  return {
    label,
    requestedRate: rate,
    checkpointInterval,
    publisher: published,
    eventOutputs: latencies.length,
    outputsByKind,
    otherFeatures: received.length - latencies.length,
    isCaughtUp,
    engineEventsPerSecond: (published.published * 1000) / Math.max(spanMs, 1),
    latency: summarizeLatencies(latencies),
    steady: summarizeLatencies(afterWarmUp(latencies, stampMs, firstStampMs, RETENTION_WARMUP_SECONDS)),
    latencySlopeMsPerS,
    bySecond: latencyBySecond(stampMs, latencies, firstStampMs),
    endLagMs,
    keptUp: isCaughtUp && endLagMs <= KEEP_UP_END_LAG_MS && latencySlopeMsPerS <= KEEP_UP_SLOPE_MS_PER_S,
    checkpoints: {
      count: checkpoints.length,
      totalMs: summarizeLatencies(checkpoints.map((c) => c.totalMs)),
      heldMs: summarizeLatencies(checkpoints.map((c) => c.waitMs + c.flushMs + c.snapshotMs)),
      intervalMs: summarizeLatencies(starts.slice(1).map((s, i) => s - starts[i])),
    },
    breakdown,
    clusterRuns: clusterRuns.map((c) => ({ ...c, receivedAtMs: c.receivedAtMs - firstStampMs })),
    engine: parseSummary(engine.stderr()),
    engineExit: exit.isKilled ? "SIGKILL after 10 s" : exit.code === 0 ? "0" : `${exit.code ?? exit.signal}: ${engine.stderr().slice(-500)}`,
    originMs: firstStampMs,
    ...(options.keepSeries
      ? {
          series: { stampMs: stampMs.map((s) => s - firstStampMs), latencyMs: latencies },
          checkpointMarks: checkpoints.map((c) => ({ ...c, startedAtMs: c.startedAtMs - firstStampMs })),
        }
      : {}),
  };
}

/** RetentionRun.breakdown: each output charged to the checkpoint durable last before it arrived. */
function latencyBreakdown(atMs: number[], stampMs: number[], checkpoints: CheckpointMark[]): RetentionRun["breakdown"] {
  const durable = checkpoints.map((c) => ({ startedAtMs: c.startedAtMs, totalMs: c.totalMs, durableAtMs: c.startedAtMs + c.totalMs })).sort((a, b) => a.durableAtMs - b.durableAtMs);
  const toCut: number[] = [];
  const checkpoint: number[] = [];
  const delivery: number[] = [];
  for (let i = 0; i < atMs.length; i++) {
    // The last checkpoint durable at or before the arrival (binary search).
    let lo = 0;
    let hi = durable.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (durable[mid].durableAtMs <= atMs[i]) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) continue;
    const c = durable[found];
    toCut.push(c.startedAtMs - stampMs[i]);
    checkpoint.push(c.totalMs);
    delivery.push(atMs[i] - c.durableAtMs);
  }
  return { toCut: summarizeLatencies(toCut), checkpoint: summarizeLatencies(checkpoint), delivery: summarizeLatencies(delivery) };
}

export type RetentionBacklog = { events: number; wallMs: number; engine?: EngineSummary; outputs: number };

/**
 * `events` published at full speed with nothing reading them, then `flusso run` over them (bounded),
 * nothing else running: what the engine does alone when input is waiting (its events/s from its summary).
 */
export async function runRetentionBacklog(nats: BenchNats, dir: string, events: number): Promise<RetentionBacklog> {
  await freshStream(nats.jsm, "EVENTS", ["events.>"]);
  await freshStream(nats.jsm, "OUT", [OUT_SUBJECT], 120_000);
  // Event time as in a 10k/s run: the same share of cluster runs per event.
  await runPublisher(nats, "events", "EVENTS", events, 0, paceArgs(10_000));
  const yaml = writeRetentionPipeline(dir, nats.url, { label: "backlog", stream: "EVENTS", subject: "events", bounded: true, checkpointInterval: CHECKPOINT_INTERVAL });
  const { wallMs, engine } = await runBoundedEngine(yaml, 120_000);
  const outputs = (await nats.jsm.streams.info("OUT")).state.messages;
  return { events, wallMs, engine, outputs };
}
