// config/retention.yaml (users' records) and config/default.yaml (keys' windows) under a memory
// budget so small that entries leave memory at every checkpoint: the output files are byte for byte
// those of the run with everything in memory, uninterrupted or stopped midway and restarted.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { STATE_EVICTIONS_COUNTER, STATE_READ_BACKS_COUNTER } from "../../engine/job.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { inspectState } from "../../pipelines/inspect.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "./pipelineFiles.ts";
import { shippedVariant, variantOutputs } from "./shipped.ts";

const SIZE = { users: 1500, eventCount: 25_000, checkpointInterval: "100ms" };
/** Batches of this many events, in every run: a batch's end is where its watermark is, so outputs depend on it. */
const BATCH = 200;
/** A checkpoint after about every batch (outputs do not depend on where cuts fall): many cuts at which records leave memory. */
const withBudget = { ...SIZE, checkpointInterval: "10ms", edit: (p: Record<string, any>) => (p.state.memoryBudget = "1MB") };

afterAll(removeTempDirs);

describe("config/retention.yaml with state.memoryBudget", () => {
  it("writes the same output files as with everything in memory, reading users back from disk", async () => {
    const referenceDir = tempDir("flusso-budget-ref-");
    const reference = await runPipeline(loadPipeline(shippedVariant("retention", referenceDir, SIZE)), { batchSize: BATCH });
    expect(reference.isComplete).toBe(true);
    expect(reference.counters[STATE_EVICTIONS_COUNTER]).toBeUndefined();
    const expected = variantOutputs(referenceDir, "retention");
    expect(Object.values(expected).join("").length).toBeGreaterThan(1000);

    const budgetDir = tempDir("flusso-budget-");
    const budgeted = await runPipeline(loadPipeline(shippedVariant("retention", budgetDir, withBudget)), { batchSize: BATCH });
    expect(budgeted.isComplete).toBe(true);
    expect(budgeted.counters[STATE_EVICTIONS_COUNTER]).toBeGreaterThan(2000);
    expect(budgeted.counters[STATE_READ_BACKS_COUNTER]).toBeGreaterThan(2000);
    expect(variantOutputs(budgetDir, "retention")).toEqual(expected);
  }, 120_000);

  it("writes the same output files when stopped midway and restarted on its state dir", async () => {
    const referenceDir = tempDir("flusso-budget-ref-");
    const referenceFile = shippedVariant("retention", referenceDir, SIZE);
    await runPipeline(loadPipeline(referenceFile), { batchSize: BATCH });
    const expected = variantOutputs(referenceDir, "retention");

    const dir = tempDir("flusso-budget-restart-");
    const file = shippedVariant("retention", dir, withBudget);
    // Stopped by checkpoints, not by time: after the fourth, when users have left memory at three cuts.
    const stop = new AbortController();
    let checkpoints = 0;
    const first = await runPipeline(loadPipeline(file), { batchSize: BATCH, signal: stop.signal, onCheckpoint: () => ++checkpoints === 4 && stop.abort() });
    expect(first.isComplete).toBe(false);
    expect(first.counters[STATE_EVICTIONS_COUNTER]).toBeGreaterThan(0);
    const second = await runPipeline(loadPipeline(file), { batchSize: BATCH });
    expect(second.isComplete).toBe(true);
    expect(second.counters[STATE_READ_BACKS_COUNTER]).toBeGreaterThan(0);
    expect(variantOutputs(dir, "retention")).toEqual(expected);
    // `flusso state` reads the records laid out key by key as it reads the log: the same users, the same values.
    const inspected = await inspectState(loadPipeline(file), { key: "u000042" });
    const reference = await inspectState(loadPipeline(referenceFile), { key: "u000042" });
    expect(inspected.users).toBe(reference.users);
    expect(inspected.stages).toEqual(reference.stages);
    expect(inspected.key).toEqual(reference.key);
    expect(Object.keys(inspected.key?.stages ?? {}).length).toBeGreaterThan(0);
  }, 120_000);
});

/** config/default.yaml (two windows per key) with a smaller generator, its state and outputs under `dir`; with `budget`, under that memory budget. */
function windowsVariant(dir: string, budget?: string): string {
  const pipeline = parse(readFileSync(join(PROJECT_ROOT, "config", "default.yaml"), "utf8")) as Record<string, any>;
  Object.assign(pipeline.source.generator, { users: 1500, events: 25_000 });
  // Under a budget, a checkpoint after (nearly) every batch whatever the machine's speed: at 10ms, a
  // fast run of these 25,000 events could end before the 20th checkpoint the test stops at.
  pipeline.state = { dir: join(dir, "state"), checkpointInterval: budget === undefined ? "100ms" : "1ms", ...(budget === undefined ? {} : { memoryBudget: budget }) };
  pipeline.sinks = [{ file: { path: join(dir, "out", "results.jsonl") } }];
  pipeline.late = { file: { path: join(dir, "out", "late.jsonl") } };
  pipeline.deadLetter = { file: { path: join(dir, "out", "dead-letter.jsonl") } };
  const file = join(dir, "default.yaml");
  writeFileSync(file, stringify(pipeline));
  return file;
}

function windowsOutputs(dir: string): string[] {
  return ["results.jsonl", "late.jsonl"].map((f) => readFileSync(join(dir, "out", f), "utf8"));
}

describe("config/default.yaml with state.memoryBudget", () => {
  it("writes the same output files as with everything in memory, stopped midway and restarted, reading windows back from disk", async () => {
    const referenceDir = tempDir("flusso-budget-windows-ref-");
    await runPipeline(loadPipeline(windowsVariant(referenceDir)), { batchSize: BATCH });
    const expected = windowsOutputs(referenceDir);
    expect(expected[0].length).toBeGreaterThan(1000);

    const dir = tempDir("flusso-budget-windows-");
    const file = windowsVariant(dir, "1MB");
    const stop = new AbortController();
    let checkpoints = 0;
    const first = await runPipeline(loadPipeline(file), { batchSize: BATCH, signal: stop.signal, onCheckpoint: () => ++checkpoints === 20 && stop.abort() });
    expect(first.isComplete).toBe(false);
    const second = await runPipeline(loadPipeline(file), { batchSize: BATCH });
    expect(second.isComplete).toBe(true);
    expect((first.counters[STATE_EVICTIONS_COUNTER] ?? 0) + (second.counters[STATE_EVICTIONS_COUNTER] ?? 0)).toBeGreaterThan(1000);
    expect((first.counters[STATE_READ_BACKS_COUNTER] ?? 0) + (second.counters[STATE_READ_BACKS_COUNTER] ?? 0)).toBeGreaterThan(1000);
    expect(windowsOutputs(dir)).toEqual(expected);
  }, 120_000);
});
