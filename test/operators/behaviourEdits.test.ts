// Stages rebuilt from a checkpoint written under other sections: each finds its values by name
// (aggregates, weighted events, segments, sequences, rules), new parts start empty, parts gone are
// dropped, and the stages around them carry on.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { from, lastValueFrom, toArray } from "rxjs";
import { describe, expect, it } from "vitest";
import type { Element } from "../../engine/elements.ts";
import { operate } from "../../engine/operator.ts";
import { storeOperatorContext } from "../../engine/operatorContext.ts";
import { StateStore } from "../../engine/store.ts";
import { behaviour, type BehaviourOutput } from "../../operators/behaviour.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { ev, HOUR_MS, MINUTE_MS, stagesFromYaml, T0, wm, type Emitted } from "../behaviourHarness.ts";

/** A stage that reports, at every step, the values the stages before it wrote under `names`. */
function spy(names: string[]): StageDefinition {
  return {
    name: "spy",
    build: () => ({ step: (view, out) => out.emit("seen", view.user, view.timeMs, Object.fromEntries(names.map((n) => [n, view.vars[n] ?? null]))) }),
  };
}

/**
 * Runs `first` through the stages of `before` and checkpoints, then `second` through those of
 * `after` restored from it, told the shapes `before` wrote; the second life's outputs (and its counters in `counts`).
 */
async function twoLives(
  before: StageDefinition[],
  after: StageDefinition[],
  first: Array<Element<EventFields>>,
  second: Array<Element<EventFields>>,
  counts: Record<string, number> = {},
): Promise<Emitted[]> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-stage-edits-"));
  const life = async (stages: StageDefinition[], elements: Array<Element<EventFields>>, checkpointId: number, restoredShapes?: BehaviourOptionsShapes, isCounted = false) => {
    const store = new StateStore(dir, Infinity);
    const definition = behaviour({ name: "test", stages, restoredShapes });
    const count = (counter: string, by: number) => (counts[counter] = (counts[counter] ?? 0) + by);
    const ctx = storeOperatorContext(store, definition.name, () => {}, isCounted ? count : () => {});
    const out = await lastValueFrom(from(elements).pipe(operate(definition.build(ctx), ctx.side), toArray()), { defaultValue: [] });
    await store.commit({ shape: "t", sourcePosition: 0, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 });
    await store.close();
    return out.flatMap((e) => (e.kind === "record" ? [{ kind: (e.value as BehaviourOutput).kind, key: e.key, time: e.time, body: (e.value as BehaviourOutput).body as Record<string, unknown> }] : []));
  };
  await life(before, first, 1);
  const outputs = await life(after, second, 2, Object.fromEntries(before.map((s) => [s.name, s.stateShape ?? {}])), true);
  rmSync(dir, { recursive: true, force: true });
  return outputs;
}
type BehaviourOptionsShapes = Parameters<typeof behaviour>[0]["restoredShapes"];

const seen = (outputs: Emitted[]) => outputs.filter((o) => o.kind === "seen").map((o) => o.body);

describe("stages restored under other sections", () => {
  it("finds each aggregate by name: one added counts from the restart, one removed is gone, the others go on", async () => {
    const before = stagesFromYaml(`aggregates:\n  views: { count: 'event_type == "view"', over: 1h }\n  carts: { count: 'event_type == "cart"', over: 1h }\n`);
    const after = stagesFromYaml(`aggregates:\n  buys: { count: 'event_type == "buy"', over: 1h }\n  views: { count: 'event_type == "view"', over: 1h }\n`);
    const outputs = await twoLives(
      [...before, spy([])],
      [...after, spy(["views", "buys", "carts"])],
      [ev("u1", T0, { event_type: "view" }), ev("u1", T0 + 1, { event_type: "buy" }), ev("u1", T0 + 2, { event_type: "cart" }), wm(T0 + 2)],
      [wm(T0 + 2), ev("u1", T0 + 3, { event_type: "view" }), ev("u1", T0 + 4, { event_type: "buy" })],
    );
    expect(seen(outputs)).toEqual([
      { views: 2, buys: 0, carts: null },
      { views: 2, buys: 1, carts: null },
    ]);
  });

  it("finds a score's weighted events by name, and keeps its points", async () => {
    const score = (events: string) => stagesFromYaml(`scores:\n  lead:\n    events: { ${events} }\n`);
    const outputs = await twoLives(
      [...score("view: 1, cart: 5"), spy([])],
      [...score("buy: 10, cart: 5"), spy(["lead", "lead_cart", "lead_buy", "lead_view"])],
      [ev("u1", T0, { event_type: "view" }), ev("u1", T0 + 1, { event_type: "cart" })],
      [ev("u1", T0 + 2, { event_type: "buy" })],
    );
    expect(seen(outputs)).toEqual([{ lead: 16, lead_cart: 1, lead_buy: 1, lead_view: null }]);
  });

  it("keeps a user in their segment, by name, when segments are added before it, with no exit or enter", async () => {
    const segments = (rules: string) => stagesFromYaml(`segments:\n  groups:\n    tier:\n      rules:\n${rules}      default: other\n`);
    const client = `        - { name: client, when: 'event_type == "buy"' }\n`;
    const outputs = await twoLives(
      segments(client),
      segments(`        - { name: vip, when: 'order_value > 1000.0' }\n${client}`),
      [ev("u1", T0, { event_type: "buy", order_value: 10 })],
      [ev("u1", T0 + 1, { event_type: "buy", order_value: 20 })],
    );
    expect(outputs.filter((o) => o.kind === "segment")).toEqual([]);
  });

  it("continues a sequence's partial match when the sequences are reordered and another is added", async () => {
    const sequences = (names: string[]) =>
      stagesFromYaml(
        `sequences:\n${names.map((n) => `  ${n}:\n    steps:\n      - { name: a, when: 'event_type == "${n}_a"' }\n      - { name: b, when: 'event_type == "${n}_b"', within: 1h }\n`).join("")}`,
      );
    const outputs = await twoLives(
      sequences(["cart", "pricing"]),
      sequences(["new", "pricing", "cart"]),
      [ev("u1", T0, { event_type: "cart_a" }), ev("u1", T0 + 1, { event_type: "pricing_a" })],
      [ev("u1", T0 + 2, { event_type: "cart_b" }), ev("u1", T0 + 3, { event_type: "pricing_b" })],
    );
    expect(outputs.filter((o) => o.kind === "sequence").map((o) => o.body.sequence)).toEqual(["cart", "pricing"]);
  });

  it("drops the cooldowns of a renamed rule, which fires again, and keeps the others'", async () => {
    const triggers = (names: string[]) =>
      stagesFromYaml(
        `sequences:\n  seq:\n    steps:\n      - { name: a, when: 'event_type == "a"' }\n      - { name: b, when: 'event_type == "b"', within: 1h }\n` +
          `triggers:\n  rules:\n${names.map((n) => `    ${n}: { on: { sequence: seq }, message: "hi", channels: [email], cooldown: 1d }\n`).join("")}`,
      );
    const match = (t: number) => [ev("u1", t, { event_type: "a" }), ev("u1", t + 1, { event_type: "b" })];
    const outputs = await twoLives(triggers(["kept", "renamed"]), triggers(["kept", "new_name"]), match(T0), match(T0 + HOUR_MS));
    expect(outputs.filter((o) => o.kind === "trigger").map((o) => o.body.trigger)).toEqual(["new_name"]);
  });

  it("drops the waiting messages of a rule removed, and the wake-up that would have sent them", async () => {
    const triggers = (names: string[]) =>
      stagesFromYaml(
        `sequences:\n  seq:\n    steps:\n      - { name: a, when: 'event_type == "a"' }\n      - { name: b, when: 'event_type == "b"', within: 1h }\n` +
          `triggers:\n  quietHours: { from: "21:00", to: "08:00" }\n  rules:\n${names.map((n) => `    ${n}: { on: { sequence: seq }, message: "hi", channels: [email] }\n`).join("")}`,
      );
    const lateEvening = T0 + 22 * HOUR_MS;
    const counts: Record<string, number> = {};
    const outputs = await twoLives(
      triggers(["night", "other"]),
      triggers(["other"]),
      [ev("u1", lateEvening, { event_type: "a" }), ev("u1", lateEvening + 1, { event_type: "b" }), wm(lateEvening + 1)],
      [wm(lateEvening + 1), wm(T0 + 33 * HOUR_MS)],
      counts,
    );
    // Only the kept rule's message goes at 08:00; the removed rule's is not even looked at.
    expect(outputs.filter((o) => o.kind === "trigger").map((o) => o.body.trigger)).toEqual(["other"]);
    expect(counts.triggers_rule_gone).toBeUndefined();
  });

  it("keeps each phase window's firing by name when windows are added before it", async () => {
    const phases = (windows: string) =>
      stagesFromYaml(`phases:\n  names: [idle, active]\n  transitions:\n    - { to: active, when: 'event_type == "view"' }\n  windows:\n${windows}`);
    const nudge = "    - { name: nudge, in: [active], after: 30m }\n";
    const outputs = await twoLives(
      phases(nudge),
      phases(`    - { name: early, in: [active], after: 10m }\n${nudge}`),
      [ev("u1", T0, { event_type: "view" }), wm(T0 + 40 * MINUTE_MS)],
      // A late event steps the user without moving the clock the windows count from.
      [wm(T0 + 40 * MINUTE_MS), ev("u1", T0 - 1, { event_type: "other" }), wm(T0 + 45 * MINUTE_MS)],
    );
    // nudge fired before the restart, for this clock: not again. early's moment passed since the
    // user's last step: it fires at the next one.
    expect(outputs.filter((o) => o.kind === "phase_window").map((o) => o.body.window)).toEqual(["early"]);
  });
});
