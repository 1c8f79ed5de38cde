import { describe, expect, it } from "vitest";
import { TimerService } from "../../engine/timers.ts";
import { mulberry32 } from "../harness.ts";

/** Fires everything due at or before `clockMs` and lists [key, time] in firing order. */
function fired(timers: TimerService, clockMs: number): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  timers.advanceTo(clockMs, (key, timeMs) => out.push([key, timeMs]));
  return out;
}

describe("TimerService", () => {
  it("fires in time order, and in key order within a time, keeping one timer per key and time", () => {
    const timers = new TimerService("t");
    timers.register("b", 20);
    timers.register("c", 10);
    timers.register("a", 20);
    timers.register("a", 20);
    expect(timers.size).toBe(3);
    expect(fired(timers, 15)).toEqual([["c", 10]]);
    expect(fired(timers, 30)).toEqual([["a", 20], ["b", 20]]);
    expect(timers.size).toBe(0);
  });

  it("forgets a deleted timer, also the last of its time, and ignores deleting one it never had", () => {
    const timers = new TimerService("t");
    timers.register("a", 10);
    timers.register("b", 10);
    timers.register("c", 20);
    timers.delete("a", 10);
    timers.delete("c", 20);
    timers.delete("zzz", 10);
    expect(fired(timers, 100)).toEqual([["b", 10]]);
  });

  it("fires in the same call a timer registered while firing that is already due", () => {
    const timers = new TimerService("t");
    timers.register("a", 10);
    const out: Array<[string, number]> = [];
    timers.advanceTo(50, (key, timeMs) => {
      out.push([key, timeMs]);
      if (key === "a") timers.register("b", 30);
    });
    expect(out).toEqual([["a", 10], ["b", 30]]);
  });

  it("tells the next due time past deleted ones, and hands over the keys due then in order", () => {
    const timers = new TimerService("t");
    timers.register("a", 10);
    timers.register("c", 20);
    timers.register("b", 20);
    timers.delete("a", 10);
    expect(timers.nextDueMs()).toBe(20);
    expect(() => timers.takeDueAt(30)).toThrow(/30 is not the next due time/);
    expect(timers.takeDueAt(20)).toEqual(["b", "c"]);
    expect(timers.nextDueMs()).toBeUndefined();
  });

  it("fires right after deadlines moved many times over (the times left behind are cleared out)", () => {
    const timers = new TimerService("t", [], { isCheckpointed: false });
    const random = mulberry32(7);
    const deadlineOf = new Map<string, number>();
    // 300 users' deadlines move 60 times each, in random order and to random times, as sessions'
    // closes move with events: far more times are left behind than stay live.
    for (let move = 0; move < 60 * 300; move++) {
      const user = `u${Math.floor(random() * 300)}`;
      const previous = deadlineOf.get(user);
      if (previous !== undefined) timers.delete(user, previous);
      const timeMs = Math.floor(random() * 1_000_000);
      timers.register(user, timeMs);
      deadlineOf.set(user, timeMs);
    }
    const expected = [...deadlineOf].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
    expect(fired(timers, Infinity)).toEqual(expected);
  });

  it("keeps no list of changes when no checkpoint stores it (its owner rebuilds it)", () => {
    const timers = new TimerService("t", [], { isCheckpointed: false });
    timers.register("a", 10);
    timers.delete("a", 10);
    timers.register("b", 20);
    expect(timers.takeDelta()).toEqual({ puts: [], deletes: [] });
    expect(fired(timers, 100)).toEqual([["b", 20]]);
  });

  it("restored from its checkpointed changes, fires as the original would", () => {
    const original = new TimerService("t");
    original.register("a", 10);
    original.register("b", 10);
    const first = original.takeDelta();
    original.delete("a", 10);
    original.register("c", 5);
    const second = original.takeDelta();
    const log = [...first.puts, ...second.puts, ...second.deletes.map((time): [unknown, unknown] => [time, null])];
    const restored = new TimerService("t", log);
    expect(fired(restored, 100)).toEqual(fired(original, 100));
    expect(fired(new TimerService("t", original.snapshotAll()), 100)).toEqual([]);
  });
});
