import { describe, expect, it } from "vitest";
import type { StageDefinition } from "../../operators/stage.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { DAY_MS, ev, HOUR_MS, runStages, stagesFromYaml, T0, TEST_FIELDS, wm, expectRestartsChangeNothing, wakeUpAsker, outputTime } from "../behaviourHarness.ts";

/** Event fields standing in for the aggregates the KBI features are computed from. */
const FIELDS = {
  ...TEST_FIELDS,
  visits_7d: "double",
  pages: "double",
  visits: "double",
  carts: "double",
  carts_abandoned: "double",
  content_pages: "double",
  last_purchase_ms: "double",
  wake_at: "double",
};

/** BEHAVIOUR.md's KBI table, over features computed from the event's stand-in fields. */
const TABLE = `
features:
  visit_frequency: 'visits_7d / 7.0'
  navigation_depth: 'pages / visits'
  cart_abandonment: 'carts_abandoned / carts'
  content_interaction: 'content_pages / pages'
  days_since_last_purchase: '(now - last_purchase_ms) / 86400000.0'
kbis:
  frequency_kbi: { rules: [ { label: active, when: 'visit_frequency > 3.0' }, { label: occasional, when: 'visit_frequency < 1.0' } ], default: regular }
  depth_kbi: { rules: [ { label: interested, when: 'navigation_depth > 5.0' }, { label: passive, when: 'navigation_depth < 2.0' } ] }
  cart_kbi: { rules: [ { label: high_risk, when: 'cart_abandonment > 0.4' } ] }
  content_kbi: { rules: [ { label: engaged, when: 'content_interaction > 0.5' } ] }
  recency_kbi: { rules: [ { label: recently_active, when: 'days_since_last_purchase < 30.0' } ] }
`;

/** Emits the named variables as a "probe" output on every step, to see what later stages see. */
function probe(names: string[]): StageDefinition {
  return {
    name: "probe",
    build: () => ({
      step(view, out) {
        const body: Record<string, unknown> = {};
        for (const name of names) body[name] = view.vars[name] ?? null;
        out.emit("probe", view.user, view.timeMs, body);
      },
    }),
  };
}

/** Asks for a wake-up at the event's `wake_at`, as a phase or trigger stage would. */
const waker = wakeUpAsker("wake_at");

const labelsOf = (outputs: Array<{ body: Record<string, unknown> }>) => outputs.map((o) => o.body);

describe("kbis", () => {
  it("labels visit frequency active above 3 visits a week, occasional below 1, regular between, emitting each change once", async () => {
    const stages = stagesFromYaml(TABLE, FIELDS);
    const run = await runStages(stages, [
      ev("u1", T0, { event_type: "page_view", visits_7d: 28 }),
      ev("u1", T0 + 1000, { event_type: "page_view", visits_7d: 25 }),
      ev("u1", T0 + 2000, { event_type: "page_view", visits_7d: 21 }),
      ev("u1", T0 + 3000, { event_type: "page_view", visits_7d: 6 }),
      ev("u1", T0 + 4000, { event_type: "page_view", visits_7d: 5 }),
      ev("u1", T0 + 5000, { event_type: "page_view", visits_7d: 7 }),
    ]);
    expect(labelsOf(run.byKind("kbi").filter((o) => o.body.kbi === "frequency_kbi"))).toEqual([
      { output: "kbi", user_id: "u1", ...outputTime(T0), kbi: "frequency_kbi", label: "active", previous: null },
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 2000), kbi: "frequency_kbi", label: "regular", previous: "active" },
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 3000), kbi: "frequency_kbi", label: "occasional", previous: "regular" },
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 5000), kbi: "frequency_kbi", label: "regular", previous: "occasional" },
    ]);
  });

  it.each([
    ["navigation depth above 5 pages a visit is interested", { pages: 12, visits: 2 }, "depth_kbi", "interested"],
    ["navigation depth below 2 pages a visit is passive", { pages: 3, visits: 2 }, "depth_kbi", "passive"],
    ["navigation depth of 3 pages a visit has no label", { pages: 6, visits: 2 }, "depth_kbi", null],
    ["cart abandonment above 40% is high risk", { carts: 5, carts_abandoned: 3 }, "cart_kbi", "high_risk"],
    ["cart abandonment of exactly 40% is not high risk", { carts: 5, carts_abandoned: 2 }, "cart_kbi", null],
    ["content above 50% of the pages is engaged", { pages: 10, content_pages: 6 }, "content_kbi", "engaged"],
    ["content at 50% of the pages is not engaged", { pages: 10, content_pages: 5 }, "content_kbi", null],
    ["a purchase 29 days ago is recently active", { last_purchase_ms: T0 - 29 * DAY_MS }, "recency_kbi", "recently_active"],
    ["a purchase 30 days ago is not recently active", { last_purchase_ms: T0 - 30 * DAY_MS }, "recency_kbi", null],
  ])("BEHAVIOUR.md table: %s", async (_fact, fields, kbi, label) => {
    const stages = [...stagesFromYaml(TABLE, FIELDS), probe([kbi])];
    const run = await runStages(stages, [ev("u1", T0, { event_type: "page_view", ...fields })]);
    expect(run.byKind("probe")[0].body[kbi]).toBe(label);
    const emitted = run.byKind("kbi").filter((o) => o.body.kbi === kbi);
    expect(labelsOf(emitted)).toEqual(label === null ? [] : [{ output: "kbi", user_id: "u1", ...outputTime(T0), kbi, label, previous: null }]);
  });

  it("gives the label of the first rule that holds when several do", async () => {
    const stages = stagesFromYaml(`
kbis:
  depth: { rules: [ { label: deep, when: 'session_duration_sec > 100.0' }, { label: some, when: 'session_duration_sec > 10.0' } ], default: none }
`);
    const run = await runStages(stages, [
      ev("u1", T0, { session_duration_sec: 500 }),
      ev("u1", T0 + 1, { session_duration_sec: 50 }),
      ev("u1", T0 + 2, { session_duration_sec: 5 }),
    ]);
    expect(run.byKind("kbi").map((o) => [o.body.label, o.body.previous])).toEqual([["deep", null], ["some", "deep"], ["none", "some"]]);
  });

  it("without a default, a user no rule holds for has no label: nothing emitted until one holds, null when it stops", async () => {
    const stages = [...stagesFromYaml(`kbis: { long_visit: { rules: [ { label: long, when: 'session_duration_sec > 60.0' } ] } }`), probe(["long_visit"])];
    const run = await runStages(stages, [
      ev("u1", T0, { session_duration_sec: 5 }),
      ev("u1", T0 + 1, { session_duration_sec: 90 }),
      ev("u1", T0 + 2, { session_duration_sec: 5 }),
    ]);
    expect(labelsOf(run.byKind("kbi"))).toEqual([
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 1), kbi: "long_visit", label: "long", previous: null },
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 2), kbi: "long_visit", label: null, previous: "long" },
    ]);
    expect(run.byKind("probe").map((o) => o.body.long_visit)).toEqual([null, "long", null]);
  });

  it("treats a rule over a missing value as not holding", async () => {
    const stages = stagesFromYaml(`kbis: { scroller: { rules: [ { label: deep, when: 'scroll_depth > 0.5' } ], default: shallow } }`);
    const run = await runStages(stages, [ev("u1", T0, { event_type: "page_view" })]);
    expect(run.byKind("kbi").map((o) => o.body.label)).toEqual(["shallow"]);
  });

  it("lets a KBI's rules use the label of a KBI above it", async () => {
    const stages = stagesFromYaml(`
kbis:
  frequency_kbi: { rules: [ { label: active, when: 'session_duration_sec > 60.0' } ], default: occasional }
  target: { rules: [ { label: upsell, when: 'frequency_kbi == "active" && page == "/pricing"' } ], default: nurture }
`);
    const run = await runStages(stages, [
      ev("u1", T0, { page: "/pricing", session_duration_sec: 90 }),
      ev("u2", T0, { page: "/pricing", session_duration_sec: 10 }),
    ]);
    expect(run.byKind("kbi").filter((o) => o.body.kbi === "target").map((o) => [o.key, o.body.label])).toEqual([["u1", "upsell"], ["u2", "nurture"]]);
  });

  it("keeps each user's labels apart", async () => {
    const stages = stagesFromYaml(TABLE, FIELDS);
    const run = await runStages(stages, [
      ev("u1", T0, { visits_7d: 28 }),
      ev("u2", T0, { visits_7d: 28 }),
      ev("u1", T0 + 1, { visits_7d: 1 }),
      ev("u2", T0 + 1, { visits_7d: 28 }),
    ]);
    expect(run.byKind("kbi").map((o) => [o.key, o.body.label, o.body.previous])).toEqual([
      ["u1", "active", null],
      ["u2", "active", null],
      ["u1", "occasional", "active"],
    ]);
  });

  it("relabels at a wake-up another stage asked for, when the watermark reaches it", async () => {
    // A label that depends on time only: it flips with no event, at the step a wake-up gives.
    const stages = [waker, ...stagesFromYaml(`kbis: { fresh: { rules: [ { label: fresh, when: 'now < ${T0 + DAY_MS}.0' } ], default: stale } }`, FIELDS)];
    const elements = [ev("u1", T0, { event_type: "page_view", wake_at: T0 + 2 * DAY_MS }), wm(T0 + 2 * DAY_MS - 1)];
    const before = await runStages(stages, elements);
    expect(before.byKind("kbi").map((o) => o.body.label)).toEqual(["fresh"]);
    const after = await runStages(stages, [...elements, wm(T0 + 2 * DAY_MS)]);
    expect(labelsOf(after.byKind("kbi"))).toEqual([
      { output: "kbi", user_id: "u1", ...outputTime(T0), kbi: "fresh", label: "fresh", previous: null },
      { output: "kbi", user_id: "u1", ...outputTime(T0 + 2 * DAY_MS), kbi: "fresh", label: "stale", previous: "fresh" },
    ]);
  });

  it("gives the same outputs with a restart at any point", async () => {
    const stages = stagesFromYaml(TABLE, FIELDS);
    const elements = [
      ev("u1", T0, { visits_7d: 28, pages: 12, visits: 2 }),
      ev("u2", T0 + 1, { visits_7d: 5, carts: 5, carts_abandoned: 3 }),
      wm(T0 + 1),
      ev("u1", T0 + HOUR_MS, { visits_7d: 14, pages: 3, visits: 2 }),
      ev("u1", T0 + 2 * HOUR_MS, { visits_7d: 14, pages: 3, visits: 2 }),
      wm(T0 + 2 * HOUR_MS),
      ev("u2", T0 + 3 * HOUR_MS, { visits_7d: 28, carts: 5, carts_abandoned: 1 }),
      ev("u1", T0 + 4 * HOUR_MS, { visits_7d: 1, pages: 30, visits: 2 }),
      wm(T0 + 5 * HOUR_MS),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.byKind("kbi").length).toBe(10);
    await expectRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses an unknown field at its path", () => {
    expect(() => stagesFromYaml(`kbis: { k: { rules: [ { label: a, when: 'true', points: 3 } ] } }`)).toThrow(/kbis\.k\.rules\[0\]\.points: unknown field/);
    expect(() => stagesFromYaml(`kbis: { k: { rules: [ { label: a, when: 'true' } ], otherwise: b } }`)).toThrow(/kbis\.k\.otherwise: unknown field/);
  });

  it("refuses a rule that is not a boolean CEL expression over known values, at its path", () => {
    expect(() => stagesFromYaml(`kbis: { k: { rules: [ { label: a, when: 'page > 3.0' } ] } }`)).toThrow(/kbis\.k\.rules\[0\]\.when: CEL type error/);
    expect(() => stagesFromYaml(`kbis: { k: { rules: [ { label: a, when: 'session_duration_sec' } ] } }`)).toThrow(/kbis\.k\.rules\[0\]\.when: .* is of type double, expected bool/);
    expect(() => stagesFromYaml(`kbis: { k: { rules: [ { label: a, when: 'k == "a"' } ] } }`)).toThrow(/kbis\.k\.rules\[0\]\.when: CEL type error/);
  });

  it("reports every bad value, not only the first", () => {
    let error: unknown;
    try {
      stagesFromYaml(`kbis: { k: { rules: [ { when: 'true' }, { label: b, when: 'nope > 1.0' } ], default: 3 }, page: { rules: [ { label: x, when: 'true' } ] } }`);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PipelineInvalid);
    expect((error as PipelineInvalid).errors.map((e) => e.path)).toEqual(["kbis.k.default", "kbis.k.rules[0].label", "kbis.k.rules[1].when", "kbis.page"]);
  });

  it("refuses a KBI without rules", () => {
    expect(() => stagesFromYaml(`kbis: { k: { default: a } }`)).toThrow(/kbis\.k\.rules: is required/);
    expect(() => stagesFromYaml(`kbis: { k: { rules: [] } }`)).toThrow(/kbis\.k\.rules: expected at least one entry/);
  });
});
