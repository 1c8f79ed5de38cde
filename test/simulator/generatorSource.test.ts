// Tests of the seeded clickstream generator: determinism, resumption, disorder, partitioning and the funnel.
import { describe, expect, it } from "vitest";
import { SourcePositionInvalid } from "../../engine/errors.ts";
import { partitionOf } from "../../engine/partitioning.ts";
import { EVENT_TYPES, GeneratorSource, type GeneratedEvent, type GeneratorOptions } from "../../simulator/generatorSource.ts";
import type { SourceBatch, SourceItem } from "../../engine/sources/source.ts";

const SMALL: GeneratorOptions = { users: 1000, events: 5000 };
const DAY_MS = 86_400_000;

async function opened(options: GeneratorOptions, position?: unknown): Promise<GeneratorSource> {
  const source = new GeneratorSource(options);
  await source.open(position);
  return source;
}

async function readAll(options: GeneratorOptions, batchSize = 1000): Promise<SourceItem[]> {
  const source = await opened(options);
  const items: SourceItem[] = [];
  for (;;) {
    const batch = source.nextBatch(batchSize) as SourceBatch;
    items.push(...batch.items);
    if (batch.isDone) return items;
  }
}

/** The generator never reports undecodable items. */
function eventIn(item: SourceItem): GeneratedEvent {
  return (item as { value: GeneratedEvent }).value;
}

async function eventsOf(options: GeneratorOptions): Promise<GeneratedEvent[]> {
  return (await readAll(options)).map(eventIn);
}

function batches(source: GeneratorSource, count: number, maxItems: number): SourceBatch[] {
  return Array.from({ length: count }, () => source.nextBatch(maxItems) as SourceBatch);
}

function isEqualButTimestamp(a: GeneratedEvent, b: GeneratedEvent): boolean {
  return JSON.stringify({ ...a, timestamp: 0 }) === JSON.stringify({ ...b, timestamp: 0 });
}

function isSameConsent(a: GeneratedEvent, b: GeneratedEvent): boolean {
  return a.consent.email === b.consent.email && a.consent.push === b.consent.push && a.consent.sms === b.consent.sms;
}

/** The fields BEHAVIOUR.md requires, and the optional ones where their event type calls for them. */
function isWellFormed(event: GeneratedEvent): boolean {
  const { consent, scroll_depth: scrollDepth } = event;
  return (
    /^u\d{6}$/.test(event.user_id) &&
    Number.isInteger(event.timestamp) &&
    event.page.startsWith("/") &&
    event.session_duration_sec >= 0 &&
    /^S\d+$/.test(event.session_id) &&
    /^[A-Z][a-z]+\/[A-Za-z_]+$/.test(event.tz) &&
    typeof consent.email === "boolean" && typeof consent.push === "boolean" && typeof consent.sms === "boolean" &&
    ["desktop", "mobile", "tablet"].includes(event.props.device) &&
    /^[A-Z]{2}$/.test(event.props.geo) &&
    (scrollDepth === undefined || (scrollDepth >= 0 && scrollDepth <= 1)) &&
    (event.event_type !== "purchase" || event.order_value! > 0) &&
    (event.event_type !== "search" || !!event.search_query) &&
    (event.event_type !== "video_view" || event.seconds_watched! > 0) &&
    (event.event_type !== "product_view" || /^p\d{4}$/.test(event.product_id!)) &&
    (event.event_type !== "email_open" || consent.email) // campaigns go only to who consented
  );
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

  it("produces every event type of the funnel, with consent and tz on every event", async () => {
    const events = await eventsOf({ users: 2000, events: 40_000 });
    expect(new Set(events.map((event) => event.event_type))).toEqual(new Set(EVENT_TYPES));
    // Checked in plain code and asserted once: 40k expect() calls would take seconds.
    const malformed = events.filter((event) => !isWellFormed(event));
    expect(malformed).toEqual([]);
    expect(new Set(events.map((event) => event.tz))).toContain("America/New_York");

    const sessions = new Map<string, { hasCart: boolean; hasPurchase: boolean }>();
    for (const event of events) {
      const session = sessions.get(event.session_id) ?? { hasCart: false, hasPurchase: false };
      session.hasCart ||= event.event_type === "add_to_cart";
      session.hasPurchase ||= event.event_type === "purchase";
      sessions.set(event.session_id, session);
    }
    const carts = [...sessions.values()].filter((session) => session.hasCart);
    const abandoned = carts.filter((session) => !session.hasPurchase);
    expect(abandoned.length / carts.length).toBeGreaterThan(0.5);
    expect(abandoned.length / carts.length).toBeLessThan(0.9);
  });

  it("keeps a user's time zone and consent stable until a consent update", async () => {
    const events = await eventsOf({ users: 500, events: 20_000 });
    const lastOf = new Map<string, GeneratedEvent>();
    const changes: string[] = [];
    let consentUpdates = 0;
    for (const event of events) {
      const last = lastOf.get(event.user_id);
      const isUpdate = event.event_type === "consent_update" && last?.event_type !== "consent_update"; // not a resend
      if (isUpdate) consentUpdates++;
      if (last && (event.tz !== last.tz || event.props.geo !== last.props.geo)) changes.push(`${event.user_id} moved`);
      if (last && isUpdate === isSameConsent(event, last)) changes.push(`${event.user_id} ${event.event_type}`);
      lastOf.set(event.user_id, event);
    }
    expect(consentUpdates).toBeGreaterThan(2);
    expect(changes).toEqual([]);
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
