import { describe, expect, it } from "vitest";
import { halfLifeFromFactorMs, halfLifeFromLossMs } from "../../operators/scores.ts";
import type { StageDefinition } from "../../operators/stage.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { DAY_MS, ev, HOUR_MS, runStages, stagesFromYaml, T0, TEST_FIELDS, wm, expectRestartsChangeNothing, wakeUpAsker, outputTime } from "../behaviourHarness.ts";

const FIELDS = { ...TEST_FIELDS, wake_at: "double" };

/** BEHAVIOUR.md's lead score, decaying x0.82 per 24 h (the journey write-up). */
const LEAD_SCORE = `
scores:
  lead_score:
    factor: 0.82
    per: 24h
    events:
      pricing_visit: { when: 'page.startsWith("/pricing")', points: 10 }
      whitepaper_download: 25
      email_open: { points: 15, every: 3 }
      video_view: 5
      long_read: { when: 'session_duration_sec > 60.0', points: 20 }
      demo_call: 0
    boost: { factor: 1.3, within: 48h }
    rules:
      - { when: 'lead_score_pricing_visit >= 2.0 && lead_score_whitepaper_download >= 1.0', within: 24h, points: 15 }
      - { when: 'lead_score_email_open >= 3.0', points: 25 }
      - { when: 'lead_score_last == "demo_call"', points: 40 }
      - { when: 'lead_score_last == "demo_call"', within: 12h, points: 10 }
    alert: { at: 80, message: "send a demo now, follow up within 2 hours" }
`;

/** Emits the named variables and the step's signals as a "probe" output on every step. */
function probe(names: string[]): StageDefinition {
  return {
    name: "probe",
    build: () => ({
      step(view, out) {
        const body: Record<string, unknown> = {};
        for (const name of names) body[name] = view.vars[name] ?? null;
        if (view.signals.length > 0) body.signals = view.signals.map((s) => ({ ...s }));
        out.emit("probe", view.user, view.timeMs, body);
      },
    }),
  };
}

/** The sum of an alert's drivers' points: what explains its value. */
function sumOfDrivers(alert: Record<string, unknown>): number {
  return (alert.drivers as Array<{ points: number }>).reduce((sum, d) => sum + d.points, 0);
}

/** Asks for a wake-up at the event's `wake_at`, as a phase or trigger stage would. */
const waker = wakeUpAsker("wake_at");

const page = (user: string, timeMs: number, path: string, fields: Record<string, unknown> = {}) =>
  ev(user, timeMs, { event_type: "page_view", page: path, session_duration_sec: 30, ...fields });
const typed = (user: string, timeMs: number, eventType: string, fields: Record<string, unknown> = {}) =>
  ev(user, timeMs, { event_type: eventType, page: "/", session_duration_sec: 30, ...fields });

/** The probe's values of `name` at each step of `user`, as [time, value]. */
function probed(run: { byKind(kind: string): Array<{ key: string; time: number; body: Record<string, unknown> }> }, name: string, user = "u1") {
  return run.byKind("probe").filter((o) => o.key === user).map((o) => [o.time, o.body[name]]);
}

describe("decayed scores", () => {
  it("gives a user with 2 pricing visits, 1 whitepaper and a demo call 3 h ago exactly the formula's score", async () => {
    const stages = [waker, ...stagesFromYaml(LEAD_SCORE, FIELDS), probe(["lead_score"])];
    const demoAt = T0 + 2 * DAY_MS;
    const now = demoAt + 3 * HOUR_MS;
    const run = await runStages(stages, [
      page("u1", T0, "/pricing"),
      page("u1", T0 + DAY_MS, "/pricing/enterprise"),
      typed("u1", T0 + DAY_MS + 2 * HOUR_MS, "whitepaper_download", { page: "/resources/report" }),
      typed("u1", demoAt, "demo_call", { page: "/demo", wake_at: now }),
      wm(now),
      page("u1", now, "/blog"),
    ]);
    // By hand: points decayed to the demo call (x0.82 a day), x1.3 (latest event < 48 h old), plus
    // rules 15 (2 pricing + whitepaper, < 24 h) + 40 (last is a demo call) + 10 (< 12 h), all
    // decayed over the 3 h since the demo call.
    const f = 0.82;
    const pointsAtDemo = 10 * f ** 2 + 10 * f ** 1 + 25 * f ** (22 / 24) + 0;
    const expected = f ** (3 / 24) * (1.3 * pointsAtDemo + 15 + 40 + 10);
    expect(expected).toBeCloseTo(108.76, 2);
    const values = probed(run, "lead_score");
    expect(values.map(([t]) => t)).toEqual([T0, T0 + DAY_MS, T0 + DAY_MS + 2 * HOUR_MS, demoAt, now, now]);
    // The wake-up at `now` and an unweighted event at `now` read the same score.
    expect(values[4][1]).toBeCloseTo(expected, 10);
    expect(values[5][1]).toBeCloseTo(expected, 10);
    expect(values[3][1]).toBeCloseTo(1.3 * pointsAtDemo + 65, 10);
  });

  it("alerts once when the score reaches the threshold, explaining it: the weighted events decayed, the boost and the rules by name", async () => {
    // Rules named, but the last: it is named by its place.
    const named = LEAD_SCORE.replace("- { when: 'lead_score_pricing_visit", "- { name: pricing_and_whitepaper, when: 'lead_score_pricing_visit")
      .replace("- { when: 'lead_score_email_open", "- { name: three_email_opens, when: 'lead_score_email_open")
      .replace("- { when: 'lead_score_last == \"demo_call\"', points: 40 }", "- { name: demo_call, when: 'lead_score_last == \"demo_call\"', points: 40 }");
    const stages = [...stagesFromYaml(named + "outputs: { digits: 17 }\n", FIELDS), probe(["lead_score"])];
    const run = await runStages(stages, [
      page("u1", T0, "/pricing"),
      page("u1", T0 + HOUR_MS, "/pricing"),
      typed("u1", T0 + 2 * HOUR_MS, "whitepaper_download", { page: "/resources/report" }),
      typed("u1", T0 + 3 * HOUR_MS, "video_view", { page: "/video" }),
      typed("u1", T0 + 4 * HOUR_MS, "demo_call", { page: "/demo" }),
      typed("u1", T0 + 5 * HOUR_MS, "video_view", { page: "/video" }),
    ]);
    const f = 0.82;
    const d = (hours: number) => f ** (hours / 24);
    const points = 10 * d(4) + 10 * d(3) + 25 * d(2) + 5 * d(1);
    const atDemo = 1.3 * points + 15 + 40 + 10;
    const alerts = run.byKind("alert");
    expect(alerts.length).toBe(1);
    expect(alerts[0].key).toBe("u1");
    expect(alerts[0].body.value).toBeCloseTo(atDemo, 10);
    const closeTo = (x: number) => expect.closeTo(x, 10);
    expect(alerts[0].body).toEqual({
      output: "alert",
      user_id: "u1",
      ...outputTime(T0 + 4 * HOUR_MS),
      score: "lead_score",
      value: closeTo(atDemo),
      threshold: 80,
      message: "send a demo now, follow up within 2 hours",
      drivers: [
        // Each weighted event: the points it earned, and what is left of them at the demo call.
        { driver: "event", type: "page_view", page: "/pricing", ...outputTime(T0), earned: 10, points: closeTo(10 * d(4)) },
        { driver: "event", type: "page_view", page: "/pricing", ...outputTime(T0 + HOUR_MS), earned: 10, points: closeTo(10 * d(3)) },
        { driver: "event", type: "whitepaper_download", page: "/resources/report", ...outputTime(T0 + 2 * HOUR_MS), earned: 25, points: closeTo(25 * d(2)) },
        { driver: "event", type: "video_view", page: "/video", ...outputTime(T0 + 3 * HOUR_MS), earned: 5, points: closeTo(5 * d(1)) },
        { driver: "event", type: "demo_call", page: "/demo", ...outputTime(T0 + 4 * HOUR_MS), earned: 0, points: 0 },
        // +30% while the latest weighted event is under 48 h old.
        { driver: "boost", factor: 1.3, points: closeTo(0.3 * points) },
        { driver: "rule", rule: "pricing_and_whitepaper", points: 15 },
        { driver: "rule", rule: "demo_call", points: 40 },
        { driver: "rule", rule: "rules[3]", points: 10 },
      ],
    });
    expect(sumOfDrivers(alerts[0].body)).toBeCloseTo(alerts[0].body.value as number, 9);
    expect(run.counts.score_alerts).toBe(1);
    const signalled = run.byKind("probe").filter((o) => o.body.signals);
    expect(signalled.map((o) => o.time)).toEqual([T0 + 4 * HOUR_MS]);
    expect(signalled[0].body.signals).toEqual([
      { kind: "alert", name: "lead_score", timeMs: T0 + 4 * HOUR_MS, detail: { value: alerts[0].body.value, threshold: 80, message: "send a demo now, follow up within 2 hours", drivers: alerts[0].body.drivers } },
    ]);
  });

  it("lists the latest few weighted events and sums up the older ones, so the drivers still add up to the value", async () => {
    const stages = stagesFromYaml(`scores: { s: { halfLife: 1h, events: { a: 40 }, drivers: 2, alert: { at: 80 } } }\noutputs: { digits: 17 }`);
    // 40, then 20 + 40 = 60 an hour later, then ~100 a millisecond after: the alert lists the last two.
    const run = await runStages(stages, [typed("u1", T0, "a"), typed("u1", T0 + HOUR_MS, "a"), typed("u1", T0 + HOUR_MS + 1, "a")]);
    const [alert] = run.byKind("alert").map((o) => o.body);
    const h = (ms: number) => 0.5 ** (ms / HOUR_MS);
    expect(alert).toMatchObject({
      ...outputTime(T0 + HOUR_MS + 1),
      value: expect.closeTo(40 * h(HOUR_MS + 1) + 40 * h(1) + 40, 10),
      drivers: [
        { driver: "event", ...outputTime(T0 + HOUR_MS), earned: 40, points: expect.closeTo(40 * h(1), 10) },
        { driver: "event", ...outputTime(T0 + HOUR_MS + 1), earned: 40, points: 40 },
        { driver: "earlier_events", points: expect.closeTo(40 * h(HOUR_MS + 1), 10) },
      ],
    });
    expect(sumOfDrivers(alert)).toBeCloseTo(alert.value as number, 9);
  });

  it("explains every alert of random leads exactly: the drivers add up to the value to 1e-9, before rounding", async () => {
    const stages = stagesFromYaml(LEAD_SCORE + "    drivers: 3\noutputs: { digits: 17 }\n", FIELDS);
    const kinds: Array<[string, string]> = [["page_view", "/pricing"], ["page_view", "/blog"], ["whitepaper_download", "/w"], ["email_open", "/mail"], ["video_view", "/v"], ["demo_call", "/demo"]];
    let seed = 20261206;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const elements = [];
    for (let user = 0; user < 40; user++) {
      let t = T0;
      for (let i = 0; i < 30; i++) {
        t += Math.floor(random() * 3 * DAY_MS);
        const [type, path] = kinds[Math.floor(random() * kinds.length)];
        elements.push(typed(`u${user}`, t, type, { page: path, session_duration_sec: random() * 120 }));
      }
    }
    elements.sort((a, b) => a.time - b.time);
    const alerts = (await runStages(stages, elements)).byKind("alert").map((o) => o.body);
    expect(alerts.length).toBeGreaterThan(20);
    expect(alerts.some((a) => (a.drivers as Array<{ driver: string }>).some((d) => d.driver === "earlier_events"))).toBe(true);
    for (const alert of alerts) expect(Math.abs(sumOfDrivers(alert) - (alert.value as number))).toBeLessThan(1e-9);
  });

  it("rounds the value and the drivers' points to outputs.digits significant digits, 6 by default", async () => {
    const stages = stagesFromYaml(`scores: { s: { halfLife: 1h, events: { a: 100 }, alert: { at: 150 } } }`);
    const run = await runStages(stages, [typed("u1", T0, "a"), typed("u1", T0 + 1000, "a")]);
    const [alert] = run.byKind("alert").map((o) => o.body);
    expect(alert.value).toBe(Number((100 * 0.5 ** (1000 / HOUR_MS) + 100).toPrecision(6)));
    expect((alert.drivers as Array<{ points: number }>).map((d) => d.points)).toEqual([Number((100 * 0.5 ** (1000 / HOUR_MS)).toPrecision(6)), 100]);
  });

  it("refuses two rules of a score with the same name", () => {
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, rules: [ { name: r, points: 1 }, { name: r, points: 2 } ] } }`)).toThrow(/scores\.s\.rules\[1\]\.name: "r" names another rule of this score/);
  });

  it("re-arms an alert only after the score was seen below the threshold, even when that was between two events", async () => {
    const stages = [...stagesFromYaml(`scores: { s: { halfLife: 1d, events: { a: 50 }, alert: { at: 80 } } }\noutputs: { digits: 17 }`), probe(["s"])];
    const run = await runStages(stages, [
      typed("u1", T0, "a"), // 50
      typed("u1", T0 + 1, "a"), // ~100: alert
      typed("u1", T0 + 2, "a"), // ~150: still above, no alert
      typed("u1", T0 + 2 * DAY_MS, "a"), // 150/4 = 37.5 before, 87.5 after: fell below in between, alert again
      typed("u1", T0 + 2 * DAY_MS + HOUR_MS, "page_view"), // ~85, no alert
    ]);
    expect(run.byKind("alert").map((o) => o.time)).toEqual([T0 + 1, T0 + 2 * DAY_MS]);
    const d = (ms: number) => 0.5 ** (ms / DAY_MS);
    expect(run.byKind("alert")[1].body.value).toBeCloseTo(50 * (d(2 * DAY_MS) + d(2 * DAY_MS - 1) + d(2 * DAY_MS - 2)) + 50, 10);
  });

  it("re-arms at any step that sees the score below the threshold, one lowered by an event with negative points too", async () => {
    const stages = [...stagesFromYaml(`scores: { s: { events: { good: 10, bad: -30 }, boost: { factor: 1.3, within: 1h }, rules: [ { points: 100 } ], alert: { at: 80 } } }`), probe(["s"])];
    const run = await runStages(stages, [
      typed("u1", T0, "good"), // 10 x 1.3 + 100 = 113: alert
      typed("u1", T0 + 1, "bad"), // -20 x 1.3 + 100 = 74: below, re-armed
      typed("u1", T0 + 2 * HOUR_MS, "page_view"), // the boost is over: -20 + 100 = 80, reached again
    ]);
    expect(run.byKind("probe").map((o) => o.body.s)).toEqual([113, 74, 80]);
    expect(run.byKind("alert").map((o) => [o.time, o.body.value])).toEqual([
      [T0, 113],
      [T0 + 2 * HOUR_MS, 80],
    ]);
  });

  it("does not re-arm while the score stays above the threshold", async () => {
    const stages = stagesFromYaml(`scores: { s: { halfLife: 1d, events: { a: 100 }, alert: { at: 80 } } }`);
    const run = await runStages(stages, [
      typed("u1", T0, "a"), // 100: alert
      typed("u1", T0 + HOUR_MS, "page_view"), // ~97
      typed("u1", T0 + 2 * HOUR_MS, "a"), // ~194 without having been below 80
    ]);
    expect(run.byKind("alert").map((o) => o.time)).toEqual([T0]);
  });

  it("alerts at each of several thresholds once", async () => {
    const stages = stagesFromYaml(`scores: { s: { events: { a: 30 }, alert: [ { at: 50, message: warm }, { at: 80, message: hot } ] } }`);
    const run = await runStages(stages, [typed("u1", T0, "a"), typed("u1", T0 + 1, "a"), typed("u1", T0 + 2, "a"), typed("u1", T0 + 3, "a")]);
    expect(run.byKind("alert").map((o) => [o.time, o.body.message, o.body.value])).toEqual([
      [T0 + 1, "warm", 60],
      [T0 + 2, "hot", 90],
    ]);
  });

  it("decays to half its value every half-life, read at wake-ups", async () => {
    const stages = [waker, ...stagesFromYaml(`scores: { s: { halfLife: 7d, events: { a: 10 } } }`, FIELDS), probe(["s"])];
    const run = await runStages(stages, [typed("u1", T0, "a", { wake_at: T0 + 7 * DAY_MS }), typed("u1", T0 + 1, "page_view", { wake_at: T0 + 14 * DAY_MS }), wm(T0 + 30 * DAY_MS)]);
    expect(probed(run, "s")).toEqual([
      [T0, 10],
      [T0 + 1, 10 * 0.5 ** (1 / (7 * DAY_MS))],
      [T0 + 7 * DAY_MS, expect.closeTo(5, 12)],
      [T0 + 14 * DAY_MS, expect.closeTo(2.5, 12)],
    ]);
  });

  it("decays by the stated fraction per period: lose 25% per 30 days keeps 75% after 30 days", async () => {
    expect(halfLifeFromLossMs(0.25, 30 * DAY_MS) / DAY_MS).toBeCloseTo((30 * Math.LN2) / -Math.log(0.75), 12);
    expect(halfLifeFromFactorMs(0.5, DAY_MS)).toBeCloseTo(DAY_MS, 6);
    const stages = [waker, ...stagesFromYaml(`scores: { s: { lose: 0.25, per: 30d, events: { a: 100 } } }`, FIELDS), probe(["s"])];
    const run = await runStages(stages, [typed("u1", T0, "a", { wake_at: T0 + 30 * DAY_MS }), wm(T0 + 30 * DAY_MS)]);
    expect(probed(run, "s")[1]).toEqual([T0 + 30 * DAY_MS, expect.closeTo(75, 9)]);
  });

  it("boosts the weighted events' points only while the latest one is younger than the boost window", async () => {
    const stages = [waker, ...stagesFromYaml(`scores: { s: { events: { a: 10 }, boost: { factor: 1.3, within: 48h }, rules: [ { points: 5 } ] } }`, FIELDS), probe(["s"])];
    const run = await runStages(stages, [
      typed("u1", T0, "a", { wake_at: T0 + 48 * HOUR_MS - 1 }),
      typed("u1", T0 + 1, "page_view", { wake_at: T0 + 48 * HOUR_MS }),
      wm(T0 + 48 * HOUR_MS),
    ]);
    expect(probed(run, "s")).toEqual([
      [T0, 18],
      [T0 + 1, 18],
      [T0 + 48 * HOUR_MS - 1, 18],
      [T0 + 48 * HOUR_MS, 15],
    ]);
  });

  it("decays rule points with the score and drops a rule when its window from the latest weighted event ends", async () => {
    const stages = [waker, ...stagesFromYaml(LEAD_SCORE, FIELDS), probe(["lead_score"])];
    const run = await runStages(stages, [typed("u1", T0, "demo_call", { wake_at: T0 + 12 * HOUR_MS - 1 }), typed("u1", T0 + 1, "page_view", { wake_at: T0 + 12 * HOUR_MS }), wm(T0 + DAY_MS)]);
    const d = (ms: number) => 0.82 ** (ms / DAY_MS);
    expect(probed(run, "lead_score")).toEqual([
      [T0, 50],
      [T0 + 1, expect.closeTo(50 * d(1), 12)],
      [T0 + 12 * HOUR_MS - 1, expect.closeTo(50 * d(12 * HOUR_MS - 1), 12)],
      [T0 + 12 * HOUR_MS, expect.closeTo(40 * d(12 * HOUR_MS), 12)],
    ]);
  });

  it("gives points on every 3rd email open and counts every open for the rules", async () => {
    const stages = [...stagesFromYaml(LEAD_SCORE, FIELDS), probe(["lead_score", "lead_score_email_open"])];
    const opens = [0, 1, 2, 3, 4, 5, 6].map((i) => typed("u1", T0 + i, "email_open", { page: "/mail" }));
    const run = await runStages(stages, opens);
    const decayed = (points: number, ms: number) => points * 0.82 ** (ms / DAY_MS);
    // 15 at the 3rd and 6th opens, x1.3 boost; the email rule (+25) from the 3rd open on.
    expect(run.byKind("probe").map((o) => o.body.lead_score_email_open)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const scores = run.byKind("probe").map((o) => o.body.lead_score as number);
    expect(scores.slice(0, 2)).toEqual([0, 0]);
    expect(scores[2]).toBeCloseTo(1.3 * 15 + 25, 12);
    expect(scores[5]).toBeCloseTo(1.3 * (decayed(15, 3) + 15) + 25, 12);
    expect(scores[6]).toBeCloseTo(1.3 * (decayed(15, 4) + decayed(15, 1)) + 25, 12);
  });

  it("takes points from a CEL formula of the event", async () => {
    const stages = [...stagesFromYaml(`scores: { value: { events: { purchase: { points: 'order_value / 10.0' } } } }`), probe(["value"])];
    const run = await runStages(stages, [typed("u1", T0, "purchase", { order_value: 250 }), typed("u1", T0 + 1, "purchase")]);
    // A purchase without an order value has no points but is counted.
    expect(run.byKind("probe").map((o) => o.body.value)).toEqual([25, 25]);
  });

  it("is 0 with counts 0 and no last type for a user without weighted events", async () => {
    const stages = [...stagesFromYaml(LEAD_SCORE, FIELDS), probe(["lead_score", "lead_score_pricing_visit", "lead_score_last"])];
    const elements = [page("u1", T0, "/blog"), page("u1", T0 + 1, "/home")];
    const run = await runStages(stages, elements);
    expect(run.byKind("probe").map((o) => o.body)).toEqual([
      { lead_score: 0, lead_score_pricing_visit: 0, lead_score_last: null },
      { lead_score: 0, lead_score_pricing_visit: 0, lead_score_last: null },
    ]);
  });

  it("adds a late event's points decayed to the latest weighted event, which stays the last", async () => {
    const stages = [...stagesFromYaml(`scores: { s: { halfLife: 1d, events: { a: 8, b: 4 } } }`), probe(["s", "s_last", "s_a"])];
    const run = await runStages(stages, [typed("u1", T0 + DAY_MS, "b"), typed("u1", T0, "a")]);
    // The late `a` counts half (a day older); the score is read at the latest event, not back in time.
    expect(run.byKind("probe").map((o) => o.body)).toEqual([
      { s: 4, s_last: "b", s_a: 0 },
      { s: 8, s_last: "b", s_a: 1 },
    ]);
  });

  it("keeps each user's score apart", async () => {
    const stages = [...stagesFromYaml(`scores: { s: { events: { a: 8 } } }`), probe(["s"])];
    const run = await runStages(stages, [typed("u1", T0, "a"), typed("u2", T0, "a"), typed("u1", T0 + 1, "a")]);
    expect(run.byKind("probe").map((o) => [o.key, o.body.s])).toEqual([["u1", 8], ["u2", 8], ["u1", 16]]);
  });

  it("gives the same outputs with a restart at any point", async () => {
    const stages = [waker, ...stagesFromYaml(LEAD_SCORE + `\n    drivers: 3`, FIELDS), probe(["lead_score", "lead_score_last"])];
    const elements = [
      page("u1", T0, "/pricing"),
      page("u2", T0, "/pricing"),
      page("u1", T0 + HOUR_MS, "/pricing", { wake_at: T0 + 3 * DAY_MS }),
      typed("u1", T0 + 2 * HOUR_MS, "whitepaper_download"),
      wm(T0 + 2 * HOUR_MS),
      typed("u1", T0 + 3 * HOUR_MS, "demo_call"),
      typed("u2", T0 + 3 * HOUR_MS, "email_open"),
      wm(T0 + DAY_MS),
      typed("u1", T0 + 5 * DAY_MS, "demo_call"),
      typed("u1", T0 + 5 * DAY_MS + 1, "whitepaper_download"),
      typed("u1", T0 + 4 * DAY_MS, "video_view"),
      wm(T0 + 6 * DAY_MS),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.byKind("alert").map((o) => o.time)).toEqual([T0 + 3 * HOUR_MS, T0 + 5 * DAY_MS]);
    await expectRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses an unknown field at its path", () => {
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, halflife: 7d } }`)).toThrow(/scores\.s\.halflife: unknown field/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: { points: 1, weight: 2 } } } }`)).toThrow(/scores\.s\.events\.a\.weight: unknown field/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, rules: [ { points: 1, if: 'true' } ] } }`)).toThrow(/scores\.s\.rules\[0\]\.if: unknown field/);
  });

  it("refuses CEL that does not type-check, at its path", () => {
    expect(() => stagesFromYaml(`scores: { s: { events: { a: { when: 'page + 1.0', points: 1 } } } }`)).toThrow(/scores\.s\.events\.a\.when: CEL type error/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: { points: 'page' } } } }`)).toThrow(/scores\.s\.events\.a\.points: .* is of type string, expected double/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, rules: [ { when: 's_a', points: 1 } ] } }`)).toThrow(/scores\.s\.rules\[0\]\.when: .* is of type double, expected bool/);
  });

  it("lets rules use the counts but not the score itself, and weighted events neither", () => {
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, rules: [ { when: 's > 3.0', points: 1 } ] } }`)).toThrow(/scores\.s\.rules\[0\]\.when: CEL type error/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: { when: 's_a > 3.0', points: 1 } } } }`)).toThrow(/scores\.s\.events\.a\.when: CEL type error/);
    expect(() => stagesFromYaml(`scores: { s: { events: { a: 1 }, rules: [ { when: 's_a > 3.0 && s_last == "a"', points: 1 } ] } }`)).not.toThrow();
  });

  it("refuses a decay given two ways, or a period without a rate", () => {
    expect(() => stagesFromYaml(`scores: { s: { halfLife: 7d, lose: 0.2, per: 30d, events: { a: 1 } } }`)).toThrow(/scores\.s: expected one of halfLife, lose \+ per, factor \+ per for the decay, got halfLife and lose/);
    expect(() => stagesFromYaml(`scores: { s: { lose: 0.2, events: { a: 1 } } }`)).toThrow(/scores\.s\.per: is required with lose/);
    expect(() => stagesFromYaml(`scores: { s: { per: 30d, events: { a: 1 } } }`)).toThrow(/scores\.s\.per: goes with lose/);
    expect(() => stagesFromYaml(`scores: { s: { lose: 1.5, per: 30d, events: { a: 1 } } }`)).toThrow(/scores\.s\.lose: expected a number from 0 to/);
    expect(() => stagesFromYaml(`scores: { s: { halfLife: soon, events: { a: 1 } } }`)).toThrow(/scores\.s\.halfLife: expected a duration like "7d", got "soon"/);
  });

  it("refuses names that collide with declared values", () => {
    expect(() => stagesFromYaml(`scores: { s: { events: { last: 1 } } }`)).toThrow(/scores\.s: "s_last" is already the name of scores\.s\.events\.last/);
    expect(() => stagesFromYaml(`scores: { page: { events: { a: 1 } } }`)).toThrow(/scores\.page: "page" is already the name of schema\.page/);
  });

  it("reports every bad value, not only the first", () => {
    let error: unknown;
    try {
      stagesFromYaml(`scores: { s: { factor: 2, per: 1d, events: { a: { points: x } }, boost: { factor: 1.3 }, alert: { at: high } } }`);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PipelineInvalid);
    expect((error as PipelineInvalid).errors.map((e) => e.path)).toEqual(["scores.s.factor", "scores.s.events.a.points", "scores.s.boost.within", "scores.s.alert.at"]);
  });
});
