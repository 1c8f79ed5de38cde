// State queries against a running job: config/retention.yaml fed from NATS at a fixed rate and writing
// its outputs to NATS, with and without 1,000 GET /api/v1/keys/{key} per second from another process
// (bench/queryLoad.ts). Measures the queries' p50/p99, and the job's throughput and latency both ways:
// paced runs (output latency and end-to-end latency from the publisher's stamp, read from the job's own
// /metrics histograms over the run after its warm-up) and backlog runs (how fast the job drains a
// stream that is already full). Prints tables, writes bench/results/queries.json.
// Run: npm run bench:queries   (BENCH_RATE=5000 BENCH_SECONDS=30 BENCH_REPEATS=2 BENCH_BACKLOG=300000)
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { parseDocument } from "yaml";
import { freePort, startNatsServer, type NatsServer } from "../test/natsServer.ts";
import { fmt, machineInfo, table, verdict } from "./benchUtil.ts";
import { freshStream, killChildren, spawnNode, stopChild, waitUntil, type ChildRun } from "./children.ts";
import type { QueryLoadResult } from "./queryLoad.ts";

const ROOT = resolve(import.meta.dirname, "..");
const CLI = join(ROOT, "bin/flusso.js");
const RATE = Number(process.env.BENCH_RATE ?? 5000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 2);
const BACKLOG_EVENTS = Number(process.env.BENCH_BACKLOG ?? 300_000);
const QUERY_RATE = Number(process.env.BENCH_QUERY_RATE ?? 1000);
/** Latency samples of the first seconds are left out: a fresh job (JIT, first keys) runs a short backlog there. */
const WARMUP_SECONDS = 5;
const PARTITIONS = 4;
/** `flusso publish generator` makes this many users (u000000...): the keys the queries ask for. */
const PUBLISHED_USERS = 10_000;
const STAMP = "published_at_ms";
const CATCH_UP_TIMEOUT_MS = 120_000;
/** The job's last checkpoint (and the query load's figures) may take this long after SIGTERM. */
const STOP_GRACE_MS = 15_000;
/** Output messages carry ids from their identity: JetStream drops a resend within this window. */
const DUPLICATE_WINDOW_MS = 120_000;
const TARGET_QUERY_P99_MS = 10;
const TARGET_DIFFERENCE = 0.1;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

// ---------------------------------------------------------------------------------------------
// Children

/** A check that asks the job over HTTP: a job not yet listening (or gone) has not got there yet. */
function overHttp(check: () => Promise<boolean>): () => Promise<boolean> {
  return () => check().catch(() => false);
}

// ---------------------------------------------------------------------------------------------
// The job

/** config/retention.yaml as shipped, but reading EVENTS and writing every output kind to OUT, with its HTTP server on. */
function writePipeline(dir: string, natsUrl: string, httpPort: number, bounded: boolean): string {
  const doc = parseDocument(readFileSync(join(ROOT, "config/retention.yaml"), "utf8"));
  doc.set("source", { nats: { servers: natsUrl, stream: "EVENTS", subjects: ["events.>"], partitions: PARTITIONS, format: "json", ...(bounded ? { bounded: true } : {}) } });
  doc.setIn(["schema", STAMP], { type: "number" });
  doc.set("state", { dir: "./state" });
  doc.set("sinks", [{ nats: { servers: natsUrl, stream: "OUT", subject: "out.retention", format: "json" } }]);
  doc.set("deadLetter", { file: { path: "./out/dead-letter.jsonl" } });
  doc.set("http", { listen: `127.0.0.1:${httpPort}`, latencyStampField: STAMP });
  const path = join(dir, "retention-nats.yaml");
  writeFileSync(path, doc.toString());
  return path;
}

type PipelineAnswer = { status: { phase: string }; counters: { read: number; outputs: number } };

async function pipelineNow(url: string): Promise<PipelineAnswer> {
  const res = await fetch(`${url}api/v1/pipeline`);
  return (await res.json()) as PipelineAnswer;
}

/** Buckets of a Prometheus histogram (cumulative counts by upper bound), from the exposition text. */
export function histogramOf(exposition: string, name: string): Array<{ le: number; count: number }> {
  const buckets: Array<{ le: number; count: number }> = [];
  const pattern = new RegExp(`^${name}_bucket\\{[^}]*le="([^"]+)"[^}]*\\} (\\S+)$`, "gm");
  for (const m of exposition.matchAll(pattern)) buckets.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), count: Number(m[2]) });
  return buckets.sort((a, b) => a.le - b.le);
}

/** As Prometheus's histogram_quantile: linear within the bucket the quantile falls in (ms). */
export function quantileOf(buckets: Array<{ le: number; count: number }>, q: number): number {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lowerLe * 1000;
      return (lowerLe + ((le - lowerLe) * (rank - lowerCount)) / Math.max(count - lowerCount, 1)) * 1000;
    }
    lowerLe = le;
    lowerCount = count;
  }
  return NaN;
}

/** `after` minus `before`, bucket by bucket: the samples taken between two scrapes. */
function difference(after: Array<{ le: number; count: number }>, before: Array<{ le: number; count: number }>): Array<{ le: number; count: number }> {
  return after.map((b, i) => ({ le: b.le, count: b.count - (before[i]?.count ?? 0) }));
}

async function scrape(url: string): Promise<string> {
  return (await fetch(`${url}metrics`)).text();
}

type LatencyFigures = { samples: number; p50Ms: number; p99Ms: number };

/** A gauge or counter's value in an exposition (the first series of that name and labels). */
function valueOf(exposition: string, series: string): number {
  const line = exposition.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

/**
 * What held the job's thread between two scrapes: its event-loop delay (prom-client resets it at each
 * scrape, so the second scrape's figures cover the time between) and its garbage collections.
 */
type ThreadFigures = {
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  gcMs: Record<"minor" | "major" | "incremental", { count: number; totalMs: number }>;
  /** CPU the job's process used (user + system, all its threads), in seconds. */
  cpuSeconds: number;
};

function threadBetween(before: string, after: string): ThreadFigures {
  const gc = (kind: string) => ({
    count: valueOf(after, `nodejs_gc_duration_seconds_count{kind="${kind}"}`) - (valueOf(before, `nodejs_gc_duration_seconds_count{kind="${kind}"}`) || 0),
    totalMs: (valueOf(after, `nodejs_gc_duration_seconds_sum{kind="${kind}"}`) - (valueOf(before, `nodejs_gc_duration_seconds_sum{kind="${kind}"}`) || 0)) * 1000,
  });
  return {
    loopDelayP99Ms: valueOf(after, "nodejs_eventloop_lag_p99_seconds") * 1000,
    loopDelayMaxMs: valueOf(after, "nodejs_eventloop_lag_max_seconds") * 1000,
    gcMs: { minor: gc("minor"), major: gc("major"), incremental: gc("incremental") },
    cpuSeconds: valueOf(after, "process_cpu_seconds_total") - valueOf(before, "process_cpu_seconds_total"),
  };
}

function latencyBetween(before: string, after: string, name: string): LatencyFigures {
  const buckets = difference(histogramOf(after, name), histogramOf(before, name));
  return { samples: buckets.at(-1)?.count ?? 0, p50Ms: quantileOf(buckets, 0.5), p99Ms: quantileOf(buckets, 0.99) };
}

// ---------------------------------------------------------------------------------------------
// Runs

type Nats = { url: string; jsm: JetStreamManager };


function startQueries(jobUrl: string): ChildRun {
  return spawnNode(["--import", "tsx", "bench/queryLoad.ts", "--url", jobUrl, "--rate", String(QUERY_RATE), "--users", String(PUBLISHED_USERS)]);
}

async function finishQueries(queries: ChildRun | undefined): Promise<QueryLoadResult | undefined> {
  if (queries === undefined) return undefined;
  await stopChild(queries, STOP_GRACE_MS);
  const line = queries.stdout().trim().split("\n").at(-1);
  if (!line) throw new Error(`the query load printed nothing: ${queries.stderr().slice(-2000)}`);
  return JSON.parse(line) as QueryLoadResult;
}

async function startJob(dir: string, nats: Nats, bounded: boolean): Promise<{ job: ChildRun; url: string }> {
  rmSync(join(dir, "state"), { recursive: true, force: true });
  const port = await freePort();
  const yaml = writePipeline(dir, nats.url, port, bounded);
  const job = spawnNode([...(process.env.BENCH_ENGINE_NODE_ARGS?.split(" ") ?? []), CLI, "run", yaml, "--reset", "--quiet"]);
  job.child.stderr!.on("data", (c: Buffer) => process.env.BENCH_SHOW_JOB && process.stderr.write(c));
  const url = `http://127.0.0.1:${port}/`;
  const isReady = await waitUntil(overHttp(async () => job.child.exitCode === null && (await fetch(`${url}readyz`)).status === 200), 60_000, 100);
  if (!isReady) throw new Error(`the job did not become ready: ${job.stderr().slice(-2000)}`);
  return { job, url };
}

type PacedRun = {
  withQueries: boolean;
  published: number;
  publishSeconds: number;
  /** Events read per second, from the publisher's start to the job having read every event. */
  eventsPerSecond: number;
  /** From the publisher's exit to the job having read every event: the backlog it carried. */
  catchUpMs: number;
  outputs: number;
  outputLatency: LatencyFigures;
  endToEnd: LatencyFigures;
  thread: ThreadFigures;
  queries?: QueryLoadResult;
};

async function pacedRun(dir: string, nats: Nats, withQueries: boolean): Promise<PacedRun> {
  await freshStream(nats.jsm, "EVENTS", ["events.>"], DUPLICATE_WINDOW_MS);
  await freshStream(nats.jsm, "OUT", ["out.>"], DUPLICATE_WINDOW_MS);
  const { job, url } = await startJob(dir, nats, false);
  const queries = withQueries ? startQueries(url) : undefined;
  try {
    const events = RATE * SECONDS;
    const startedAtMs = Date.now();
    const publisher = spawnNode([CLI, "publish", "generator", "--events", String(events), "--rate", String(RATE), "--stamp", STAMP, "--subject", "events", "--stream", "EVENTS", "--partitions", String(PARTITIONS), "--servers", nats.url, "--quiet"]);
    await new Promise((r) => setTimeout(r, WARMUP_SECONDS * 1000));
    const before = await scrape(url);
    const published = await publisher.exited;
    if (published.code !== 0) throw new Error(`flusso publish exited with ${published.code ?? published.signal}: ${publisher.stderr().slice(-2000)}`);
    const publishedAtMs = Date.now();
    const count = (await nats.jsm.streams.info("EVENTS")).state.messages;
    let readAllAtMs = NaN;
    const caughtUp = await waitUntil(overHttp(async () => {
      if ((await pipelineNow(url)).counters.read < count) return false;
      readAllAtMs = Date.now();
      return true;
    }), CATCH_UP_TIMEOUT_MS, 50);
    if (!caughtUp) throw new Error(`the job did not read the ${count} events published within ${CATCH_UP_TIMEOUT_MS} ms`);
    // The last outputs leave at the next checkpoint's commit.
    await new Promise((r) => setTimeout(r, 1000));
    const after = await scrape(url);
    const answer = await pipelineNow(url);
    return {
      withQueries,
      published: count,
      publishSeconds: (publishedAtMs - startedAtMs) / 1000,
      eventsPerSecond: (count * 1000) / (readAllAtMs - startedAtMs),
      catchUpMs: readAllAtMs - publishedAtMs,
      outputs: answer.counters.outputs,
      outputLatency: latencyBetween(before, after, "flusso_output_latency_seconds"),
      endToEnd: latencyBetween(before, after, "flusso_end_to_end_latency_seconds"),
      thread: threadBetween(before, after),
      queries: await finishQueries(queries),
    };
  } finally {
    await finishQueries(queries).catch(() => undefined);
    await stopChild(job, STOP_GRACE_MS);
  }
}

type BacklogRun = { withQueries: boolean; events: number; seconds: number; eventsPerSecond: number; jobCpuSeconds: number; queries?: QueryLoadResult };

/** The job reads a full stream to its end (bounded): from its first event read to its last. */
async function backlogRun(dir: string, nats: Nats, events: number, withQueries: boolean): Promise<BacklogRun> {
  await freshStream(nats.jsm, "OUT", ["out.>"], DUPLICATE_WINDOW_MS);
  const { job, url } = await startJob(dir, nats, true);
  const queries = withQueries ? startQueries(url) : undefined;
  try {
    const before = await scrape(url);
    let firstReadAtMs = NaN;
    let lastReadAtMs = NaN;
    const isDone = await waitUntil(overHttp(async () => {
      const { counters } = await pipelineNow(url);
      if (counters.read > 0 && Number.isNaN(firstReadAtMs)) firstReadAtMs = Date.now();
      if (counters.read < events) return false;
      lastReadAtMs = Date.now();
      return true;
    }), CATCH_UP_TIMEOUT_MS, 20);
    if (!isDone) throw new Error(`the backlog run did not read ${events} events within ${CATCH_UP_TIMEOUT_MS} ms`);
    const seconds = (lastReadAtMs - firstReadAtMs) / 1000;
    const jobCpuSeconds = valueOf(await scrape(url), "process_cpu_seconds_total") - valueOf(before, "process_cpu_seconds_total");
    return { withQueries, events, seconds, eventsPerSecond: events / seconds, jobCpuSeconds, queries: await finishQueries(queries) };
  } finally {
    await finishQueries(queries).catch(() => undefined);
    await stopChild(job, STOP_GRACE_MS);
  }
}

// ---------------------------------------------------------------------------------------------

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / Math.max(values.length, 1);
const change = (withQ: number, without: number) => (withQ - without) / without;
const pct = (x: number) => `${x >= 0 ? "+" : ""}${fmt(x * 100, 1)}%`;
const ms = (x: number) => (Number.isFinite(x) ? fmt(x, x < 10 ? 2 : 0) : "n/a");

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-queries-bench-"));
  let server: NatsServer | undefined;
  process.once("exit", () => {
    killChildren();
    if (server) process.kill(server.pid, "SIGKILL");
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));
  server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const nats: Nats = { url: server.url, jsm: await jetstreamManager(nc) };
  const startedAt = new Date().toISOString();
  const paced: PacedRun[] = [];
  const backlog: BacklogRun[] = [];
  try {
    for (let i = 0; i < REPEATS; i++) {
      for (const withQueries of i % 2 === 0 ? [false, true] : [true, false]) {
        log(`paced ${RATE}/s for ${SECONDS} s, ${withQueries ? `with ${QUERY_RATE} queries/s` : "without queries"}`);
        const run = await pacedRun(dir, nats, withQueries);
        log(`  ${fmt(run.eventsPerSecond)} events/s, end-to-end p50 ${ms(run.endToEnd.p50Ms)} p99 ${ms(run.endToEnd.p99Ms)} ms` + (run.queries ? `, queries p50 ${ms(run.queries.latency.p50Ms)} p99 ${ms(run.queries.latency.p99Ms)} ms` : ""));
        log(`  job thread: loop delay p99 ${ms(run.thread.loopDelayP99Ms)} max ${ms(run.thread.loopDelayMaxMs)} ms; gc ${Object.entries(run.thread.gcMs).map(([k, g]) => `${k} ${g.count}x ${ms(g.totalMs)} ms`).join(", ")}`);
        paced.push(run);
      }
    }
    log(`filling EVENTS with ${fmt(BACKLOG_EVENTS)} events for the backlog runs`);
    await freshStream(nats.jsm, "EVENTS", ["events.>"], DUPLICATE_WINDOW_MS);
    const filler = spawnNode([CLI, "publish", "generator", "--events", String(BACKLOG_EVENTS), "--subject", "events", "--stream", "EVENTS", "--partitions", String(PARTITIONS), "--servers", nats.url, "--quiet"]);
    if ((await filler.exited).code !== 0) throw new Error(`flusso publish exited: ${filler.stderr().slice(-2000)}`);
    const events = (await nats.jsm.streams.info("EVENTS")).state.messages;
    for (let i = 0; i < REPEATS; i++) {
      for (const withQueries of i % 2 === 0 ? [false, true] : [true, false]) {
        log(`backlog of ${fmt(events)}, ${withQueries ? `with ${QUERY_RATE} queries/s` : "without queries"}`);
        const run = await backlogRun(dir, nats, events, withQueries);
        log(`  ${fmt(run.eventsPerSecond)} events/s` + (run.queries ? `, queries p50 ${ms(run.queries.latency.p50Ms)} p99 ${ms(run.queries.latency.p99Ms)} ms` : ""));
        backlog.push(run);
      }
    }
  } finally {
    await nc.close();
    await server.stop();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  }
  report(startedAt, paced, backlog);
}

function report(startedAt: string, paced: PacedRun[], backlog: BacklogRun[]): void {
  const side = <T extends { withQueries: boolean }>(runs: T[], withQueries: boolean) => runs.filter((r) => r.withQueries === withQueries);
  const pacedRows = paced.map((r) => [
    r.withQueries ? "with" : "without",
    fmt(r.eventsPerSecond),
    fmt(r.catchUpMs),
    ms(r.outputLatency.p50Ms),
    ms(r.outputLatency.p99Ms),
    ms(r.endToEnd.p50Ms),
    ms(r.endToEnd.p99Ms),
    r.queries ? `${ms(r.queries.latency.p50Ms)} / ${ms(r.queries.latency.p99Ms)} / ${ms(r.queries.latency.maxMs)}` : "",
    r.queries ? fmt(r.queries.achievedRate) : "",
    fmt(r.thread.cpuSeconds, 1),
    r.queries ? fmt(r.queries.cpuSeconds, 1) : "",
  ]);
  process.stdout.write(`\nPaced: ${fmt(RATE)} events/s for ${SECONDS} s (latencies after a ${WARMUP_SECONDS} s warm-up, from the job's histograms)\n`);
  process.stdout.write(`${table(["queries", "events/s", "catch-up ms", "output p50", "output p99", "e2e p50", "e2e p99", "query p50/p99/max ms", "queries/s", "job CPU s", "query client CPU s"], pacedRows, [1, 2, 3, 4, 5, 6, 8, 9, 10])}\n`);
  const backlogRows = backlog.map((r) => [r.withQueries ? "with" : "without", fmt(r.events), fmt(r.seconds, 2), fmt(r.eventsPerSecond), r.queries ? `${ms(r.queries.latency.p50Ms)} / ${ms(r.queries.latency.p99Ms)}` : "", fmt(r.jobCpuSeconds, 1), r.queries ? fmt(r.queries.cpuSeconds, 1) : ""]);
  process.stdout.write(`\nBacklog: the job drains a full stream\n${table(["queries", "events", "seconds", "events/s", "query p50/p99 ms", "job CPU s", "query client CPU s"], backlogRows, [1, 2, 3, 5, 6])}\n`);

  const allQueries = [...paced, ...backlog].flatMap((r) => (r.queries ? [r.queries] : []));
  const pacedQueries = side(paced, true).flatMap((r) => (r.queries ? [r.queries] : []));
  const queryP99 = Math.max(...pacedQueries.map((q) => q.latency.p99Ms));
  const e2eP99 = change(mean(side(paced, true).map((r) => r.endToEnd.p99Ms)), mean(side(paced, false).map((r) => r.endToEnd.p99Ms)));
  const outputP99 = change(mean(side(paced, true).map((r) => r.outputLatency.p99Ms)), mean(side(paced, false).map((r) => r.outputLatency.p99Ms)));
  const drain = change(mean(side(backlog, true).map((r) => r.eventsPerSecond)), mean(side(backlog, false).map((r) => r.eventsPerSecond)));
  const targets = {
    queryP99: { target: `query p99 < ${TARGET_QUERY_P99_MS} ms at ${QUERY_RATE}/s (paced runs, worst)`, measured: `${ms(queryP99)} ms`, verdict: verdict(queryP99 < TARGET_QUERY_P99_MS) },
    throughput: { target: `backlog throughput within ${TARGET_DIFFERENCE * 100}%`, measured: pct(drain), verdict: verdict(Math.abs(drain) < TARGET_DIFFERENCE) },
    endToEndP99: { target: `end-to-end p99 within ${TARGET_DIFFERENCE * 100}%`, measured: pct(e2eP99), verdict: verdict(Math.abs(e2eP99) < TARGET_DIFFERENCE) },
    outputP99: { target: `output latency p99 within ${TARGET_DIFFERENCE * 100}%`, measured: pct(outputP99), verdict: verdict(Math.abs(outputP99) < TARGET_DIFFERENCE) },
  };
  process.stdout.write(`\n${table(["target", "measured", "verdict"], Object.values(targets).map((t) => [t.target, t.measured, t.verdict]))}\n`);
  process.stdout.write(`load average (1/5/15 min): ${loadavg().map((x) => fmt(x, 2)).join(" / ")}; ${allQueries.reduce((n, q) => n + q.sent, 0)} queries sent in all\n`);
  const out = join(ROOT, "bench/results/queries.json");
  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ startedAt, machine: machineInfo(ROOT), loadAverage: loadavg(), settings: { rate: RATE, seconds: SECONDS, repeats: REPEATS, backlogEvents: BACKLOG_EVENTS, queryRate: QUERY_RATE, warmupSeconds: WARMUP_SECONDS }, targets, paced, backlog }, null, 2)}\n`,
  );
  log(`wrote ${out}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
