import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import type { SessionRecord } from "../../operators/sessions.ts";
import { ev, MINUTE_MS, runStages, runStagesWithRestart, stagesFromYaml, T0, TEST_FIELDS, wm, type BehaviourRun, expectTwoCheckpointRestartsChangeNothing, configErrors, wakeUpAsker, outputTime } from "../behaviourHarness.ts";

const VARS = ["session_is_new", "session_pages", "session_elapsed_sec", "session_avg_gap_sec", "session_max_gap_sec"];

/** A stage after sessions that emits, on every step, whether it is an event and the session values. */
const probe: StageDefinition = {
  name: "probe",
  build: () => ({
    step(view, out) {
      const body: Record<string, unknown> = { at: view.timeMs - T0, event: view.event !== undefined };
      for (const name of VARS) body[name.replace("session_", "")] = view.vars[name];
      out.emit("probe", view.user, view.timeMs, body);
    },
  }),
};

const page = (user: string, timeMs: number) => ev(user, timeMs, { event_type: "page_view", page: "/" });

async function run(elements: Element<EventFields>[], yaml = "sessions: { gap: 30m }"): Promise<BehaviourRun> {
  return runStages([...stagesFromYaml(yaml), probe], elements);
}

const sessions = (r: BehaviourRun) => r.byKind("session").map((o) => ({ at: o.time - T0, ...(o.body as SessionRecord) }));
const probes = (r: BehaviourRun) => r.byKind("probe").map((o) => o.body);

describe("sessions", () => {
  it("closes a session when the watermark reaches its last event + 30 min, with pages, duration and gaps", async () => {
    const elements = [page("u1", T0), page("u1", T0 + 5 * MINUTE_MS), page("u1", T0 + 12 * MINUTE_MS), wm(T0 + 42 * MINUTE_MS - 1)];
    expect(sessions(await run(elements))).toEqual([]);
    const r = await run([...elements, wm(T0 + 42 * MINUTE_MS)]);
    expect(sessions(r)).toEqual([
      {
        at: 42 * MINUTE_MS,
        output: "session",
        user_id: "u1",
        ...outputTime(T0 + 12 * MINUTE_MS),
        start: "2024-05-20T00:00:00.000Z",
        start_ms: T0,
        end: "2024-05-20T00:12:00.000Z",
        end_ms: T0 + 12 * MINUTE_MS,
        pages: 3,
        duration_sec: 720,
        avg_gap_sec: 360,
        max_gap_sec: 420,
      },
    ]);
  });

  it("writes the current session's values on every event, and none once it has closed", async () => {
    const r = await run([page("u1", T0), page("u1", T0 + 5 * MINUTE_MS), page("u1", T0 + 12 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(probes(r)).toEqual([
      { at: 0, event: true, is_new: true, pages: 1, elapsed_sec: 0, avg_gap_sec: 0, max_gap_sec: 0 },
      { at: 5 * MINUTE_MS, event: true, is_new: false, pages: 2, elapsed_sec: 300, avg_gap_sec: 300, max_gap_sec: 300 },
      { at: 12 * MINUTE_MS, event: true, is_new: false, pages: 3, elapsed_sec: 720, avg_gap_sec: 360, max_gap_sec: 420 },
      // One wake-up, at the close: each event moved it (no step at 30 min for the first event's).
      { at: 42 * MINUTE_MS, event: false, is_new: false, pages: undefined, elapsed_sec: undefined, avg_gap_sec: undefined, max_gap_sec: undefined },
    ]);
  });

  it("starts a new session for an event 30 min or more after the last, and costs one wake-up per session", async () => {
    const elements: Element<EventFields>[] = [];
    for (let minute = 0; minute <= 20; minute += 2) elements.push(page("u1", T0 + minute * MINUTE_MS));
    elements.push(page("u1", T0 + 50 * MINUTE_MS), wm(END_OF_TIME));
    const r = await run(elements);
    expect(sessions(r).map((s) => [s.at, s.start_ms, s.end_ms, s.pages])).toEqual([
      [50 * MINUTE_MS, T0, T0 + 20 * MINUTE_MS, 11],
      [80 * MINUTE_MS, T0 + 50 * MINUTE_MS, T0 + 50 * MINUTE_MS, 1],
    ]);
    expect(probes(r).filter((p) => p.event && p.is_new).map((p) => p.at)).toEqual([0, 50 * MINUTE_MS]);
    expect(probes(r).filter((p) => !p.event).map((p) => p.at)).toEqual([50 * MINUTE_MS, 80 * MINUTE_MS]);
  });

  it("extends a session with an out-of-order event inside the gap, before its start or among its events", async () => {
    const r = await run([page("u1", T0 + 10 * MINUTE_MS), page("u1", T0), page("u1", T0 + 20 * MINUTE_MS), page("u1", T0 + 15 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(probes(r).filter((p) => p.event).map((p) => [p.is_new, p.pages, p.elapsed_sec, p.max_gap_sec])).toEqual([
      [true, 1, 0, 0],
      [false, 2, 600, 600],
      [false, 3, 1200, 600],
      // Inside the session: the gap it splits is not known, so the longest gap stays (an upper bound).
      [false, 4, 1200, 600],
    ]);
    expect(sessions(r).map((s) => [s.start_ms, s.end_ms, s.pages, s.avg_gap_sec, s.max_gap_sec])).toEqual([[T0, T0 + 20 * MINUTE_MS, 4, 400, 600]]);
  });

  it("keeps a second session open while the watermark lags, and merges both when an event bridges them", async () => {
    const apart = [page("u1", T0), page("u1", T0 + 40 * MINUTE_MS)];
    const separate = await run([...apart, wm(END_OF_TIME)]);
    expect(sessions(separate).map((s) => [s.at, s.start_ms, s.pages])).toEqual([
      [30 * MINUTE_MS, T0, 1],
      [70 * MINUTE_MS, T0 + 40 * MINUTE_MS, 1],
    ]);
    const bridged = await run([...apart, page("u1", T0 + 20 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(probes(bridged).filter((p) => p.event).map((p) => [p.is_new, p.pages])).toEqual([
      [true, 1],
      [true, 1],
      [false, 3],
    ]);
    expect(sessions(bridged).map((s) => [s.at, s.start_ms, s.end_ms, s.pages, s.max_gap_sec])).toEqual([[70 * MINUTE_MS, T0, T0 + 40 * MINUTE_MS, 3, 1200]]);
  });

  it("asks for an earlier wake-up when an out-of-order event opens a session before the open one", async () => {
    const r = await run([page("u1", T0 + 60 * MINUTE_MS), page("u1", T0 + 65 * MINUTE_MS), page("u1", T0 + 10 * MINUTE_MS), page("u1", T0 + 100 * MINUTE_MS), wm(T0 + 40 * MINUTE_MS)]);
    expect(sessions(r).map((s) => [s.at, s.start_ms, s.pages])).toEqual([[40 * MINUTE_MS, T0 + 10 * MINUTE_MS, 1]]);
    // Two sessions stay open (60-65 min and 100 min); a wake-up describes the latest.
    expect(probes(r).at(-1)).toEqual({ at: 40 * MINUTE_MS, event: false, is_new: false, pages: 1, elapsed_sec: 0, avg_gap_sec: 0, max_gap_sec: 0 });
  });

  it("describes the open session on a wake-up another stage asked for", async () => {
    const wake = wakeUpAsker(() => T0 + 20 * MINUTE_MS, "wake");
    const r = await runStages([...stagesFromYaml("sessions: { gap: 30m }"), wake, probe], [page("u1", T0), page("u1", T0 + 4 * MINUTE_MS), wm(T0 + 20 * MINUTE_MS)]);
    expect(probes(r).at(-1)).toEqual({ at: 20 * MINUTE_MS, event: false, is_new: false, pages: 2, elapsed_sec: 240, avg_gap_sec: 240, max_gap_sec: 240 });
  });

  it("defaults to a 30 min gap", async () => {
    const r = await run([page("u1", T0), page("u1", T0 + 29 * MINUTE_MS), wm(END_OF_TIME)], "sessions:");
    expect(sessions(r).map((s) => [s.at, s.pages])).toEqual([[59 * MINUTE_MS, 2]]);
  });

  it("does not reopen a closed session for a late event: it joins no session and is counted", async () => {
    const r = await run([page("u1", T0), wm(T0 + 31 * MINUTE_MS), page("u1", T0 + MINUTE_MS), page("u1", T0 + 2 * MINUTE_MS + 1), wm(END_OF_TIME)]);
    expect(sessions(r).map((s) => [s.start_ms, s.pages])).toEqual([
      [T0, 1],
      // 2 min + 1 ms: its own session would close after the watermark, so it opens one.
      [T0 + 2 * MINUTE_MS + 1, 1],
    ]);
    expect(probes(r).filter((p) => p.event).map((p) => [p.at, p.is_new, p.pages])).toEqual([
      [0, true, 1],
      [MINUTE_MS, false, undefined],
      [2 * MINUTE_MS + 1, true, 1],
    ]);
    expect(r.counts.late_session_events).toBe(1);
  });

  it("emits nothing with emit: false, and still writes the values", async () => {
    const r = await run([page("u1", T0), wm(END_OF_TIME)], "sessions: { gap: 10m, emit: false }");
    expect(sessions(r)).toEqual([]);
    expect(probes(r)[0]).toMatchObject({ is_new: true, pages: 1 });
    expect(probes(r).filter((p) => !p.event).map((p) => p.at)).toEqual([10 * MINUTE_MS]);
  });

  it("gives the same outputs after a restart at any point, and after two checkpoints", async () => {
    const elements = [
      page("u1", T0),
      page("u2", T0 + MINUTE_MS),
      page("u1", T0 + 10 * MINUTE_MS),
      wm(T0 + 20 * MINUTE_MS),
      page("u1", T0 + 25 * MINUTE_MS),
      wm(T0 + 35 * MINUTE_MS),
      page("u2", T0 + 45 * MINUTE_MS),
      page("u1", T0 + 60 * MINUTE_MS),
      page("u1", T0 + 58 * MINUTE_MS),
      wm(T0 + 70 * MINUTE_MS),
      page("u2", T0 + 20 * MINUTE_MS),
      page("u1", T0 + 100 * MINUTE_MS),
      wm(END_OF_TIME),
    ];
    const stages = [...stagesFromYaml("sessions: { gap: 30m }"), probe];
    const whole = await runStages(stages, elements);
    expect(sessions(whole).map((s) => [s.user_id, s.at, s.pages])).toEqual([
      ["u2", 31 * MINUTE_MS, 1],
      ["u1", 55 * MINUTE_MS, 3],
      // The late event at 20 min is within a gap of the open session at 45 min: it joins it.
      ["u2", 75 * MINUTE_MS, 2],
      ["u1", 90 * MINUTE_MS, 2],
      ["u1", 130 * MINUTE_MS, 1],
    ]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut ${cut}`).toEqual(whole.outputs);
      expect(restarted.counts, `cut ${cut}`).toEqual(whole.counts);
    }
    await expectTwoCheckpointRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses unknown settings and bad values at their paths, and a schema field named like a session value", () => {
    const errors = (yaml: string, fields = TEST_FIELDS) => configErrors(yaml, fields).join("\n");
    expect(errors("sessions: { gap: 30m, timeout: 5m }")).toMatch(/sessions\.timeout: unknown field/);
    const both = errors("sessions: { gap: soon, emit: maybe }");
    expect(both).toMatch(/sessions\.gap: expected a duration like "30m", got "soon"/);
    expect(both).toMatch(/sessions\.emit: expected true or false, got "maybe"/);
    expect(errors("sessions: {}", { ...TEST_FIELDS, session_pages: "double" })).toMatch(/sessions: "session_pages" is already the name of schema\.session_pages/);
  });

  it("lets later stages use its values in their expressions", async () => {
    const stages = stagesFromYaml(`
sessions: { gap: 30m }
features:
  idle_exit: 'session_avg_gap_sec > 120.0 ? 0.7 : 0.0'
`);
    const r = await runStages(stages, [page("u1", T0), page("u1", T0 + 3 * MINUTE_MS)]);
    expect(r.byKind("features").map((o) => o.body.idle_exit)).toEqual([0, 0.7]);
  });
});
