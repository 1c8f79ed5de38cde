import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import type { EventFields, Signal, StageDefinition } from "../../operators/stage.ts";
import { stageContext } from "../harness.ts";
import { ev, HOUR_MS, DAY_MS, MINUTE_MS, runStages, runStagesWithRestart, stagesFromYaml, T0, wm, configErrors, outputTime } from "../behaviourHarness.ts";

const CART_ABANDONED = `
sequences:
  cart_abandoned:
    steps:
      - { name: cart, when: 'event_type == "add_to_cart"' }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
`;

const cart = (user: string, timeMs: number, page = "/p/shoes") => ev(user, timeMs, { event_type: "add_to_cart", page });
const purchase = (user: string, timeMs: number) => ev(user, timeMs, { event_type: "purchase", page: "/checkout" });
const view = (user: string, timeMs: number, page: string) => ev(user, timeMs, { event_type: "page_view", page });

/** A stage placed after the sequences that records the signals and a variable of every step. */
function probe(seen: Array<{ user: string; timeMs: number; signals: Signal[]; value?: unknown }>, variable?: string): StageDefinition {
  return {
    name: "probe",
    build: () => ({
      step: (v) => {
        seen.push({ user: v.user, timeMs: v.timeMs, signals: [...v.signals], ...(variable ? { value: v.vars[variable] } : {}) });
      },
    }),
  };
}

async function sequencesOf(yaml: string, elements: Element<EventFields>[]) {
  return (await runStages(stagesFromYaml(yaml), elements)).byKind("sequence").map((o) => o.body);
}

describe("sequences", () => {
  it("fires a cart not followed by a purchase within 2 h exactly once, at cart time + 2 h, when the watermark passes it", async () => {
    const stages = stagesFromYaml(CART_ABANDONED);
    const elements = [cart("u1", T0), wm(T0 + 2 * HOUR_MS - 1), wm(T0 + 2 * HOUR_MS), wm(T0 + 5 * HOUR_MS), wm(END_OF_TIME)];
    const before = await runStages(stages, elements.slice(0, 2));
    expect(before.byKind("sequence")).toEqual([]);
    const run = await runStages(stages, elements);
    expect(run.byKind("sequence")).toEqual([
      {
        kind: "sequence",
        key: "u1",
        time: T0 + 2 * HOUR_MS,
        body: {
          output: "sequence",
          user_id: "u1",
          ...outputTime(T0 + 2 * HOUR_MS),
          sequence: "cart_abandoned",
          matched: [{ step: "cart", ...outputTime(T0), event_type: "add_to_cart", page: "/p/shoes" }],
        },
      },
    ]);
  });

  it("cancels the absence when the purchase comes at 1h59m", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u1", T0), purchase("u1", T0 + 119 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(out).toEqual([]);
  });

  it("counts a purchase at exactly 2 h as too late: the absence fires first, at the deadline", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u1", T0), purchase("u1", T0 + 2 * HOUR_MS), wm(END_OF_TIME)]);
    expect(out.map((b) => b.time_ms)).toEqual([T0 + 2 * HOUR_MS]);
  });

  it("fires the absence at its deadline before applying a later event, whether the event or the wake-up comes first", async () => {
    const yaml = `${CART_ABANDONED}
  cart_again:
    steps:
      - { name: first, when: 'event_type == "add_to_cart"' }
      - { name: second, when: 'event_type == "add_to_cart"', within: 3h }
`;
    // The second cart at 2h30m is after the first's absence deadline: the abandonment of the first
    // cart comes out first, then the pair, then (at 4h30m) the abandonment of the second cart.
    const expected = [
      { time: T0 + 2 * HOUR_MS, sequence: "cart_abandoned", steps: ["cart"] },
      { time: T0 + 150 * MINUTE_MS, sequence: "cart_again", steps: ["first", "second"] },
      { time: T0 + 270 * MINUTE_MS, sequence: "cart_abandoned", steps: ["cart"] },
    ];
    const brief = (bodies: Record<string, unknown>[]) =>
      bodies.map((b) => ({ time: b.time_ms, sequence: b.sequence, steps: (b.matched as Array<{ step: string }>).map((m) => m.step) }));
    const eventFirst = await sequencesOf(yaml, [cart("u1", T0), cart("u1", T0 + 150 * MINUTE_MS), wm(END_OF_TIME)]);
    const wakeUpFirst = await sequencesOf(yaml, [cart("u1", T0), wm(T0 + 2 * HOUR_MS), cart("u1", T0 + 150 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(brief(eventFirst)).toEqual(expected);
    expect(brief(wakeUpFirst)).toEqual(expected);
  });

  it("reports a burst of carts as one abandoned cart, timed from the last", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u1", T0, "/a"), cart("u1", T0 + HOUR_MS, "/b"), wm(T0 + 2 * HOUR_MS + 1), wm(END_OF_TIME)]);
    expect(out).toEqual([
      {
        output: "sequence",
        user_id: "u1",
        ...outputTime(T0 + 3 * HOUR_MS),
        sequence: "cart_abandoned",
        matched: [{ step: "cart", ...outputTime(T0 + HOUR_MS), event_type: "add_to_cart", page: "/b" }],
      },
    ]);
  });

  it("does not let a purchase older than the cart cancel it (disorder)", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u1", T0), purchase("u1", T0 - MINUTE_MS), wm(END_OF_TIME)]);
    expect(out.map((b) => b.time_ms)).toEqual([T0 + 2 * HOUR_MS]);
  });

  it("keeps users apart", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u1", T0), cart("u2", T0 + MINUTE_MS), purchase("u2", T0 + HOUR_MS), wm(END_OF_TIME)]);
    expect(out.map((b) => [b.user_id, b.time_ms])).toEqual([["u1", T0 + 2 * HOUR_MS]]);
  });

  it("matches A then B within T with both events, and not when B comes at T or later", async () => {
    const yaml = `
sequences:
  pricing_then_demo:
    steps:
      - { name: pricing, when: 'page.startsWith("/pricing")' }
      - { name: demo, when: 'event_type == "form_submission"', within: 7d }
`;
    const demo = (user: string, timeMs: number) => ev(user, timeMs, { event_type: "form_submission", page: "/demo" });
    const out = await sequencesOf(yaml, [
      view("u1", T0, "/pricing/team"),
      demo("u1", T0 + 7 * DAY_MS - 1),
      view("u2", T0, "/pricing"),
      demo("u2", T0 + 7 * DAY_MS),
      wm(END_OF_TIME),
    ]);
    expect(out).toEqual([
      {
        output: "sequence",
        user_id: "u1",
        ...outputTime(T0 + 7 * DAY_MS - 1),
        sequence: "pricing_then_demo",
        matched: [
          { step: "pricing", ...outputTime(T0), event_type: "page_view", page: "/pricing/team" },
          { step: "demo", ...outputTime(T0 + 7 * DAY_MS - 1), event_type: "form_submission", page: "/demo" },
        ],
      },
    ]);
  });

  it("restarts the window from a repeated first step", async () => {
    const yaml = `
sequences:
  pricing_then_demo:
    steps:
      - { name: pricing, when: 'page == "/pricing"' }
      - { name: demo, when: 'event_type == "form_submission"', within: 7d }
`;
    const out = await sequencesOf(yaml, [
      view("u1", T0, "/pricing"),
      view("u1", T0 + 6 * DAY_MS, "/pricing"),
      ev("u1", T0 + 8 * DAY_MS, { event_type: "form_submission", page: "/demo" }),
      wm(END_OF_TIME),
    ]);
    expect(out.map((b) => (b.matched as Array<{ time_ms: number }>).map((m) => m.time_ms))).toEqual([[T0 + 6 * DAY_MS, T0 + 8 * DAY_MS]]);
  });

  it("lets one event complete a match and start the next (A then A matches consecutive pairs)", async () => {
    const yaml = `
sequences:
  two_carts:
    steps:
      - { name: first, when: 'event_type == "add_to_cart"' }
      - { name: second, when: 'event_type == "add_to_cart"', within: 1h }
`;
    const out = await sequencesOf(yaml, [cart("u1", T0), cart("u1", T0 + 10 * MINUTE_MS), cart("u1", T0 + 20 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(out.map((b) => (b.matched as Array<{ time_ms: number }>).map((m) => m.time_ms))).toEqual([
      [T0, T0 + 10 * MINUTE_MS],
      [T0 + 10 * MINUTE_MS, T0 + 20 * MINUTE_MS],
    ]);
  });

  it("uses an event once per match: three carts in a row need three events", async () => {
    const yaml = `
sequences:
  three_carts:
    steps:
      - { name: first, when: 'event_type == "add_to_cart"' }
      - { name: second, when: 'event_type == "add_to_cart"', within: 1h }
      - { name: third, when: 'event_type == "add_to_cart"', within: 1h }
`;
    const times = [0, 1, 2, 3].map((i) => T0 + i * MINUTE_MS);
    const out = await sequencesOf(yaml, [...times.map((t) => cart("u1", t)), wm(END_OF_TIME)]);
    expect(out.map((b) => (b.matched as Array<{ time_ms: number }>).map((m) => m.time_ms))).toEqual([times.slice(0, 3), times.slice(1, 4)]);
  });

  it("matches BEHAVIOUR.md's home page, cart within 5 minutes, no purchase within 2 h", async () => {
    const yaml = `
sequences:
  quick_cart_abandoned:
    steps:
      - { name: home, when: 'page == "/"' }
      - { name: cart, when: 'event_type == "add_to_cart"', within: 5m }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
`;
    const out = await sequencesOf(yaml, [
      view("u1", T0, "/"),
      cart("u1", T0 + 4 * MINUTE_MS),
      view("u1", T0 + 30 * MINUTE_MS, "/"), // browsing home again keeps the pending cart
      view("u2", T0, "/"),
      cart("u2", T0 + 5 * MINUTE_MS), // too late for u2's home page
      view("u3", T0, "/"),
      cart("u3", T0 + MINUTE_MS),
      purchase("u3", T0 + HOUR_MS),
      wm(END_OF_TIME),
    ]);
    expect(out).toEqual([
      {
        output: "sequence",
        user_id: "u1",
        ...outputTime(T0 + 124 * MINUTE_MS),
        sequence: "quick_cart_abandoned",
        matched: [
          { step: "home", ...outputTime(T0), event_type: "page_view", page: "/" },
          { step: "cart", ...outputTime(T0 + 4 * MINUTE_MS), event_type: "add_to_cart", page: "/p/shoes" },
        ],
      },
    ]);
  });

  it("pushes a sequence signal with the matched steps, and keeps the time of the latest match in matched_at", async () => {
    const yaml = `
sequences:
  cart_abandoned:
    matched_at: abandoned_at
    steps:
      - { name: cart, when: 'event_type == "add_to_cart"' }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
`;
    const seen: Array<{ user: string; timeMs: number; signals: Signal[]; value?: unknown }> = [];
    await runStages([...stagesFromYaml(yaml), probe(seen, "abandoned_at")], [cart("u1", T0), wm(T0 + 3 * HOUR_MS), view("u1", T0 + 4 * HOUR_MS, "/")]);
    expect(seen).toEqual([
      { user: "u1", timeMs: T0, signals: [], value: undefined },
      {
        user: "u1",
        timeMs: T0 + 2 * HOUR_MS,
        signals: [
          {
            kind: "sequence",
            name: "cart_abandoned",
            timeMs: T0 + 2 * HOUR_MS,
            detail: { matched: [{ step: "cart", time: T0, event_type: "add_to_cart", page: "/p/shoes" }] },
          },
        ],
        value: T0 + 2 * HOUR_MS,
      },
      { user: "u1", timeMs: T0 + 4 * HOUR_MS, signals: [], value: T0 + 2 * HOUR_MS },
    ]);
  });

  it("keeps no state for a user once nothing is pending (data minimisation)", () => {
    const [definition] = stagesFromYaml(CART_ABANDONED);
    const ctx = stageContext();
    const logic = definition.build(ctx);
    const states = ctx.slots;
    const out = { emit: () => {}, wakeAt: () => {}, cancelWake: () => {}, count: () => {}, wants: () => true };
    const step = (timeMs: number, eventType?: string) => {
      const event = eventType === undefined ? undefined : { event_type: eventType, page: "/" };
      logic.step({ user: "u1", timeMs, event, vars: Object.create(event ?? null), signals: [] }, out);
    };
    step(T0, "page_view");
    expect(states[0].size).toBe(0);
    step(T0 + MINUTE_MS, "add_to_cart");
    expect(states[0].size).toBe(1);
    step(T0 + HOUR_MS, "purchase");
    expect(states[0].size).toBe(0);
    step(T0 + 2 * HOUR_MS, "add_to_cart");
    step(T0 + 4 * HOUR_MS); // the wake-up at the deadline
    expect(states[0].size).toBe(0);
  });

  it("fires every pending absence in time order when the input ends", async () => {
    const out = await sequencesOf(CART_ABANDONED, [cart("u2", T0 + HOUR_MS), cart("u1", T0), cart("u3", T0 + HOUR_MS), wm(END_OF_TIME)]);
    expect(out.map((b) => [b.user_id, b.time_ms])).toEqual([
      ["u1", T0 + 2 * HOUR_MS],
      ["u2", T0 + 3 * HOUR_MS],
      ["u3", T0 + 3 * HOUR_MS],
    ]);
  });

  it("gives the same outputs after a restart at any point, and after two checkpoints", async () => {
    const yaml = `
sequences:
  quick_cart_abandoned:
    matched_at: quick_abandoned_at
    steps:
      - { name: home, when: 'page == "/"' }
      - { name: cart, when: 'event_type == "add_to_cart"', within: 5m }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
  pricing_then_demo:
    steps:
      - { name: pricing, when: 'page == "/pricing"' }
      - { name: demo, when: 'event_type == "form_submission"', within: 1d }
`;
    const stages = stagesFromYaml(yaml);
    const elements = [
      view("u1", T0, "/"),
      cart("u1", T0 + MINUTE_MS),
      view("u2", T0 + MINUTE_MS, "/pricing"),
      wm(T0 + HOUR_MS),
      view("u1", T0 + 2 * HOUR_MS, "/"),
      cart("u1", T0 + 2 * HOUR_MS + MINUTE_MS),
      ev("u2", T0 + 3 * HOUR_MS, { event_type: "form_submission", page: "/demo" }),
      wm(T0 + 4 * HOUR_MS),
      view("u3", T0 + 4 * HOUR_MS, "/"),
      cart("u3", T0 + 4 * HOUR_MS + MINUTE_MS),
      purchase("u3", T0 + 5 * HOUR_MS),
      view("u2", T0 + 5 * HOUR_MS, "/pricing"),
      wm(T0 + 6 * HOUR_MS),
      wm(END_OF_TIME),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.byKind("sequence").map((o) => [o.key, o.time])).toEqual([
      ["u1", T0 + MINUTE_MS + 2 * HOUR_MS],
      ["u2", T0 + 3 * HOUR_MS],
      ["u1", T0 + 4 * HOUR_MS + MINUTE_MS],
    ]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut at ${cut}`).toEqual(whole.outputs);
    }
  });

  it("refuses an unknown field at its path", () => {
    expect(() => stagesFromYaml(`sequences: { s: { steps: [{ name: a, when: 'true' }, { name: b, when: 'true', within: 1h, absnt: true }] } }`)).toThrow(
      /sequences\.s\.steps\[1\]\.absnt: unknown field/,
    );
    expect(() => stagesFromYaml(`sequences: { s: { stepz: [] } }`)).toThrow(/sequences\.s\.stepz: unknown field/);
  });

  it("refuses a condition that is not a boolean, or refers to what is not declared, at its path", () => {
    expect(() => stagesFromYaml(`sequences: { s: { steps: [{ name: a, when: 'page' }, { name: b, when: 'true' }] } }`)).toThrow(
      /sequences\.s\.steps\[0\]\.when: "page" is of type string, expected bool/,
    );
    expect(() => stagesFromYaml(`sequences: { s: { steps: [{ name: a, when: 'true' }, { name: b, when: 'nope == 1.0' }] } }`)).toThrow(
      /sequences\.s\.steps\[1\]\.when: CEL type error/,
    );
  });

  it("refuses an absent step that is not last or has no within, a within on the first step, and a single step", () => {
    const errors = (yaml: string) => configErrors(yaml);
    expect(errors(`sequences: { s: { steps: [{ name: a, when: 'true', within: 1h }, { name: b, when: 'true', absent: true, within: 1h }, { name: c, when: 'true', absent: true }] } }`)).toEqual([
      "sequences.s.steps[0].within: the first step has no step before it to be within a time of",
      "sequences.s.steps[1].absent: only the last step can be absent",
      "sequences.s.steps[2].within: an absent step needs within: the time by which its absence counts",
    ]);
    expect(errors(`sequences: { s: { steps: [{ name: a, when: 'true' }] } }`)).toEqual([
      'sequences.s.steps: expected at least two steps (a sequence is "A then B"), got 1',
    ]);
    expect(errors(`sequences: { s: { steps: [{ name: a, when: 'true' }, { name: a, when: 'true', within: soon }] } }`)).toEqual([
      'sequences.s.steps[1].name: "a" names an earlier step of this sequence',
      'sequences.s.steps[1].within: expected a duration like "2h", got "soon"',
    ]);
  });
});
