import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import { aggregates, defaultResolutionMs } from "../../operators/aggregates.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { DAY_MS, ev, HOUR_MS, MINUTE_MS, runStages, runStagesWithRestart, stagesFromYaml, T0, wm, type BehaviourRun, expectTwoCheckpointRestartsChangeNothing, configErrors } from "../behaviourHarness.ts";

/** A stage after the aggregates that emits, on every step, whether it is an event and the values of `names`. */
function probe(names: string[]): StageDefinition {
  return {
    name: "probe",
    build: () => ({
      step(view, out) {
        const body: Record<string, unknown> = { at: view.timeMs - T0, event: view.event !== undefined };
        for (const name of names) body[name] = view.vars[name];
        out.emit("probe", view.user, view.timeMs, body);
      },
    }),
  };
}

async function run(yaml: string, names: string[], elements: Element<EventFields>[]): Promise<BehaviourRun> {
  return runStages([...stagesFromYaml(yaml), probe(names)], elements);
}

const probes = (r: BehaviourRun) => r.byKind("probe").map((o) => o.body as { at: number; event: boolean; [name: string]: unknown });
const page = (user: string, timeMs: number, path = "/") => ev(user, timeMs, { event_type: "page_view", page: path });

describe("rolling aggregates", () => {
  it("counts 3 visits within 7 days, and 2 at the wake-up after the first has left the lookback", async () => {
    const yaml = `
sessions: { gap: 30m }
aggregates:
  visits_7d: { count: session_is_new, over: 7d }
`;
    // The default resolution of 7d is 6h: the first visit, in the bucket [T0, T0 + 6h), leaves at T0 + 6h + 7d.
    const r = await run(yaml, ["visits_7d"], [
      page("u1", T0),
      wm(T0 + DAY_MS),
      page("u1", T0 + 2 * DAY_MS),
      wm(T0 + 3 * DAY_MS),
      page("u1", T0 + 4 * DAY_MS),
      wm(T0 + 7 * DAY_MS + 6 * HOUR_MS - 1),
      wm(T0 + 7 * DAY_MS + 6 * HOUR_MS),
    ]);
    expect(probes(r).map((p) => [p.at, p.event, p.visits_7d])).toEqual([
      [0, true, 1],
      [30 * MINUTE_MS, false, 1], // the session closes
      [2 * DAY_MS, true, 2],
      [2 * DAY_MS + 30 * MINUTE_MS, false, 2],
      [4 * DAY_MS, true, 3],
      [4 * DAY_MS + 30 * MINUTE_MS, false, 3],
      [7 * DAY_MS + 6 * HOUR_MS, false, 2],
    ]);
  });

  it("gives days since the last purchase as since / 1 day", async () => {
    const stages = stagesFromYaml(`
aggregates:
  since_purchase_ms: { since: 'event_type == "purchase"' }
features:
  days_since_purchase: since_purchase_ms / 86400000.0
`);
    const r = await runStages(stages, [
      page("u1", T0 - DAY_MS),
      ev("u1", T0, { event_type: "purchase", page: "/checkout", order_value: 80 }),
      page("u1", T0 + 3 * DAY_MS),
    ]);
    expect(r.byKind("features").map((o) => [o.time - T0, o.body.days_since_purchase])).toEqual([
      [-DAY_MS, null],
      [0, 0],
      [3 * DAY_MS, 3],
    ]);
  });

  it("computes every kind exactly on a small sequence, with empty lookbacks as 0 or no value", async () => {
    const yaml = `
aggregates:
  events: { count: true, over: 1d }
  carts: { count: 'event_type == "add_to_cart"', over: 1d }
  revenue: { sum: order_value, where: 'event_type == "purchase"', over: 1d }
  avg_order: { avg: order_value, over: 1d }
  min_order: { min: order_value, over: 1d }
  max_order: { max: order_value, over: 1d }
  pages: { distinct: page, over: 1d }
  purchases_per_cart: { ratio: ['event_type == "purchase"', 'event_type == "add_to_cart"'], over: 1d }
  last_page: { last: page }
  last_bought: { last: page, where: 'event_type == "purchase"' }
  since_purchase: { since: 'event_type == "purchase"' }
`;
    const names = ["events", "carts", "revenue", "avg_order", "min_order", "max_order", "pages", "purchases_per_cart", "last_page", "last_bought", "since_purchase"];
    const r = await run(yaml, names, [
      ev("u1", T0, { event_type: "page_view", page: "/a" }),
      ev("u1", T0 + MINUTE_MS, { event_type: "add_to_cart", page: "/p1" }),
      ev("u1", T0 + 2 * MINUTE_MS, { event_type: "purchase", page: "/p1", order_value: 100 }),
      ev("u1", T0 + 3 * MINUTE_MS, { event_type: "add_to_cart", page: "/p2" }),
      ev("u1", T0 + 4 * MINUTE_MS, { event_type: "purchase", page: "/p2", order_value: 50 }),
      ev("u1", T0 + 5 * MINUTE_MS, { event_type: "page_view", page: "/a" }),
    ]);
    expect(probes(r).map((p) => names.map((n) => p[n]))).toEqual([
      [1, 0, 0, undefined, undefined, undefined, 1, undefined, "/a", undefined, undefined],
      [2, 1, 0, undefined, undefined, undefined, 2, 0, "/p1", undefined, undefined],
      [3, 1, 100, 100, 100, 100, 2, 1, "/p1", "/p1", 0],
      [4, 2, 100, 100, 100, 100, 3, 0.5, "/p2", "/p1", MINUTE_MS],
      [5, 2, 150, 75, 50, 100, 3, 1, "/p2", "/p2", 0],
      [6, 2, 150, 75, 50, 100, 3, 1, "/a", "/p2", MINUTE_MS],
    ]);
  });

  it("keeps an event for the lookback plus at most the resolution, and drops it at the wake-up at its bucket's end + lookback", async () => {
    const yaml = "aggregates: { n: { count: true, over: 10m, resolution: 1m } }";
    const events = [page("u1", T0 + 30_000)];
    const before = await run(yaml, ["n"], [...events, wm(T0 + 11 * MINUTE_MS - 1)]);
    expect(probes(before).map((p) => [p.at, p.n])).toEqual([[30_000, 1]]);
    const after = await run(yaml, ["n"], [...events, wm(T0 + 11 * MINUTE_MS)]);
    expect(probes(after).map((p) => [p.at, p.event, p.n])).toEqual([
      [30_000, true, 1],
      [11 * MINUTE_MS, false, 0],
    ]);
  });

  it("wakes a user once per time its values change by expiry, for all its aggregates together", async () => {
    const yaml = `
aggregates:
  a_1h: { count: true, over: 1h, resolution: 5m }
  b_2h: { count: true, over: 2h, resolution: 5m }
`;
    const r = await run(yaml, ["a_1h", "b_2h"], [page("u1", T0), page("u1", T0 + MINUTE_MS), page("u1", T0 + 10 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(probes(r).filter((p) => !p.event).map((p) => [p.at / MINUTE_MS, p.a_1h, p.b_2h])).toEqual([
      [65, 1, 3],
      [75, 0, 3],
      [125, 0, 1],
      [135, 0, 0],
    ]);
  });

  it("places out-of-order events in their own buckets and expires them in time order", async () => {
    const yaml = "aggregates: { n: { count: true, over: 10m, resolution: 1m } }";
    const r = await run(yaml, ["n"], [page("u1", T0 + 5 * MINUTE_MS), page("u1", T0 + MINUTE_MS), page("u1", T0 + 3 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(probes(r).map((p) => [p.at / MINUTE_MS, p.n])).toEqual([
      [5, 1],
      [1, 2],
      [3, 3],
      [12, 2],
      [14, 1],
      [16, 0],
    ]);
  });

  it("ignores an event older than the lookback, and folds a late one into the current values", async () => {
    const yaml = `
aggregates:
  n: { count: true, over: 10m, resolution: 1m }
  per_view: { ratio: ['page == "/x"', 'true'], over: 10m, resolution: 1m }
  last_page: { last: page }
  since_any: { since: true }
`;
    const r = await run(yaml, ["n", "per_view", "last_page", "since_any"], [page("u1", T0 + 20 * MINUTE_MS, "/a"), page("u1", T0 + 5 * MINUTE_MS, "/x"), page("u1", T0 + 15 * MINUTE_MS, "/b")]);
    // The steps of late events show the values as of the user's latest time, 20 min: they do not go back.
    expect(probes(r).map((p) => [p.at / MINUTE_MS, p.n, p.per_view, p.last_page, p.since_any])).toEqual([
      [20, 1, 0, "/a", 0],
      [5, 1, 0, "/a", 0],
      [15, 2, 0, "/a", 0],
    ]);
  });

  it("keeps distinct values ordered by when they leave, whatever order they came in", async () => {
    const yaml = "aggregates: { pages: { distinct: page, over: 10m, resolution: 1m } }";
    const r = await run(yaml, ["pages"], [page("u1", T0 + 5 * MINUTE_MS, "/a"), page("u1", T0 + MINUTE_MS, "/b"), page("u1", T0 + 2 * MINUTE_MS, "/a"), wm(END_OF_TIME)]);
    // "/b" (1 min) leaves at 12 min; "/a" was last seen at 5 min (the late repeat at 2 min does not move it back): 16 min.
    expect(probes(r).map((p) => [p.at / MINUTE_MS, p.pages])).toEqual([
      [5, 1],
      [1, 2],
      [2, 2],
      [12, 1],
      [16, 0],
    ]);
  });

  it("recomputes min, max and distinct when their oldest values leave", async () => {
    const yaml = `
aggregates:
  top: { max: order_value, over: 10m, resolution: 1m }
  low: { min: order_value, over: 10m, resolution: 1m }
  pages: { distinct: page, over: 10m, resolution: 1m }
`;
    const r = await run(yaml, ["top", "low", "pages"], [
      ev("u1", T0, { event_type: "purchase", page: "/a", order_value: 100 }),
      ev("u1", T0 + 2 * MINUTE_MS, { event_type: "purchase", page: "/b", order_value: 50 }),
      ev("u1", T0 + 4 * MINUTE_MS, { event_type: "page_view", page: "/a" }),
      wm(END_OF_TIME),
    ]);
    expect(probes(r).map((p) => [p.at / MINUTE_MS, p.top, p.low, p.pages])).toEqual([
      [0, 100, 100, 1],
      [2, 100, 50, 2],
      [4, 100, 50, 2],
      [11, 50, 50, 2], // the purchase of 100 leaves; "/a" was seen again at 4 min
      [13, undefined, undefined, 1],
      [15, undefined, undefined, 0],
    ]);
  });

  it("reads a bare name and name == 'text' (either quotes) as CEL does", async () => {
    const yaml = `
aggregates:
  fast_double: { count: 'page == "/x"', over: 1d }
  fast_single: { count: "page == '/x'", over: 1d }
  through_cel: { count: '"/x" == page', over: 1d }
  fast_bare: { sum: order_value, over: 1d }
  through_cel_sum: { sum: order_value + 0.0, over: 1d }
`;
    const names = ["fast_double", "fast_single", "through_cel", "fast_bare", "through_cel_sum"];
    const r = await run(yaml, names, [page("u1", T0, "/x"), ev("u1", T0 + 1, { event_type: "purchase", order_value: 7 }), page("u1", T0 + 2, "/y"), page("u1", T0 + 3, "/x")]);
    expect(probes(r).map((p) => names.map((n) => p[n]))).toEqual([
      [1, 1, 1, 0, 0],
      [1, 1, 1, 7, 7],
      [1, 1, 1, 7, 7],
      [2, 2, 2, 7, 7],
    ]);
  });

  it("evaluates a condition shared by several aggregates once per event", async () => {
    let calls = 0;
    const isPurchase = (vars: Record<string, unknown>) => (calls++, vars.event_type === "purchase");
    const stage = aggregates({
      aggregates: [
        { name: "purchases", kind: "count", where: isPurchase, overMs: DAY_MS },
        { name: "revenue", kind: "sum", where: isPurchase, value: (vars) => vars.order_value, overMs: DAY_MS },
        { name: "since_purchase", kind: "since", where: isPurchase },
      ],
    });
    const r = await runStages([stage, probe(["purchases", "revenue", "since_purchase"])], [
      ev("u1", T0, { event_type: "purchase", order_value: 10 }),
      ev("u1", T0 + 1000, { event_type: "page_view" }),
      ev("u1", T0 + 2000, { event_type: "purchase", order_value: 5 }),
    ]);
    expect(calls).toBe(3);
    expect(probes(r).map((p) => [p.purchases, p.revenue, p.since_purchase])).toEqual([
      [1, 10, 0],
      [1, 10, 1000],
      [2, 15, 0],
    ]);
  });

  it("gives sums and averages of decimals without binary noise, as window results do", async () => {
    const stage = aggregates({
      aggregates: [
        { name: "revenue", kind: "sum", value: (vars) => vars.order_value, overMs: DAY_MS },
        { name: "avg_order", kind: "avg", value: (vars) => vars.order_value, overMs: DAY_MS },
      ],
    });
    const r = await runStages([stage, probe(["revenue", "avg_order"])], [
      ev("u1", T0, { event_type: "purchase", order_value: 0.1 }),
      ev("u1", T0 + 1000, { event_type: "purchase", order_value: 0.2 }),
      ev("u1", T0 + 2000, { event_type: "purchase", order_value: 2341.4 }),
    ]);
    // Unrounded: 0.30000000000000004, then 0.15000000000000002, and 2341.7000000000003.
    expect(probes(r).map((p) => [p.revenue, p.avg_order])).toEqual([
      [0.1, 0.1],
      [0.3, 0.15],
      [2341.7, 780.566666667],
    ]);
  });

  it("derives the default resolution from the lookback: a round unit at most 1/24 of it", () => {
    expect(defaultResolutionMs(7 * DAY_MS)).toBe(6 * HOUR_MS);
    expect(defaultResolutionMs(DAY_MS)).toBe(HOUR_MS);
    expect(defaultResolutionMs(30 * DAY_MS)).toBe(DAY_MS);
    expect(defaultResolutionMs(30 * MINUTE_MS)).toBe(MINUTE_MS);
    expect(defaultResolutionMs(12_000)).toBe(500);
  });

  it("gives the same outputs after a restart at any point, and after two checkpoints", async () => {
    const yaml = `
sessions: { gap: 30m }
aggregates:
  visits: { count: session_is_new, over: 2h, resolution: 15m }
  revenue: { sum: order_value, over: 1h, resolution: 5m }
  avg_order: { avg: order_value, over: 1h, resolution: 5m }
  top: { max: order_value, over: 1h, resolution: 5m }
  pages: { distinct: page, over: 1h, resolution: 5m }
  per_cart: { ratio: ['event_type == "purchase"', 'event_type == "add_to_cart"'], over: 1h, resolution: 5m }
  last_page: { last: page, over: 1h, resolution: 5m }
  since_purchase: { since: 'event_type == "purchase"' }
`;
    const names = ["visits", "revenue", "avg_order", "top", "pages", "per_cart", "last_page", "since_purchase"];
    const elements = [
      page("u1", T0, "/a"),
      ev("u1", T0 + 10 * MINUTE_MS, { event_type: "add_to_cart", page: "/p" }),
      page("u2", T0 + 12 * MINUTE_MS, "/b"),
      wm(T0 + 15 * MINUTE_MS),
      ev("u1", T0 + 20 * MINUTE_MS, { event_type: "purchase", page: "/p", order_value: 40 }),
      ev("u1", T0 + 18 * MINUTE_MS, { event_type: "purchase", page: "/q", order_value: 60 }),
      wm(T0 + 50 * MINUTE_MS),
      page("u2", T0 + 90 * MINUTE_MS, "/c"),
      wm(T0 + 100 * MINUTE_MS),
      page("u1", T0 + 110 * MINUTE_MS, "/a"),
      wm(END_OF_TIME),
    ];
    const stages = [...stagesFromYaml(yaml), probe(names)];
    const whole = await runStages(stages, elements);
    const last = probes(whole).filter((p) => p.event).at(-1)!;
    expect(names.map((n) => last[n])).toEqual([2, 0, undefined, undefined, 1, undefined, "/a", 90 * MINUTE_MS]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut ${cut}`).toEqual(whole.outputs);
    }
    await expectTwoCheckpointRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses bad aggregates at the path of the bad value, all of them", () => {
    const errors = (yaml: string) => configErrors(yaml).join("\n");
    expect(errors("aggregates: { n: { count: true, over: 1d, window: 1h } }")).toMatch(/aggregates\.n\.window: unknown field \(expected one of count, over, resolution\)/);
    expect(errors("aggregates: { n: { count: true } }")).toMatch(/aggregates\.n\.over: is required/);
    expect(errors("aggregates: { n: { sum: page, over: 1d } }")).toMatch(/aggregates\.n\.sum: "page" is of type string, expected double or int or uint/);
    expect(errors("aggregates: { n: { count: 'event_type == 3', over: 1d } }")).toMatch(/aggregates\.n\.count: CEL type error/);
    expect(errors("aggregates: { n: { count: 'order_value', over: 1d } }")).toMatch(/aggregates\.n\.count: "order_value" is of type double, expected bool/);
    expect(errors("aggregates: { n: { sum: order_value, count: true, over: 1d } }")).toMatch(/aggregates\.n: expected exactly one of .*, got count and sum/);
    expect(errors("aggregates: { n: { over: 1d } }")).toMatch(/aggregates\.n: expected exactly one of .*, got none/);
    expect(errors("aggregates: { n: { ratio: ['true'], over: 1d } }")).toMatch(/aggregates\.n\.ratio: expected two conditions/);
    expect(errors("aggregates: { n: { count: true, over: 1h, resolution: 2h } }")).toMatch(/aggregates\.n\.resolution: expected at most the lookback/);
    expect(errors("aggregates: { n: { last: page, resolution: 1h } }")).toMatch(/aggregates\.n\.resolution: needs a lookback/);
    expect(errors("aggregates: { n: { since: 'true', over: 1d } }")).toMatch(/aggregates\.n\.over: unknown field/);
    expect(errors("aggregates: { a: { count: true, over: 1d }, b: { count: 'a > 1.0', over: 1d } }")).toMatch(/aggregates\.b\.count: CEL type error/);
    expect(errors("aggregates: { page: { count: true, over: 1d } }")).toMatch(/aggregates\.page: "page" is already the name of schema\.page/);
    expect(errors("aggregates: {}")).toMatch(/aggregates: expected at least one aggregate/);
    const many = errors("aggregates: { a: { count: true, over: soon }, b: { avg: page, over: 1d } }");
    expect(many).toMatch(/aggregates\.a\.over: expected a duration like "7d", got "soon"/);
    expect(many).toMatch(/aggregates\.b\.avg/);
  });
});
