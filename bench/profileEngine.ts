// Benchmark 1 alone, once, for a CPU profile:
//   node --cpu-prof --cpu-prof-dir=/tmp/prof-bench --import tsx bench/profileEngine.ts
//   node --import tsx bench/cpuProfileTop.ts /tmp/prof-bench
// Writes the monotonic-clock span of the job (µs, the clock .cpuprofile timestamps use) next to the
// profile, so that the summary can leave out generating the events.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ENGINE_WORKLOAD, fmt, keyedEvents } from "./benchUtil.ts";
import { runEngine } from "./keyedCountRuns.ts";

const profileDir = process.argv[2] ?? "/tmp/prof-bench";
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const events = keyedEvents(ENGINE_WORKLOAD);
const stateDir = mkdtempSync(join(tmpdir(), "flusso-profile-"));
try {
  const fromUs = nowUs();
  const run = await runEngine(events, stateDir);
  const toUs = nowUs();
  mkdirSync(profileDir, { recursive: true });
  writeFileSync(join(profileDir, "job-span.json"), JSON.stringify({ fromUs, toUs }) + "\n");
  console.log(`engine: ${fmt(run.eventsPerSecond)} events/s (${fmt(run.elapsedMs)} ms), ${fmt(run.outputs)} results, ${run.checkpoints.length} checkpoints`);
} finally {
  rmSync(stateDir, { recursive: true, force: true });
}
