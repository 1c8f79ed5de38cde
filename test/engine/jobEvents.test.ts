// The events a job emits as it runs (engine/jobEvents.ts): its start, a fresh start or a restore from
// checkpoint N, the end of its input; a checkpoint that is slow or fails.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, record } from "../../engine/elements.ts";
import { runJob, type JobOptions } from "../../engine/job.ts";
import type { JobEvent } from "../../engine/jobEvents.ts";
import { CHECKPOINT_SLOW } from "../../engine/jobHealth.ts";
import type { Sink } from "../../engine/sinks/sink.ts";
import { boundedOutOfOrderness } from "../../engine/watermarks.ts";
import { MemorySource } from "../../bench/memorySource.ts";

/** A sink that keeps nothing; its flush waits `flushMs`, or throws `failure`. */
function sink({ flushMs = 0, failure }: { flushMs?: number; failure?: Error } = {}): Sink {
  return {
    description: "test",
    async recover() {},
    write() {},
    async flush() {
      if (failure) throw failure;
      await new Promise((r) => setTimeout(r, flushMs));
      return 0;
    },
    async close() {},
  };
}

function options(dir: string, events: JobEvent[], out: Sink = sink(), checkpointIntervalMs = 60_000): JobOptions<number> {
  return {
    shape: "events-v1",
    source: new MemorySource([1, 2, 3, 4, 5]),
    decode: (v) => record("k", v as number, v as number),
    newWatermarkGenerator: () => boundedOutOfOrderness(0),
    idlenessMs: 0,
    stateDir: dir,
    checkpointIntervalMs,
    deadLetter: sink(),
    batchSize: 2,
    onEvent: (e) => events.push(e),
    build(events$, graph) {
      graph.sinkTo("out", out, events$ as never);
    },
  };
}

describe("a job's events", () => {
  it("a fresh start, then a restore from the checkpoint the first run left", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-events-"));
    const first: JobEvent[] = [];
    await runJob(options(dir, first));
    expect(first).toEqual([
      { event: "started", source: "memory", partitions: 1, sinks: ["deadLetter", "out"], stateDir: dir },
      { event: "fresh-start", wasReset: false },
      { event: "input-ended", read: 5 },
    ]);
    const second: JobEvent[] = [];
    await runJob(options(dir, second));
    expect(second[1]).toEqual({ event: "restored", checkpointId: 1, watermarkMs: END_OF_TIME });
  });

  it("says a checkpoint was slow (over half its interval), with how long it took", async () => {
    const events: JobEvent[] = [];
    const flushMs = CHECKPOINT_SLOW.minMs + 100;
    await runJob(options(mkdtempSync(join(tmpdir(), "flusso-events-")), events, sink({ flushMs }), 2 * flushMs + 2_000));
    expect(events.some((e) => e.event === "checkpoint-slow")).toBe(false);
    await runJob(options(mkdtempSync(join(tmpdir(), "flusso-events-")), events, sink({ flushMs }), 2 * CHECKPOINT_SLOW.minMs));
    const slow = events.find((e) => e.event === "checkpoint-slow");
    expect(slow).toEqual({ event: "checkpoint-slow", checkpointId: 1, durationMs: expect.any(Number), intervalMs: 2 * CHECKPOINT_SLOW.minMs });
    expect((slow as { durationMs: number }).durationMs).toBeGreaterThanOrEqual(CHECKPOINT_SLOW.minMs + 100);
  });

  it("says a checkpoint failed, and the job fails with its error", async () => {
    const events: JobEvent[] = [];
    const failure = new Error("disk full\nmore detail");
    await expect(runJob(options(mkdtempSync(join(tmpdir(), "flusso-events-")), events, sink({ failure })))).rejects.toBe(failure);
    expect(events.at(-1)).toEqual({ event: "checkpoint-failed", checkpointId: 1, error: "disk full" });
  });
});
