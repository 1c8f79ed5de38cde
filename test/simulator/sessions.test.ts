// Tests of the sessions' pacing: the population keeps the asked pace, and some users go quiet for weeks.
import { describe, expect, it } from "vitest";
import { eventsOf } from "./generated.ts";

const DAY_MS = 86_400_000;

describe("sessions", () => {
  it("keeps the event-time pace at eventsPerSecond and lets some users go quiet for over a week", async () => {
    const fast = await eventsOf({ events: 20_000 }); // 10k users at 200/s
    const fastSpanSec = (fast.at(-1)!.timestamp - fast[0].timestamp) / 1000;
    expect(20_000 / fastSpanSec).toBeGreaterThan(170);
    expect(20_000 / fastSpanSec).toBeLessThan(230);

    const slow = await eventsOf({ users: 1000, events: 20_000, eventsPerSecond: 0.02 });
    const slowSpanDays = (slow.at(-1)!.timestamp - slow[0].timestamp) / DAY_MS;
    expect(slowSpanDays).toBeGreaterThan(9);
    expect(slowSpanDays).toBeLessThan(14);
    const lastSeenMs = new Map<string, number>();
    const quietWeekUsers = new Set<string>();
    for (const event of slow) {
      const seenMs = lastSeenMs.get(event.user_id);
      if (seenMs !== undefined && event.timestamp - seenMs > 7 * DAY_MS) quietWeekUsers.add(event.user_id);
      lastSeenMs.set(event.user_id, event.timestamp);
    }
    expect(quietWeekUsers.size).toBeGreaterThan(5);
    expect(quietWeekUsers.size).toBeLessThan(lastSeenMs.size * 0.3);
  });
});
