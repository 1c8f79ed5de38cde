// The rules that warn an operator: a slow checkpoint, and a job falling behind its input (watermark lag
// growing while the source never runs dry, or a known backlog growing), each warning rate-limited.
import { describe, expect, it } from "vitest";
import type { JobEvent } from "../../engine/jobEvents.ts";
import { CHECKPOINT_SLOW, FALLING_BEHIND, JobHealth } from "../../engine/jobHealth.ts";

const SAMPLE = FALLING_BEHIND.sampleMs;

function watched(intervalMs = 10_000) {
  const events: JobEvent[] = [];
  return { events, health: new JobHealth((e) => events.push(e), intervalMs) };
}

describe("JobHealth: checkpoints", () => {
  it("warns of a checkpoint over half the interval, and not again within a minute", () => {
    const { events, health } = watched(10_000);
    health.onCheckpoint(1, 4_900, 0);
    expect(events).toEqual([]);
    health.onCheckpoint(2, 5_200, 1_000);
    expect(events).toEqual([{ event: "checkpoint-slow", checkpointId: 2, durationMs: 5_200, intervalMs: 10_000 }]);
    health.onCheckpoint(3, 6_000, 30_000);
    expect(events).toHaveLength(1);
    health.onCheckpoint(4, 6_000, 1_000 + FALLING_BEHIND.repeatMs);
    expect(events.map((e) => e.event === "checkpoint-slow" && e.checkpointId)).toEqual([2, 4]);
  });

  it("does not call a checkpoint under a second slow, however short the interval", () => {
    const { events, health } = watched(100);
    health.onCheckpoint(1, CHECKPOINT_SLOW.minMs - 1, 0);
    expect(events).toEqual([]);
  });
});

describe("JobHealth: falling behind", () => {
  /** Feeds one batch per sample: event time advancing `eventStepMs` per `SAMPLE` ms of processing time. */
  function feed(health: JobHealth, samples: number, { eventStepMs, isShort = false, pending }: { eventStepMs: number; isShort?: boolean; pending?: (i: number) => number }, from = { nowMs: 0, watermarkMs: 0, i: 0 }) {
    for (let n = 0; n < samples; n++, from.i++) {
      health.onBatch(from.nowMs, isShort, from.watermarkMs, () => pending?.(from.i));
      from.nowMs += SAMPLE;
      from.watermarkMs += eventStepMs;
    }
    return from;
  }

  it("warns when event time falls ever further behind the clock while the source has more waiting", () => {
    const { events, health } = watched();
    feed(health, FALLING_BEHIND.samples + 1, { eventStepMs: SAMPLE / 2 });
    expect(events).toEqual([{ event: "falling-behind", lagMs: (FALLING_BEHIND.samples * SAMPLE) / 2, forMs: FALLING_BEHIND.samples * SAMPLE }]);
  });

  it("says nothing of an idle source whose event time stands still: its batches come back short", () => {
    const { events, health } = watched();
    feed(health, 10, { eventStepMs: 0, isShort: true });
    expect(events).toEqual([]);
  });

  it("says nothing of a replay that runs faster than the clock", () => {
    const { events, health } = watched();
    feed(health, 10, { eventStepMs: SAMPLE * 100 });
    expect(events).toEqual([]);
  });

  it("warns once a minute while behind, and says once when it has caught up", () => {
    const { events, health } = watched();
    const at = feed(health, 30, { eventStepMs: 0 });
    // 30 samples, 5 s apart: behind from the 4th on, warned at the 4th and 12 samples (a minute) later, and at 12 more.
    expect(events.map((e) => e.event)).toEqual(["falling-behind", "falling-behind", "falling-behind"]);
    feed(health, 1, { eventStepMs: 0, isShort: true }, at);
    expect(events.at(-1)).toMatchObject({ event: "caught-up" });
    feed(health, 5, { eventStepMs: 0, isShort: true }, at);
    expect(events.filter((e) => e.event === "caught-up")).toHaveLength(1);
  });

  it("judges a source that knows its backlog by the backlog: growing at every sample", () => {
    const { events, health } = watched();
    const at = feed(health, FALLING_BEHIND.samples + 1, { eventStepMs: SAMPLE * 100, pending: (i) => 100 * (i + 1) });
    expect(events).toEqual([{ event: "falling-behind", lagMs: expect.any(Number), forMs: FALLING_BEHIND.samples * SAMPLE, pendingMessages: 400 }]);
    feed(health, 1, { eventStepMs: SAMPLE, pending: () => 10 }, at);
    expect(events.at(-1)).toMatchObject({ event: "caught-up" });
  });

  it("samples once per interval, whatever the number of batches", () => {
    const { events, health } = watched();
    for (let nowMs = 0; nowMs < SAMPLE * 2; nowMs += 1) health.onBatch(nowMs, false, 0, () => undefined);
    expect(events).toEqual([]);
  });
});
