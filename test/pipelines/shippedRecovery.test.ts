// Each shipped pipeline killed with SIGKILL mid-run and restarted on its state dir ends with the
// same output files as an uninterrupted run: timers, scores, clusters and pending follow-ups restored.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { removeTempDirs, tempDir, runCliUntilKilled } from "./pipelineFiles.ts";
import { SHIPPED, shippedVariant, variantOutputs } from "./shipped.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const SIZE = { users: 1500, eventCount: 25_000, checkpointInterval: "100ms" };

afterAll(removeTempDirs);

describe.each(SHIPPED)("config/%s.yaml killed and restarted", (name) => {
  it("ends with output files identical to an uninterrupted run", async () => {
    const referenceDir = tempDir(`flusso-recovery-${name}-ref-`);
    const startedMs = Date.now();
    const reference = spawnSync(process.execPath, [CLI, "run", shippedVariant(name, referenceDir, SIZE), "--quiet"], { encoding: "utf8" });
    expect(reference.status, reference.stderr).toBe(0);
    const expected = variantOutputs(referenceDir, name);
    expect(Object.values(expected).join("").length).toBeGreaterThan(1000);
    const referenceMs = Date.now() - startedMs;

    const crashedDir = tempDir(`flusso-recovery-${name}-`);
    const crashed = shippedVariant(name, crashedDir, SIZE);
    const rnd = mulberry32(name.length * 31);
    let kills = 0;
    for (let attempt = 0; attempt < 20; attempt++) {
      // The first kill lands late in the stream, when many users wait only for timers (inactivity,
      // follow-ups); the second in the restarted run, in recovery or mid-stream.
      const fraction = kills === 0 ? 0.7 + 0.2 * rnd() : 0.3 + 0.3 * rnd();
      const killAfterMs = kills < 2 ? Math.floor(referenceMs * fraction) : 120_000;
      const run = await runCliUntilKilled(crashed, killAfterMs);
      if (run.killed) {
        kills++;
        continue;
      }
      expect(run.code, run.stderr).toBe(0);
      break;
    }
    expect(kills).toBe(2);
    expect(variantOutputs(crashedDir, name)).toEqual(expected);
  }, 180_000);
});
