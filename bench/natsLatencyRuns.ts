// The runs of the NATS latency benchmark: the raw floor (`flusso publish` straight to a consumer), the
// engine between the two (a `flusso run` child with a 1 s tumbling window, or with BENCH_PIPELINE=per-event
// behaviour stages that emit an output on every event), the engine draining a backlog, and the child
// processes they need, killed whatever happens.
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { jetstream, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { freshStream, spawnNode, stopChild, waitUntil, type ChildRun, type Exit } from "./children.ts";
import { slope, summarizeLatencies, tapStream, type LatencySummary } from "./natsConsumer.ts";

export { killChildren } from "./children.ts";

const ROOT = resolve(import.meta.dirname, "..");
const CLI = join(ROOT, "bin/flusso.js");
/** `flusso run` of another checkout (e.g. one with an engine change to compare); the publisher stays this one's. */
const ENGINE_CLI = process.env.BENCH_ENGINE_CLI ?? CLI;
export const PARTITIONS = 4;
/** The field `flusso publish --stamp` writes the publish time (epoch ms) to. */
export const STAMP = "published_at_ms";
/** How long after the marker the results may take to cover every published event. */
export const CATCH_UP_TIMEOUT_MS = 30_000;
/** An engine run keeps up when it is this close to the publisher at the end, and its latency does not climb. */
export const KEEP_UP_END_LAG_MS = 1000;
export const KEEP_UP_SLOPE_MS_PER_S = 50;

export type BenchNats = { url: string; nc: NatsConnection; jsm: JetStreamManager };

/**
 * What the engine runs. `window`: a 1 s tumbling window per user (a result waits for its window's end).
 * `per-event`: dedup, rolling aggregates and features, a features output on every event.
 */
export type PipelineMode = "window" | "per-event";
export const PIPELINE: PipelineMode = (() => {
  const mode = process.env.BENCH_PIPELINE ?? "window";
  if (mode !== "window" && mode !== "per-event") throw new Error(`BENCH_PIPELINE must be window or per-event, got ${JSON.stringify(mode)}`);
  return mode;
})();
/**
 * Outputs (per-event mode) and raw messages of events published in a run's first this many seconds are
 * left out of its `steady` latency: a freshly started engine (JIT, first keys) runs a backlog of up to
 * ~0.6 s there, which a running job pays once. The whole-run figure is kept beside it.
 */
export const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 2);

/**
 * The engine's checkpoint interval: a NATS output leaves when its checkpoint commits, so this is most
 * of its latency. Default: the pipeline default with a NATS sink (100 ms).
 */
export const CHECKPOINT_INTERVAL = process.env.BENCH_CHECKPOINT_INTERVAL ?? "100ms";
/** Per-event mode: the feature carrying the newest publish stamp (through a `last` aggregate). */
export const PUBLISHED_FEATURE = "newest_published_ms";
/** Per-event mode: the end markers' users, one per partition (distinct, so dedup keeps each). */
const MARKER_USER = "~end-marker";

// ---------------------------------------------------------------------------------------------
// Children

/** `node bin/flusso.js <args>`: `run` from BENCH_ENGINE_CLI when given, anything else from this checkout. */
export function spawnFlusso(args: string[], options: Parameters<typeof spawnNode>[1] & { nodeArgs?: string[] } = {}): ChildRun {
  return spawnNode([...(options.nodeArgs ?? []), args[0] === "run" ? ENGINE_CLI : CLI, ...args], options);
}

export type Published = { published: number; elapsedMs: number; ratePerSecond: number; requestedRate: number };

/** `flusso publish generator` of `events` events at `rate`, stamped, to `<subject>.0..3` of `stream`; its summary line. */
export async function runPublisher(nats: BenchNats, subject: string, stream: string, events: number, rate: number, moreArgs: string[] = []): Promise<Published> {
  const publisher = spawnFlusso([
    "publish", "generator", "--events", String(events), "--rate", String(rate), "--stamp", STAMP,
    "--subject", subject, "--stream", stream, "--partitions", String(PARTITIONS), "--servers", nats.url, ...moreArgs,
  ]);
  const exit = await publisher.exited;
  const match = /published: (\d+) events in ([\d.]+) s \((\d+) events\/s\)/.exec(publisher.stderr());
  if (exit.code !== 0 || !match) throw new Error(`flusso publish exited with ${exit.code ?? exit.signal}: ${publisher.stderr().slice(-2000)}`);
  return { published: Number(match[1]), elapsedMs: Number(match[2]) * 1000, ratePerSecond: Number(match[3]), requestedRate: rate };
}

/** The publish stamp of a stream's message `seq`. */
export async function stampAt(jsm: JetStreamManager, stream: string, seq: number): Promise<number> {
  const msg = await jsm.streams.getMessage(stream, { seq });
  return Number((msg?.json<Record<string, unknown>>() ?? {})[STAMP]);
}

// ---------------------------------------------------------------------------------------------
// 1. The raw floor

export type RawRun = {
  requestedRate: number;
  publisher: Published;
  received: number;
  /** Messages per second between the consumer's first and last receive. */
  consumerRatePerSecond: number;
  latency: LatencySummary;
  /** Messages published after the first WARMUP_SECONDS of the run (the same cut as the engine's `steady`). */
  steady: LatencySummary;
};

/** The publisher straight to an ordered consumer in this process: receive time minus publish stamp per message. */
export async function runRaw(nats: BenchNats, rate: number, events: number): Promise<RawRun> {
  await freshStream(nats.jsm, "RAW", ["raw.>"]);
  const latenciesMs: number[] = [];
  const stampsMs: number[] = [];
  let firstAtMs = 0;
  let lastAtMs = 0;
  const tap = await tapStream(nats.nc, "RAW", (msg, receivedAtMs) => {
    const event = JSON.parse(msg.string()) as Record<string, number>;
    latenciesMs.push(receivedAtMs - event[STAMP]);
    stampsMs.push(event[STAMP]);
    if (firstAtMs === 0) firstAtMs = receivedAtMs;
    lastAtMs = receivedAtMs;
  });
  try {
    const publisher = await runPublisher(nats, "raw", "RAW", events, rate);
    const isComplete = await waitUntil(() => latenciesMs.length >= publisher.published, 30_000);
    if (!isComplete) throw new Error(`the raw consumer received ${latenciesMs.length} of ${publisher.published} messages`);
    const spanMs = Math.max(lastAtMs - firstAtMs, 1);
    return {
      requestedRate: rate,
      publisher,
      received: latenciesMs.length,
      consumerRatePerSecond: (latenciesMs.length * 1000) / spanMs,
      latency: summarizeLatencies(latenciesMs),
      steady: summarizeLatencies(afterWarmUp(latenciesMs, stampsMs, await stampAt(nats.jsm, "RAW", 1))),
    };
  } finally {
    await tap.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Through the engine

export type EnginePipeline = {
  label: string;
  /** Source stream and subject prefix; a bounded source reads to the stream's end as of start-up. */
  stream: string;
  subject: string;
  bounded: boolean;
  checkpointInterval: string;
};

/**
 * The pipeline file: event time is the publish stamp. `window`: a 1 s tumbling window per user carrying
 * its newest stamp. `per-event`: a features output on every event that dedup keeps, carrying its stamp.
 */
export function writeEnginePipeline(dir: string, url: string, p: EnginePipeline, mode: PipelineMode = PIPELINE): string {
  const path = join(dir, `${p.label}.yaml`);
  mkdirSync(dir, { recursive: true });
  const body = mode === "window" ? windowSection(url) : perEventSections(url);
  writeFileSync(
    path,
    `# NATS latency benchmark (${mode}): ${p.label}
name: nats-latency-${p.label}
source:
  nats: { servers: "${url}", stream: ${p.stream}, subjects: ["${p.subject}.>"], partitions: ${PARTITIONS}${p.bounded ? ", bounded: true" : ""} }
schema:
  user_id: { type: string, required: true }
  timestamp: { type: timestamp, required: true }
  event_type: { type: string, required: true }
  page: { type: string }
  session_duration_sec: { type: number }
  # The generator's own timestamps are simulated (2024); event time is the publish time instead.
  ${STAMP}: { type: timestamp, required: true }
key: user_id
time: ${STAMP}
watermark: { maxOutOfOrderness: 0s, idleness: 1s }
state: { dir: ./state-${p.label}, checkpointInterval: ${p.checkpointInterval} }
${body}deadLetter: { file: { path: ./out-${p.label}/dead-letter.jsonl } }
`,
  );
  return path;
}

function windowSection(url: string): string {
  return `windows:
  - name: second
    type: tumbling
    size: 1s
    aggregate:
      events: count
      last_published: { max: ${STAMP} }
sinks:
  - nats: { servers: "${url}", stream: OUT, subject: out.latency }
`;
}

/**
 * Light, per event: dedup drops a re-sent event (the generator sends 0.5% twice, a moment apart, equal
 * but for `timestamp`: `within` is short because event time here is the publish time, 10-50x denser
 * than the generator's own), a rolling count over 1 min and the newest stamp via `last`, and features
 * over them. The stamp is a feature, so the vector changes on every kept event: one output each.
 */
function perEventSections(url: string): string {
  return `dedup: { within: 1s, fields: [event_type, page] }
aggregates:
  events_1m: { count: true, over: 1m }
  last_published: { last: ${STAMP} }
features:
  events_per_min: 'events_1m'
  ${PUBLISHED_FEATURE}: 'last_published'
sinks:
  - nats: { servers: "${url}", stream: OUT, subject: out.latency }
    outputs: [features]
`;
}

export type EngineSummary = { read: number; outputs: number; late: number; deadLettered: number; elapsedMs: number; ratePerSecond: number };

/** The `flusso run` summary line: "stopped|done: N events in X s (R events/s), O outputs, L late, D dead-lettered". */
export function parseSummary(stderr: string): EngineSummary | undefined {
  const m = /(?:stopped|done): (\d+) events in ([\d.]+) s \((\d+) events\/s\).*?, (\d+) outputs, (\d+) late, (\d+) dead-lettered/.exec(stderr);
  if (!m) return undefined;
  return { read: +m[1], elapsedMs: +m[2] * 1000, ratePerSecond: +m[3], outputs: +m[4], late: +m[5], deadLettered: +m[6] };
}

type WindowResult = { key: string; start_ms: number; end_ms: number; events: number; last_published: number };

export type EngineRun = {
  label: string;
  requestedRate: number;
  checkpointInterval: string;
  publisher: Published;
  /** Results received, and those of windows only the end marker closed (left out of the latencies). */
  results: number;
  resultsClosedByMarker: number;
  /** Events counted by the results received: what the engine had fully processed. */
  eventsCovered: number;
  isCaughtUp: boolean;
  /** Events covered per second, from the first publish stamp to the result that covered the last event. */
  engineEventsPerSecond: number;
  resultsPerSecond: number;
  /** Receive time minus the newest publish stamp a result holds. */
  latency: LatencySummary;
  /** Window end minus that stamp: how long a window stays open after its newest event. */
  closeWait: LatencySummary;
  /** Receive time minus window end: from the earliest moment the window could fire to its result arriving. */
  afterClose: LatencySummary;
  /** Per window second: its first result's receive time minus its end (the watermark's wait and the engine's pickup). */
  firstResultAfterClose: LatencySummary;
  /** Per window second: last result received minus first (how long the burst of one firing takes to come out). */
  burstMs: LatencySummary;
  /** How much the first result of each window second came later per second of the run (ms/s): a backlog growing. */
  latencySlopeMsPerS: number;
  /** From the end marker to the result covering the last published event: the backlog at the end. */
  endLagMs: number;
  /** Published minus covered when the publisher exited (about a window's worth when keeping up). */
  backlogAtPublisherExit: number;
  keptUp: boolean;
  engine?: EngineSummary;
  engineExit: string;
};

/**
 * One event per partition, a second ahead of the clock: the watermark passes the end of the last
 * window the publisher filled, which no later event would ever close. Its own window never fires.
 */
async function publishMarkers(nc: NatsConnection, subject: string, stampMs: number): Promise<void> {
  const js = jetstream(nc);
  const acks: Promise<unknown>[] = [];
  for (let p = 0; p < PARTITIONS; p++) {
    const marker = { user_id: "~end-marker", timestamp: Date.now(), event_type: "marker", page: "", session_duration_sec: 0, [STAMP]: stampMs };
    acks.push(js.publish(`${subject}.${p}`, JSON.stringify(marker)));
  }
  await Promise.all(acks);
}

/**
 * 1. empties EVENTS and OUT, starts reading OUT, starts the engine and waits for its consumer on EVENTS;
 * 2. publishes `events` at `rate` (its own process), then the end markers;
 * 3. waits until the results count every published event, then stops the engine with SIGTERM;
 * 4. turns what OUT delivered into latencies, throughput and the lag at the end.
 */
export async function runEngine(nats: BenchNats, dir: string, label: string, rate: number, events: number, checkpointInterval = CHECKPOINT_INTERVAL): Promise<EngineRun> {
  // 1.
  await freshStream(nats.jsm, "EVENTS", ["events.>"]);
  await freshStream(nats.jsm, "OUT", ["out.latency"], 120_000);
  const yaml = writeEnginePipeline(dir, nats.url, { label, stream: "EVENTS", subject: "events", bounded: false, checkpointInterval });
  const received: Array<{ atMs: number; result: WindowResult }> = [];
  const tap = await tapStream(nats.nc, "OUT", (msg, atMs) => received.push({ atMs, result: JSON.parse(msg.string()) as WindowResult }));
  const engine = spawnFlusso(["run", yaml, "--reset"]);
  let published: Published;
  let markerAtMs: number;
  let lastStampMs: number;
  let firstStampMs: number;
  let coveredAtPublisherExit = 0;
  let exit: Exit & { isKilled: boolean };
  try {
    const isReady = await waitUntil(async () => engine.child.exitCode !== null || (await nats.jsm.streams.info("EVENTS")).state.consumer_count > 0, 30_000, 50);
    if (!isReady || engine.child.exitCode !== null) throw new Error(`the engine did not start reading EVENTS: ${engine.stderr().slice(-2000)}`);
    // 2.
    published = await runPublisher(nats, "events", "EVENTS", events, rate);
    coveredAtPublisherExit = received.reduce((sum, r) => sum + r.result.events, 0);
    const lastSeq = (await nats.jsm.streams.info("EVENTS")).state.last_seq;
    lastStampMs = await stampAt(nats.jsm, "EVENTS", lastSeq);
    firstStampMs = await stampAt(nats.jsm, "EVENTS", 1);
    markerAtMs = Date.now();
    await publishMarkers(nats.nc, "events", markerAtMs + 1000);
    // 3.
    const covered = () => received.reduce((sum, r) => sum + r.result.events, 0);
    await waitUntil(() => engine.child.exitCode !== null || covered() >= published.published, CATCH_UP_TIMEOUT_MS, 50);
  } finally {
    exit = await stopChild(engine);
    await tap.stop();
  }
  // 4.
  const latencies: number[] = [];
  const closeWaits: number[] = [];
  const afterCloses: number[] = [];
  const bySecond = new Map<number, { firstAtMs: number; lastAtMs: number }>();
  let eventsCovered = 0;
  let caughtUpAtMs = NaN;
  let closedByMarker = 0;
  for (const { atMs, result } of received) {
    eventsCovered += result.events;
    if (Number.isNaN(caughtUpAtMs) && eventsCovered >= published.published) caughtUpAtMs = atMs;
    if (result.end_ms > lastStampMs) {
      closedByMarker++;
      continue;
    }
    latencies.push(atMs - result.last_published);
    closeWaits.push(result.end_ms - result.last_published);
    afterCloses.push(atMs - result.end_ms);
    const second = bySecond.get(result.end_ms);
    if (second) second.lastAtMs = atMs;
    else bySecond.set(result.end_ms, { firstAtMs: atMs, lastAtMs: atMs });
  }
  const seconds = [...bySecond.entries()];
  const latencySlopeMsPerS = slope(
    seconds.map(([endMs]) => endMs / 1000),
    seconds.map(([endMs, s]) => s.firstAtMs - endMs),
  );
  const isCaughtUp = !Number.isNaN(caughtUpAtMs);
  const endLagMs = isCaughtUp ? caughtUpAtMs - markerAtMs : Infinity;
  const spanMs = (isCaughtUp ? caughtUpAtMs : received.at(-1)?.atMs ?? firstStampMs) - firstStampMs;
  return {
    label,
    requestedRate: rate,
    checkpointInterval,
    publisher: published,
    results: received.length,
    resultsClosedByMarker: closedByMarker,
    eventsCovered,
    isCaughtUp,
    engineEventsPerSecond: (eventsCovered * 1000) / Math.max(spanMs, 1),
    resultsPerSecond: (received.length * 1000) / Math.max(spanMs, 1),
    latency: summarizeLatencies(latencies),
    closeWait: summarizeLatencies(closeWaits),
    afterClose: summarizeLatencies(afterCloses),
    firstResultAfterClose: summarizeLatencies(seconds.map(([endMs, s]) => s.firstAtMs - endMs)),
    burstMs: summarizeLatencies(seconds.map(([, s]) => s.lastAtMs - s.firstAtMs)),
    latencySlopeMsPerS,
    endLagMs,
    backlogAtPublisherExit: published.published - coveredAtPublisherExit,
    keptUp: isCaughtUp && endLagMs <= KEEP_UP_END_LAG_MS && latencySlopeMsPerS <= KEEP_UP_SLOPE_MS_PER_S,
    engine: parseSummary(engine.stderr()),
    engineExit: exit.isKilled ? "SIGKILL after 10 s" : exit.code === 0 ? "0" : `${exit.code ?? exit.signal}: ${engine.stderr().slice(-500)}`,
  };
}

// ---------------------------------------------------------------------------------------------
// The engine's ceiling: a backlog, read to its end

export type BacklogRun = { events: number; wallMs: number; engine?: EngineSummary; results: number };

/** `flusso run` over what `stream` holds (bounded), nothing else running: the engine's own events/s. */
export async function runEngineBacklog(nats: BenchNats, dir: string, stream: string, subject: string): Promise<BacklogRun> {
  await freshStream(nats.jsm, "OUT", ["out.latency"], 120_000);
  const events = (await nats.jsm.streams.info(stream)).state.messages;
  const yaml = writeEnginePipeline(dir, nats.url, { label: "backlog", stream, subject, bounded: true, checkpointInterval: CHECKPOINT_INTERVAL });
  const { wallMs, engine } = await runBoundedEngine(yaml, 60_000);
  const results = (await nats.jsm.streams.info("OUT")).state.messages;
  return { events, wallMs, engine, results };
}

/** `flusso run <yaml> --reset` of a bounded source to its end, killed after `timeoutMs`: its wall time and summary. */
export async function runBoundedEngine(yaml: string, timeoutMs: number): Promise<{ wallMs: number; engine: EngineSummary | undefined }> {
  const startedAtMs = performance.now();
  const engine = spawnFlusso(["run", yaml, "--reset"]);
  const timer = setTimeout(() => engine.child.kill("SIGKILL"), timeoutMs);
  const exit = await engine.exited;
  clearTimeout(timer);
  const wallMs = performance.now() - startedAtMs;
  if (exit.code !== 0) throw new Error(`the backlog run exited with ${exit.code ?? exit.signal}: ${engine.stderr().slice(-2000)}`);
  return { wallMs, engine: parseSummary(engine.stderr()) };
}

// ---------------------------------------------------------------------------------------------
// 2b. Through the engine, per event (BENCH_PIPELINE=per-event)

/** A features output: `newest_published_ms` is the stamp of the user's newest event (through `last`). */
type FeaturesOutput = { output: string; user_id: string; time_ms: number; events_per_min: number | null; [PUBLISHED_FEATURE]: number | null };

export type PerEventRun = {
  label: string;
  requestedRate: number;
  checkpointInterval: string;
  publisher: Published;
  /** Outputs of published events (the step's time is the event's stamp, and the feature carries it). */
  eventOutputs: number;
  /** Published events without an output: dropped by dedup, or a vector that did not change. */
  eventsWithoutOutput: number;
  /** Any other output: the markers', wake-ups' (none expected: the 1 min lookback outlasts a run). */
  otherOutputs: number;
  /** Every partition's end marker came out: every published event had been processed. */
  isCaughtUp: boolean;
  /** Published events per second, from the first publish stamp to the last marker's output. */
  engineEventsPerSecond: number;
  outputsPerSecond: number;
  /** Receive time of an output minus its `newest_published_ms`: publish to output, per event. */
  latency: LatencySummary;
  /** The same, for events published after the run's first WARMUP_SECONDS (the engine started just before it). */
  steady: LatencySummary;
  /** Latency of the first and of the last 10% of the outputs (a backlog growing shows here). */
  latencyFirstTenth: LatencySummary;
  latencyLastTenth: LatencySummary;
  /** Least-squares slope of latency over the publish time, ms per second of the run: a backlog growing. */
  latencySlopeMsPerS: number;
  /** Per second of publish time from the first stamp: outputs, and their exact p50, p99 and max latency. */
  bySecond: Array<{ second: number; outputs: number; p50Ms: number; p99Ms: number; maxMs: number }>;
  /** From the end markers' publish to the last of their outputs: the engine's backlog at the end. */
  endLagMs: number;
  /** Published events minus event outputs received when the publisher exited (dedup's drops included). */
  backlogAtPublisherExit: number;
  keptUp: boolean;
  engine?: EngineSummary;
  engineExit: string;
};

/** One event per partition stamped now (after every stamp the publisher wrote): a distinct user each, so dedup keeps them. */
function publishPerEventMarkers(nc: NatsConnection, subject: string): Promise<number> {
  return publishMarkerEvents(nc, subject, (user, stampMs) => ({ user_id: user, timestamp: stampMs, event_type: "marker", page: "", session_duration_sec: 0 }));
}

/**
 * Publishes `event(user, stampMs)` to each partition, a marker user of its own per partition, stamped
 * now (after every stamp the publisher wrote); resolves with the stamp once every one is acked.
 */
export async function publishMarkerEvents(nc: NatsConnection, subject: string, event: (user: string, stampMs: number) => object): Promise<number> {
  const js = jetstream(nc);
  const stampMs = Date.now();
  const acks: Promise<unknown>[] = [];
  for (let p = 0; p < PARTITIONS; p++) acks.push(js.publish(`${subject}.${p}`, JSON.stringify({ ...event(`${MARKER_USER}-${p}`, stampMs), [STAMP]: stampMs })));
  await Promise.all(acks);
  return stampMs;
}

/**
 * As `runEngine`, with the per-event pipeline: every output of a published event is one latency
 * sample. Dedup drops a few events, so the outputs to expect are not known in advance: the end markers
 * are (one per partition, read in order, written in order), and the run is complete when all came out.
 */
export async function runEnginePerEvent(nats: BenchNats, dir: string, label: string, rate: number, events: number, checkpointInterval = CHECKPOINT_INTERVAL): Promise<PerEventRun> {
  // 1.
  await freshStream(nats.jsm, "EVENTS", ["events.>"]);
  await freshStream(nats.jsm, "OUT", ["out.latency"], 120_000);
  const yaml = writeEnginePipeline(dir, nats.url, { label, stream: "EVENTS", subject: "events", bounded: false, checkpointInterval }, "per-event");
  const atMs: number[] = [];
  const stampMs: number[] = [];
  let otherOutputs = 0;
  let markersSeen = 0;
  let lastMarkerAtMs = NaN;
  const tap = await tapStream(nats.nc, "OUT", (msg, receivedAtMs) => {
    const out = JSON.parse(msg.string()) as FeaturesOutput;
    const stamp = out[PUBLISHED_FEATURE];
    if (out.user_id.startsWith(MARKER_USER)) {
      otherOutputs++;
      if (++markersSeen === PARTITIONS) lastMarkerAtMs = receivedAtMs;
    } else if (out.output === "features" && stamp !== null && out.time_ms === stamp) {
      atMs.push(receivedAtMs);
      stampMs.push(stamp);
    } else {
      otherOutputs++;
    }
  });
  const engine = spawnFlusso(["run", yaml, "--reset"]);
  let published: Published;
  let markerAtMs = NaN;
  let firstStampMs = NaN;
  let outputsAtPublisherExit = 0;
  let exit: Exit & { isKilled: boolean };
  try {
    const isReady = await waitUntil(async () => engine.child.exitCode !== null || (await nats.jsm.streams.info("EVENTS")).state.consumer_count > 0, 30_000, 50);
    if (!isReady || engine.child.exitCode !== null) throw new Error(`the engine did not start reading EVENTS: ${engine.stderr().slice(-2000)}`);
    // 2.
    published = await runPublisher(nats, "events", "EVENTS", events, rate);
    outputsAtPublisherExit = atMs.length;
    firstStampMs = await stampAt(nats.jsm, "EVENTS", 1);
    markerAtMs = await publishPerEventMarkers(nats.nc, "events");
    // 3.
    await waitUntil(() => engine.child.exitCode !== null || markersSeen >= PARTITIONS, CATCH_UP_TIMEOUT_MS, 20);
  } finally {
    exit = await stopChild(engine);
    await tap.stop();
  }
  // 4.
  const { latencies, isCaughtUp, endLagMs, spanMs, latencySlopeMsPerS } = markedRunEnd({ atMs, stampMs, markersSeen, lastMarkerAtMs, markerAtMs, firstStampMs });
  const tenth = Math.max(1, Math.floor(latencies.length / 10));
  return {
    label,
    requestedRate: rate,
    checkpointInterval,
    publisher: published,
    eventOutputs: atMs.length,
    eventsWithoutOutput: published.published - atMs.length,
    otherOutputs,
    isCaughtUp,
    engineEventsPerSecond: isCaughtUp ? (published.published * 1000) / Math.max(spanMs, 1) : (atMs.length * 1000) / Math.max(spanMs, 1),
    outputsPerSecond: (atMs.length * 1000) / Math.max(spanMs, 1),
    latency: summarizeLatencies(latencies),
    steady: summarizeLatencies(afterWarmUp(latencies, stampMs, firstStampMs)),
    latencyFirstTenth: summarizeLatencies(latencies.slice(0, tenth)),
    latencyLastTenth: summarizeLatencies(latencies.slice(-tenth)),
    latencySlopeMsPerS,
    bySecond: latencyBySecond(stampMs, latencies, firstStampMs),
    endLagMs,
    backlogAtPublisherExit: published.published - outputsAtPublisherExit,
    keptUp: isCaughtUp && endLagMs <= KEEP_UP_END_LAG_MS && latencySlopeMsPerS <= KEEP_UP_SLOPE_MS_PER_S,
    engine: parseSummary(engine.stderr()),
    engineExit: exit.isKilled ? "SIGKILL after 10 s" : exit.code === 0 ? "0" : `${exit.code ?? exit.signal}: ${engine.stderr().slice(-500)}`,
  };
}

/**
 * A run ended by one marker per partition (published at `markerAtMs`, the last one out at
 * `lastMarkerAtMs`), its outputs received at `atMs` for events stamped `stampMs`: their latencies,
 * whether every marker came out, the last one's lag, the outputs' span from the first stamp (to the
 * last marker, or the last output when they did not all come) and the latency's slope over the
 * run (ms per second of publishing).
 */
export function markedRunEnd(run: { atMs: number[]; stampMs: number[]; markersSeen: number; lastMarkerAtMs: number; markerAtMs: number; firstStampMs: number }) {
  const { atMs, stampMs, firstStampMs } = run;
  const latencies = atMs.map((at, i) => at - stampMs[i]);
  const isCaughtUp = run.markersSeen >= PARTITIONS;
  const endLagMs = isCaughtUp ? run.lastMarkerAtMs - run.markerAtMs : Infinity;
  const spanMs = (isCaughtUp ? run.lastMarkerAtMs : atMs.at(-1) ?? firstStampMs) - firstStampMs;
  const latencySlopeMsPerS = slope(
    stampMs.map((s) => s / 1000),
    latencies,
  );
  return { latencies, isCaughtUp, endLagMs, spanMs, latencySlopeMsPerS };
}

export function latencyBySecond(stampMs: number[], latencies: number[], firstStampMs: number): PerEventRun["bySecond"] {
  const seconds: number[][] = [];
  for (let i = 0; i < latencies.length; i++) (seconds[Math.max(0, Math.floor((stampMs[i] - firstStampMs) / 1000))] ??= []).push(latencies[i]);
  return Array.from(seconds, (values = [], second) => {
    const sorted = values.sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
    return { second, outputs: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted.at(-1) ?? NaN };
  });
}

/** The latencies of events stamped at least `warmupSeconds` after `firstStampMs`. */
export function afterWarmUp(latencies: number[], stampsMs: number[], firstStampMs: number, warmupSeconds = WARMUP_SECONDS): number[] {
  const fromMs = firstStampMs + warmupSeconds * 1000;
  return latencies.filter((_, i) => stampsMs[i] >= fromMs);
}
