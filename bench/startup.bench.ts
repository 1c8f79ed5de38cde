// Start-up (`npm run bench:startup`): the wall time of `node bin/flusso.js` for --help, --version and
// `validate`, and for `run` the time from the process's start to its first event processed (the
// summary's `firstEventAfterStartMs`), each from the compiled build (dist/) and from the TypeScript
// sources through tsx (FLUSSO_FROM_SOURCES=1), runs interleaved; an empty `node -e ""` beside them
// as the floor. Prints a table and writes bench/results/startup.json.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
// @ts-expect-error: bin/ is plain JavaScript without declarations
import { isBuildCurrent } from "../bin/build.js";
import { fmt, machineInfo, median, table, verdict } from "./benchUtil.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
/** Events the `run` rows read: enough to start every stage, few enough that the run is mostly start-up. */
const RUN_EVENTS = 2_000;
const HELP_TARGET_MS = 150;

const projectDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const resultsPath = join(projectDir, "bench", "results", "startup.json");
const log = (line: string) => process.stderr.write(`${line}\n`);

type Mode = "dist" | "sources";
type Measure = { name: string; args: string[]; readsSummary: boolean };

/**
 * A shipped pipeline copied to `<workDir>/config/`, reading `RUN_EVENTS` generated events: its
 * relative state dir and output paths (`../state/...`, `../out/...`) then land in `workDir`.
 */
function shortPipeline(workDir: string, file: string): string {
  const text = readFileSync(join(projectDir, "config", file), "utf8");
  const short = text.replace(/(generator:[\s\S]*?events: )300000/, `$1${RUN_EVENTS}`);
  if (short === text) throw new Error(`config/${file}: found no "events: 300000" in its generator to shorten`);
  mkdirSync(join(workDir, "config"), { recursive: true });
  const path = join(workDir, "config", file);
  writeFileSync(path, short);
  return path;
}

function runOnce(mode: Mode | "node", measure: Measure): { wallMs: number; firstEventMs?: number } {
  const args = mode === "node" ? ["-e", ""] : ["bin/flusso.js", ...measure.args];
  const env = { ...process.env, FLUSSO_FROM_SOURCES: mode === "sources" ? "1" : "0" };
  const startedAtMs = performance.now();
  const child = spawnSync(process.execPath, args, { cwd: projectDir, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const wallMs = performance.now() - startedAtMs;
  if (child.status !== 0) throw new Error(`${args.join(" ")} (${mode}) exited with ${child.status ?? child.signal}: ${child.stderr}`);
  if (!measure.readsSummary) return { wallMs };
  const summary = child.stderr.trimEnd().split("\n").map((line) => JSON.parse(line) as { event?: string; firstEventAfterStartMs?: number }).find((l) => l.event === "done");
  if (summary?.firstEventAfterStartMs === undefined) throw new Error(`${args.join(" ")} (${mode}): no firstEventAfterStartMs in its summary: ${child.stderr}`);
  return { wallMs, firstEventMs: summary.firstEventAfterStartMs };
}

const workDir = mkdtempSync(join(tmpdir(), "flusso-startup-"));
try {
  if (!isBuildCurrent()) throw new Error("dist/ is older than the sources: run `npm run build` first");
  const machine = machineInfo(projectDir);
  const measures: Measure[] = [
    { name: "--help", args: ["--help"], readsSummary: false },
    { name: "--version", args: ["--version"], readsSummary: false },
    { name: "validate config/retention.yaml", args: ["validate", "config/retention.yaml"], readsSummary: false },
    { name: `run config/default.yaml (${fmt(RUN_EVENTS)} events)`, args: ["run", shortPipeline(workDir, "default.yaml"), "--reset", "--log", "json"], readsSummary: true },
    { name: `run config/retention.yaml (${fmt(RUN_EVENTS)} events)`, args: ["run", shortPipeline(workDir, "retention.yaml"), "--reset", "--log", "json"], readsSummary: true },
  ];
  log(`flusso start-up: ${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}, load ${machine.loadAverage.join(" ")}; ${RUNS} runs each`);
  const floorMs: number[] = [];
  const results = measures.map((m) => ({ ...m, dist: { wallMs: [] as number[], firstEventMs: [] as number[] }, sources: { wallMs: [] as number[], firstEventMs: [] as number[] } }));
  // Interleaved: every measure in both modes within one round, so that both see the same load.
  for (let r = 0; r < RUNS; r++) {
    floorMs.push(runOnce("node", measures[0]).wallMs);
    for (const result of results) {
      for (const mode of ["dist", "sources"] as const) {
        const run = runOnce(mode, result);
        result[mode].wallMs.push(run.wallMs);
        if (run.firstEventMs !== undefined) result[mode].firstEventMs.push(run.firstEventMs);
      }
    }
    log(`  round ${r + 1} of ${RUNS} done`);
  }
  const range = (xs: number[]) => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`;
  const rows: string[][] = [["node -e '' (the floor)", fmt(median(floorMs)), range(floorMs), "", "", ""]];
  for (const r of results) {
    const isHelp = r.name === "--help";
    const target = isHelp ? `< ${HELP_TARGET_MS} ms` : "";
    const met = isHelp ? verdict(median(r.dist.wallMs) < HELP_TARGET_MS) : "";
    rows.push([`${r.name}: exit`, fmt(median(r.dist.wallMs)), range(r.dist.wallMs), fmt(median(r.sources.wallMs)), target, met]);
    if (r.readsSummary) rows.push([`${r.name}: first event`, fmt(median(r.dist.firstEventMs)), range(r.dist.firstEventMs), fmt(median(r.sources.firstEventMs)), "", ""]);
  }
  console.log(table(["ms after the process starts", "dist/ median", "dist/ range", "tsx median", "target", "result"], rows, [1, 3]));
  console.log(`\n${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}, load ${machine.loadAverage.join(" ")}`);
  mkdirSync(dirname(resultsPath), { recursive: true });
  writeFileSync(resultsPath, JSON.stringify({ machine, runs: RUNS, runEvents: RUN_EVENTS, floorMs, measures: results.map(({ readsSummary: _, ...r }) => r) }, null, 2) + "\n");
  console.log(`wrote ${resultsPath}`);
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
