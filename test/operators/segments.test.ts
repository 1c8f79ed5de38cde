import { describe, expect, it } from "vitest";
import type { Element } from "../../engine/elements.ts";
import { END_OF_TIME } from "../../engine/elements.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { celEnvironment, compileExpression } from "../../pipelines/expressions.ts";
import { namesNeeded } from "../../pipelines/celNeeds.ts";
import { stageContext } from "../harness.ts";
import { DAY_MS, ev, HOUR_MS, runStages, runStagesWithRestart, stagesFromYaml, T0, TEST_FIELDS, wm, configErrors, wakeUpAsker, outputTime } from "../behaviourHarness.ts";

/** What the hand-built "facts" stage keeps per user: the last value of each of these event fields. */
const REMEMBERED = ["avg_order_90d", "last_purchase_ms", "email_opens_5d", "cta_clicks_5d", "demo_visits_5d"];

/** The fields the YAML may use: the test schema, the remembered facts and since_purchase_ms. */
const FIELDS: Record<string, string> = {
  ...TEST_FIELDS,
  ...Object.fromEntries(REMEMBERED.map((name) => [name, "double"])),
  since_purchase_ms: "double",
  wake_at_ms: "double",
};

/**
 * Stands in for the aggregates stage: remembers the last value of REMEMBERED fields per user and
 * writes them on every step (wake-ups too), with since_purchase_ms = now - last_purchase_ms. (An
 * event's `wake_at_ms` asks for a wake-up through wakeUpAsker, as an expiring aggregate would.)
 */
const facts: StageDefinition = {
  name: "facts",
  build: (ctx) => {
    const state = ctx.valueState<Record<string, number>>("facts");
    return {
      step(view) {
        const known = { ...(state.get(view.user) ?? {}) };
        if (view.event) {
          for (const name of REMEMBERED) if (typeof view.event[name] === "number") known[name] = view.event[name] as number;
          state.set(view.user, known);
        }
        for (const [name, value] of Object.entries(known)) view.vars[name] = value;
        if (known.last_purchase_ms !== undefined) view.vars.since_purchase_ms = view.timeMs - known.last_purchase_ms;
      },
    };
  },
};

/** Runs after segments and emits what it sees: the segment vars and the signals of the step. */
const probe: StageDefinition = {
  name: "probe",
  build: () => ({
    step(view, out) {
      const { lifecycle, tags } = view.vars;
      const signals = view.signals.map((s) => ({ kind: s.kind, name: s.name, timeMs: s.timeMs, detail: s.detail }));
      out.emit("probe", view.user, view.timeMs, { lifecycle, tags, signals });
    },
  }),
};

/** The brief's example. */
const EXAMPLE = `
segments:
  groups:
    lifecycle:
      rules:
        - { name: vip, when: 'avg_order_90d > 200.0 && since_purchase_ms < 30.0 * 86400000.0' }
        - { name: churned, when: 'since_purchase_ms > 90.0 * 86400000.0' }
      default: new_customer
  tags:
    - { name: hot_lead, when: 'email_opens_5d >= 1.0 && cta_clicks_5d >= 1.0 && demo_visits_5d >= 1.0' }
`;

function pipeline(yaml: string): StageDefinition[] {
  return [facts, wakeUpAsker("wake_at_ms"), ...stagesFromYaml(yaml, FIELDS), probe];
}

/** A segment output; `other`: for an enter the segment left (`previous`), for an exit the one entered (`next`). */
const seg = (user: string, time: number, group: string, segment: string, change: "enter" | "exit", other: string | null = null) => ({
  output: "segment",
  user_id: user,
  ...outputTime(time),
  group,
  segment,
  change,
  ...(change === "enter" ? { previous: other } : { next: other }),
});

async function segmentsOf(stages: StageDefinition[], elements: Element<EventFields>[]) {
  return (await runStages(stages, elements)).byKind("segment").map((o) => o.body);
}

const view = (fields: Record<string, unknown> = {}) => ({ event_type: "page_view", page: "/", ...fields });

describe("segments", () => {
  it("puts a user with no data in the default segment and says so once", async () => {
    const run = await runStages(pipeline(EXAMPLE), [ev("u1", T0, view()), ev("u1", T0 + 1000, view()), wm(T0 + 2000)]);
    expect(run.byKind("segment").map((o) => o.body)).toEqual([seg("u1", T0, "lifecycle", "new_customer", "enter")]);
    expect(run.byKind("probe").map((o) => o.body)).toEqual([
      { lifecycle: "new_customer", tags: [], signals: [{ kind: "segment_enter", name: "new_customer", timeMs: T0, detail: { group: "lifecycle" } }] },
      { lifecycle: "new_customer", tags: [], signals: [] },
    ]);
  });

  it("falls back to the default when the data a rule needs is missing, even if the rest of it holds", async () => {
    // Bought 1 day ago, so since_purchase_ms < 30d holds, but avg_order_90d is unknown: not vip.
    const out = await segmentsOf(pipeline(EXAMPLE), [ev("u1", T0, view({ last_purchase_ms: T0 - DAY_MS }))]);
    expect(out).toEqual([seg("u1", T0, "lifecycle", "new_customer", "enter")]);
  });

  it("falls back to the default when a rule has no value at all (every way to make it true is missing)", async () => {
    const yaml = `
segments:
  groups:
    lifecycle:
      rules: [{ name: active, when: 'avg_order_90d > 200.0 || since_purchase_ms < 86400000.0' }]
      default: new_customer
`;
    const out = await segmentsOf(pipeline(yaml), [ev("u1", T0, view()), ev("u1", T0 + 1, view({ last_purchase_ms: T0 }))]);
    expect(out).toEqual([
      seg("u1", T0, "lifecycle", "new_customer", "enter"),
      seg("u1", T0 + 1, "lifecycle", "new_customer", "exit", "active"),
      seg("u1", T0 + 1, "lifecycle", "active", "enter", "new_customer"),
    ]);
  });

  it("gives an overlap to the rule listed first: vip overrides churned, and the other way round", async () => {
    const both = { avg_order_90d: 250, last_purchase_ms: T0 - 100 * DAY_MS };
    const overlapping = (first: string, second: string) => `
segments:
  groups:
    lifecycle:
      rules:
        - { name: ${first}, when: '${first === "vip" ? "avg_order_90d > 200.0" : "since_purchase_ms > 90.0 * 86400000.0"}' }
        - { name: ${second}, when: '${second === "vip" ? "avg_order_90d > 200.0" : "since_purchase_ms > 90.0 * 86400000.0"}' }
      default: new_customer
`;
    expect(await segmentsOf(pipeline(overlapping("vip", "churned")), [ev("u1", T0, view(both))])).toEqual([seg("u1", T0, "lifecycle", "vip", "enter")]);
    expect(await segmentsOf(pipeline(overlapping("churned", "vip")), [ev("u1", T0, view(both))])).toEqual([seg("u1", T0, "lifecycle", "churned", "enter")]);
  });

  it("emits a move within a group as an exit then an enter, with the matching signals", async () => {
    const run = await runStages(pipeline(EXAMPLE), [
      ev("u1", T0, view()),
      ev("u1", T0 + HOUR_MS, view({ event_type: "purchase", avg_order_90d: 300, last_purchase_ms: T0 + HOUR_MS })),
      ev("u1", T0 + 2 * HOUR_MS, view({ avg_order_90d: 120 })),
    ]);
    expect(run.byKind("segment").map((o) => o.body)).toEqual([
      seg("u1", T0, "lifecycle", "new_customer", "enter"),
      seg("u1", T0 + HOUR_MS, "lifecycle", "new_customer", "exit", "vip"),
      seg("u1", T0 + HOUR_MS, "lifecycle", "vip", "enter", "new_customer"),
      seg("u1", T0 + 2 * HOUR_MS, "lifecycle", "vip", "exit", "new_customer"),
      seg("u1", T0 + 2 * HOUR_MS, "lifecycle", "new_customer", "enter", "vip"),
    ]);
    const detail = { group: "lifecycle" };
    expect(run.byKind("probe").map((o) => o.body.signals)).toEqual([
      [{ kind: "segment_enter", name: "new_customer", timeMs: T0, detail }],
      [
        { kind: "segment_exit", name: "new_customer", timeMs: T0 + HOUR_MS, detail },
        { kind: "segment_enter", name: "vip", timeMs: T0 + HOUR_MS, detail },
      ],
      [
        { kind: "segment_exit", name: "vip", timeMs: T0 + 2 * HOUR_MS, detail },
        { kind: "segment_enter", name: "new_customer", timeMs: T0 + 2 * HOUR_MS, detail },
      ],
    ]);
    expect(run.byKind("segment").map((o) => o.key)).toEqual(["u1", "u1", "u1", "u1", "u1"]);
  });

  it("keeps the segments of different users apart", async () => {
    const out = await segmentsOf(pipeline(EXAMPLE), [
      ev("u1", T0, view({ avg_order_90d: 300, last_purchase_ms: T0 })),
      ev("u2", T0 + 1, view()),
      ev("u1", T0 + 2, view()),
      ev("u2", T0 + 3, view({ last_purchase_ms: T0 - 91 * DAY_MS })),
    ]);
    expect(out).toEqual([
      seg("u1", T0, "lifecycle", "vip", "enter"),
      seg("u2", T0 + 1, "lifecycle", "new_customer", "enter"),
      seg("u2", T0 + 3, "lifecycle", "new_customer", "exit", "churned"),
      seg("u2", T0 + 3, "lifecycle", "churned", "enter", "new_customer"),
    ]);
  });

  it("holds every tag whose rule holds, lists them in config order, and enters and exits each on its own", async () => {
    const yaml = `
segments:
  tags:
    - { name: opener, when: 'email_opens_5d >= 2.0' }
    - { name: hot_lead, when: 'email_opens_5d >= 1.0 && cta_clicks_5d >= 1.0 && demo_visits_5d >= 1.0' }
    - { name: clicker, when: 'cta_clicks_5d >= 1.0' }
`;
    const run = await runStages(pipeline(yaml), [
      ev("u1", T0, view({ cta_clicks_5d: 1 })),
      ev("u1", T0 + 1, view({ email_opens_5d: 2, demo_visits_5d: 1 })),
      ev("u1", T0 + 2, view({ email_opens_5d: 1 })),
      ev("u1", T0 + 3, view({ cta_clicks_5d: 0 })),
    ]);
    const tag = (time: number, segment: string, change: "enter" | "exit") => seg("u1", time, "tags", segment, change);
    expect(run.byKind("segment").map((o) => o.body)).toEqual([
      tag(T0, "clicker", "enter"),
      tag(T0 + 1, "opener", "enter"),
      tag(T0 + 1, "hot_lead", "enter"),
      tag(T0 + 2, "opener", "exit"),
      tag(T0 + 3, "hot_lead", "exit"),
      tag(T0 + 3, "clicker", "exit"),
    ]);
    expect(run.byKind("probe").map((o) => o.body.tags)).toEqual([["clicker"], ["opener", "hot_lead", "clicker"], ["hot_lead", "clicker"], []]);
    expect(run.byKind("probe")[1].body.signals).toEqual([
      { kind: "segment_enter", name: "opener", timeMs: T0 + 1, detail: { group: "tags" } },
      { kind: "segment_enter", name: "hot_lead", timeMs: T0 + 1, detail: { group: "tags" } },
    ]);
  });

  it("lets later rules read earlier groups and the tags read every group, under a configured tags name", async () => {
    const yaml = `
segments:
  groups:
    lifecycle:
      rules: [{ name: vip, when: 'avg_order_90d > 200.0' }]
      default: new_customer
    care:
      rules: [{ name: concierge, when: 'lifecycle == "vip" && email_opens_5d >= 1.0' }]
      default: standard
  tags:
    - { name: vip_without_care, when: 'lifecycle == "vip" && care != "concierge"' }
  tags_var: labels
`;
    const seen: unknown[] = [];
    const spy: StageDefinition = { name: "spy", build: () => ({ step: (v) => void seen.push([v.vars.lifecycle, v.vars.care, v.vars.labels]) }) };
    const stages = [facts, wakeUpAsker("wake_at_ms"), ...stagesFromYaml(yaml, FIELDS), spy];
    const out = await segmentsOf(stages, [ev("u1", T0, view({ avg_order_90d: 300 })), ev("u1", T0 + 1, view({ email_opens_5d: 1 }))]);
    expect(out).toEqual([
      seg("u1", T0, "lifecycle", "vip", "enter"),
      seg("u1", T0, "care", "standard", "enter"),
      seg("u1", T0, "labels", "vip_without_care", "enter"),
      seg("u1", T0 + 1, "care", "standard", "exit", "concierge"),
      seg("u1", T0 + 1, "care", "concierge", "enter", "standard"),
      seg("u1", T0 + 1, "labels", "vip_without_care", "exit"),
    ]);
    expect(seen).toEqual([
      ["vip", "standard", ["vip_without_care"]],
      ["vip", "concierge", []],
    ]);
  });

  it("re-decides on a wake-up: a vip leaves when 30 days pass since the purchase, once the watermark gets there", async () => {
    const bought = { event_type: "purchase", avg_order_90d: 300, last_purchase_ms: T0, wake_at_ms: T0 + 30 * DAY_MS };
    const elements = [ev("u1", T0, view(bought)), wm(T0 + 30 * DAY_MS - 1)];
    expect(await segmentsOf(pipeline(EXAMPLE), elements)).toEqual([seg("u1", T0, "lifecycle", "vip", "enter")]);
    expect(await segmentsOf(pipeline(EXAMPLE), [...elements, wm(T0 + 30 * DAY_MS)])).toEqual([
      seg("u1", T0, "lifecycle", "vip", "enter"),
      seg("u1", T0 + 30 * DAY_MS, "lifecycle", "vip", "exit", "new_customer"),
      seg("u1", T0 + 30 * DAY_MS, "lifecycle", "new_customer", "enter", "vip"),
    ]);
  });

  it("fires every pending wake-up in time order when the input ends (END_OF_TIME)", async () => {
    const bought = { event_type: "purchase", avg_order_90d: 300, last_purchase_ms: T0, wake_at_ms: T0 + 30 * DAY_MS };
    const later = { wake_at_ms: T0 + 90 * DAY_MS + 1 };
    const out = await segmentsOf(pipeline(EXAMPLE), [ev("u1", T0, view(bought)), ev("u1", T0 + 1, view(later)), wm(END_OF_TIME)]);
    expect(out).toEqual([
      seg("u1", T0, "lifecycle", "vip", "enter"),
      seg("u1", T0 + 30 * DAY_MS, "lifecycle", "vip", "exit", "new_customer"),
      seg("u1", T0 + 30 * DAY_MS, "lifecycle", "new_customer", "enter", "vip"),
      seg("u1", T0 + 90 * DAY_MS + 1, "lifecycle", "new_customer", "exit", "churned"),
      seg("u1", T0 + 90 * DAY_MS + 1, "lifecycle", "churned", "enter", "new_customer"),
    ]);
  });

  it("gives the same outputs after a restart at any point as without one", async () => {
    const elements: Element<EventFields>[] = [
      ev("u1", T0, view({ cta_clicks_5d: 1 })),
      ev("u2", T0 + 1, view({ avg_order_90d: 250, last_purchase_ms: T0, wake_at_ms: T0 + 30 * DAY_MS })),
      wm(T0 + 1),
      ev("u1", T0 + HOUR_MS, view({ email_opens_5d: 1, demo_visits_5d: 2 })),
      ev("u2", T0 + HOUR_MS, view({ email_opens_5d: 1 })),
      wm(T0 + HOUR_MS),
      ev("u1", T0 + 2 * HOUR_MS, view({ avg_order_90d: 500, last_purchase_ms: T0 + 2 * HOUR_MS, wake_at_ms: T0 + 40 * DAY_MS })),
      ev("u1", T0 + 3 * HOUR_MS, view({ cta_clicks_5d: 0 })),
      wm(T0 + 31 * DAY_MS),
      ev("u2", T0 + 32 * DAY_MS, view({ avg_order_90d: 260, last_purchase_ms: T0 + 32 * DAY_MS })),
      wm(END_OF_TIME),
    ];
    const stages = pipeline(EXAMPLE);
    const whole = await runStages(stages, elements);
    const L = "lifecycle";
    expect(whole.byKind("segment").map((o) => o.body)).toEqual([
      seg("u1", T0, L, "new_customer", "enter"),
      seg("u2", T0 + 1, L, "vip", "enter"),
      seg("u1", T0 + HOUR_MS, "tags", "hot_lead", "enter"),
      seg("u1", T0 + 2 * HOUR_MS, L, "new_customer", "exit", "vip"),
      seg("u1", T0 + 2 * HOUR_MS, L, "vip", "enter", "new_customer"),
      seg("u1", T0 + 3 * HOUR_MS, "tags", "hot_lead", "exit"),
      seg("u2", T0 + 30 * DAY_MS, L, "vip", "exit", "new_customer"),
      seg("u2", T0 + 30 * DAY_MS, L, "new_customer", "enter", "vip"),
      seg("u2", T0 + 32 * DAY_MS, L, "new_customer", "exit", "vip"),
      seg("u2", T0 + 32 * DAY_MS, L, "vip", "enter", "new_customer"),
      seg("u1", T0 + 40 * DAY_MS, L, "vip", "exit", "new_customer"),
      seg("u1", T0 + 40 * DAY_MS, L, "new_customer", "enter", "vip"),
    ]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.byKind("segment"), `restart after ${cut} elements`).toEqual(whole.byKind("segment"));
    }
  });

  it("marks a user's membership changed for the next checkpoint whenever it moves, not only when first written", () => {
    // Built alone, no behaviour operator looks the user's record up (and marks it) before the step.
    const ctx = stageContext();
    const [definition] = stagesFromYaml(EXAMPLE, FIELDS);
    const logic = definition.build(ctx);
    const out = { emit: () => {}, wakeAt: () => {}, cancelWake: () => {}, count: () => {}, wants: () => true };
    const step = (timeMs: number, fields: Record<string, unknown>) => {
      const vars: Record<string, unknown> = Object.create(fields);
      vars.user = "u1";
      vars.now = timeMs;
      logic.step({ user: "u1", timeMs, event: fields, vars, signals: [] }, out);
    };
    step(T0, view());
    expect(ctx.records.takeDelta().puts).toEqual([["u1", [[2, 0]]]]);
    step(T0 + 1, view());
    expect(ctx.records.takeDelta().puts).toEqual([]);
    step(T0 + 2, view({ avg_order_90d: 300, since_purchase_ms: 0, email_opens_5d: 1, cta_clicks_5d: 1, demo_visits_5d: 1 }));
    expect(ctx.records.takeDelta().puts).toEqual([["u1", [[0, 1]]]]);
  });

  it("refuses bad config, naming the path of every bad value", () => {
    const bad = (yaml: string) => () => stagesFromYaml(yaml, FIELDS);
    expect(bad(`segments: { groups: { lifecycle: { rules: [{ name: vip, when: 'true' }], default: x, priority: 1 } } }`)).toThrow(
      /segments\.groups\.lifecycle\.priority: unknown field/,
    );
    expect(bad(`segments: { groupz: {} }`)).toThrow(/segments\.groupz: unknown field/);
    expect(bad(`segments: { groups: { lifecycle: { rules: [{ name: vip, when: 'avg_order_90d + 1.0' }], default: x } } }`)).toThrow(
      /segments\.groups\.lifecycle\.rules\[0\]\.when: "avg_order_90d \+ 1\.0" is of type double, expected bool/,
    );
    expect(bad(`segments: { groups: { lifecycle: { rules: [{ name: vip, when: 'avg_order > 1.0' }], default: x } } }`)).toThrow(
      /segments\.groups\.lifecycle\.rules\[0\]\.when: CEL type error/,
    );
    expect(bad(`segments: { groups: { lifecycle: { rules: [{ name: vip, when: 'true' }] } } }`)).toThrow(/segments\.groups\.lifecycle\.default: is required/);
    expect(bad(`segments: { groups: { lifecycle: { rules: [{ name: vip, when: 'true' }], default: vip } } }`)).toThrow(
      /segments\.groups\.lifecycle\.default: "vip" is already a rule's segment/,
    );
    expect(bad(`segments: { groups: { g: { rules: [{ name: a, when: 'true' }, { name: a, when: 'false' }], default: x } } }`)).toThrow(
      /segments\.groups\.g\.rules\[1\]\.name: "a" is already named above/,
    );
    expect(bad(`segments: { groups: { page: { rules: [{ name: a, when: 'true' }], default: x } } }`)).toThrow(
      /segments\.groups\.page: "page" is already the name of schema\.page/,
    );
    expect(bad(`segments: { tags_var: labels }`)).toThrow(/segments: expected groups, tags or both/);
    expect(bad(`segments: { groups: { g: { rules: [{ name: a, when: 'true' }], default: x } }, tags_var: labels }`)).toThrow(
      /segments\.tags_var: names the list of tags, but there are no tags/,
    );
    expect(bad(`segments: { tags: [{ name: a, when: '"a" in tags' }] }`)).toThrow(/segments\.tags\[0\]\.when: CEL type error/);
    expect(bad(`segments: { tags: [{ name: "two words", when: 'true' }] }`)).toThrow(/segments\.tags\[0\]\.name: expected a name/);
    expect(bad(`segments: { tags: [] }`)).toThrow(/segments\.tags: expected at least one entry/);
    const manyTags = Array.from({ length: 53 }, (_, i) => `{ name: t${i}, when: 'true' }`).join(", ");
    expect(bad(`segments: { tags: [${manyTags}] }`)).toThrow(/segments\.tags: expected at most 52 entries, got 53/);
  });

  it("refuses a rule that reads its own group or a group declared below it", () => {
    const yaml = `
segments:
  groups:
    a: { rules: [{ name: x, when: 'a == "x" || b == "y"' }], default: none }
    b: { rules: [{ name: y, when: 'true' }], default: none }
`;
    expect(() => stagesFromYaml(yaml, FIELDS)).toThrow(/segments\.groups\.a\.rules\[0\]\.when: CEL type error/);
  });

  it("reports every bad value, not just the first", () => {
    const yaml = `segments: { groups: { g: { rules: [{ name: a, when: '1.0' }], default: "b c" } }, tags: [{ name: t, when: 'nope' }] }`;
    const message = configErrors(yaml, FIELDS).join("\n");
    expect(message).toMatch(/segments\.groups\.g\.rules\[0\]\.when/);
    expect(message).toMatch(/segments\.groups\.g\.default/);
    expect(message).toMatch(/segments\.tags\[0\]\.when/);
  });

  it("knows which values a rule cannot hold without, and skips no rule CEL could have made true", () => {
    expect(namesNeeded("avg_order_90d > 200.0 && since_purchase_ms < 30.0 * 86400000.0")).toEqual(["avg_order_90d", "since_purchase_ms"]);
    expect(namesNeeded("a > 1.0 || b > 1.0")).toEqual([]);
    expect(namesNeeded("(a > 1.0 || b > 1.0) && !c")).toEqual(["c"]);
    expect(namesNeeded("c ? a > 1.0 : a < 0.0 && b > 0.0")).toEqual(["c", "a"]);
    expect(namesNeeded("tags.exists(t, t == s) && has(m.f)")).toEqual([]);
    const env = celEnvironment({ a: "double", b: "double", c: "bool", s: "string", m: "map", tags: "list" });
    const sources = [
      "a > 1.0 && b < 3.0",
      "a > 1.0 || b > 1.0",
      "(a > 1.0 || b > 1.0) && !c",
      "c ? a > 1.0 : b > 1.0",
      "c ? a > 1.0 : a < 0.0 && b > 0.0",
      "!(a > 1.0 && c)",
      "!(a > 1.0 || c)",
      "s in tags && m.f == s",
      "size(tags) > 0 || has(m.f)",
      "tags.exists(t, t == s) || c",
      "[a, b][0] > 0.0 == c",
      "s.startsWith('x') != (a > 0.0)",
    ];
    const values = [
      { a: 2, b: 2, c: true, s: "x", m: { f: "x" }, tags: ["x"] },
      { a: 0, b: -1, c: false, s: "y", m: { g: 1 }, tags: [] },
      { a: -1, b: 5, c: false, s: "xy", m: { f: "xy" }, tags: ["xy"] },
    ];
    const names = Object.keys(values[0]);
    let skipped = 0;
    for (const source of sources) {
      const compiled = compileExpression(env, source, "t", ["bool"]);
      const needs = namesNeeded(source);
      for (const full of values) {
        for (let missing = 0; missing < 2 ** names.length; missing++) {
          const vars: Record<string, unknown> = {};
          names.forEach((name, i) => (missing & (2 ** i) ? undefined : (vars[name] = full[name as keyof typeof full])));
          if (!needs.some((name) => vars[name] === undefined)) continue;
          skipped++;
          expect(compiled.evaluate(vars), `${source} with ${JSON.stringify(vars)}`).not.toBe(true);
        }
      }
    }
    expect(skipped).toBe(960);
  });
});

