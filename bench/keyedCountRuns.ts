// Benchmarks 1 and 2: the same keyed tumbling count+sum, once through runJob (event time,
// watermarks, checkpoints) and once written by hand in plain RxJS and Maps.
import { record } from "../engine/elements.ts";
import { from } from "rxjs";
import type { CheckpointInfo } from "../engine/job.ts";
import { runJob } from "../engine/job.ts";
import { boundedOutOfOrderness } from "../engine/watermarks.ts";
import { keyedWindow } from "../operators/keyedWindow.ts";
import { CountingSink, HOUR_MS, windowStartMs, type BenchEvent } from "./benchUtil.ts";
import { MemorySource } from "./memorySource.ts";

export type EngineRun = {
  elapsedMs: number;
  eventsPerSecond: number;
  outputs: number;
  late: number;
  checkpoints: CheckpointInfo[];
};

/** Benchmark 1: the events through runJob, 1 h tumbling windows, a checkpoint every 2 s, a counting sink. */
export async function runEngine(events: readonly BenchEvent[], stateDir: string): Promise<EngineRun> {
  const sink = new CountingSink();
  const checkpoints: CheckpointInfo[] = [];
  const startedAtMs = performance.now();
  const result = await runJob<BenchEvent>({
    shape: "bench-keyed-count",
    source: new MemorySource(events),
    decode: (value) => {
      const e = value as BenchEvent;
      return record(e.user, e.timeMs, e);
    },
    newWatermarkGenerator: () => boundedOutOfOrderness(1000),
    idlenessMs: 0,
    stateDir,
    checkpointIntervalMs: 2000,
    deadLetter: new CountingSink(),
    reset: true,
    onCheckpoint: (info) => checkpoints.push(info),
    build(events$, graph) {
      const windows = keyedWindow<BenchEvent>({
        name: "hourly",
        assigner: { type: "tumbling", sizeMs: HOUR_MS },
        aggregates: [
          { name: "count", kind: "count" },
          { name: "sum", kind: "sum", value: (e) => e.amount },
        ],
      });
      graph.sinkTo("out", sink, events$.pipe(graph.operator(windows)));
    },
  });
  const elapsedMs = performance.now() - startedAtMs;
  return {
    elapsedMs,
    eventsPerSecond: (events.length / elapsedMs) * 1000,
    outputs: sink.written,
    late: result.counters.late,
    checkpoints,
  };
}

export type HandWrittenRun = { elapsedMs: number; eventsPerSecond: number; outputs: number; totalCount: number };

type Totals = { count: number; sum: number };

/** Benchmark 2: `from(events)` into a subscriber keeping Map<key, Map<windowStart, totals>>, results at the end. */
export function runHandWritten(events: readonly BenchEvent[]): HandWrittenRun {
  const sink = new CountingSink();
  let totalCount = 0;
  const startedAtMs = performance.now();
  const byKey = new Map<string, Map<number, Totals>>();
  from(events).subscribe({
    next(e) {
      const startMs = windowStartMs(e.timeMs, HOUR_MS);
      let windows = byKey.get(e.user);
      if (windows === undefined) {
        windows = new Map();
        byKey.set(e.user, windows);
      }
      const totals = windows.get(startMs);
      if (totals === undefined) windows.set(startMs, { count: 1, sum: e.amount });
      else {
        totals.count++;
        totals.sum += e.amount;
      }
    },
    complete() {
      for (const [key, windows] of byKey) {
        for (const [startMs, { count, sum }] of windows) {
          totalCount += count;
          // The same result the engine emits, so both pay for building it.
          sink.write({ window: "hourly", key, start: startMs, end: startMs + HOUR_MS, count, sum });
        }
      }
    },
  });
  const elapsedMs = performance.now() - startedAtMs;
  return { elapsedMs, eventsPerSecond: (events.length / elapsedMs) * 1000, outputs: sink.written, totalCount };
}
