import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, type StreamRecord } from "../../engine/elements.ts";
import { storeOperatorContext } from "../../engine/operatorContext.ts";
import { StateStore } from "../../engine/store.ts";
import { behaviour } from "../../operators/behaviour.ts";
import type { EventFields, StageDefinition, UserView } from "../../operators/stage.ts";
import { ev, expectRestartsChangeNothing, MINUTE_MS, runStages, stagesFromYaml, T0, wm, outputTime } from "../behaviourHarness.ts";
import { runOperator } from "../harness.ts";

/**
 * A stage that reports every step it sees as a "step" output (time, whether an event, what the
 * stages before it wrote), and acts on the event's fields: `wake_at` asks for a wake-up at that
 * time, `cancel_at` withdraws the one asked at that time, `drop: true` stops later stages. It keeps
 * its pending wake-up in its state, as a stage must for the wake-up to outlive a restart.
 */
function probe(name: string, seen: string[] = []): StageDefinition {
  return {
    name,
    build: (ctx) => {
      const pending = ctx.userState<number>("pending");
      return {
        step(view: UserView, out) {
          const event = view.event;
          out.emit("step", view.user, view.timeMs, { stage: name, event: event !== undefined, seen: seen.map((v) => view.vars[v] ?? null) });
          view.vars[name] = view.timeMs;
          if (event === undefined) {
            if ((pending.get(view.user) ?? Infinity) <= view.timeMs) pending.delete(view.user);
            return;
          }
          if (typeof event.wake_at === "number") {
            out.wakeAt(view.user, event.wake_at);
            pending.set(view.user, event.wake_at);
          }
          if (typeof event.cancel_at === "number") {
            out.cancelWake(view.user, event.cancel_at);
            pending.delete(view.user);
          }
          if (event.drop === true) return false;
        },
        pendingWake: (user) => pending.get(user),
      };
    },
  };
}

/** The steps of `stage` as [user, time, with an event]. */
const stepsOf = (outputs: Array<{ kind: string; key: string; time: number; body: Record<string, unknown> }>, stage: string) =>
  outputs.filter((o) => o.kind === "step" && o.body.stage === stage).map((o) => [o.key, o.time - T0, o.body.event]);

describe("behaviour", () => {
  it("runs the stages in order on every event, each reading what the earlier ones wrote", async () => {
    const run = await runStages([probe("a"), probe("b", ["a"])], [ev("u1", T0, {}), ev("u1", T0 + 1, {})]);
    expect(run.byKind("step").map((o) => [o.body.stage, o.time - T0, o.body.seen])).toEqual([
      ["a", 0, []],
      ["b", 0, [T0]],
      ["a", 1, []],
      ["b", 1, [T0 + 1]],
    ]);
  });

  it("steps a user with no event at a wake-up's time once the watermark reaches it, not before", async () => {
    const run = await runStages([probe("a")], [ev("u1", T0, { wake_at: T0 + 10 * MINUTE_MS }), wm(T0 + 10 * MINUTE_MS - 1), ev("u2", T0 + 5, {}), wm(T0 + 10 * MINUTE_MS)]);
    expect(stepsOf(run.outputs, "a")).toEqual([
      ["u1", 0, true],
      ["u2", 5, true],
      ["u1", 10 * MINUTE_MS, false],
    ]);
  });

  it("wakes nobody at the end of the input when it stops there: the state ends as of the input's horizon", async () => {
    // The job reaches the horizon (the newest event plus the bound) before the end of time.
    const elements = [ev("u1", T0, { wake_at: T0 + MINUTE_MS }), ev("u2", T0 + 5, { wake_at: T0 + 10 * MINUTE_MS }), wm(T0 + 2 * MINUTE_MS), wm(END_OF_TIME)];
    const stopping = await runStages([probe("a")], elements, { drainsAtEnd: false });
    expect(stepsOf(stopping.outputs, "a")).toEqual([
      ["u1", 0, true],
      ["u2", 5, true],
      ["u1", MINUTE_MS, false],
    ]);
    const draining = await runStages([probe("a")], elements);
    expect(stepsOf(draining.outputs, "a")).toEqual([...stepsOf(stopping.outputs, "a"), ["u2", 10 * MINUTE_MS, false]]);
  });

  it("wakes a user once when two stages ask for the same time", async () => {
    const run = await runStages([probe("a"), probe("b")], [ev("u1", T0, { wake_at: T0 + MINUTE_MS }), wm(T0 + MINUTE_MS)]);
    expect(stepsOf(run.outputs, "a")).toEqual([
      ["u1", 0, true],
      ["u1", MINUTE_MS, false],
    ]);
  });

  it("steps nobody for a withdrawn wake-up, and keeps another stage's at the same time", async () => {
    const wakeAt = T0 + MINUTE_MS;
    const alone = await runStages([probe("a")], [ev("u1", T0, { wake_at: wakeAt }), ev("u1", T0 + 1, { cancel_at: wakeAt }), wm(wakeAt)]);
    expect(stepsOf(alone.outputs, "a")).toEqual([
      ["u1", 0, true],
      ["u1", 1, true],
    ]);
    // Both stages ask at the first event; at the second only "a" withdraws its own (it drops the
    // event, so "b" never sees the withdrawal): "b"'s wake-up still steps the user.
    const shared = await runStages([probe("a"), probe("b")], [ev("u1", T0, { wake_at: wakeAt }), ev("u1", T0 + 1, { cancel_at: wakeAt, drop: true }), wm(wakeAt)]);
    expect(stepsOf(shared.outputs, "a")).toEqual([
      ["u1", 0, true],
      ["u1", 1, true],
      ["u1", MINUTE_MS, false],
    ]);
  });

  it("stops the later stages for an event a stage drops", async () => {
    const run = await runStages([probe("a"), probe("b")], [ev("u1", T0, { drop: true }), ev("u1", T0 + 1, {})]);
    expect(stepsOf(run.outputs, "b")).toEqual([["u1", 1, true]]);
  });

  it("keeps a wake-up and its withdrawal across a restart at any point", async () => {
    const wakeAt = T0 + MINUTE_MS;
    const elements = [ev("u1", T0, { wake_at: wakeAt }), ev("u2", T0, { wake_at: wakeAt }), ev("u1", T0 + 1, { cancel_at: wakeAt }), wm(wakeAt)];
    const whole = await runStages([probe("a")], elements);
    expect(stepsOf(whole.outputs, "a").filter(([, , event]) => !event)).toEqual([["u2", MINUTE_MS, false]]);
    await expectRestartsChangeNothing([probe("a")], elements, whole.outputs);
  });

  it("erases a user on request: every stage's values and wake-ups go, a record says what went, the user starts afresh", async () => {
    const stages = [
      ...stagesFromYaml(`
sessions: { gap: 30m }
aggregates: { carts_7d: { count: 'event_type == "add_to_cart"', over: 7d } }
sequences:
  cart_abandoned:
    steps:
      - { name: cart, when: 'event_type == "add_to_cart"' }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }`),
      probe("seen", ["carts_7d"]),
    ];
    const erasesWhen = (vars: Record<string, unknown>) => vars.event_type === "erasure_request";
    const event = (user: string, timeMs: number, eventType: string) => ev(user, timeMs, { event_type: eventType, page: "/", session_duration_sec: 1 });
    const elements = [
      event("u1", T0, "add_to_cart"),
      event("u2", T0 + 1, "add_to_cart"),
      event("u1", T0 + 2, "erasure_request"),
      event("u1", T0 + 3, "page_view"),
      wm(END_OF_TIME),
    ];
    const run = await runStages(stages, elements, { erasesWhen });
    const outputs = run.outputs;
    expect(outputs.filter((o) => o.kind === "erasure").map((o) => o.body)).toEqual([
      { output: "erasure", user_id: "u1", ...outputTime(T0 + 2), stages: ["sessions", "aggregates", "sequences"], wake_ups_withdrawn: 3 },
    ]);
    expect(run.counts.erasures).toBe(1);
    // u1's cart went with the erasure: only u2's is abandoned. The request reaches no stage.
    expect(outputs.filter((o) => o.kind === "sequence").map((o) => o.key)).toEqual(["u2"]);
    const u1Events = outputs.filter((o) => o.kind === "step" && o.key === "u1" && o.body.event === true);
    expect(u1Events.map((o) => o.body.seen)).toEqual([[1], [0]]);
    // Woken only for the session of its new event: the erased session, cart and count wake nobody.
    expect(stepsOf(outputs, "seen").filter(([user, , isEvent]) => user === "u1" && !isEvent)).toEqual([["u1", 3 + 30 * MINUTE_MS, false]]);
    // An erasure is durable: a restart anywhere gives the same outputs (no value or wake-up comes back).
    await expectRestartsChangeNothing(stages, elements, outputs, { erasesWhen });
  });

  it("leaves no entry of an erased user in the checkpoint log: the next checkpoint rewrites the state whole", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-erase-"));
    const definition = behaviour({ name: "test", stages: [probe("a")], erasesWhen: (vars) => vars.event_type === "erasure_request" });
    const store = new StateStore(dir, Infinity);
    const ctx = storeOperatorContext(store, definition.name, () => {});
    const logic = definition.build(ctx);
    const out = { emit: () => {}, side: () => {} };
    let checkpointId = 0;
    const checkpoint = () => store.commit({ shape: "t", sourcePosition: 0, sinkPositions: {}, watermarks: null, counters: {}, checkpointId: ++checkpointId, takenAtMs: 0 });
    logic.onRecord(ev("u1", T0, { wake_at: T0 + MINUTE_MS }) as StreamRecord<EventFields>, out);
    logic.onRecord(ev("u2", T0, { wake_at: T0 + MINUTE_MS }) as StreamRecord<EventFields>, out);
    await checkpoint();
    const logged = () => [...store.restored("behaviour/test/users")].map(([key]) => key);
    expect(logged()).toEqual(["u1", "u2"]);
    logic.onRecord(ev("u1", T0 + 1, { event_type: "erasure_request" }) as StreamRecord<EventFields>, out);
    await checkpoint();
    // Not even a deletion of u1 is left: the log was replaced by a snapshot of what lives.
    expect(logged()).toEqual(["u2"]);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("emits only the kinds some sink takes", async () => {
    const definition = behaviour({ name: "test", stages: [probe("a")], wantedOutputs: ["other"] });
    const run = await runOperator(definition, [ev("u1", T0, {})]);
    expect(run.outputs).toEqual([]);
  });

  it("refuses two stages of one name", () => {
    const definition = behaviour({ name: "test", stages: [probe("a"), probe("a")] });
    return expect(runOperator(definition, [])).rejects.toThrow(/two behaviour stages are named "a"/);
  });
});
