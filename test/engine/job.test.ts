// The job runner: timers of both kinds fire and survive a restart, watermarks reach operators in
// order, a restored job resumes after its source position, and a state dir of another pipeline is refused.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, record } from "../../engine/elements.ts";
import { StateMismatch } from "../../engine/errors.ts";
import { runJob, type JobOptions } from "../../engine/job.ts";
import type { OperatorDefinition } from "../../engine/operator.ts";
import type { Sink } from "../../engine/sinks/sink.ts";
import type { Source, SourceItem } from "../../engine/sources/source.ts";
import { boundedOutOfOrderness } from "../../engine/watermarks.ts";
import { MemorySource } from "../../bench/memorySource.ts";
import { schemaErrors } from "../outputSchemas.ts";

type Ev = { user: string; t: number };

class ListSink implements Sink {
  readonly description = "list";
  readonly lines: object[] = [];
  async recover(): Promise<void> {}
  write(value: object): void {
    this.lines.push(value);
  }
  async flush(): Promise<number> {
    return this.lines.length;
  }
  async close(): Promise<void> {}
}

/** Per user: counts events; says "quiet" 100 ms of event time and "nudge" 10 s of processing time after the first one. */
const reminders: OperatorDefinition<Ev, object> = {
  name: "reminders",
  build(ctx) {
    const counts = ctx.valueState<number>("counts");
    const eventTimers = ctx.eventTimers("quiet");
    const processingTimers = ctx.processingTimers("nudge");
    let nowMs = 0;
    return {
      onRecord(rec) {
        const n = (counts.get(rec.key) ?? 0) + 1;
        counts.set(rec.key, n);
        if (n === 1) {
          eventTimers.register(rec.key, rec.time + 100);
          processingTimers.register(rec.key, nowMs + 10_000);
        }
      },
      onWatermark(watermarkMs, out) {
        eventTimers.advanceTo(watermarkMs, (key, timeMs) => out.emit(key, timeMs, { kind: "quiet", key, at: timeMs, count: counts.get(key) }));
      },
      onProcessingTime(now, out) {
        nowMs = now;
        processingTimers.advanceTo(now, (key, timeMs) => out.emit(key, 0, { kind: "nudge", key, at: timeMs }));
      },
    };
  },
};

function options(dir: string, events: Ev[], sink: ListSink, clock: { nowMs: number }, stopAfterBatches?: number): JobOptions<Ev> {
  const controller = new AbortController();
  let batches = 0;
  return {
    shape: "reminders-v1",
    source: new MemorySource(events),
    decode: (v) => record((v as Ev).user, (v as Ev).t, v as Ev),
    newWatermarkGenerator: () => boundedOutOfOrderness(0),
    idlenessMs: 0,
    stateDir: dir,
    checkpointIntervalMs: 1_000_000,
    deadLetter: new ListSink(),
    batchSize: 2,
    signal: controller.signal,
    nowMs: () => {
      clock.nowMs += 300; // each look at the clock: 300 ms of virtual processing time
      return clock.nowMs;
    },
    onProgress: () => undefined,
    progressIntervalMs: 0,
    build(events$, graph) {
      graph.sinkTo("out", sink, events$.pipe(graph.operator(reminders)) as never);
      // Stop after a number of batches: the job takes a last checkpoint at that cut.
      events$.subscribe((e) => {
        if (e.kind === "watermark" && stopAfterBatches !== undefined && ++batches >= stopAfterBatches) controller.abort();
      });
    },
  };
}

const EVENTS: Ev[] = [
  { user: "a", t: 0 },
  { user: "b", t: 10 },
  { user: "a", t: 50 },
  { user: "b", t: 90 },
  { user: "c", t: 150 },
  { user: "a", t: 300 },
];

describe("job", () => {
  it("fires event-time and processing-time timers, and they survive a restart", async () => {
    const straight = new ListSink();
    await runJob(options(mkdtempSync(join(tmpdir(), "flusso-job-")), EVENTS, straight, { nowMs: 0 }));
    const dir = mkdtempSync(join(tmpdir(), "flusso-job-"));
    const first = new ListSink();
    const clock = { nowMs: 0 };
    const stopped = await runJob(options(dir, EVENTS, first, clock, 1));
    expect(stopped.isComplete).toBe(false);
    clock.nowMs += 20_000; // the restart takes a while: the nudges registered before it are due
    const second = new ListSink();
    const resumed = await runJob(options(dir, EVENTS, second, clock));
    expect(resumed.isComplete).toBe(true);
    expect(resumed.restoredFromCheckpoint).toBe(1);

    const quiet = (lines: object[]) => lines.filter((l) => (l as { kind: string }).kind === "quiet");
    // Batches of two, a watermark after each: a@300 arrives in the batch whose watermark fires a's timer.
    expect(quiet(straight.lines)).toEqual([
      { kind: "quiet", key: "a", at: 100, count: 3 },
      { kind: "quiet", key: "b", at: 110, count: 2 },
      { kind: "quiet", key: "c", at: 250, count: 1 },
    ]);
    expect([...quiet(first.lines), ...quiet(second.lines)]).toEqual(quiet(straight.lines));
    // The nudges for a and b were registered before the stop; only the restored timers can fire them.
    const nudged = (lines: object[]) => lines.filter((l) => (l as { kind: string }).kind === "nudge").map((l) => (l as { key: string }).key);
    expect(nudged(first.lines)).toEqual([]);
    expect(nudged(second.lines)).toEqual(["a", "b"]);
    expect(resumed.thisRun.read).toBe(EVENTS.length - stopped.thisRun.read);
  });

  it("refuses a state dir written by another pipeline definition", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-job-"));
    await runJob(options(dir, EVENTS, new ListSink(), { nowMs: 0 }));
    const other = { ...options(dir, EVENTS, new ListSink(), { nowMs: 0 }), shape: "something-else" };
    await expect(runJob(other)).rejects.toThrow(StateMismatch);
  });

  it("dead-letters an event an operator throws on, with the reason, and goes on with the next one", async () => {
    const throwsOnB: OperatorDefinition<Ev, object> = {
      name: "picky",
      build: () => ({
        onRecord(rec, out) {
          if (rec.key === "b") throw new TypeError("cannot handle b");
          out.emit(rec.key, rec.time, { key: rec.key, t: rec.time });
        },
        onWatermark() {},
      }),
    };
    const sink = new ListSink();
    const dead = new ListSink();
    const result = await runJob({
      ...options(mkdtempSync(join(tmpdir(), "flusso-job-")), EVENTS, sink, { nowMs: 0 }),
      deadLetter: dead,
      build(events$, graph) {
        graph.sinkTo("out", sink, events$.pipe(graph.operator(throwsOnB)) as never);
      },
    });
    expect(result.isComplete).toBe(true);
    expect(sink.lines.map((l) => (l as { key: string }).key)).toEqual(["a", "a", "c", "a"]);
    expect(dead.lines).toEqual([
      { reason: "an operator failed on this event: picky: cannot handle b", key: "b", time: "1970-01-01T00:00:00.010Z", time_ms: 10, event: { user: "b", t: 10 } },
      { reason: "an operator failed on this event: picky: cannot handle b", key: "b", time: "1970-01-01T00:00:00.090Z", time_ms: 90, event: { user: "b", t: 90 } },
    ]);
    expect(result.counters.deadLettered).toBe(2);
    for (const line of dead.lines) expect(schemaErrors("dead_letter", line)).toEqual([]);
  });

  it("writes a dead letter whatever its event holds: one the sink cannot encode keeps its reason and origin", async () => {
    const dead = new ListSink();
    const picky = Object.assign(dead, {
      write(value: object) {
        JSON.stringify(value); // a cycle cannot be encoded
        dead.lines.push(value);
      },
    });
    const cyclic: Record<string, unknown> = { user: "a" };
    cyclic.self = cyclic;
    const result = await runJob({
      ...options(mkdtempSync(join(tmpdir(), "flusso-job-")), [cyclic as unknown as Ev, ...EVENTS], new ListSink(), { nowMs: 0 }),
      deadLetter: picky,
      decode: (v) => ((v as Ev).t === undefined ? { error: "no time" } : record((v as Ev).user, (v as Ev).t, v as Ev)),
    });
    expect(result.isComplete).toBe(true);
    expect(dead.lines).toEqual([{ reason: "no time", origin: undefined, partition: 0, raw: expect.stringMatching(/^\(withheld: it cannot be encoded: Converting circular structure/) }]);
  });

  it("fires an event-time timer in a quiet period when event time follows the clock, and not otherwise", async () => {
    /** A live source: one event, then empty batches (nothing arrives), for ever. */
    const live = (): Source => {
      let isSent = false;
      return {
        description: "live",
        partitions: 1,
        open: async () => {},
        nextBatch: () => {
          const items: SourceItem[] = isSent ? [] : [{ partition: 0, value: { user: "a", t: 1_000 } }];
          isSent = true;
          return { items, isDone: false };
        },
        position: () => 0,
        close: async () => {},
      };
    };
    const run = async (advancesWhenIdle: boolean) => {
      const sink = new ListSink();
      const stop = new AbortController();
      const clock = { nowMs: 1_000 };
      await runJob({
        ...options(mkdtempSync(join(tmpdir(), "flusso-job-")), [], sink, clock),
        source: live(),
        idlenessMs: 500,
        advancesWhenIdle,
        signal: stop.signal,
        // Event times are the clock's: each look at it is 300 ms later. Stop after 20 looks.
        nowMs: () => {
          clock.nowMs += 300;
          if (clock.nowMs > 7_000) stop.abort();
          return clock.nowMs;
        },
      });
      return sink.lines.filter((l) => (l as { kind: string }).kind === "quiet");
    };
    expect(await run(true)).toEqual([{ kind: "quiet", key: "a", at: 1_100, count: 1 }]);
    expect(await run(false)).toEqual([]);
  });

  it("reaches the input's horizon before the end of time when it stops at the end", async () => {
    const seen: number[] = [];
    const watermarks: OperatorDefinition<Ev, object> = {
      name: "watermarks",
      build: () => ({ onRecord() {}, onWatermark: (watermarkMs) => void seen.push(watermarkMs) }),
    };
    const sink = new ListSink();
    await runJob({
      ...options(mkdtempSync(join(tmpdir(), "flusso-job-")), EVENTS, sink, { nowMs: 0 }),
      newWatermarkGenerator: () => boundedOutOfOrderness(50),
      atEnd: "stop",
      build(events$, graph) {
        graph.sinkTo("out", sink, events$.pipe(graph.operator(watermarks)) as never);
      },
    });
    // The newest event (300) plus the bound (50), then the end of time.
    expect(seen.slice(-2)).toEqual([350, END_OF_TIME]);
  });
});

