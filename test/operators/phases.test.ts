import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import type { EventFields, Signal, StageDefinition } from "../../operators/stage.ts";
import { DAY_MS, ev, HOUR_MS, runStages, runStagesWithRestart, stagesFromYaml, T0, wm, configErrors, outputTime } from "../behaviourHarness.ts";

/** The example of the reader's doc comment: BEHAVIOUR.md's phases and windows. */
const JOURNEY = `
phases:
  names: [awareness, consideration, conversion, retention, re_engagement]
  initial: awareness
  transitions:
    - { to: retention, when: 'event_type == "purchase"' }
    - { to: conversion, from: [awareness, consideration, re_engagement], when: 'event_type == "add_to_cart"' }
    - { to: consideration, from: [awareness, re_engagement], when: 'event_type in ["product_view", "search"]' }
    - { to: awareness, from: [re_engagement], when: 'true' }
  timers:
    - { to: consideration, from: [conversion], after: 24h, since: entered }
    - { to: consideration, from: [retention], after: 30d, since: entered }
    - { to: re_engagement, after: 60d }
  windows:
    - { name: retarget, in: [consideration], after: 48h }
    - { name: retention_check, in: [retention], after: 7d, since: entered }
`;

/** Only inactivity: the machine the re-engagement facts are about. */
const INACTIVITY = `
phases:
  transitions:
    - { to: awareness, from: [re_engagement], when: 'true' }
  timers:
    - { to: re_engagement, after: 60d }
`;

const event = (user: string, timeMs: number, eventType: string) => ev(user, timeMs, { event_type: eventType, page: "/" });

async function phasesOf(yaml: string, elements: Element<EventFields>[]) {
  const run = await runStages(stagesFromYaml(yaml), elements);
  return run.outputs.filter((o) => o.kind === "phase" || o.kind === "phase_window").map((o) => o.body);
}

/** A stage placed after the phases that records the signals and variables of every step. */
function probe(seen: Array<{ timeMs: number; signals: Signal[]; phase: unknown; enteredMs: unknown }>): StageDefinition {
  return {
    name: "probe",
    build: () => ({ step: (v) => void seen.push({ timeMs: v.timeMs, signals: [...v.signals], phase: v.vars.phase, enteredMs: v.vars.phase_entered_at }) }),
  };
}

describe("journey phases", () => {
  it("moves a user inactive for 61 days to re-engagement when the watermark passes day 60 after their last event, not before", async () => {
    const stages = stagesFromYaml(INACTIVITY);
    const elements = [event("u1", T0, "page_view"), wm(T0 + 60 * DAY_MS - 1)];
    const before = await runStages(stages, elements);
    expect(before.byKind("phase").map((o) => o.body)).toEqual([{ output: "phase", user_id: "u1", ...outputTime(T0), phase: "awareness", previous: null }]);
    const after = await runStages(stages, [...elements, wm(T0 + 61 * DAY_MS)]);
    expect(after.byKind("phase").map((o) => [o.time, o.body])).toEqual([
      [T0, { output: "phase", user_id: "u1", ...outputTime(T0), phase: "awareness", previous: null }],
      [T0 + 60 * DAY_MS, { output: "phase", user_id: "u1", ...outputTime(T0 + 60 * DAY_MS), phase: "re_engagement", previous: "awareness" }],
    ]);
  });

  it("pushes re-engagement back when an event comes at day 59", async () => {
    const out = await phasesOf(INACTIVITY, [event("u1", T0, "page_view"), event("u1", T0 + 59 * DAY_MS, "page_view"), wm(T0 + 61 * DAY_MS), wm(T0 + 119 * DAY_MS - 1)]);
    expect(out.map((b) => [b.time_ms, b.phase])).toEqual([[T0, "awareness"]]);
    const later = await phasesOf(INACTIVITY, [event("u1", T0, "page_view"), event("u1", T0 + 59 * DAY_MS, "page_view"), wm(T0 + 119 * DAY_MS)]);
    expect(later.map((b) => [b.time_ms, b.phase])).toEqual([
      [T0, "awareness"],
      [T0 + 119 * DAY_MS, "re_engagement"],
    ]);
  });

  it("fires a timer at its time before applying a later event, whether the event or the wake-up comes first", async () => {
    const expected = [
      { output: "phase", user_id: "u1", ...outputTime(T0), phase: "awareness", previous: null },
      { output: "phase", user_id: "u1", ...outputTime(T0 + 60 * DAY_MS), phase: "re_engagement", previous: "awareness" },
      { output: "phase", user_id: "u1", ...outputTime(T0 + 70 * DAY_MS), phase: "awareness", previous: "re_engagement" },
    ];
    const eventFirst = await phasesOf(INACTIVITY, [event("u1", T0, "page_view"), event("u1", T0 + 70 * DAY_MS, "page_view")]);
    const wakeUpFirst = await phasesOf(INACTIVITY, [event("u1", T0, "page_view"), wm(T0 + 65 * DAY_MS), event("u1", T0 + 70 * DAY_MS, "page_view")]);
    expect(eventFirst).toEqual(expected);
    expect(wakeUpFirst).toEqual(expected);
  });

  it("applies the first transition that holds in the current phase, and puts a first-event buyer straight into retention", async () => {
    const out = await phasesOf(JOURNEY, [
      event("u1", T0, "page_view"),
      event("u1", T0 + HOUR_MS, "product_view"),
      event("u1", T0 + 2 * HOUR_MS, "search"), // consideration -> consideration is not a transition of the config
      event("u1", T0 + 3 * HOUR_MS, "add_to_cart"),
      event("u1", T0 + 4 * HOUR_MS, "purchase"),
      event("u1", T0 + 5 * HOUR_MS, "add_to_cart"), // the transition to conversion does not apply in retention
      event("u2", T0, "purchase"),
    ]);
    expect(out.map((b) => [b.user_id, b.time_ms, b.phase, b.previous])).toEqual([
      ["u1", T0, "awareness", null],
      ["u1", T0 + HOUR_MS, "consideration", "awareness"],
      ["u1", T0 + 3 * HOUR_MS, "conversion", "consideration"],
      ["u1", T0 + 4 * HOUR_MS, "retention", "conversion"],
      ["u2", T0, "retention", null],
    ]);
  });

  it("re-enters the phase on a transition to it: timers since entry restart, no output", async () => {
    const out = await phasesOf(JOURNEY, [event("u1", T0, "purchase"), event("u1", T0 + 20 * DAY_MS, "purchase"), wm(T0 + 45 * DAY_MS)]);
    expect(out.map((b) => [b.time_ms, b.output === "phase" ? b.phase : b.window])).toEqual([
      [T0, "retention"],
      [T0 + 7 * DAY_MS, "retention_check"],
      [T0 + 27 * DAY_MS, "retention_check"],
    ]);
    const later = await phasesOf(JOURNEY, [event("u1", T0, "purchase"), event("u1", T0 + 20 * DAY_MS, "purchase"), wm(T0 + 50 * DAY_MS)]);
    expect(later.map((b) => [b.time_ms, b.output === "phase" ? b.phase : b.window])).toEqual([
      [T0, "retention"],
      [T0 + 7 * DAY_MS, "retention_check"],
      [T0 + 27 * DAY_MS, "retention_check"],
      [T0 + 50 * DAY_MS, "consideration"],
    ]);
  });

  it("fires a timer since the last event whose time passed before the phase was entered on entry, never earlier", async () => {
    const yaml = `
phases:
  names: [active, idle, dormant]
  transitions: [{ to: active, when: 'true' }]
  timers:
    - { to: idle, from: [active], after: 1d }
    - { to: dormant, from: [idle], after: 12h }
`;
    const out = await phasesOf(yaml, [event("u1", T0, "page_view"), wm(END_OF_TIME)]);
    expect(out.map((b) => [b.time_ms, b.phase])).toEqual([
      [T0, "active"],
      [T0 + DAY_MS, "idle"],
      [T0 + DAY_MS, "dormant"],
    ]);
  });

  it("walks BEHAVIOUR.md's journey on timers alone when the user goes silent, and stops", async () => {
    const out = await phasesOf(JOURNEY, [event("u1", T0, "add_to_cart"), wm(END_OF_TIME)]);
    expect(out).toEqual([
      { output: "phase", user_id: "u1", ...outputTime(T0), phase: "conversion", previous: null },
      { output: "phase", user_id: "u1", ...outputTime(T0 + DAY_MS), phase: "consideration", previous: "conversion" },
      { output: "phase_window", user_id: "u1", ...outputTime(T0 + 2 * DAY_MS), phase: "consideration", window: "retarget" },
      { output: "phase", user_id: "u1", ...outputTime(T0 + 60 * DAY_MS), phase: "re_engagement", previous: "consideration" },
    ]);
  });

  it("fires a window once per last event, and not after the user left its phase", async () => {
    const out = await phasesOf(JOURNEY, [
      event("u1", T0, "product_view"),
      event("u1", T0 + DAY_MS, "page_view"), // still consideration; the window now counts from here
      wm(T0 + 4 * DAY_MS),
      event("u1", T0 + 5 * DAY_MS, "page_view"),
      event("u1", T0 + 6 * DAY_MS, "add_to_cart"), // leaves consideration before the window's 48 h
      wm(T0 + 9 * DAY_MS),
    ]);
    expect(out.map((b) => [b.time_ms, b.output === "phase" ? b.phase : b.window])).toEqual([
      [T0, "consideration"],
      [T0 + 3 * DAY_MS, "retarget"],
      [T0 + 6 * DAY_MS, "conversion"],
      [T0 + 7 * DAY_MS, "consideration"],
      // Entered at day 7, 24 h after the last event: the 48 h window since that event is at day 8.
      [T0 + 8 * DAY_MS, "retarget"],
    ]);
  });

  it("pushes phase signals and writes the phase and its entry time for later stages", async () => {
    const seen: Array<{ timeMs: number; signals: Signal[]; phase: unknown; enteredMs: unknown }> = [];
    await runStages([...stagesFromYaml(JOURNEY), probe(seen)], [event("u1", T0, "product_view"), wm(T0 + 2 * DAY_MS), event("u1", T0 + 3 * DAY_MS, "add_to_cart")]);
    expect(seen).toEqual([
      { timeMs: T0, signals: [{ kind: "phase", name: "consideration", timeMs: T0, detail: { previous: null } }], phase: "consideration", enteredMs: T0 },
      {
        timeMs: T0 + 2 * DAY_MS,
        signals: [{ kind: "phase", name: "retarget", timeMs: T0 + 2 * DAY_MS, detail: { phase: "consideration", window: "retarget" } }],
        phase: "consideration",
        enteredMs: T0,
      },
      {
        timeMs: T0 + 3 * DAY_MS,
        signals: [{ kind: "phase", name: "conversion", timeMs: T0 + 3 * DAY_MS, detail: { previous: "consideration" } }],
        phase: "conversion",
        enteredMs: T0 + 3 * DAY_MS,
      },
    ]);
  });

  it("lets a transition read the phase and its entry time as they were before the event", async () => {
    const yaml = `
phases:
  names: [new, regular]
  transitions:
    - { to: regular, when: 'phase == "new" && (event_type == "purchase" || now - phase_entered_at >= 86400000.0)' }
`;
    const out = await phasesOf(yaml, [
      event("u1", T0, "page_view"),
      event("u1", T0 + HOUR_MS, "page_view"),
      event("u1", T0 + DAY_MS, "page_view"),
      event("u2", T0, "purchase"), // a first event sees the initial phase
    ]);
    expect(out.map((b) => [b.user_id, b.time_ms, b.phase, b.previous])).toEqual([
      ["u1", T0, "new", null],
      ["u1", T0 + DAY_MS, "regular", "new"],
      ["u2", T0, "regular", null],
    ]);
  });

  it("gives the same outputs after a restart at any point, and after two checkpoints", async () => {
    const stages = stagesFromYaml(JOURNEY);
    const elements = [
      event("u1", T0, "page_view"),
      event("u2", T0, "add_to_cart"),
      wm(T0 + HOUR_MS),
      event("u1", T0 + 2 * HOUR_MS, "product_view"),
      wm(T0 + 2 * DAY_MS),
      event("u2", T0 + 3 * DAY_MS, "purchase"),
      event("u1", T0 + 3 * DAY_MS, "search"),
      wm(T0 + 20 * DAY_MS),
      event("u3", T0 + 20 * DAY_MS, "page_view"),
      wm(T0 + 70 * DAY_MS),
      event("u1", T0 + 80 * DAY_MS, "search"),
      wm(END_OF_TIME),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.outputs.map((o) => [o.key, (o.time - T0) / HOUR_MS, o.body.phase, o.body.window ?? o.body.previous])).toEqual([
      ["u1", 0, "awareness", null],
      ["u2", 0, "conversion", null],
      ["u1", 2, "consideration", "awareness"],
      ["u2", 24, "consideration", "conversion"],
      ["u2", 48, "consideration", "retarget"],
      ["u2", 72, "retention", "consideration"],
      ["u1", 50, "consideration", "retarget"], // due before u1's search at 72 h: fired first
      ["u1", 120, "consideration", "retarget"],
      ["u2", 240, "retention", "retention_check"],
      ["u3", 480, "awareness", null],
      ["u2", 792, "consideration", "retention"], // its retarget moment (day 5) passed before entry
      ["u1", 1512, "re_engagement", "consideration"],
      ["u2", 1512, "re_engagement", "consideration"],
      ["u1", 1920, "consideration", "re_engagement"],
      ["u3", 1920, "re_engagement", "awareness"],
      ["u1", 1968, "consideration", "retarget"],
      ["u1", 3360, "re_engagement", "consideration"],
    ]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut at ${cut}`).toEqual(whole.outputs);
    }
  });

  it("refuses an unknown field, an unknown phase and a CEL type error at their paths", () => {
    const errors = (yaml: string) => configErrors(yaml);
    expect(
      errors(`
phases:
  initail: awareness
  transitions:
    - { to: retention, when: 'event_type' }
    - { to: retention, from: [retension], when: 'nope' }
  timers:
    - { to: re_engagement, after: 60d, since: first_event }
`),
    ).toEqual([
      "phases.initail: unknown field (expected one of names, initial, var, entered_var, transitions, timers, windows)",
      'phases.transitions[0].when: "event_type" is of type string, expected bool',
      "phases.transitions[1].from[0]: expected one of awareness, consideration, conversion, retention, re_engagement, got \"retension\"",
      expect.stringMatching(/^phases\.transitions\[1\]\.when: CEL type error/),
      'phases.timers[0].since: expected one of last_event, entered, got "first_event"',
    ]);
  });

  it("refuses timers that form a cycle, a window named like a phase, and a taken variable name", () => {
    expect(() =>
      stagesFromYaml(`
phases:
  names: [active, idle, asleep]
  transitions: [{ to: active, when: 'true' }]
  timers:
    - { to: idle, from: [active], after: 1d }
    - { to: asleep, from: [idle], after: 1d, since: entered }
    - { to: active, from: [asleep], after: 1d, since: entered }
`),
    ).toThrow(/phases\.timers: timers form a cycle active -> idle -> asleep -> active/);
    expect(() => stagesFromYaml(`phases: { transitions: [{ to: retention, when: 'true' }], windows: [{ name: retention, after: 1d }] }`)).toThrow(
      /phases\.windows\[0\]\.name: "retention" is already the name of a phase/,
    );
    expect(() => stagesFromYaml(`phases: { transitions: [{ to: retention, when: 'true' }] }`, { event_type: "string", phase: "string" })).toThrow(
      /phases\.var: "phase" is already the name of schema\.phase/,
    );
  });
});
