// Window results against a brute-force model that recomputes every window from the events it holds.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { record, watermark, type Element } from "../../engine/elements.ts";
import type { AggregateSpec } from "../../operators/aggregations.ts";
import { keyedWindow, LATE, type LateEvent, type WindowResult } from "../../operators/keyedWindow.ts";
import type { WindowAssigner } from "../../operators/windowAssigners.ts";
import { memoryContext, runOperator, runWithRestart } from "../harness.ts";

type Ev = { v: number; tag: string };

const AGGREGATES: AggregateSpec<Ev>[] = [
  { name: "events", kind: "count" },
  { name: "as", kind: "count", where: (e) => e.tag === "a" },
  { name: "total", kind: "sum", value: (e) => e.v },
  { name: "mean", kind: "avg", value: (e) => e.v },
  { name: "low", kind: "min", value: (e) => e.v },
  { name: "high", kind: "max", value: (e) => e.v },
  { name: "firstV", kind: "first", value: (e) => e.v },
  { name: "lastV", kind: "last", value: (e) => e.v },
  { name: "tags", kind: "distinct", value: (e) => e.tag },
];

type Held = { key: string; time: number; value: Ev };

/** The aggregates of a window, computed from scratch from the events it holds. */
function expectedResult(name: string, key: string, startMs: number, endMs: number, events: Held[]): WindowResult {
  const vs = events.map((e) => e.value.v);
  const byTime = [...events].sort((a, b) => a.time - b.time);
  return {
    window: name,
    key,
    start: new Date(startMs).toISOString(),
    start_ms: startMs,
    end: new Date(endMs).toISOString(),
    end_ms: endMs,
    events: events.length,
    as: events.filter((e) => e.value.tag === "a").length,
    total: vs.reduce((a, b) => a + b, 0),
    // Results show sums and averages to 12 significant digits (test/operators/aggregations.test.ts).
    mean: vs.length ? Number((vs.reduce((a, b) => a + b, 0) / vs.length).toPrecision(12)) : null,
    low: vs.length ? Math.min(...vs) : null,
    high: vs.length ? Math.max(...vs) : null,
    firstV: byTime[0]?.value.v ?? null,
    lastV: byTime.at(-1)?.value.v ?? null,
    tags: new Set(events.map((e) => e.value.tag)).size,
  };
}

function alignedWindowsOf(assigner: WindowAssigner, timeMs: number): Array<[number, number]> {
  if (assigner.type === "tumbling") {
    const start = Math.floor(timeMs / assigner.sizeMs) * assigner.sizeMs;
    return [[start, start + assigner.sizeMs]];
  }
  if (assigner.type !== "hopping") throw new Error("aligned only");
  const out: Array<[number, number]> = [];
  for (let start = 0; start <= timeMs; start += assigner.slideMs) {
    if (timeMs < start + assigner.sizeMs) out.push([start, start + assigner.sizeMs]);
  }
  return out;
}

/** Groups one key's events into sessions from scratch: a gap of more than gapMs splits them. */
function sessionsOf(events: Held[], gapMs: number): Array<{ start: number; end: number; events: Held[] }> {
  const sorted = [...events].sort((a, b) => a.time - b.time);
  const sessions: Array<{ start: number; end: number; events: Held[] }> = [];
  for (const e of sorted) {
    const last = sessions.at(-1);
    if (last && e.time <= last.end) {
      last.events.push(e);
      last.end = Math.max(last.end, e.time + gapMs);
    } else sessions.push({ start: e.time, end: e.time + gapMs, events: [e] });
  }
  return sessions;
}

type Model = { outputs: WindowResult[]; late: Held[] };

/** Brute force: keeps every accepted event, and at each step recomputes which windows exist and are due. */
function model(assigner: WindowAssigner, latenessMs: number, input: Element<Ev>[]): Model {
  const name = "w";
  const outputs: WindowResult[] = [];
  const late: Held[] = [];
  let wm = -Infinity;
  const live = new Map<string, Held[]>(); // events of windows not purged, per key
  const fired = new Set<string>();
  const purgedAligned = new Set<string>();
  const acceptedInto = new Map<Held, Set<number>>(); // aligned: the windows each event was taken by
  const windowsOfKey = (key: string) => {
    const events = live.get(key) ?? [];
    if (assigner.type === "session") return sessionsOf(events, assigner.gapMs);
    const byWindow = new Map<string, { start: number; end: number; events: Held[] }>();
    for (const e of events) {
      for (const [start, end] of alignedWindowsOf(assigner, e.time)) {
        const id = `${start}`;
        if (purgedAligned.has(`${key}|${start}`) || !acceptedInto.get(e)?.has(start)) continue;
        if (!byWindow.has(id)) byWindow.set(id, { start, end, events: [] });
        byWindow.get(id)!.events.push(e);
      }
    }
    return [...byWindow.values()];
  };
  for (const el of input) {
    if (el.kind === "watermark") {
      if (el.time <= wm) continue;
      const previous = wm;
      wm = el.time;
      const due: Array<{ key: string; start: number; end: number; events: Held[] }> = [];
      for (const key of live.keys()) {
        for (const w of windowsOfKey(key)) {
          if (w.end - 1 <= wm && !fired.has(`${key}|${w.start}|${w.end}`)) due.push({ key, ...w });
        }
      }
      due.sort((a, b) => a.end - b.end || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      for (const w of due) {
        fired.add(`${w.key}|${w.start}|${w.end}`);
        outputs.push(expectedResult(name, w.key, w.start, w.end, w.events));
      }
      for (const key of [...live.keys()]) {
        for (const w of windowsOfKey(key)) {
          if (w.end - 1 + latenessMs > wm) continue;
          if (assigner.type === "session") live.set(key, live.get(key)!.filter((e) => !w.events.includes(e)));
          else purgedAligned.add(`${key}|${w.start}`);
        }
      }
      void previous;
      continue;
    }
    const held: Held = { key: el.key, time: el.time, value: el.value };
    const isOpen = (end: number) => end - 1 + latenessMs > wm;
    if (assigner.type === "session") {
      const candidate = sessionsOf([...(live.get(el.key) ?? []), held], assigner.gapMs).find((s) => s.events.includes(held))!;
      if (!isOpen(candidate.end)) {
        late.push(held);
        continue;
      }
      live.set(el.key, [...(live.get(el.key) ?? []), held]);
      if (candidate.end - 1 <= wm) {
        fired.add(`${el.key}|${candidate.start}|${candidate.end}`);
        outputs.push(expectedResult(name, el.key, candidate.start, candidate.end, candidate.events));
      }
      continue;
    }
    const open = alignedWindowsOf(assigner, el.time).filter(([start, end]) => isOpen(end) && !purgedAligned.has(`${el.key}|${start}`));
    if (open.length === 0) {
      late.push(held);
      continue;
    }
    live.set(el.key, [...(live.get(el.key) ?? []), held]);
    acceptedInto.set(held, new Set(open.map(([start]) => start)));
    for (const [start, end] of open) {
      const w = windowsOfKey(el.key).find((x) => x.start === start)!;
      if (end - 1 <= wm || fired.has(`${el.key}|${start}|${end}`)) {
        fired.add(`${el.key}|${start}|${end}`);
        outputs.push(expectedResult(name, el.key, start, end, w.events));
      }
    }
  }
  return { outputs, late };
}

/** Random keyed events with bounded disorder, a few much later ones, and watermarks in between. */
const streams = fc
  .record({
    count: fc.integer({ min: 1, max: 120 }),
    keys: fc.integer({ min: 1, max: 4 }),
    maxDisorderMs: fc.integer({ min: 0, max: 40 }),
    seed: fc.integer(),
  })
  .chain(({ count, keys, maxDisorderMs }) =>
    fc
      .array(
        fc.record({
          key: fc.integer({ min: 0, max: keys - 1 }),
          stepMs: fc.integer({ min: 0, max: 15 }),
          disorderMs: fc.integer({ min: 0, max: maxDisorderMs }),
          isVeryLate: fc.double({ min: 0, max: 1, noNaN: true }).map((x) => x < 0.08),
          v: fc.integer({ min: -50, max: 50 }),
          tag: fc.constantFrom("a", "b", "c"),
          watermarkAfter: fc.boolean(),
        }),
        { minLength: count, maxLength: count },
      )
      .map((rows) => {
        const input: Element<Ev>[] = [];
        const used = new Set<number>();
        let clockMs = 1000;
        let maxMs = -Infinity;
        for (const row of rows) {
          clockMs += row.stepMs;
          let t = clockMs - row.disorderMs - (row.isVeryLate ? 200 : 0);
          while (used.has(t)) t++; // distinct times: first/last have no ties to break
          used.add(t);
          maxMs = Math.max(maxMs, t);
          input.push(record(`k${row.key}`, t, { v: row.v, tag: row.tag }));
          if (row.watermarkAfter) input.push(watermark(maxMs - maxDisorderMs - 1));
        }
        input.push(watermark(Number.MAX_SAFE_INTEGER));
        return input;
      }),
  );

const assigners: Array<[string, WindowAssigner]> = [
  ["tumbling", { type: "tumbling", sizeMs: 50 }],
  ["hopping", { type: "hopping", sizeMs: 60, slideMs: 20 }],
  ["session", { type: "session", gapMs: 12 }],
];

describe("keyed windows", () => {
  for (const [label, assigner] of assigners) {
    for (const latenessMs of [0, 30]) {
      it(`${label} windows with allowed lateness ${latenessMs} ms equal a brute-force recomputation, late output included`, async () => {
        await fc.assert(
          fc.asyncProperty(streams, async (input) => {
            const definition = keyedWindow<Ev>({ name: "w", assigner, allowedLatenessMs: latenessMs, aggregates: AGGREGATES });
            const run = await runOperator(definition, input);
            const expected = model(assigner, latenessMs, input);
            expect(run.outputs.map((o) => o.value)).toEqual(expected.outputs);
            const late = (run.sides[LATE] ?? []) as LateEvent[];
            expect(late.map((l) => ({ key: l.key, time: l.time_ms, value: l.event }))).toEqual(expected.late);
          }),
          { numRuns: 150, seed: 20261123 },
        );
      });
    }
  }

  for (const [label, assigner] of assigners) {
    it(`${label} windows restored from a checkpoint at any cut give the results of an uninterrupted run`, async () => {
      await fc.assert(
        fc.asyncProperty(streams, fc.double({ min: 0, max: 1, noNaN: true }), async (input, at) => {
          const definition = keyedWindow<Ev>({ name: "w", assigner, allowedLatenessMs: 30, aggregates: AGGREGATES });
          const straight = await runOperator(definition, input);
          const restarted = await runWithRestart(definition, input, Math.floor(at * input.length));
          expect(restarted.outputs).toEqual(straight.outputs);
          expect(restarted.sides[LATE] ?? []).toEqual(straight.sides[LATE] ?? []);
        }),
        { numRuns: 60, seed: 7 },
      );
    });
  }

  it("fires a tumbling window when the watermark passes its end", async () => {
    const definition = keyedWindow<Ev>({ name: "w", assigner: { type: "tumbling", sizeMs: 10 }, aggregates: AGGREGATES.slice(0, 1) });
    const run = await runOperator(definition, [
      record("u", 1, { v: 1, tag: "a" }),
      record("u", 5, { v: 1, tag: "a" }),
      watermark(8),
      record("u", 9, { v: 1, tag: "a" }),
      watermark(9),
    ]);
    expect(run.outputs).toEqual([{ key: "u", time: 9, value: { window: "w", key: "u", start: "1970-01-01T00:00:00.000Z", start_ms: 0, end: "1970-01-01T00:00:00.010Z", end_ms: 10, events: 3 } }]);
  });

  it("fires again for an event within the allowed lateness and sends a later one to the late output", async () => {
    const definition = keyedWindow<Ev>({
      name: "w",
      assigner: { type: "tumbling", sizeMs: 10 },
      allowedLatenessMs: 5,
      aggregates: AGGREGATES.slice(0, 1),
    });
    const run = await runOperator(definition, [
      record("u", 1, { v: 1, tag: "a" }),
      watermark(10),
      record("u", 2, { v: 1, tag: "a" }),
      watermark(14),
      record("u", 3, { v: 1, tag: "a" }),
    ]);
    expect(run.outputs.map((o) => o.value.events)).toEqual([1, 2]);
    expect((run.sides[LATE] as LateEvent[]).map((l) => [l.time, l.time_ms, l.watermark_ms, l.late_by_ms])).toEqual([["1970-01-01T00:00:00.003Z", 3, 14, 11]]);
  });

  it("merges two sessions when an event bridges them", async () => {
    const definition = keyedWindow<Ev>({ name: "s", assigner: { type: "session", gapMs: 10 }, aggregates: AGGREGATES.slice(0, 1) });
    const run = await runOperator(definition, [
      record("u", 0, { v: 1, tag: "a" }),
      record("u", 20, { v: 1, tag: "a" }),
      record("u", 10, { v: 1, tag: "a" }),
      watermark(Number.MAX_SAFE_INTEGER),
    ]);
    expect(run.outputs.map((o) => o.value)).toEqual([{ window: "s", key: "u", start: "1970-01-01T00:00:00.000Z", start_ms: 0, end: "1970-01-01T00:00:00.030Z", end_ms: 30, events: 3 }]);
  });
});

describe("the keyed window's view", () => {
  it("shows a key's open windows with their aggregates so far, and nothing once they are purged", () => {
    const logic = keyedWindow<Ev>({ name: "minute", assigner: { type: "hopping", sizeMs: 60_000, slideMs: 30_000 }, aggregates: AGGREGATES.slice(0, 3) }).build(memoryContext({}));
    const out = { emit: () => {}, side: () => {} };
    logic.onRecord(record("k", 40_000, { v: 2, tag: "a" }), out);
    logic.onRecord(record("k", 50_000, { v: 5, tag: "b" }), out);
    logic.onRecord(record("other", 50_000, { v: 1, tag: "a" }), out);
    const window = (startMs: number, events: number, as: number, total: number, hasFired: boolean) => ({
      window: "minute",
      key: "k",
      start: new Date(startMs).toISOString(),
      start_ms: startMs,
      end: new Date(startMs + 60_000).toISOString(),
      end_ms: startMs + 60_000,
      events,
      as,
      total,
      has_fired: hasFired,
    });
    expect(logic.view!.key("k")).toEqual({ windows: [window(0, 2, 1, 7, false), window(30_000, 2, 1, 7, false)] });
    expect(logic.view!.keyCount()).toBe(2);
    expect(logic.view!.key("nobody")).toBeUndefined();
    // The first window fires and goes (no lateness allowed); the second stays open.
    logic.onWatermark(60_000, out);
    logic.onRecord(record("k", 70_000, { v: 10, tag: "b" }), out);
    expect(logic.view!.key("k")).toEqual({ windows: [window(30_000, 3, 1, 17, false), window(60_000, 1, 0, 10, false)] });
  });
});
