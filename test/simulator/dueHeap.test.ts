// Tests of the due-time heap: the first user is always the one due soonest.
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { DueHeap } from "../../simulator/dueHeap.ts";

describe("DueHeap", () => {
  it("gives users in order of due time as each is rescheduled", () => {
    const random = mulberry32(3);
    const dueAtMs = Float64Array.from({ length: 50 }, () => Math.floor(random() * 1000));
    const heap = new DueHeap(dueAtMs);
    const order: number[] = [];
    for (let i = 0; i < dueAtMs.length; i++) {
      expect(heap.atMs[0]).toBe(dueAtMs[heap.user[0]]);
      order.push(heap.user[0]);
      heap.rescheduleFirst(Infinity);
    }
    expect(new Set(order).size).toBe(dueAtMs.length);
    expect(order.map((user) => dueAtMs[user])).toEqual([...dueAtMs].sort((a, b) => a - b));
  });

  it("puts a rescheduled user back among the others by its new due time", () => {
    const heap = new DueHeap(Float64Array.from([10, 20, 30, 40, 50, 60]));
    heap.rescheduleFirst(35); // user 0, now due after users 1 and 2
    const order: number[] = [];
    for (let i = 0; i < 4; i++) {
      order.push(heap.user[0]);
      heap.rescheduleFirst(Infinity);
    }
    expect(order).toEqual([1, 2, 0, 3]);
  });
});
