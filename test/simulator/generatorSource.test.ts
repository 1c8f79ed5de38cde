// Tests of the simulator as a Source: determinism, resumption, disorder, duplicates, partitioning and its end.
import { describe, expect, it } from "vitest";
import { SourcePositionInvalid } from "../../engine/errors.ts";
import { partitionOf } from "../../engine/partitioning.ts";
import type { GeneratedEvent } from "../../simulator/events.ts";
import { GeneratorSource } from "../../simulator/generatorSource.ts";
import { batches, eventIn, eventsOf, opened, readAll, SMALL } from "./generated.ts";

function isEqualButTimestamp(a: GeneratedEvent, b: GeneratedEvent): boolean {
  return JSON.stringify({ ...a, timestamp: 0 }) === JSON.stringify({ ...b, timestamp: 0 });
}

describe("GeneratorSource", () => {
  it("produces the same events for the same seed and different ones for another seed", async () => {
    // Compared as JSON: a deep toEqual of thousands of events is slow.
    const first = JSON.stringify(await eventsOf({ ...SMALL, seed: 7 }));
    expect(JSON.stringify(await eventsOf({ ...SMALL, seed: 7 })) === first).toBe(true);
    const other = await eventsOf({ ...SMALL, seed: 8 });
    expect(other).toHaveLength(SMALL.events!);
    expect(JSON.stringify(other) === first).toBe(false);
  });

  it("resumes after a position with exactly the events an uninterrupted run produces next", async () => {
    const options = { ...SMALL, events: 3900 };
    const uninterrupted = await opened(options);
    batches(uninterrupted, 3, 700);
    const position = JSON.parse(JSON.stringify(uninterrupted.position())); // as a checkpoint stores it
    const restored = await opened(options, position);
    // 2100 read: two more full batches, the last 400 with the finished partitions, then nothing.
    const expected = batches(uninterrupted, 4, 700);
    expect(batches(restored, 4, 700)).toEqual(expected);
    expect(expected.map((batch) => batch.items.length)).toEqual([700, 700, 400, 0]);
    expect(expected[2].finishedPartitions).toEqual([0, 1, 2, 3]);
    expect(restored.position()).toEqual(uninterrupted.position());
    await uninterrupted.open(position); // reopening a used source rewinds it
    expect(batches(uninterrupted, 1, 700)).toEqual(expected.slice(0, 1));
  });

  it("refuses a position taken with other options or beyond the end", async () => {
    const source = await opened({ ...SMALL, seed: 1 });
    source.nextBatch(10);
    const position = source.position();
    await expect(opened({ ...SMALL, seed: 2 }, position)).rejects.toThrow(SourcePositionInvalid);
    await expect(opened({ ...SMALL, seed: 1, events: 5 }, position)).rejects.toThrow(SourcePositionInvalid);
    await expect(opened({ ...SMALL, seed: 1, events: 20 }, position)).resolves.toBeInstanceOf(GeneratorSource);
  });

  it("keeps disorder within disorderMs except the late fraction", async () => {
    const disorderMs = 2000;
    const lateByMs = 60_000;
    const lateness = (events: GeneratedEvent[]): number[] => {
      let maxSeenMs = -Infinity;
      return events.map((event) => {
        maxSeenMs = Math.max(maxSeenMs, event.timestamp);
        return maxSeenMs - event.timestamp;
      });
    };
    const onTime = lateness(await eventsOf({ users: 2000, events: 10_000, disorderMs, lateFraction: 0 }));
    expect(Math.max(...onTime)).toBeLessThanOrEqual(disorderMs);
    expect(onTime.filter((behindMs) => behindMs > 0).length).toBeGreaterThan(500); // disordered, though
    // With many events within the bound, the whole range is used.
    const tight = lateness(await eventsOf({ users: 2000, events: 10_000, disorderMs: 500, lateFraction: 0 }));
    expect(Math.max(...tight)).toBeLessThanOrEqual(500);
    expect(Math.max(...tight)).toBeGreaterThan(475);
    const withLate = lateness(await eventsOf({ users: 2000, events: 10_000, disorderMs, lateFraction: 0.01, lateByMs }));
    const late = withLate.filter((behindMs) => behindMs > disorderMs);
    expect(late.length).toBeGreaterThan(10_000 * 0.01 * 0.6);
    expect(late.length).toBeLessThan(10_000 * 0.01 * 1.4);
    expect(Math.max(...late)).toBeLessThanOrEqual(disorderMs + lateByMs);
    expect(Math.min(...late)).toBeGreaterThan(lateByMs - disorderMs);
  });

  it("assigns each user to one partition by FNV-1a hash of the id", async () => {
    const items = await readAll({ ...SMALL, partitions: 3 });
    const used = new Set<number>();
    const misplaced: string[] = [];
    for (const item of items) {
      if (item.partition !== partitionOf(eventIn(item).user_id, 3)) misplaced.push(eventIn(item).user_id);
      used.add(item.partition);
    }
    expect(misplaced).toEqual([]);
    expect([...used].sort()).toEqual([0, 1, 2]);
  });

  it("sends duplicateFraction of events twice, equal but for the timestamp, within a minute", async () => {
    const copies = (events: GeneratedEvent[]): number[] => {
      const lastOf = new Map<string, GeneratedEvent>();
      const apartMs: number[] = [];
      for (const event of events) {
        const last = lastOf.get(event.user_id);
        if (last && last.page === event.page && isEqualButTimestamp(last, event)) {
          apartMs.push(Math.abs(event.timestamp - last.timestamp));
        }
        lastOf.set(event.user_id, event);
      }
      return apartMs;
    };
    expect(copies(await eventsOf({ users: 2000, events: 20_000, duplicateFraction: 0 }))).toEqual([]);
    const apartMs = copies(await eventsOf({ users: 2000, events: 20_000, duplicateFraction: 0.01 }));
    expect(apartMs.length).toBeGreaterThan(20_000 * 0.01 * 0.6);
    expect(apartMs.length).toBeLessThan(20_000 * 0.01 * 1.4);
    expect(Math.max(...apartMs)).toBeLessThan(60_000);
  });

  it("stops after the requested number of events", async () => {
    const source = await opened({ ...SMALL, events: 2500, partitions: 2 });
    expect(source.description).toBe("generator(seed=42)");
    expect(source.partitions).toBe(2);
    const [first, second, last, after] = batches(source, 4, 1000);
    expect([first.items.length, second.items.length, last.items.length]).toEqual([1000, 1000, 500]);
    expect([first.isDone, second.isDone, last.isDone]).toEqual([false, false, true]);
    expect(last.finishedPartitions).toEqual([0, 1]);
    expect(after).toEqual({ items: [], isDone: true });
    await source.close();
  });
});
