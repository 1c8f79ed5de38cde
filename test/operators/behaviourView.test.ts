// What the behaviour operator shows of its users to queries: values evaluated at the pipeline's
// time, erased users unknown, segment counts kept as users move (and leave), members in pages.
import { describe, expect, it } from "vitest";
import type { Element } from "../../engine/elements.ts";
import { KeyedValueState } from "../../engine/keyedState.ts";
import type { OperatorContext, OperatorView, Output } from "../../engine/operator.ts";
import { behaviour, type BehaviourOutput } from "../../operators/behaviour.ts";
import { features } from "../../operators/features.ts";
import type { EventFields } from "../../operators/stage.ts";
import { DAY_MS, ev, HOUR_MS, MINUTE_MS, stagesFromYaml, T0, wm } from "../behaviourHarness.ts";
import { memoryContext } from "../harness.ts";
import { mulberry32 } from "../harness.ts";

type Obj = Record<string, any>;

/** The behaviour operator over `yaml`'s stages, fed `elements` one by one; its view. */
function viewAfter(yaml: string, elements: Element<EventFields>[], erasesWhen?: (vars: Record<string, unknown>) => unknown): { view: OperatorView; feed: (more: Element<EventFields>[]) => void } {
  const logic = behaviour({ name: "test", stages: stagesFromYaml(yaml), ...(erasesWhen ? { erasesWhen } : {}) }).build(memoryContext({}));
  const out: Output<BehaviourOutput> = { emit: () => {}, side: () => {} };
  const feed = (more: Element<EventFields>[]) => {
    for (const e of more) {
      if (e.kind === "record") logic.onRecord(e, out);
      else logic.onWatermark(e.time, out);
    }
  };
  feed(elements);
  return { view: logic.view!, feed };
}

const SEGMENTS_YAML = `
segments:
  groups:
    tier: { rules: [ { name: gold, when: 'order_value > 100.0' }, { name: silver, when: 'order_value > 10.0' } ], default: bronze }
    device: { rules: [ { name: mobile, when: 'page.startsWith("/m/")' } ], default: desktop }
  tags:
    - { name: big_spender, when: 'order_value > 500.0' }
`;

/** Users per segment and tag, counted from every user's own answer. */
function recountFromKeys(view: OperatorView, users: string[]): Obj {
  const counts: Obj = { groups: { tier: { gold: 0, silver: 0, bronze: 0 }, device: { mobile: 0, desktop: 0 } }, tags: { big_spender: 0 } };
  for (const user of users) {
    const state = view.key(user) as Obj | undefined;
    if (state === undefined) continue;
    for (const [group, segment] of Object.entries(state.stages.segments.groups as Record<string, string>)) counts.groups[group][segment]++;
    for (const tag of state.stages.segments.tags as string[]) counts.tags[tag]++;
  }
  return counts;
}

describe("the behaviour operator's view", () => {
  it("evaluates a decayed score at the pipeline's time, not at the user's last update", () => {
    const { view } = viewAfter(`scores: { s: { halfLife: 1d, events: { a: 100 } } }`, [
      ev("early", T0, { event_type: "a" }),
      ev("late", T0 + DAY_MS, { event_type: "b" }),
      wm(T0 + DAY_MS - 5_000),
    ]);
    const early = view.key("early") as Obj;
    expect(early.stages.scores.s).toMatchObject({ value: 50, last_weighted_event_ms: T0, last_weighted_event: new Date(T0).toISOString() });
    expect(early).toMatchObject({ user_id: "early", now_ms: T0 + DAY_MS, last_event_ms: T0, last_event: new Date(T0).toISOString() });
    expect(view.key("nobody")).toBeUndefined();
    expect(view.keyCount()).toBe(2);
  });

  it("lists pending wake-ups in time order with their stage and cause", () => {
    const { view } = viewAfter(`sessions: { gap: 30m }\naggregates: { views_1h: { count: 'true', over: 1h } }`, [ev("u", T0, { event_type: "page_view" })]);
    const wakeUps = (view.key("u") as Obj).wake_ups as Obj[];
    expect(wakeUps.map((w) => [w.stage, w.time_ms])).toEqual([
      ["sessions", T0 + 30 * MINUTE_MS],
      ["aggregates", wakeUps[1].time_ms],
    ]);
    expect(wakeUps[1].time_ms).toBeGreaterThanOrEqual(T0 + HOUR_MS);
    for (const w of wakeUps) expect(w.cause).toMatch(/\w+ \w+/);
  });

  it("keeps segment counts equal to a recount of every user's answer as users move, and forgets an erased user", () => {
    const rnd = mulberry32(7);
    const users = Array.from({ length: 60 }, (_, i) => `user-${String(i).padStart(3, "0")}`);
    const events = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => ev(users[Math.floor(rnd() * users.length)], T0 + (from + i) * 1000, { event_type: "x", order_value: Math.floor(rnd() * 700), page: rnd() < 0.3 ? "/m/home" : "/home" }));
    const { view, feed } = viewAfter(SEGMENTS_YAML, events(0, 100), (vars) => vars.event_type === "erase");
    // Counted now, for the first time; kept by every change from here.
    expect(view.views!.segments({})).toEqual(recountFromKeys(view, users));
    feed(events(100, 300));
    expect(view.views!.segments({})).toEqual(recountFromKeys(view, users));
    const erased = users.find((u) => view.key(u) !== undefined)!;
    const before = view.keyCount();
    feed([ev(erased, T0 + 500_000, { event_type: "erase", order_value: 0, page: "/" })]);
    expect(view.key(erased)).toBeUndefined();
    expect(view.keyCount()).toBe(before - 1);
    expect(view.views!.segments({})).toEqual(recountFromKeys(view, users));
  });

  it("pages a segment's members in key order after the cursor, and knows no unknown segment", () => {
    const users = Array.from({ length: 25 }, (_, i) => `u${String(24 - i).padStart(2, "0")}`);
    const { view } = viewAfter(
      SEGMENTS_YAML,
      users.map((u, i) => ev(u, T0 + i * 1000, { event_type: "x", order_value: i % 2 === 0 ? 200 : 5, page: "/" })),
    );
    const gold = users.filter((_, i) => i % 2 === 0).sort();
    const members = view.views!.segmentMembers;
    const first = members({ group: "tier", segment: "gold", limit: "5" }) as Obj;
    expect(first).toEqual({ keys: gold.slice(0, 5), nextCursor: gold[4] });
    const rest = members({ group: "tier", segment: "gold", limit: "1000", cursor: first.nextCursor }) as Obj;
    expect(rest).toEqual({ keys: gold.slice(5), nextCursor: null });
    expect((members({ group: "tier", segment: "gold" }) as Obj).keys).toEqual(gold);
    expect((members({ group: "tags", segment: "big_spender" }) as Obj).keys).toEqual([]);
    expect(members({ group: "tier", segment: "platinum" })).toBeUndefined();
    expect(members({ group: "colour", segment: "gold" })).toBeUndefined();
  });

  it("answers the views of stages it lacks as empty", () => {
    const { view } = viewAfter(`sessions: { gap: 30m }`, [ev("u", T0, { event_type: "x" })]);
    expect(view.views!.segments({})).toEqual({ groups: {}, tags: {} });
    expect(view.views!.clusters({})).toEqual({});
    expect(view.views!.triggersByChannel({})).toEqual({});
    expect(view.views!.segmentMembers({ group: "g", segment: "s" })).toBeUndefined();
  });

  it("shows the features when no sink takes vectors only if the job answers queries (keepsVectors)", () => {
    const shown = (keepsVectors: boolean) => {
      const stage = features({ features: [{ name: "double_value", value: (vars) => (vars.order_value as number) * 2 }], keepsVectors });
      const logic = behaviour({ name: "test", stages: [stage], wantedOutputs: [] }).build(memoryContext({}));
      logic.onRecord(ev("u", T0, { event_type: "x", order_value: 21 }) as never, { emit: () => {}, side: () => {} });
      return (logic.view!.key("u") as Obj).stages.features;
    };
    expect(shown(true)).toEqual({ double_value: 42 });
    expect(shown(false)).toBeUndefined();
  });

  it("never shows a vector a run that kept them left behind, once a run that keeps none stepped the user", () => {
    // One state across three runs (as a restart would restore it): served, then not, then served again.
    const states = new Map<string, KeyedValueState<unknown>>();
    const base = memoryContext({});
    const context: OperatorContext = {
      ...base,
      valueState: (name, options) => {
        if (!states.has(name)) states.set(name, new KeyedValueState(name, options as never));
        return states.get(name) as never;
      },
    };
    const run = (keepsVectors: boolean) => {
      const stage = features({ features: [{ name: "double_value", value: (vars) => (vars.order_value as number) * 2 }], keepsVectors });
      return behaviour({ name: "test", stages: [stage], wantedOutputs: [] }).build(context);
    };
    const out = { emit: () => {}, side: () => {} };
    const served = run(true);
    served.onRecord(ev("u", T0, { event_type: "x", order_value: 21 }) as never, out);
    expect((served.view!.key("u") as Obj).stages.features).toEqual({ double_value: 42 });
    run(false).onRecord(ev("u", T0 + 1000, { event_type: "x", order_value: 50 }) as never, out);
    expect((run(true).view!.key("u") as Obj).stages.features).toBeUndefined();
  });
});
