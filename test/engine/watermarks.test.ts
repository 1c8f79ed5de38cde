// Watermarks: bounded out-of-orderness, the minimum over partitions, idleness, and no regression.
import { describe, expect, it } from "vitest";
import { WatermarkRegression } from "../../engine/errors.ts";
import { advanceWatermark, boundedOutOfOrderness, WatermarkTracker } from "../../engine/watermarks.ts";

function tracker(partitions: number, idlenessMs: number, advancesWhenIdle = false) {
  let nowMs = 0;
  const t = new WatermarkTracker({ partitions, newGenerator: () => boundedOutOfOrderness(100), idlenessMs, advancesWhenIdle, nowMs: () => nowMs });
  return { t, advanceClock: (ms: number) => (nowMs += ms), now: () => nowMs };
}

describe("watermarks", () => {
  it("trails the newest event by the out-of-orderness bound, minus one", () => {
    const g = boundedOutOfOrderness(100);
    g.onEvent(1000);
    g.onEvent(900);
    expect(g.onPeriodicEmit()).toBe(899);
  });

  it("is the minimum over active partitions", () => {
    const { t } = tracker(2, 0);
    t.onEvent(0, 5000, 0);
    expect(t.poll()).toBeUndefined(); // partition 1 has seen nothing yet
    t.onEvent(1, 3000, 0);
    expect(t.poll()).toBe(2899);
  });

  it("stops waiting for a partition idle for the idleness timeout, and never regresses when it resumes", () => {
    const { t, advanceClock, now } = tracker(2, 1000);
    t.onEvent(0, 5000, now());
    t.onEvent(1, 3000, now());
    expect(t.poll()).toBe(2899);
    advanceClock(600);
    t.onEvent(0, 9000, now());
    advanceClock(600); // partition 1 silent for 1200 ms: idle
    expect(t.poll()).toBe(8899);
    t.onEvent(1, 4000, now()); // resumes far behind
    expect(t.poll()).toBeUndefined();
    expect(t.watermarkMs).toBe(8899);
  });

  it("stands still while every partition is idle, unless asked to follow the clock", () => {
    const still = tracker(2, 1000);
    still.advanceClock(50_000);
    still.t.onEvent(0, 50_000, still.now());
    still.t.onEvent(1, 50_000, still.now());
    expect(still.t.poll()).toBe(49_899);
    still.advanceClock(5_000);
    expect(still.t.poll()).toBeUndefined();

    const { t, advanceClock, now } = tracker(2, 1000, true);
    advanceClock(50_000);
    t.onEvent(0, 50_000, now());
    t.onEvent(1, 50_000, now());
    expect(t.poll()).toBe(49_899);
    advanceClock(999); // not idle yet
    expect(t.poll()).toBeUndefined();
    advanceClock(4_001); // every partition quiet for 5 s: event time follows the clock, minus the bound
    expect(t.poll()).toBe(54_899);
    advanceClock(10_000);
    expect(t.poll()).toBe(64_899);
    // An event behind the clock's watermark is late as usual; the watermark does not go back.
    t.onEvent(0, 60_000, now());
    expect(t.poll()).toBeUndefined();
    expect(t.watermarkMs).toBe(64_899);
  });

  it("knows the input's horizon, its newest event plus the bound, and reaches it at the end", () => {
    const { t } = tracker(2, 0);
    expect(t.horizonMs()).toBe(-Infinity);
    t.onEvent(0, 5000, 0);
    t.onEvent(1, 3000, 0);
    expect(t.poll()).toBe(2899);
    expect(t.horizonMs()).toBe(5100);
    expect(t.reachHorizon()).toBe(5100);
    expect(t.reachHorizon()).toBeUndefined(); // already there
    expect(t.end()).toBe(Number.MAX_SAFE_INTEGER);
  });

  it("leaves a finished partition out", () => {
    const { t } = tracker(2, 0);
    t.onEvent(0, 5000, 0);
    t.finish(1);
    expect(t.poll()).toBe(4899);
  });

  it("refuses to move backwards", () => {
    expect(() => advanceWatermark(1000, 999)).toThrow(WatermarkRegression);
    expect(() => advanceWatermark(1000, 999)).toThrow("1000 -> 999");
  });

  it("restores the watermark and per-partition progress from a snapshot", () => {
    const { t } = tracker(2, 0);
    t.onEvent(0, 5000, 0);
    t.onEvent(1, 7000, 0);
    t.poll();
    const { t: restored } = tracker(2, 0);
    restored.restore(t.snapshot());
    expect(restored.watermarkMs).toBe(4899);
    restored.onEvent(0, 8000, 0);
    expect(restored.poll()).toBe(6899);
  });
});
