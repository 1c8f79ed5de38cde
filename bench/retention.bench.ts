// The retention pipeline benchmark (`npm run bench:retention`): config/retention.yaml as shipped, on
// its own generated data. Issue: "at least 200k events/s in one process, and the bytes of memory per
// active user, reported". Parts, each one invocation of under ~3 minutes:
//   npm run bench:retention               300k events: throughput from memory (3 runs) and from the
//                                         generator (3 runs, interleaved), heap per active user (child)
//   npm run bench:retention -- profile    a CPU profile of one 300k memory-source run, top 20 self times
//   npm run bench:retention -- 1m         1M events: one memory-source run, heap per active user (child)
// Each part rewrites its own section of bench/results/retention.json and keeps the others; the table
// printed shows every section there is. BENCH_RUNS=5 for more runs.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fmt, gcIfExposed, machineInfo, median, table, verdict, type MachineInfo } from "./benchUtil.ts";
import { generateEvents, PIPELINE_FILE, projectDir, retentionSpec, runRetention, type MemoryResult, type RetentionRun } from "./retentionRuns.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const TARGET_EVENTS_PER_SECOND = 200_000;
const resultsPath = join(projectDir, "bench", "results", "retention.json");
const profileDir = join(tmpdir(), "flusso-retention-prof");
const log = (line: string) => process.stderr.write(`${line}\n`);

type Section = { machine: MachineInfo; [field: string]: unknown };
type Results = { issue: string; pipeline: string; method: Record<string, string>; [section: string]: unknown };

const METHOD = {
  pipeline:
    "config/retention.yaml loaded with loadPipeline, compiled with jobOptions; only the state dir and the file sinks (and dead letters) moved to a temp dir, " +
    "outputs and sink routing as configured, checkpoints every 2 s (LMDB) as configured, --reset each run.",
  memorySource:
    "The config's generator settings (seed 42, 20k users, 0.25 events/s, 4 partitions) run ahead of time into an array of the raw event objects; " +
    "the job reads them through bench/memorySource.ts (one partition) and decodes them with the pipeline's schema as usual.",
  generatorSource: "The config's generator as the job's source (4 partitions), as `flusso run config/retention.yaml` does.",
  eventsPerSecond: "Events read / wall clock around runJob: opening the state dir to closing it, the end-of-input flush and final checkpoint included.",
  endFlush:
    "The source's last batch is split off as an empty done batch; the end-of-input flush is timed from the END_OF_TIME watermark entering the graph " +
    "to every operator and sink being done with it (subscribers on the job's event subject before and after the pipeline's). The final checkpoint " +
    "(sink fsyncs + LMDB commit) and closing come after it and are reported apart.",
  memory:
    "Child process with --expose-gc: heapUsed after gc() with the events generated and the modules loaded, and after gc() once every event is processed, " +
    "just before the END_OF_TIME watermark (a 300 ms pause first lets the checkpoint in flight land), divided by the distinct user_ids in the input. " +
    "Also after the flush with only the operator states kept alive, and after the run with nothing kept. Live entries from each registered state's liveEntries " +
    "(timers: liveEntries = due times, size = timers); wake-up steps from the job's wake_up_steps counter, and wake-up registrations counted per stage's timers " +
    "(a runtime-only wrapper in the child). The difference includes the job's fixed parts (graph, sinks' buffers, LMDB handles), " +
    "not the events array (held before and after) nor a generator world (the memory-mode job is compiled with a one-user generator it never reads).",
  profile: "node --cpu-prof of one 300k memory-source run in a child; bench/cpuProfileTop.ts sums self time per function over the job's span.",
};

function readResults(): Results {
  const fresh: Results = { issue: "config/retention.yaml on generated data: >= 200k events/s in one process, and the bytes of memory per active user", pipeline: relative(projectDir, PIPELINE_FILE), method: METHOD };
  if (!existsSync(resultsPath)) return fresh;
  try {
    return { ...(JSON.parse(readFileSync(resultsPath, "utf8")) as Results), issue: fresh.issue, pipeline: fresh.pipeline, method: METHOD };
  } catch {
    return fresh;
  }
}

function summary(runs: RetentionRun[]) {
  const pick = (f: (r: RetentionRun) => number) => ({ runs: runs.map(f), median: median(runs.map(f)) });
  return {
    eventsPerSecond: pick((r) => r.eventsPerSecond),
    elapsedMs: pick((r) => r.elapsedMs),
    inputMs: pick((r) => r.inputMs),
    inputEventsPerSecond: pick((r) => r.inputEventsPerSecond),
    endFlushMs: pick((r) => r.endFlushMs),
    finalCheckpointMs: pick((r) => r.finalCheckpointMs),
    checkpoints: runs.map((r) => r.checkpoints.length),
    checkpointHeldMs: runs.map((r) => r.checkpoints.reduce((sum, c) => sum + c.flushMs + c.snapshotMs, 0)),
    counters: runs[runs.length - 1].counters,
    outputLines: runs[runs.length - 1].outputLines,
  };
}

function memoryChild(events: number, workDir: string): MemoryResult {
  log(`  heap per active user: child with --expose-gc, ${fmt(events)} events`);
  const child = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", "bench/retentionRuns.ts", "memory", String(events), join(workDir, `memory-${events}`)], {
    cwd: projectDir,
    encoding: "utf8",
    maxBuffer: 64 * 2 ** 20,
  });
  if (child.status !== 0) throw new Error(`retentionRuns.ts memory failed: ${child.stderr}`);
  const m = JSON.parse(child.stdout) as MemoryResult;
  log(`    ${fmt(m.bytesPerActiveUser)} bytes per active user (${fmt(m.activeUsers)} users), run ${fmt(m.run.eventsPerSecond)} ev/s`);
  return m;
}

/** 300k events: memory source and generator source, interleaved run by run; heap per active user. */
async function part300k(workDir: string): Promise<Record<string, Section>> {
  const machine = machineInfo(projectDir);
  const spec = retentionSpec(join(workDir, "runs"));
  log(`300k: generating the config's ${fmt((spec.source as { generator: { events: number } }).generator.events)} events`);
  const events = generateEvents(spec);
  log(`  ${fmt(events.values.length)} events over ${fmt(events.users)} users in ${fmt(events.generateMs)} ms`);
  const memory: RetentionRun[] = [];
  const generator: RetentionRun[] = [];
  for (let r = 0; r < RUNS; r++) {
    gcIfExposed();
    memory.push(await runRetention(spec, "memory", events));
    gcIfExposed();
    generator.push(await runRetention(spec, "generator", undefined));
    const m = memory[r];
    const g = generator[r];
    log(
      `  run ${r + 1}: memory ${fmt(m.eventsPerSecond)} ev/s (${fmt(m.elapsedMs)} ms, flush ${fmt(m.endFlushMs)} ms, final checkpoint ${fmt(m.finalCheckpointMs)} ms), ` +
        `generator ${fmt(g.eventsPerSecond)} ev/s (${fmt(g.elapsedMs)} ms, flush ${fmt(g.endFlushMs)} ms)`,
    );
  }
  const mem = memoryChild(events.values.length, workDir);
  return {
    throughput300k: {
      machine,
      events: events.values.length,
      activeUsers: events.users,
      generateMs: events.generateMs,
      target: { eventsPerSecond: TARGET_EVENTS_PER_SECOND, result: verdict(median(memory.map((r) => r.eventsPerSecond)) >= TARGET_EVENTS_PER_SECOND) },
      memorySource: summary(memory),
      generatorSource: summary(generator),
    },
    memory300k: { machine, ...mem },
  };
}

/** 1M events (the config's generator with events: 1000000, all else as configured): one memory-source run, heap per active user. */
async function part1m(workDir: string): Promise<Record<string, Section>> {
  const machine = machineInfo(projectDir);
  const spec = retentionSpec(join(workDir, "runs"), 1_000_000);
  log("1m: generating 1,000,000 events (the config's generator, events: 1000000)");
  const events = generateEvents(spec);
  log(`  ${fmt(events.values.length)} events over ${fmt(events.users)} users in ${fmt(events.generateMs)} ms`);
  gcIfExposed();
  const run = await runRetention(spec, "memory", events);
  log(`  memory ${fmt(run.eventsPerSecond)} ev/s (${fmt(run.elapsedMs)} ms, flush ${fmt(run.endFlushMs)} ms, final checkpoint ${fmt(run.finalCheckpointMs)} ms)`);
  events.values.length = 0;
  const mem = memoryChild(1_000_000, workDir);
  return {
    oneMillion: {
      machine,
      events: run.events,
      activeUsers: events.users,
      generateMs: events.generateMs,
      target: { eventsPerSecond: TARGET_EVENTS_PER_SECOND, result: verdict(run.eventsPerSecond >= TARGET_EVENTS_PER_SECOND) },
      memorySource: summary([run]),
      memory: mem,
    },
  };
}

type ProfileLine = { ms: number; percent: number; function: string };

/** Inclusive time (ms) of the functions named, over the job's span: where the self times come from. */
function inclusiveMs(dir: string, names: Record<string, (fn: string, url: string) => boolean>): Record<string, number> {
  const span = JSON.parse(readFileSync(join(dir, "job-span.json"), "utf8")) as { fromUs: number; toUs: number };
  const totals: Record<string, number> = Object.fromEntries(Object.keys(names).map((k) => [k, 0]));
  type Node = { id: number; callFrame: { functionName: string; url: string }; children?: number[] };
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"))) {
    const p = JSON.parse(readFileSync(join(dir, file), "utf8")) as { nodes: Node[]; startTime: number; samples: number[]; timeDeltas: number[] };
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    // The categories each node falls in, itself or through an ancestor; computed once per node.
    const memo = new Map<number, string[]>();
    const categories = (id: number): string[] => {
      let known = memo.get(id);
      if (known) return known;
      const { functionName, url } = byId.get(id)!.callFrame;
      const up = parent.get(id);
      const mine = Object.keys(names).filter((k) => names[k](functionName, url));
      known = [...new Set([...(up === undefined ? [] : categories(up)), ...mine])];
      memo.set(id, known);
      return known;
    };
    let atUs = p.startTime;
    p.samples.forEach((id, i) => {
      const deltaUs = p.timeDeltas[i] ?? 0;
      atUs += deltaUs;
      if (atUs < span.fromUs || atUs > span.toUs) return;
      for (const k of categories(id)) totals[k] += deltaUs / 1000;
    });
  }
  return totals;
}

/** A CPU profile of one 300k memory-source run, in a child. */
function partProfile(workDir: string): Record<string, Section> {
  const machine = machineInfo(projectDir);
  rmSync(profileDir, { recursive: true, force: true });
  log(`profile: one 300k memory-source run under --cpu-prof (profiles in ${profileDir})`);
  const child = spawnSync(
    process.execPath,
    ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, "--import", "tsx", "bench/retentionRuns.ts", "profile", "300000", join(workDir, "profile"), profileDir],
    { cwd: projectDir, encoding: "utf8" },
  );
  if (child.status !== 0) throw new Error(`retentionRuns.ts profile failed: ${child.stderr}`);
  const run = JSON.parse(child.stdout) as { eventsPerSecond: number; elapsedMs: number; endFlushMs: number };
  const top = spawnSync(process.execPath, ["--import", "tsx", "bench/cpuProfileTop.ts", profileDir, "20"], { cwd: projectDir, encoding: "utf8" });
  if (top.status !== 0) throw new Error(`cpuProfileTop.ts failed: ${top.stderr}`);
  const [header, ...lines] = top.stdout.trim().split("\n");
  const topSelf: ProfileLine[] = lines.map((line) => {
    const m = /^\s*([\d,]+) ms\s+([\d.]+)%\s+(.*)$/.exec(line);
    if (!m) throw new Error(`unexpected cpuProfileTop line: ${line}`);
    return { ms: Number(m[1].replace(/,/g, "")), percent: Number(m[2]), function: m[3] };
  });
  const at = (file: string) => (url: string) => url.endsWith(file);
  const inclusive = inclusiveMs(profileDir, {
    "job loop (everything in the job)": (fn, url) => fn === "loop" && at("engine/job.ts")(url),
    "event path: decode + every stage per event (Job.push)": (fn, url) => fn === "push" && at("engine/job.ts")(url),
    "wake-ups: every stage per woken user (behaviour wakeUpTo)": (fn, url) => fn === "wakeUpTo" && at("operators/behaviour.ts")(url),
    "clusters re-run (clusters onWatermark)": (fn, url) => fn === "onWatermark" && at("operators/clusters.ts")(url),
    "checkpoints (Job.checkpoint: sink fsync, takeDelta, msgpack)": (fn, url) => fn === "checkpoint" && at("engine/job.ts")(url),
    "msgpackr pack": (fn, url) => fn === "pack" && url.includes("msgpackr"),
    "CEL evaluation (cel-js)": (_fn, url) => url.includes("@marcbachmann/cel-js"),
    "file sinks write (FileSink.write)": (fn, url) => fn === "write" && at("engine/sinks/fileSink.ts")(url),
    "(garbage collector)": (fn) => fn === "(garbage collector)",
  });
  return {
    profile300k: {
      machine,
      command: `node --cpu-prof --cpu-prof-dir=${profileDir} --import tsx bench/retentionRuns.ts profile 300000 <tmp> ${profileDir}; node --import tsx bench/cpuProfileTop.ts ${profileDir} 20`,
      runUnderProfiler: run,
      header,
      topSelf,
      inclusiveMs: inclusive,
    },
  };
}

function rowsOf(results: Results): string[][] {
  const rows: string[][] = [];
  const t = results.throughput300k as Record<string, any> | undefined;
  const runs = (xs: number[]) => xs.map((x) => fmt(x)).join(" / ");
  const when = (s: { machine?: MachineInfo }) => !s.machine ? "" : `${s.machine.date.slice(0, 16)} load ${s.machine.loadAverage[0]}`;
  if (t) {
    rows.push([`300k memory source, events/s (${fmt(t.activeUsers)} users)`, fmt(t.memorySource.eventsPerSecond.median), runs(t.memorySource.eventsPerSecond.runs), `>= ${fmt(TARGET_EVENTS_PER_SECOND)}`, t.target.result, when(t)]);
    rows.push(["   input part only, events/s", fmt(t.memorySource.inputEventsPerSecond.median), runs(t.memorySource.inputEventsPerSecond.runs), "", "", ""]);
    rows.push(["   end-of-input flush (ms)", fmt(t.memorySource.endFlushMs.median), runs(t.memorySource.endFlushMs.runs), "", "", ""]);
    rows.push(["   final checkpoint + close (ms)", fmt(t.memorySource.finalCheckpointMs.median), runs(t.memorySource.finalCheckpointMs.runs), "", "", ""]);
    rows.push(["300k generator source, events/s", fmt(t.generatorSource.eventsPerSecond.median), runs(t.generatorSource.eventsPerSecond.runs), "", "", when(t)]);
    rows.push(["   end-of-input flush (ms)", fmt(t.generatorSource.endFlushMs.median), runs(t.generatorSource.endFlushMs.runs), "", "", ""]);
  }
  const m = results.memory300k as (MemoryResult & { machine: MachineInfo }) | undefined;
  if (m) {
    rows.push(["300k heap per active user (bytes)", fmt(m.bytesPerActiveUser), `${fmt((m.heapAtEndOfInputBytes - m.heapBeforeBytes) / 2 ** 20, 1)} MiB / ${fmt(m.activeUsers)} users`, "", "reported", when(m)]);
    rows.push(["   after the flush, states kept (bytes)", fmt(m.bytesPerActiveUserAfterFlush), "", "", "", ""]);
    const fired = m.wakeUpStepsDuringInput;
    const byStage = Object.entries(m.wakeUpRegistrationsByStage ?? {}).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${fmt(v / 1000)}k`).join(", ");
    rows.push(["   wake-up steps per event (input)", fmt(fired / m.events, 2), `asked by: ${byStage}`, "", "", ""]);
  }
  const o = results.oneMillion as Record<string, any> | undefined;
  if (o) {
    rows.push([`1M memory source, events/s (${fmt(o.activeUsers)} users)`, fmt(o.memorySource.eventsPerSecond.median), "1 run", `>= ${fmt(TARGET_EVENTS_PER_SECOND)}`, o.target.result, when(o)]);
    rows.push(["   end-of-input flush (ms)", fmt(o.memorySource.endFlushMs.median), "", "", "", ""]);
    rows.push(["1M heap per active user (bytes)", fmt(o.memory.bytesPerActiveUser), `${fmt((o.memory.heapAtEndOfInputBytes - o.memory.heapBeforeBytes) / 2 ** 20, 1)} MiB / ${fmt(o.memory.activeUsers)} users`, "", "reported", ""]);
  }
  const p = results.profile300k as Record<string, any> | undefined;
  if (p) {
    const top = (p.topSelf as ProfileLine[]).slice(0, 3).map((l) => `${l.function.replace(/ \S+:\d+:\d+$/, "")} ${l.percent}%`).join(", ");
    rows.push(["profile 300k (under --cpu-prof), events/s", fmt(p.runUnderProfiler.eventsPerSecond), `top self: ${top}`, "", "", when(p)]);
  }
  return rows;
}

const parts = process.argv.slice(2);
const workDir = mkdtempSync(join(tmpdir(), "flusso-retention-"));
const startedAtMs = performance.now();
try {
  const results = readResults();
  const machine = machineInfo(projectDir);
  log(`flusso retention benchmark: ${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}, load ${machine.loadAverage.join(" ")}`);
  const sections =
    parts.length === 0 ? await part300k(workDir) : parts[0] === "1m" ? await part1m(workDir) : parts[0] === "profile" ? partProfile(workDir) : undefined;
  if (!sections) throw new Error(`unknown part ${parts[0]}: expected none, "profile" or "1m"`);
  Object.assign(results, sections);
  mkdirSync(dirname(resultsPath), { recursive: true });
  writeFileSync(resultsPath, JSON.stringify(results, null, 2) + "\n");
  console.log("");
  console.log(table(["measure", "median", "runs", "target", "result", "measured"], rowsOf(results), [1]));
  const p = results.profile300k as { topSelf: ProfileLine[]; inclusiveMs: Record<string, number> } | undefined;
  if (p && parts[0] === "profile") {
    console.log("\ntop self time:");
    for (const l of p.topSelf) console.log(`${fmt(l.ms).padStart(7)} ms ${l.percent.toFixed(1).padStart(5)}%  ${l.function}`);
    console.log("\ninclusive time:");
    for (const [name, ms] of Object.entries(p.inclusiveMs)) console.log(`${fmt(ms).padStart(7)} ms  ${name}`);
  }
  console.log(`\n${machine.cpuModel}, ${machine.cores} cores, ${fmt(machine.totalMemoryBytes / 2 ** 30, 1)} GiB, node ${machine.node}, load at start ${machine.loadAverage.join(" ")}; ${fmt((performance.now() - startedAtMs) / 1000, 1)} s`);
  console.log(`wrote ${relative(projectDir, resultsPath)}`);
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
