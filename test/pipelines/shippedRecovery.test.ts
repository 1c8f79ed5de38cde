// Each shipped pipeline killed with SIGKILL mid-run and restarted on its state dir ends with the
// same output files as an uninterrupted run: timers, scores, clusters and pending follow-ups restored.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { removeTempDirs, tempDir, runCliUntilKilled } from "./pipelineFiles.ts";
import { SHIPPED, shippedVariant, variantOutputs, type Shipped, type VariantOptions } from "./shipped.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const SIZE = { users: 1500, eventCount: 25_000, checkpointInterval: "100ms" };

afterAll(removeTempDirs);

/** The variants killed: each shipped pipeline as it is, and retention under a memory budget small enough that users' records leave memory at every checkpoint. */
const KILLED: Array<[string, Shipped, VariantOptions]> = [
  ...SHIPPED.map((name): [string, Shipped, VariantOptions] => [`${name}.yaml`, name, {}]),
  ["retention.yaml with memoryBudget 1MB", "retention", { edit: (p) => (p.state.memoryBudget = "1MB") }],
];

describe.each(KILLED)("config/%s killed and restarted", (_, name, variant) => {
  it("ends with output files identical to an uninterrupted run", async () => {
    const referenceDir = tempDir(`flusso-recovery-${name}-ref-`);
    const reference = spawnSync(process.execPath, [CLI, "run", shippedVariant(name, referenceDir, SIZE), "--quiet"], { encoding: "utf8" });
    expect(reference.status, reference.stderr).toBe(0);
    const expected = variantOutputs(referenceDir, name);
    expect(Object.values(expected).join("").length).toBeGreaterThan(1000);
    const referenceBytes = Object.values(expected).reduce((sum, text) => sum + Buffer.byteLength(text), 0);

    const crashedDir = tempDir(`flusso-recovery-${name}-`);
    const crashed = shippedVariant(name, crashedDir, { ...SIZE, ...variant });
    const rnd = mulberry32(name.length * 31);
    let kills = 0;
    const outFiles = Object.keys(expected).map((f) => join(crashedDir, "out", f));
    const writtenBytes = () => outFiles.reduce((sum, f) => sum + (existsSync(f) ? statSync(f).size : 0), 0);
    for (let attempt = 0; attempt < 20; attempt++) {
      // Killed by progress, not by time (a run's speed varies): the first kill once 60-85% of the
      // output is written, late in the stream, when many users wait only for timers (inactivity,
      // follow-ups); the second in the restarted run, once it has written more.
      const fraction = kills === 0 ? 0.6 + 0.25 * rnd() : 0.9 + 0.05 * rnd();
      const run = await runCliUntilKilled(crashed, 120_000, () => kills < 2 && writtenBytes() >= referenceBytes * fraction);
      if (run.killed) {
        kills++;
        continue;
      }
      expect(run.code, run.stderr).toBe(0);
      break;
    }
    // The second kill may come too late (the last outputs are written at once, at the end).
    expect(kills).toBeGreaterThanOrEqual(1);
    expect(variantOutputs(crashedDir, name)).toEqual(expected);
  }, 180_000);
});
