// `npm run bench:latency`: config/retention.yaml through NATS JetStream, in one run. A private
// nats-server; at each paced rate the raw floor (`flusso publish` straight to a consumer) and the
// engine (retention's stages as shipped, fed from a stream, every output to a stream); a backlog the
// engine drains alone; the highest rate it sustains; a latency-over-time plot of one run with its
// checkpoints and cluster runs marked. Prints a table, writes bench/results/latency-retention.json,
// latency-retention-series.json and latency-retention.png. What it measures: bench/NATS.md.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { fmt, machineInfo, machineLine, table, verdict } from "./benchUtil.ts";
import { writeLatencyPlot } from "./latencyPlot.ts";
import type { LatencySummary } from "./natsConsumer.ts";
import { privateNatsServer } from "./children.ts";
import { CHECKPOINT_INTERVAL, KEEP_UP_END_LAG_MS, KEEP_UP_SLOPE_MS_PER_S, killChildren, runRaw, type BenchNats, type RawRun } from "./natsLatencyRuns.ts";
import { EVENT_TIME_SPEEDUP, RETENTION_WARMUP_SECONDS as WARMUP_SECONDS, RETENTION_YAML, runRetention, runRetentionBacklog, type RetentionBacklog, type RetentionRun } from "./retentionLatencyRuns.ts";

const ROOT = resolve(import.meta.dirname, "..");
const RATES = (process.env.BENCH_RATES ?? "2000,5000,10000,15000,20000,25000").split(",").map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
/** The paced run whose every output is kept and plotted. */
const PLOT_RATE = Number(process.env.BENCH_PLOT_RATE ?? 10_000);
/** Events of the backlog the engine drains alone (its ceiling, where the search starts). */
const BACKLOG_EVENTS = Number(process.env.BENCH_BACKLOG_EVENTS ?? 200_000);
/** Paced runs the search for the highest sustained rate may add (0: none, the paced runs decide). */
const PROBES = Number(process.env.BENCH_PROBES ?? 3);
/** The search stops when the rate that kept up and the one that did not are this close (share of the first). */
const SEARCH_RESOLUTION = 0.1;
const TARGETS = { p99At10kMs: 50, p99UpTo25kMs: 500, highestSustained: 30_000 } as const;
const RESULTS = "bench/results/latency-retention.json";
const SERIES = "bench/results/latency-retention-series.json";
const PLOT = "bench/results/latency-retention.png";

for (const [name, value] of Object.entries({ BENCH_SECONDS: SECONDS, BENCH_PLOT_RATE: PLOT_RATE, BENCH_BACKLOG_EVENTS: BACKLOG_EVENTS, BENCH_PROBES: PROBES })) {
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number >= 0, got ${JSON.stringify(process.env[name])}`);
}
if (RATES.some((r) => !Number.isInteger(r) || r <= 0)) throw new Error(`BENCH_RATES must list whole rates > 0 (events/s), got ${JSON.stringify(process.env.BENCH_RATES)}`);

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

const ms = (value: number) => (Number.isFinite(value) ? fmt(value, value < 10 ? 1 : 0) : String(value));
const roundTo = (value: number, step: number) => Math.round(value / step) * step;

type Highest = { ratePerSecond: number; from: string; probes: string[] };

async function main(): Promise<void> {
  const startedAtMs = performance.now();
  const dir = mkdtempSync(join(tmpdir(), "flusso-latency-bench-"));
  const server = await privateNatsServer();
  const nc = await connect({ servers: server.url, name: "latency bench" });
  const nats: BenchNats = { url: server.url, nc, jsm: await jetstreamManager(nc) };
  log(`nats-server at ${server.url}, work dir ${dir}; ${RETENTION_YAML}, checkpoint every ${CHECKPOINT_INTERVAL}, ${SECONDS} s per rate, event time ${EVENT_TIME_SPEEDUP || "(generator's pace)"}x the clock`);
  const loadAtStart: Record<string, number[]> = {};
  const noteLoad = (label: string) => (loadAtStart[label] = loadavg().map((x) => Math.round(x * 100) / 100));
  try {
    // 1. The raw floor at each rate.
    const raw: RawRun[] = [];
    for (const rate of RATES) {
      noteLoad(`raw-${rate}`);
      raw.push(await runRaw(nats, rate, rate * SECONDS));
      log(`raw ${fmt(rate)}/s: ${fmt(raw.at(-1)!.publisher.ratePerSecond)} published/s, p50 ${ms(raw.at(-1)!.latency.p50Ms)} p99 ${ms(raw.at(-1)!.latency.p99Ms)} ms`);
    }

    // 2. The engine alone over a backlog: its ceiling.
    noteLoad("backlog");
    const backlog = await runRetentionBacklog(nats, dir, BACKLOG_EVENTS);
    log(`backlog: ${fmt(backlog.events)} events drained at ${fmt(backlog.engine?.ratePerSecond ?? NaN)} events/s, ${fmt(backlog.outputs)} outputs`);

    // 3. The engine at each paced rate; the plotted run keeps every output.
    const runs: RetentionRun[] = [];
    const runAt = async (rate: number, label = `rate-${rate}`) => {
      noteLoad(label);
      const run = await runRetention(nats, dir, label, rate, rate * SECONDS, { keepSeries: rate === PLOT_RATE && !runs.some((r) => r.series) });
      runs.push(run);
      log(
        `engine ${label}: ${fmt(run.publisher.ratePerSecond)} published/s, p50 ${ms(run.latency.p50Ms)} p99 ${ms(run.latency.p99Ms)} max ${ms(run.latency.maxMs)} ms, ` +
          `end lag ${ms(run.endLagMs)} ms, slope ${fmt(run.latencySlopeMsPerS, 1)} ms/s, kept up ${run.keptUp}; ${run.checkpoints.count} checkpoints ` +
          `(p50 ${ms(run.checkpoints.totalMs.p50Ms)} ms to durable), ${run.clusterRuns.length} cluster runs; load ${loadAtStart[label].join(" ")}`,
      );
      return run;
    };
    for (const rate of RATES) await runAt(rate);

    // 4. The highest sustained rate.
    const highest = await highestSustained(runs, backlog, runAt);
    log(`highest sustained: ${fmt(highest.ratePerSecond)} events/s (${highest.from})`);

    // 5. The plot.
    const plotted = runs.find((r) => r.series);
    let plot: string;
    mkdirSync(join(ROOT, "bench/results"), { recursive: true });
    if (plotted?.series && plotted.checkpointMarks) {
      const data = {
        title: `${RETENTION_YAML} through NATS at ${fmt(plotted.publisher.ratePerSecond)} events/s (asked ${fmt(plotted.requestedRate)}): p50 ${ms(plotted.latency.p50Ms)} ms, p99 ${ms(plotted.latency.p99Ms)} ms; checkpoint every ${plotted.checkpointInterval}`,
        stampMs: plotted.series.stampMs,
        latencyMs: plotted.series.latencyMs,
        checkpoints: plotted.checkpointMarks,
        clusterRuns: plotted.clusterRuns,
      };
      writeFileSync(join(ROOT, SERIES), JSON.stringify({ run: plotted.label, originMs: plotted.originMs, ...data }) + "\n");
      const drawn = await writeLatencyPlot(data, join(ROOT, PLOT));
      plot = drawn.isWritten ? PLOT : `skipped: ${drawn.reason}`;
    } else {
      plot = `skipped: no run at BENCH_PLOT_RATE=${PLOT_RATE} (BENCH_RATES=${RATES.join(",")})`;
    }
    log(`plot: ${plot}; series in ${SERIES}`);

    // 6. Targets, JSON, table.
    const targets = evaluate(runs, highest);
    const natsServer = spawnSync("nats-server", ["--version"], { encoding: "utf8" }).stdout.trim();
    const machine = machineInfo(ROOT);
    const results = {
      machine,
      natsServer,
      pipeline: RETENTION_YAML,
      checkpointInterval: CHECKPOINT_INTERVAL,
      eventTimeSpeedup: EVENT_TIME_SPEEDUP,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      keptUp: `the end markers' outputs within ${KEEP_UP_END_LAG_MS} ms of their publish, and the latency's slope over the run under ${KEEP_UP_SLOPE_MS_PER_S} ms/s`,
      loadAtStart,
      raw,
      backlog,
      engine: runs.map(({ series, checkpointMarks, ...run }) => run),
      highestSustained: highest,
      targets,
      plot,
      series: SERIES,
    };
    writeFileSync(join(ROOT, RESULTS), JSON.stringify(results, null, 2) + "\n");
    printReport(raw, runs, backlog, highest, targets, machine, loadAtStart);
    log(`done in ${fmt((performance.now() - startedAtMs) / 1000, 1)} s; wrote ${RESULTS}`);
  } finally {
    killChildren();
    await nc.close().catch(() => undefined);
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Sustained: a paced run kept up (its end markers' outputs within KEEP_UP_END_LAG_MS of their publish,
 * and no latency climbing over the run). The highest is the best published rate of a run that kept up.
 * The paced runs bracket it; up to BENCH_PROBES more runs halve the bracket (the top starts at 90% of the
 * backlog's rate when every paced run kept up) until it is within SEARCH_RESOLUTION.
 */
async function highestSustained(runs: RetentionRun[], backlog: RetentionBacklog, runAt: (rate: number, label?: string) => Promise<RetentionRun>): Promise<Highest> {
  const probes: string[] = [];
  const best = () => runs.filter((r) => r.keptUp).reduce<RetentionRun | undefined>((a, b) => (a === undefined || b.publisher.ratePerSecond > a.publisher.ratePerSecond ? b : a), undefined);
  const lowestMissed = () => Math.min(...runs.filter((r) => !r.keptUp).map((r) => r.requestedRate));
  for (let i = 0; i < PROBES; i++) {
    const low = best()?.requestedRate ?? 0;
    const missed = lowestMissed();
    const high = Number.isFinite(missed) ? missed : 0.9 * (backlog.engine?.ratePerSecond ?? 0);
    if (!(high > low * (1 + SEARCH_RESOLUTION))) break;
    const probe = roundTo(Number.isFinite(missed) ? (low + high) / 2 : high, 500);
    if (probe <= low || runs.some((r) => r.requestedRate === probe)) break;
    const run = await runAt(probe, `probe-${probe}`);
    probes.push(`${fmt(probe)}/s: ${run.keptUp ? "kept up" : "fell behind"} (${fmt(run.publisher.ratePerSecond)} published/s, end lag ${ms(run.endLagMs)} ms)`);
  }
  const run = best();
  if (!run) return { ratePerSecond: 0, from: "no run kept up", probes };
  return { ratePerSecond: run.publisher.ratePerSecond, from: `run ${run.label}`, probes };
}

type Targets = Record<string, { target: string; measured: string; verdict: "PASS" | "MISS" }>;

function evaluate(runs: RetentionRun[], highest: Highest): Targets {
  const at10k = runs.find((r) => r.requestedRate === 10_000);
  const upTo25k = runs.filter((r) => r.requestedRate <= 25_000);
  const worst = upTo25k.reduce<RetentionRun | undefined>((a, b) => (a === undefined || b.latency.p99Ms > a.latency.p99Ms ? b : a), undefined);
  const worstSteady = upTo25k.reduce<RetentionRun | undefined>((a, b) => (a === undefined || b.steady.p99Ms > a.steady.p99Ms ? b : a), undefined);
  return {
    p99At10k: {
      target: `p99 < ${TARGETS.p99At10kMs} ms at 10k events/s`,
      measured: at10k ? `${ms(at10k.latency.p99Ms)} ms (${ms(at10k.steady.p99Ms)} ms after the first ${WARMUP_SECONDS} s) at ${fmt(at10k.publisher.ratePerSecond)}/s` : "no run at 10,000/s",
      verdict: verdict(at10k !== undefined && at10k.latency.p99Ms < TARGETS.p99At10kMs),
    },
    p99UpTo25k: {
      target: `p99 < ${TARGETS.p99UpTo25kMs} ms at every rate up to 25k events/s`,
      measured: worst ? `worst ${ms(worst.latency.p99Ms)} ms (${worst.label}, ${fmt(worst.publisher.ratePerSecond)} published/s)` : "no run",
      verdict: verdict(worst !== undefined && worst.latency.p99Ms < TARGETS.p99UpTo25kMs),
    },
    steadyP99At10k: {
      target: `(same, events published after the first ${WARMUP_SECONDS} s: a job already running) p99 < ${TARGETS.p99At10kMs} ms at 10k events/s`,
      measured: at10k ? `${ms(at10k.steady.p99Ms)} ms` : "no run at 10,000/s",
      verdict: verdict(at10k !== undefined && at10k.steady.p99Ms < TARGETS.p99At10kMs),
    },
    steadyP99UpTo25k: {
      target: `(same, after the first ${WARMUP_SECONDS} s) p99 < ${TARGETS.p99UpTo25kMs} ms at every rate up to 25k events/s`,
      measured: worstSteady ? `worst ${ms(worstSteady.steady.p99Ms)} ms (${worstSteady.label})` : "no run",
      verdict: verdict(worstSteady !== undefined && worstSteady.steady.p99Ms < TARGETS.p99UpTo25kMs),
    },
    highestSustained: {
      target: `highest sustained >= ${fmt(TARGETS.highestSustained)} events/s`,
      measured: `${fmt(highest.ratePerSecond)} events/s`,
      verdict: verdict(highest.ratePerSecond >= TARGETS.highestSustained),
    },
  };
}

function printReport(
  raw: RawRun[],
  runs: RetentionRun[],
  backlog: RetentionBacklog,
  highest: Highest,
  targets: Targets,
  machine: ReturnType<typeof machineInfo>,
  loadAtStart: Record<string, number[]>,
): void {
  const out: string[] = [];
  const q = (l: LatencySummary) => [ms(l.p50Ms), ms(l.p99Ms), ms(l.maxMs)];
  // A run that never caught up has latencies of the outputs that came out by its end only: lower bounds.
  const atLeast = (r: RetentionRun, cells: string[]) => (r.isCaughtUp ? cells : cells.map((c) => `>=${c}`));
  out.push(`${RETENTION_YAML} through NATS: latency = features output received - its event's publish stamp (ms); checkpoint every ${CHECKPOINT_INTERVAL}`);
  out.push(
    table(
      ["run", "published/s", "outputs", "p50", "p99", "max", `p99 after ${WARMUP_SECONDS} s`, "raw p50", "raw p99", "raw max", "end lag", "slope ms/s", "kept up", "ckpt p50/p99", "cluster runs", "load 1 min"],
      runs.map((r) => {
        const rawAt = raw.find((x) => x.requestedRate === r.requestedRate);
        return [
          r.label,
          fmt(r.publisher.ratePerSecond),
          fmt(Object.values(r.outputsByKind).reduce((a, b) => a + b, 0)),
          ...atLeast(r, [...q(r.latency), ms(r.steady.p99Ms)]),
          ...(rawAt ? q(rawAt.latency) : ["", "", ""]),
          ms(r.endLagMs),
          fmt(r.latencySlopeMsPerS, 1),
          r.keptUp ? "yes" : "NO",
          `${ms(r.checkpoints.totalMs.p50Ms)}/${ms(r.checkpoints.totalMs.p99Ms)}`,
          String(r.clusterRuns.length),
          fmt(loadAtStart[r.label]?.[0] ?? NaN, 2),
        ];
      }),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15],
    ),
  );
  out.push(">=: the run did not catch up within 30 s of its end: the latencies of what came out by then, a lower bound");
  out.push("outputs: every kind (features, kbi, segment, cluster, clusters, trigger, ...); the latency is of features outputs joined to their event; ckpt: start to durable, ms");
  out.push("");
  out.push("Where it goes, by the checkpoint that released each output (p50 / p99, ms): to the cut = publish to that checkpoint's start; checkpoint = its start to durable; delivery = durable to received");
  out.push(
    table(
      ["run", "to the cut", "checkpoint", "delivery", "checkpoints", "interval p50/p99", "held p50/p99", "cluster runs (users)"],
      runs.map((r) => [
        r.label,
        `${ms(r.breakdown.toCut.p50Ms)} / ${ms(r.breakdown.toCut.p99Ms)}`,
        `${ms(r.breakdown.checkpoint.p50Ms)} / ${ms(r.breakdown.checkpoint.p99Ms)}`,
        `${ms(r.breakdown.delivery.p50Ms)} / ${ms(r.breakdown.delivery.p99Ms)}`,
        String(r.checkpoints.count),
        `${ms(r.checkpoints.intervalMs.p50Ms)} / ${ms(r.checkpoints.intervalMs.p99Ms)}`,
        `${ms(r.checkpoints.heldMs.p50Ms)} / ${ms(r.checkpoints.heldMs.p99Ms)}`,
        r.clusterRuns.map((c) => fmt(c.users)).join(", "),
      ]),
      [1, 2, 3, 4, 5, 6],
    ),
  );
  out.push("interval: from one checkpoint's start to the next; held: the part of a checkpoint the job waits for (previous write, flush, packing the state)");
  out.push(
    `Kept up: end markers' outputs within ${KEEP_UP_END_LAG_MS} ms, latency slope under ${KEEP_UP_SLOPE_MS_PER_S} ms/s. Highest sustained: ${fmt(highest.ratePerSecond)} events/s (${highest.from})` +
      (highest.probes.length > 0 ? `; probes: ${highest.probes.join("; ")}` : ""),
  );
  out.push(`Backlog of ${fmt(backlog.events)} events drained alone: ${fmt(backlog.engine?.ratePerSecond ?? NaN)} events/s, ${fmt(backlog.outputs)} outputs, ${fmt(backlog.wallMs / 1000, 1)} s with start-up`);
  out.push("");
  out.push(table(["target", "measured", "verdict"], Object.values(targets).map((t) => [t.target, t.measured, t.verdict])));
  out.push("");
  out.push(machineLine(machine));
  process.stdout.write(out.join("\n") + "\n");
}

main().catch((error) => {
  killChildren();
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exitCode = 1;
});
