// The memory budget benchmark (`npm run bench:memory`): config/retention.yaml on its generator with
// many users, once with `state: { memoryBudget }` and once with everything in memory, each run in its
// own child process: peak RSS, events/s, and the latency of behaviour steps whose user had to be read
// back from disk. Issue #15, "Memory that does not grow with every user ever seen".
//   npm run bench:memory                        1M users, 2M events, budget 1GB
//   npm run bench:memory -- <users> <events> <budget>     e.g. 200000 400000 256MB
// Writes bench/results/memoryBudget.json (one section per users/events/budget).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parse, stringify } from "yaml";
import { STATE_EVICTIONS_COUNTER, STATE_READ_BACKS_COUNTER } from "../engine/job.ts";
import { KeyedSlots } from "../engine/keyedSlots.ts";
import { runPipeline } from "../pipelines/compile.ts";
import { loadPipeline } from "../pipelines/load.ts";
import { fmt, machineInfo, table } from "./benchUtil.ts";
import { PIPELINE_FILE, projectDir } from "./retentionRuns.ts";

const resultsPath = join(projectDir, "bench", "results", "memoryBudget.json");
const log = (line: string) => process.stderr.write(`${line}\n`);
/** Heap the run with everything in memory may take (it holds every user's record). */
const UNBOUNDED_HEAP_MB = 16_384;

/** Step latencies in logarithmic buckets (2% wide): percentiles without keeping every sample. */
class Histogram {
  private readonly counts = new Float64Array(2000);
  count = 0;

  add(us: number): void {
    const bucket = Math.min(this.counts.length - 1, Math.max(0, Math.ceil(Math.log(Math.max(us, 0.01) / 0.01) / Math.log(1.02))));
    this.counts[bucket]++;
    this.count++;
  }

  /** The upper edge of the bucket holding the `p` quantile, in µs. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= p * this.count) return Math.round(0.01 * 1.02 ** i * 100) / 100;
    }
    return null;
  }

  summary() {
    return { steps: this.count, p50Us: this.percentile(0.5), p99Us: this.percentile(0.99), p999Us: this.percentile(0.999) };
  }
}

export type VariantResult = {
  budget: string | null;
  users: number;
  events: number;
  usersWithARecord: number;
  elapsedMs: number;
  eventsPerSecond: number;
  /** process.resourceUsage().maxRSS: the child's peak resident set. */
  peakRssBytes: number;
  /** Largest heapUsed seen by a 100 ms sampler (garbage included). */
  peakHeapUsedBytes: number;
  /** Largest anonymous resident memory (Linux RssAnon) seen by the sampler: RSS less mapped files (LMDB's pages, which the kernel can drop). */
  peakRssAnonBytes: number | null;
  /** heapUsed after a full GC when 50%, 75% and 95% of the events were read: what the job really holds. */
  liveHeapBytes: Array<{ atRead: number; bytes: number }>;
  /** Users' records in memory at the end (the rest on disk only). */
  residentRecordsAtEnd: number;
  evictions: number;
  readBacks: number;
  /** Behaviour steps (focus to blur: every stage for one user) whose record was read back from disk, and all others. */
  coldSteps: ReturnType<Histogram["summary"]>;
  warmSteps: ReturnType<Histogram["summary"]>;
  checkpoints: number;
};

/** config/retention.yaml with `users` and `events` for its generator, its state and outputs under `dir`, and the budget if any. */
function variantFile(dir: string, users: number, events: number, budget: string | null): string {
  const pipeline = parse(readFileSync(PIPELINE_FILE, "utf8")) as Record<string, any>;
  pipeline.source.generator.users = users;
  pipeline.source.generator.events = events;
  pipeline.state = { ...pipeline.state, dir: join(dir, "state"), ...(budget === null ? {} : { memoryBudget: budget }) };
  for (const sink of pipeline.sinks) sink.file.path = join(dir, "out", basename(sink.file.path));
  pipeline.deadLetter = { file: { path: join(dir, "out", "dead-letter.jsonl") } };
  const file = join(dir, "retention.yaml");
  writeFileSync(file, stringify(pipeline));
  return file;
}

/** One run, in this (child) process: the step timer wraps KeyedSlots.focus/blur, which the behaviour operator calls once per step. */
async function child(users: number, events: number, budget: string | null, dir: string): Promise<VariantResult> {
  const cold = new Histogram();
  const warm = new Histogram();
  let slots: KeyedSlots | undefined;
  let stepStartedAt = 0;
  let readBacksBefore = 0;
  const readBacksOf = (s: KeyedSlots) => ((s as unknown as { records: { readBacks?: number } }).records.readBacks ?? 0);
  const { focus, blur } = KeyedSlots.prototype;
  KeyedSlots.prototype.focus = function (this: KeyedSlots, key: string) {
    slots = this;
    readBacksBefore = readBacksOf(this);
    stepStartedAt = performance.now();
    focus.call(this, key);
  };
  KeyedSlots.prototype.blur = function (this: KeyedSlots) {
    blur.call(this);
    if (stepStartedAt === 0) return;
    const us = (performance.now() - stepStartedAt) * 1000;
    stepStartedAt = 0;
    (readBacksOf(this) > readBacksBefore ? cold : warm).add(us);
  };
  let peakHeapUsedBytes = 0;
  let peakRssAnonBytes: number | null = null;
  const sampler = setInterval(() => {
    peakHeapUsedBytes = Math.max(peakHeapUsedBytes, process.memoryUsage().heapUsed);
    const anon = rssAnonBytes();
    if (anon !== null) peakRssAnonBytes = Math.max(peakRssAnonBytes ?? 0, anon);
  }, 100);
  let checkpoints = 0;
  const liveHeapBytes: VariantResult["liveHeapBytes"] = [];
  const marks = [0.5, 0.75, 0.95].map((share) => Math.floor(share * events));
  let gcMs = 0;
  const gc = (globalThis as { gc?: () => void }).gc;
  const spec = loadPipeline(variantFile(dir, users, events, budget));
  const startedAtMs = performance.now();
  const result = await runPipeline(spec, {
    reset: true,
    onCheckpoint: () => checkpoints++,
    progressIntervalMs: 200,
    // A full GC at a few points of the input: the heap the job holds then, garbage left out (its time is not the job's).
    onProgress: (counters) => {
      if (gc === undefined || marks.length === 0 || counters.read < marks[0]) return;
      marks.shift();
      const gcStartedAtMs = performance.now();
      gc();
      gcMs += performance.now() - gcStartedAtMs;
      liveHeapBytes.push({ atRead: counters.read, bytes: process.memoryUsage().heapUsed });
    },
  });
  const elapsedMs = performance.now() - startedAtMs - gcMs;
  clearInterval(sampler);
  const records = (slots as unknown as { records: { size: number; residentEntries?: number } } | undefined)?.records;
  return {
    budget,
    users,
    events: result.counters.read,
    usersWithARecord: records?.size ?? 0,
    elapsedMs: Math.round(elapsedMs),
    eventsPerSecond: Math.round((result.counters.read / elapsedMs) * 1000),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    peakHeapUsedBytes,
    peakRssAnonBytes,
    liveHeapBytes,
    residentRecordsAtEnd: records?.residentEntries ?? records?.size ?? 0,
    evictions: result.counters[STATE_EVICTIONS_COUNTER] ?? 0,
    readBacks: result.counters[STATE_READ_BACKS_COUNTER] ?? 0,
    coldSteps: cold.summary(),
    warmSteps: warm.summary(),
    checkpoints,
  };
}

/** RssAnon from /proc/self/status (Linux), in bytes; null elsewhere. */
function rssAnonBytes(): number | null {
  try {
    const match = /RssAnon:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

function runChild(users: number, events: number, budget: string | null, workDir: string): VariantResult {
  const dir = join(workDir, budget ?? "unbounded");
  mkdirSync(dir, { recursive: true });
  log(`  ${budget === null ? "everything in memory" : `memoryBudget ${budget}`}: ${fmt(users)} users, ${fmt(events)} events`);
  const run = spawnSync(process.execPath, [`--max-old-space-size=${UNBOUNDED_HEAP_MB}`, "--expose-gc", "--import", "tsx", "bench/memoryBudget.bench.ts", "child", String(users), String(events), budget ?? "none", dir], {
    cwd: projectDir,
    encoding: "utf8",
    maxBuffer: 16 * 2 ** 20,
  });
  if (run.status !== 0) throw new Error(`the ${budget ?? "unbounded"} run failed (${run.status ?? run.signal}): ${run.stderr.slice(-2000)}`);
  const result = JSON.parse(run.stdout) as VariantResult;
  log(
    `    ${fmt(result.eventsPerSecond)} ev/s, peak RSS ${fmt(result.peakRssBytes / 2 ** 20)} MB (anonymous ${fmt((result.peakRssAnonBytes ?? NaN) / 2 ** 20)} MB), ` +
      `peak heap ${fmt(result.peakHeapUsedBytes / 2 ** 20)} MB, live heap ${result.liveHeapBytes.map((l) => fmt(l.bytes / 2 ** 20)).join(" / ")} MB, ` +
      `${fmt(result.usersWithARecord)} users (${fmt(result.residentRecordsAtEnd)} in memory at the end), cold steps p99 ${result.coldSteps.p99Us ?? "-"} µs`,
  );
  return result;
}

async function main(): Promise<void> {
  const [users = 1_000_000, events = 2_000_000] = process.argv.slice(2, 4).map(Number);
  const budget = process.argv[4] ?? "1GB";
  const workDir = mkdtempSync(join(tmpdir(), "flusso-memory-budget-"));
  const machineBefore = machineInfo(projectDir);
  log(`config/retention.yaml, ${fmt(users)} users, ${fmt(events)} events; load ${machineBefore.loadAverage.join(" ")}`);
  try {
    const budgeted = runChild(users, events, budget, workDir);
    const unbounded = runChild(users, events, null, workDir);
    const machineAfter = machineInfo(projectDir);
    const results = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, "utf8")) as Record<string, unknown>) : {};
    results.method =
      "config/retention.yaml with its generator's users and events set (partitions, pace and seed as shipped), state dir and file sinks in a temp dir, " +
      "--reset; each variant in its own child (node --max-old-space-size=16384 --expose-gc). events/s: events read / wall clock around runPipeline, " +
      "less the forced GCs. Peak RSS: process.resourceUsage().maxRSS (it counts LMDB's mapped pages, which the kernel can drop); peak anonymous RSS " +
      "and peak heap (garbage included): /proc/self/status RssAnon and heapUsed sampled every 100 ms; live heap: heapUsed after a forced full GC " +
      "when 50%, 75% and 95% of the events were read. Steps: KeyedSlots.focus to blur (the behaviour operator's " +
      "every stage for one user), timed with performance.now(); cold: the user's record was read back from disk in that step.";
    results[`${users}users-${events}events-${budget}`] = { machineBefore, machineAfter, budgeted, unbounded };
    mkdirSync(join(projectDir, "bench", "results"), { recursive: true });
    writeFileSync(resultsPath, `${JSON.stringify(results, null, 2)}\n`);
    const row = (r: VariantResult) => [
      r.budget ?? "none",
      fmt(r.eventsPerSecond),
      fmt(r.peakRssBytes / 2 ** 20),
      fmt((r.peakRssAnonBytes ?? NaN) / 2 ** 20),
      fmt(r.peakHeapUsedBytes / 2 ** 20),
      r.liveHeapBytes.map((l) => fmt(l.bytes / 2 ** 20)).join(" / "),
      fmt(r.usersWithARecord),
      fmt(r.residentRecordsAtEnd),
      `${r.warmSteps.p50Us} / ${r.warmSteps.p99Us}`,
      `${r.coldSteps.p50Us ?? "-"} / ${r.coldSteps.p99Us ?? "-"} (${fmt(r.coldSteps.steps)})`,
    ];
    log(table(["budget", "events/s", "peak RSS MB", "peak anon RSS MB", "peak heap MB", "live heap MB at 50/75/95%", "users", "in memory at end", "warm step p50/p99 µs", "cold step p50/p99 µs (steps)"], [row(budgeted), row(unbounded)]));
    log(`load average before ${machineBefore.loadAverage.join(" ")}, after ${machineAfter.loadAverage.join(" ")}; written to ${resultsPath}`);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

if (process.argv[2] === "child") {
  const [users, events, budget, dir] = process.argv.slice(3);
  child(Number(users), Number(events), budget === "none" ? null : budget, dir).then(
    (result) => process.stdout.write(JSON.stringify(result)),
    (error: unknown) => {
      process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
} else {
  await main();
}
