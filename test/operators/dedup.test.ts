import { describe, expect, it } from "vitest";
import type { Element } from "../../engine/elements.ts";
import { dedup } from "../../operators/dedup.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { ev, runStages, runStagesWithRestart, stagesFromYaml, T0, wm, type BehaviourRun, runStagesCheckpointed, configErrors, expectTwoCheckpointRestartsChangeNothing, wakeUpAsker } from "../behaviourHarness.ts";

const SECOND_MS = 1000;

/** A stage after dedup that emits every event it sees: what dedup let through. */
const passed: StageDefinition = {
  name: "passed",
  build: () => ({
    step(view, out) {
      if (view.event) out.emit("passed", view.user, view.timeMs, { type: view.event.event_type, page: view.event.page ?? null });
    },
  }),
};

/** A stage that asks for one wake-up of `user` at `timeMs`, on its first event. */
function wakeOnce(user: string, timeMs: number): StageDefinition {
  return wakeUpAsker((view) => (view.user === user ? timeMs : undefined), "wake");
}

const view = (user: string, timeMs: number, page = "/a", type = "page_view") => ev(user, timeMs, { event_type: type, page });

async function run(yaml: string, elements: Element<EventFields>[], extra: StageDefinition[] = []): Promise<BehaviourRun> {
  return runStages([...stagesFromYaml(yaml), ...extra, passed], elements);
}

const passedTimes = (r: BehaviourRun) => r.byKind("passed").map((o) => [o.key, o.time - T0]);

describe("dedup", () => {
  it("drops an identical event 59 s after a kept one and counts it; keeps one 61 s after", async () => {
    const r = await run("dedup: { within: 1m }", [view("u1", T0), view("u1", T0 + 59 * SECOND_MS), view("u1", T0 + 120 * SECOND_MS), view("u1", T0 + 181 * SECOND_MS)]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 120 * SECOND_MS],
      ["u1", 181 * SECOND_MS],
    ]);
    expect(r.counts.duplicates).toBe(1);
  });

  it("defaults to 1 minute on event_type and page, and keeps an event exactly a minute after", async () => {
    const r = await run("dedup: {}", [view("u1", T0), view("u1", T0 + 60 * SECOND_MS), view("u1", T0 + 90 * SECOND_MS)]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 60 * SECOND_MS],
    ]);
    expect(r.counts.duplicates).toBe(1);
  });

  it("defaults, built without config, to 1 minute on event_type and page", async () => {
    const r = await runStages([dedup(), passed], [view("u1", T0, "/a"), view("u1", T0 + 1000, "/b"), view("u1", T0 + 59 * SECOND_MS, "/a"), view("u1", T0 + 120 * SECOND_MS, "/a")]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 1000],
      ["u1", 120 * SECOND_MS],
    ]);
  });

  it("measures against the last kept identical event, not the last dropped one", async () => {
    // 40 s is dropped (40 s after 0); 80 s is 80 s after the kept one at 0, so it is kept.
    const r = await run("dedup: { within: 1m }", [view("u1", T0), view("u1", T0 + 40 * SECOND_MS), view("u1", T0 + 80 * SECOND_MS)]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 80 * SECOND_MS],
    ]);
  });

  it("keeps events that differ in page, type or user", async () => {
    const r = await run("dedup: {}", [view("u1", T0, "/a"), view("u1", T0 + 1, "/b"), view("u1", T0 + 2, "/a", "add_to_cart"), view("u2", T0 + 3, "/a"), view("u1", T0 + 4, "/b")]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 1],
      ["u1", 2],
      ["u2", 3],
    ]);
    expect(r.counts.duplicates).toBe(1);
  });

  it("takes the absolute difference, so an out-of-order repeat before the kept event is a duplicate", async () => {
    const r = await run("dedup: {}", [view("u1", T0 + 100 * SECOND_MS), view("u1", T0 + 50 * SECOND_MS), view("u1", T0 + 40 * SECOND_MS), view("u1", T0 + 45 * SECOND_MS)]);
    // 50 s and 45 s are less than a minute before the kept 100 s: dropped; 40 s is a whole minute before it: kept.
    expect(passedTimes(r)).toEqual([
      ["u1", 100 * SECOND_MS],
      ["u1", 40 * SECOND_MS],
    ]);
    expect(r.counts.duplicates).toBe(2);
  });

  it("compares only the configured fields, an absent one as equal to another absent one", async () => {
    const r = await run("dedup: { fields: [event_type] }", [
      ev("u1", T0, { event_type: "search", page: "/a" }),
      ev("u1", T0 + 1000, { event_type: "search", page: "/b" }),
      ev("u1", T0 + 2000, { event_type: "purchase" }),
      ev("u1", T0 + 3000, { event_type: "purchase" }),
    ]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 2000],
    ]);
  });

  it("forgets a signature once the user's events are a minute past it: a late repeat is then kept", async () => {
    const r = await run("dedup: {}", [view("u1", T0, "/a"), view("u1", T0 + 70 * SECOND_MS, "/b"), view("u1", T0 + 30 * SECOND_MS, "/a")]);
    expect(passedTimes(r)).toEqual([
      ["u1", 0],
      ["u1", 70 * SECOND_MS],
      ["u1", 30 * SECOND_MS],
    ]);
  });

  it("forgets an idle user's signatures on a wake-up another stage asked for", async () => {
    const elements = [view("u1", T0, "/a"), wm(T0 + 65 * SECOND_MS), view("u1", T0 + 10 * SECOND_MS, "/a")];
    const withWake = await runStages([...stagesFromYaml("dedup: {}"), wakeOnce("u1", T0 + 65 * SECOND_MS), passed], elements);
    expect(passedTimes(withWake)).toEqual([
      ["u1", 0],
      ["u1", 10 * SECOND_MS],
    ]);
    // Without the wake-up, the signature is still there and the late repeat is a duplicate.
    expect(passedTimes(await run("dedup: {}", elements))).toEqual([["u1", 0]]);
    // Forgetting part of the signatures reaches the checkpoint too: checkpoints before and after the wake-up.
    const partly = [view("u1", T0, "/a"), view("u1", T0 + 50 * SECOND_MS, "/b"), wm(T0 + 65 * SECOND_MS), view("u1", T0 + 10 * SECOND_MS, "/a")];
    const stages = [...stagesFromYaml("dedup: {}"), wakeOnce("u1", T0 + 65 * SECOND_MS), passed];
    const expected = [0, 50 * SECOND_MS, 10 * SECOND_MS].map((t) => ["u1", t]);
    expect(passedTimes(await runStages(stages, partly))).toEqual(expected);
    const restarted = await runStagesCheckpointed(stages, partly, { checkpointsAfter: [2 - 1], restartsAfter: [3 - 1] });
    expect(restarted.filter((o) => o.kind === "passed").map((o) => [o.key, o.time - T0])).toEqual(expected);
  });

  it("gives the same outputs and count after a restart at any point, and after two checkpoints", async () => {
    const elements = [
      view("u1", T0),
      view("u2", T0 + 5 * SECOND_MS),
      view("u1", T0 + 30 * SECOND_MS),
      wm(T0 + 30 * SECOND_MS),
      view("u1", T0 + 61 * SECOND_MS, "/b"),
      view("u1", T0 + 62 * SECOND_MS),
      view("u2", T0 + 64 * SECOND_MS),
      wm(T0 + 90 * SECOND_MS),
      view("u1", T0 + 100 * SECOND_MS, "/b"),
      ev("u2", T0 + 150 * SECOND_MS, { event_type: "search" }),
      wm(T0 + 160 * SECOND_MS),
      ev("u2", T0 + 170 * SECOND_MS, { event_type: "search" }),
      view("u2", T0 + 200 * SECOND_MS),
    ];
    const stages = [...stagesFromYaml("dedup: {}"), passed];
    const whole = await runStages(stages, elements);
    expect(passedTimes(whole)).toEqual([
      ["u1", 0],
      ["u2", 5 * SECOND_MS],
      ["u1", 61 * SECOND_MS],
      ["u1", 62 * SECOND_MS],
      ["u2", 150 * SECOND_MS],
      ["u2", 200 * SECOND_MS],
    ]);
    expect(whole.counts.duplicates).toBe(4);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut ${cut}`).toEqual(whole.outputs);
      expect(restarted.counts.duplicates, `cut ${cut}`).toBe(4);
    }
    await expectTwoCheckpointRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses unknown settings, bad durations and fields that are not comparable event fields, at their paths", () => {
    const errors = (yaml: string) => configErrors(yaml).join("\n");
    expect(errors("dedup: { within: 1m, window: 5m }")).toMatch(/dedup\.window: unknown field/);
    expect(errors("dedup: { within: soon }")).toMatch(/dedup\.within: expected a duration like "1m", got "soon"/);
    expect(errors("dedup: { fields: [event_type, price] }")).toMatch(/dedup\.fields\[1\]: CEL type error/);
    expect(errors("dedup: { fields: [consent] }")).toMatch(/dedup\.fields\[0\]: "consent" is of type map/);
    expect(errors("dedup: { fields: [page, page] }")).toMatch(/dedup\.fields\[1\]: "page" is listed twice/);
    expect(errors("dedup: { fields: [user] }")).toMatch(/dedup\.fields\[0\]: "user" is not an event field/);
    expect(errors("dedup: { fields: ['page == 1'] }")).toMatch(/dedup\.fields\[0\]: expected a name/);
    // Every bad value is reported, not only the first.
    const both = errors("dedup: { within: soon, fields: [price] }");
    expect(both).toMatch(/dedup\.within/);
    expect(both).toMatch(/dedup\.fields\[0\]/);
  });
});
