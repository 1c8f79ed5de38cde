import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { from, lastValueFrom, toArray } from "rxjs";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import { operate, type OperatorLogic } from "../../engine/operator.ts";
import { storeOperatorContext } from "../../engine/operatorContext.ts";
import { StateStore } from "../../engine/store.ts";
import { behaviour, type BehaviourOutput } from "../../operators/behaviour.ts";
import { describedNames, matchCentroids, nameClusters, standardisation, standardise } from "../../operators/clusterMath.ts";
import { clusters, type ClustersRun } from "../../operators/clusters.ts";
import type { EventFields, StageDefinition, StageLogic, StageOutput } from "../../operators/stage.ts";
import { stageContext } from "../harness.ts";
import { DAY_MS, ev, HOUR_MS, MINUTE_MS, runStages, stagesFromYaml, T0, wm, type BehaviourRun, type Emitted, configErrors, wakeUpAsker, outputTime } from "../behaviourHarness.ts";

/** Writes down the cluster var as every step leaves it: a "seen" output per step. */
const probe: StageDefinition = {
  name: "probe",
  build: () => ({
    step(view, out) {
      out.emit("seen", view.user, view.timeMs, { cluster: view.vars.cluster ?? null });
    },
  }),
};

const RULES = `
  names:
    - { name: occasionale_interessato, when: 'visit_frequency < -0.5 && recent_interest > 0.5' }
    - { name: fedele, when: 'visit_frequency > 0.5' }
    - { name: frequente, when: 'visit_frequency > 0.0' }`;

function pipeline(clustersExtra = RULES, retention = "retention: false"): StageDefinition[] {
  return [
    ...stagesFromYaml(`
features:
  visit_frequency: 'session_duration_sec'
  recent_interest: 'scroll_depth'
clusters:
  k: 2
  features: [visit_frequency, recent_interest]
  ${retention}
${clustersExtra}
`),
    probe,
  ];
}

/** An event carrying the user's two features (visit_frequency, recent_interest). */
const at = (user: string, timeMs: number, frequency: number, interest: number): Element<EventFields> =>
  ev(user, timeMs, { event_type: "page_view", page: "/", session_duration_sec: frequency, scroll_depth: interest });

/** Two well-separated groups: loyal (frequent, no interest), interested (rare, high interest). */
const BLOBS: Array<[string, number, number]> = [
  ["l1", 4.9, 0],
  ["l2", 5.0, 0.1],
  ["l3", 5.1, -0.1],
  ["i1", 0.1, 5.9],
  ["i2", 0.2, 6.0],
  ["i3", 0.3, 6.1],
];
const blobEvents = (timeMs: number, blobs = BLOBS) => blobs.map(([user, f, i], n) => at(user, timeMs + n * 1000, f, i));

/**
 * The groups' z-scores: over the six users visit_frequency has mean 2.6 and population std
 * sqrt(34.6 / 6), recent_interest mean 3.0 and std sqrt(54.04 / 6); the groups sit at 5.0 / 0.2
 * and 0.0 / 6.0.
 */
const Z_FREQUENCY = 2.4 / Math.sqrt(34.6 / 6);
const Z_INTEREST = 3 / Math.sqrt(54.04 / 6);

const sixDigits = (x: number) => Number(x.toPrecision(6));

const bodies = (run: BehaviourRun, kind: string) => run.byKind(kind).map((o) => o.body);

describe("clusters", () => {
  it("clusters two separated groups at the period boundary and names them by the first rule that holds", async () => {
    const run = await runStages(pipeline(), [...blobEvents(T0 + MINUTE_MS), wm(T0 + 30 * MINUTE_MS)]);
    const [summary] = bodies(run, "clusters");
    const byName = Object.fromEntries((summary.centroids as Array<{ name: string }>).map((c) => [c.name, c]));
    expect(summary).toMatchObject({ output: "clusters", ...outputTime(T0 + 30 * MINUTE_MS), run: 1, users: 6 });
    expect(byName).toEqual({
      fedele: {
        name: "fedele",
        size: 3,
        // Shown to 6 significant digits (outputs.digits), without the noise of averaging.
        mean: { visit_frequency: 5, recent_interest: 0 },
        z: { visit_frequency: sixDigits(Z_FREQUENCY), recent_interest: sixDigits(-Z_INTEREST) },
      },
      occasionale_interessato: {
        name: "occasionale_interessato",
        size: 3,
        mean: { visit_frequency: 0.2, recent_interest: 6 },
        z: { visit_frequency: sixDigits(-Z_FREQUENCY), recent_interest: sixDigits(Z_INTEREST) },
      },
    });
    expect(bodies(run, "cluster")).toEqual(
      ["i1", "i2", "i3", "l1", "l2", "l3"].map((user) => ({
        output: "cluster",
        user_id: user,
        ...outputTime(T0 + 30 * MINUTE_MS),
        cluster: user.startsWith("l") ? "fedele" : "occasionale_interessato",
        previous: null,
      })),
    );
  });

  it("keeps every label when a re-run sees unchanged data, and says nothing about users", async () => {
    const run = await runStages(pipeline(), [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      ...blobEvents(T0 + 40 * MINUTE_MS),
      wm(T0 + 60 * MINUTE_MS),
    ]);
    const runs = bodies(run, "clusters");
    expect(runs.map((r) => [r.run, r.time_ms, r.users])).toEqual([
      [1, T0 + 30 * MINUTE_MS, 6],
      [2, T0 + 60 * MINUTE_MS, 6],
    ]);
    expect(runs[1].centroids).toEqual(runs[0].centroids);
    expect(run.byKind("cluster")).toHaveLength(6);
    expect(run.byKind("seen").slice(6).map((o) => o.body.cluster)).toEqual(["fedele", "fedele", "fedele", "occasionale_interessato", "occasionale_interessato", "occasionale_interessato"]);
  });

  it("gives the same clusters whatever order the users' events arrive in", async () => {
    const elements = blobEvents(T0 + MINUTE_MS);
    const permuted = [elements[4], elements[0], elements[5], elements[2], elements[1], elements[3]];
    const straight = await runStages(pipeline(""), [...elements, wm(T0 + 30 * MINUTE_MS)]);
    const shuffled = await runStages(pipeline(""), [...permuted, wm(T0 + 30 * MINUTE_MS)]);
    expect(bodies(shuffled, "clusters")).toEqual(bodies(straight, "clusters"));
    expect(bodies(shuffled, "cluster")).toEqual(bodies(straight, "cluster"));
  });

  it("moves a user whose features change to the nearest centroid at its step, var included", async () => {
    const run = await runStages(pipeline(), [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      at("l1", T0 + 35 * MINUTE_MS, 4.8, 0.2),
      at("l1", T0 + 36 * MINUTE_MS, 0.4, 5.5),
    ]);
    expect(bodies(run, "cluster").slice(6)).toEqual([
      { output: "cluster", user_id: "l1", ...outputTime(T0 + 36 * MINUTE_MS), cluster: "occasionale_interessato", previous: "fedele" },
    ]);
    expect(bodies(run, "seen").slice(6)).toEqual([{ cluster: "fedele" }, { cluster: "occasionale_interessato" }]);
  });

  it("measures a user's distance to the centroids in standard deviations of the run", async () => {
    // (5.0, 5.5) is as far from the loyal centroid (5.0, 0.0) as 5.5 raw interest, from the
    // interested one (0.2, 6.0) 4.8 raw frequency + 0.5 interest; but frequency spreads less
    // (std 2.40 vs 3.00): in z-scores the loyal centroid is the nearer.
    const run = await runStages(pipeline(), [...blobEvents(T0 + MINUTE_MS), wm(T0 + 30 * MINUTE_MS), at("both", T0 + 35 * MINUTE_MS, 5.0, 5.5)]);
    expect(bodies(run, "cluster").slice(6)).toEqual([{ output: "cluster", user_id: "both", ...outputTime(T0 + 35 * MINUTE_MS), cluster: "fedele", previous: null }]);
  });

  it("keeps labels by slot across runs on different data: centroids are matched to the previous run's", async () => {
    // No naming rules: the labels come from the centroids (high_/low_recent_interest). With seed 42 the
    // first k-means++ seed is the 4th of 6 users (l1) in the first run and the 7th of 10 (i7) in the
    // second, so k-means lists the groups in the other order: only matching keeps the slots.
    const grown: Array<[string, number, number]> = [...BLOBS, ["i4", 0.15, 6.05], ["i5", 0.25, 5.95], ["i6", 0.2, 5.9], ["i7", 0.2, 6.1]];
    const run = await runStages(pipeline(""), [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      ...blobEvents(T0 + 40 * MINUTE_MS, grown),
      wm(T0 + 60 * MINUTE_MS),
    ]);
    const labelOf = (runNumber: number) => {
      const summary = bodies(run, "clusters")[runNumber - 1];
      const loyal = (summary.centroids as Array<{ name: string; mean: { visit_frequency: number } }>).find((c) => c.mean.visit_frequency > 2.5)!;
      return loyal.name;
    };
    expect(labelOf(2)).toBe(labelOf(1));
    // Only the new users got a label; nobody changed.
    expect(bodies(run, "cluster").slice(6).map((b) => [b.user_id, b.previous])).toEqual([
      ["i4", null],
      ["i5", null],
      ["i6", null],
      ["i7", null],
    ]);
  });

  it("clusters only the users with an event within activeWithin of the boundary", async () => {
    const run = await runStages(pipeline(`  activeWithin: 10m\n${RULES}`), [
      at("old", T0 + MINUTE_MS, 5, 0),
      ...blobEvents(T0 + 21 * MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
    ]);
    expect(bodies(run, "clusters")[0].users).toBe(6);
    expect(bodies(run, "cluster").map((b) => b.user_id)).not.toContain("old");
  });

  it("skips a run with fewer than k active users and keeps the old model for assignments", async () => {
    const run = await runStages(pipeline(), [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      at("new", T0 + 70 * MINUTE_MS, 0.3, 6.2),
      wm(T0 + 90 * MINUTE_MS),
      at("l2", T0 + 95 * MINUTE_MS, 0.2, 6.3),
    ]);
    expect(bodies(run, "clusters").map((b) => b.run)).toEqual([1]);
    expect(run.counts.cluster_runs_skipped).toBe(1);
    expect(bodies(run, "cluster").slice(6)).toEqual([
      { output: "cluster", user_id: "new", ...outputTime(T0 + 70 * MINUTE_MS), cluster: "occasionale_interessato", previous: null },
      { output: "cluster", user_id: "l2", ...outputTime(T0 + 95 * MINUTE_MS), cluster: "occasionale_interessato", previous: "fedele" },
    ]);
  });

  it("skips a run when the active users hold fewer than k distinct vectors", async () => {
    const run = await runStages(pipeline(), [at("a", T0, 1, 1), at("b", T0 + 1, 1, 1), at("c", T0 + 2, 1, 1), wm(T0 + 30 * MINUTE_MS)]);
    expect(run.byKind("clusters")).toEqual([]);
    expect(run.byKind("cluster")).toEqual([]);
    expect(run.counts.cluster_runs_skipped).toBe(1);
  });

  it("leaves a user with a missing feature unclustered, without a var", async () => {
    const run = await runStages(pipeline(), [
      ...blobEvents(T0 + MINUTE_MS),
      ev("nofeature", T0 + 2 * MINUTE_MS, { event_type: "page_view", page: "/", session_duration_sec: 3 }),
      wm(T0 + 30 * MINUTE_MS),
      ev("nofeature", T0 + 31 * MINUTE_MS, { event_type: "page_view", page: "/", session_duration_sec: 3 }),
    ]);
    expect(bodies(run, "clusters")[0].users).toBe(6);
    expect(bodies(run, "cluster").map((b) => b.user_id)).not.toContain("nofeature");
    expect(run.byKind("seen").filter((o) => o.key === "nofeature").map((o) => o.body.cluster)).toEqual([null, null]);
  });

  it("runs once for a watermark that jumps many periods, and once at END_OF_TIME for the last event's period", async () => {
    const run = await runStages(pipeline(), [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      ...blobEvents(T0 + 220 * MINUTE_MS),
      wm(T0 + 250 * MINUTE_MS),
      ...blobEvents(T0 + 260 * MINUTE_MS),
      wm(END_OF_TIME),
    ]);
    expect(bodies(run, "clusters").map((b) => [b.run, b.time_ms])).toEqual([
      [1, T0 + 30 * MINUTE_MS],
      [2, T0 + 240 * MINUTE_MS],
      [3, T0 + 270 * MINUTE_MS],
    ]);
  });

  it("does not run at END_OF_TIME when the last event's period was already clustered", async () => {
    const run = await runStages(pipeline(), [...blobEvents(T0 + MINUTE_MS), wm(T0 + 30 * MINUTE_MS), wm(END_OF_TIME)]);
    expect(bodies(run, "clusters").map((b) => b.run)).toEqual([1]);
  });

  it("never gives two clusters the same name: the larger keeps it, the other is named after its centroid", async () => {
    const run = await runStages(pipeline(`  names:\n    - { name: tutti, when: 'visit_frequency > -100.0' }`), [
      ...blobEvents(T0 + MINUTE_MS, BLOBS.slice(0, 5)),
      wm(T0 + 30 * MINUTE_MS),
    ]);
    const centroids = bodies(run, "clusters")[0].centroids as Array<{ name: string; size: number }>;
    const bigger = centroids.findIndex((c) => c.size === 3);
    expect(centroids.map((c) => c.size).sort()).toEqual([2, 3]);
    expect(centroids[bigger].name).toBe("tutti");
    // The interested users (rare visits, high interest) stand out most on their interest.
    expect(centroids[1 - bigger].name).toBe("high_recent_interest");
  });

  it("names clusters no rule names after the feature their centroid stands out on, high_ or low_", async () => {
    const run = await runStages(pipeline(""), [...blobEvents(T0 + MINUTE_MS), wm(T0 + 30 * MINUTE_MS)]);
    const [summary] = bodies(run, "clusters");
    // z-scores ±0.9994 for the frequency and ±0.9996 for the interest: the interest stands out.
    expect((summary.centroids as Array<{ name: string; mean: Record<string, number> }>).map((c) => [c.name, c.mean.visit_frequency > 2.5 ? "loyal" : "interested"]).sort()).toEqual([
      ["high_recent_interest", "interested"],
      ["low_recent_interest", "loyal"],
    ]);
    expect(new Set(bodies(run, "cluster").map((b) => b.cluster))).toEqual(new Set(["high_recent_interest", "low_recent_interest"]));
  });

  it("keeps a centroid's name from run to run while its feature points the same way, though another now stands out more", async () => {
    // Second run: the loyal users visit far more often, and differ in interest; their centroid now stands out on frequency
    // (high_visit_frequency), but its interest is still below the mean: it stays low_recent_interest.
    const busier: Array<[string, number, number]> = [["l1", 20, -3], ["l2", 21, 3], ["l3", 22, 0], ["i1", 0.1, 5.9], ["i2", 0.2, 6.0], ["i3", 0.3, 6.1], ["i4", 0.2, 6.0]];
    const run = await runStages(pipeline(""), [...blobEvents(T0 + MINUTE_MS), wm(T0 + 30 * MINUTE_MS), ...blobEvents(T0 + 40 * MINUTE_MS, busier), wm(T0 + 60 * MINUTE_MS)]);
    const runs = bodies(run, "clusters") as unknown as ClustersRun[];
    const loyal = (r: ClustersRun) => r.centroids.find((c) => c.mean.visit_frequency > 2.5)!;
    expect(loyal(runs[0]).name).toBe("low_recent_interest");
    expect(Math.abs(loyal(runs[1]).z.visit_frequency)).toBeGreaterThan(Math.abs(loyal(runs[1]).z.recent_interest));
    expect(loyal(runs[1]).name).toBe("low_recent_interest");
  });

  it("reports daily cohorts per cluster with the share of users active again on the day `after` later", async () => {
    const run = await runStages(pipeline(RULES, "retention: { after: 2d }"), [
      ...blobEvents(T0 + MINUTE_MS), // no cluster yet: joins no cohort
      wm(T0 + 30 * MINUTE_MS),
      ...blobEvents(T0 + 40 * MINUTE_MS), // joins (day 0, cluster)
      ...blobEvents(T0 + 50 * MINUTE_MS), // once a day
      at("l2", T0 + DAY_MS + HOUR_MS, 5.0, 0.1), // day 1: not the measuring day of day 0
      at("l1", T0 + 2 * DAY_MS + HOUR_MS, 4.9, 0),
      at("i1", T0 + 2 * DAY_MS + HOUR_MS, 0.1, 5.9),
      at("i2", T0 + 3 * DAY_MS - 1, 0.2, 6.0),
      wm(T0 + 3 * DAY_MS),
      at("i3", T0 + 3 * DAY_MS + HOUR_MS, 0.3, 6.1), // too late for day 0
      wm(END_OF_TIME),
    ]);
    expect(bodies(run, "cluster_retention")).toEqual([
      { output: "cluster_retention", ...outputTime(T0 + 3 * DAY_MS), cohort_day: "2024-05-20", cluster: "fedele", users: 3, retained: 1, rate: 0.333333 },
      { output: "cluster_retention", ...outputTime(T0 + 3 * DAY_MS), cohort_day: "2024-05-20", cluster: "occasionale_interessato", users: 3, retained: 2, rate: 0.666667 },
    ]);
    // Day 1 (fedele), day 2 (fedele, occasionale_interessato), day 3 (occasionale_interessato):
    // never measured, so never reported.
    expect(run.counts.cluster_cohorts_unmeasured).toBe(4);
  });

  it("gives the same outputs and counts after a restart at any point, with a checkpoint one element before", async () => {
    const elements = [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      ...blobEvents(T0 + 40 * MINUTE_MS),
      at("l1", T0 + 45 * MINUTE_MS, 0.4, 5.5),
      wm(T0 + 60 * MINUTE_MS),
      wm(T0 + 90 * MINUTE_MS), // nobody active since 60m: skipped
      at("l1", T0 + 2 * DAY_MS + HOUR_MS, 0.4, 5.5),
      at("i2", T0 + 2 * DAY_MS + HOUR_MS, 0.2, 6.0),
      at("new", T0 + 2 * DAY_MS + HOUR_MS, 5.2, 0.1),
      ...blobEvents(T0 + 3 * DAY_MS - 10 * MINUTE_MS),
      wm(T0 + 3 * DAY_MS),
      wm(END_OF_TIME),
    ];
    const stages = pipeline(RULES, "retention: { after: 2d }");
    const whole = await runStages(stages, elements);
    expect(bodies(whole, "clusters").map((b) => b.run)).toEqual([1, 2, 3]);
    expect(whole.byKind("cluster_retention")).toHaveLength(2);
    expect(whole.counts.cluster_runs_skipped).toBe(1);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runWithTwoCheckpoints(stages, elements, Math.max(0, cut - 1), cut);
      expect(restarted.outputs, `restart after ${cut} elements`).toEqual(whole.outputs);
      expect(restarted.counts, `counts after a restart after ${cut} elements`).toEqual(whole.counts);
    }
  });

  it("keeps a move made at a wake-up across checkpoints: the entry is marked changed, not only mutated", async () => {
    // Features from the event, or at a wake-up the interested group's: the user's vector changes
    // in a step with no event, after a checkpoint that left its entry clean.
    const featureMaker: StageDefinition = {
      name: "maker",
      build: () => ({
        step(view) {
          view.vars.a = view.event ? view.event.session_duration_sec : 0.2;
          view.vars.b = view.event ? view.event.scroll_depth : 6.0;
        },
      }),
    };
    const waker = wakeUpAsker((view) => (view.event?.page === "/wake" ? view.timeMs + HOUR_MS : undefined));
    const names = [
      { name: "fedele", when: (z: Record<string, number>) => z.a > 0.5 },
      { name: "occasionale_interessato", when: (z: Record<string, number>) => z.b > 0.5 },
    ];
    const stages = [featureMaker, waker, clusters({ features: ["a", "b"], k: 2, names, retentionAfterMs: null }), probe];
    const elements = [
      ...blobEvents(T0 + MINUTE_MS),
      wm(T0 + 30 * MINUTE_MS),
      ev("l1", T0 + 35 * MINUTE_MS, { event_type: "page_view", page: "/wake", session_duration_sec: 4.9, scroll_depth: 0 }),
      wm(T0 + 100 * MINUTE_MS), // l1 wakes at 95m and moves
      at("l1", T0 + 101 * MINUTE_MS, 4.9, 0), // and moves back
    ];
    const whole = await runStages(stages, elements);
    expect(bodies(whole, "cluster").slice(6)).toEqual([
      { output: "cluster", user_id: "l1", ...outputTime(T0 + 95 * MINUTE_MS), cluster: "occasionale_interessato", previous: "fedele" },
      { output: "cluster", user_id: "l1", ...outputTime(T0 + 101 * MINUTE_MS), cluster: "fedele", previous: "occasionale_interessato" },
    ]);
    const restarted = await runWithTwoCheckpoints(stages, elements, 8, 9);
    expect(restarted.outputs).toEqual(whole.outputs);
  });

  it("clusters 20k active users with 5 features into their five groups", () => {
    const features = ["f1", "f2", "f3", "f4", "f5"];
    let seed = 7;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    /** Five groups: group g is high on feature g. */
    const stepUsers = (logic: StageLogic, count: number, out: StageOutput) => {
      for (let u = 0; u < count; u++) {
        const fields: Record<string, unknown> = {};
        features.forEach((f, d) => (fields[f] = (d === u % 5 ? 3 : 0) + random()));
        logic.step({ user: `u${u}`, timeMs: T0 + u, event: fields, vars: Object.create(fields), signals: [] }, out);
      }
    };
    const runs: ClustersRun[] = [];
    const out: StageOutput = { emit: (kind, _user, _timeMs, body) => kind === "clusters" && runs.push(body as ClustersRun), wakeAt() {}, cancelWake() {}, count() {}, wants: () => true };
    const logic = clusters({ features, retentionAfterMs: null }).build(stageContext());
    stepUsers(logic, 20_000, out);
    // How long a run takes is measured in bench/ (a timed assertion here would be flaky).
    logic.onWatermark!(T0 + 30 * MINUTE_MS, out);
    expect(runs[0].users).toBe(20_000);
    expect(runs[0].centroids.map((c) => c.size)).toEqual([4000, 4000, 4000, 4000, 4000]);
  });

  it("refuses a feature no earlier stage declares, or that is not a number, at its path", () => {
    expect(() => stagesFromYaml(`features: { a: '1.0' }\nclusters: { features: [a, nope] }`)).toThrow(/clusters\.features\[1\]: "nope" is not a field or a value of an earlier stage/);
    expect(() => stagesFromYaml(`features: { a: '1.0' }\nclusters: { features: [a, page] }`)).toThrow(/clusters\.features\[1\]: "page" is of type string, expected double or int/);
  });

  it("refuses a naming rule that is not valid CEL over the features, at its path", () => {
    const yaml = (when: string) => `features: { a: '1.0' }\nclusters:\n  features: [a]\n  names:\n    - { name: x, when: '${when}' }`;
    expect(() => stagesFromYaml(yaml("b > 1.0"))).toThrow(/clusters\.names\[0\]\.when: CEL type error/);
    expect(() => stagesFromYaml(yaml("a + 1.0"))).toThrow(/clusters\.names\[0\]\.when: "a \+ 1\.0" is of type double, expected bool/);
    expect(() => stagesFromYaml(yaml("a >"))).toThrow(/clusters\.names\[0\]\.when: CEL syntax error/);
  });

  it("refuses unknown fields, bad values and reserved names, each at its path", () => {
    const message = configErrors(`
features: { a: '1.0' }
clusters:
  features: [a]
  colour: red
  k: 1
  every: soon
  retention: { after: 2h }
  names:
    - { name: cluster_3, when: 'a > 0.0' }
    - { name: high_a, when: 'a > 0.0' }
`).join("\n");
    expect(message).toContain("clusters.colour: unknown field");
    expect(message).toContain("clusters.k: expected a number from 2 to 16, got 1");
    expect(message).toContain('clusters.every: expected a duration like "30m", got "soon"');
    expect(message).toContain("clusters.retention.after: expected at least a day");
    expect(message).toContain('clusters.names[0].name: "cluster_3" is reserved');
    expect(message).toContain('clusters.names[1].name: "high_a" is reserved for clusters no rule names, named after their centroid');
  });

  it("declares its var for later sections, refusing a name already taken", () => {
    expect(() => stagesFromYaml(`features: { a: '1.0' }\nclusters: { features: [a], name: a }`)).toThrow(/clusters\.name: "a" is already the name of features\.a/);
  });
});

describe("cluster maths", () => {
  it("matches centroids to the previous slots with the least total distance, not greedily", () => {
    // Greedy would give next[0] slot 0 (distance 1) and next[1] slot 1 (distance 100): 101.
    // Swapping costs 4 + 4 = 8.
    expect(matchCentroids([[1], [8]], [[0], [-1]])).toEqual([1, 0]);
    expect(matchCentroids([[0], [-1]], [[0], [-1]])).toEqual([0, 1]);
    expect(matchCentroids([[5, 5], [0, 0], [9, 0]], [[0, 1], [9, 1], [5, 4]])).toEqual([2, 0, 1]);
  });

  it("gives a feature whose values differ by rounding only no spread: z 0, not ±1", () => {
    // 35 users at 1/7 visits a day average to a mean a unit in the last place off 1/7.
    const vectors = Array.from({ length: 35 }, (_, i) => [1 / 7, i]);
    const scaling = standardisation(vectors);
    expect(vectors.reduce((sum, v) => sum + v[0], 0) / 35).not.toBe(1 / 7);
    expect(scaling.stds[0]).toBe(1);
    expect(standardise([1 / 7, 0], scaling)[0]).toBe(0);
    expect(standardise([2 / 7, 0], scaling)[0]).toBeCloseTo(1 / 7, 12);
    expect(scaling.stds[1]).toBeCloseTo(Math.sqrt((35 * 35 - 1) / 12), 9);
  });

  it("names a centroid by its features, the one that stands out most first, keeping the previous name while it still holds", () => {
    const features = ["p_exit", "visit_frequency", "recent_interest"];
    expect(describedNames([0.4, -1.5, 0], features, undefined)).toEqual(["low_visit_frequency", "high_p_exit"]);
    expect(describedNames([0.4, -1.5, 0], features, "high_p_exit")).toEqual(["high_p_exit", "low_visit_frequency"]);
    // A previous name that would now say the opposite is not kept.
    expect(describedNames([-0.4, -1.5, 0], features, "high_p_exit")).toEqual(["low_visit_frequency", "low_p_exit"]);
    expect(describedNames([0, 0, 0], features, undefined)).toEqual([]);
  });

  it("gives two clusters that stand out on the same feature different names: the larger takes it, the other its next", () => {
    const features = ["visit_frequency", "recent_interest"];
    const candidates = [describedNames([2, 0.5], features, undefined), describedNames([1.5, -0.2], features, undefined)];
    expect(nameClusters(candidates, [10, 20], ["", ""])).toEqual(["high_recent_interest", "high_visit_frequency"]);
  });

  it("gives a contested name to the cluster that had it, then to the larger, the loser trying its next rule", () => {
    expect(nameClusters([["a", "b"], ["a"]], [10, 5], ["", ""])).toEqual(["a", "cluster_1"]);
    expect(nameClusters([["a", "b"], ["a"]], [10, 5], ["", "a"])).toEqual(["b", "a"]);
    expect(nameClusters([["a", "b"], ["a"], []], [1, 5, 9], ["", "", ""])).toEqual(["b", "a", "cluster_2"]);
  });
});

/**
 * Runs `elements` with checkpoints after `firstCut` and `secondCut` elements (the same operator in
 * between), then a restored operator for the rest: what changed between the two checkpoints
 * reaches the second only if it was marked changed, not only mutated in place.
 */
async function runWithTwoCheckpoints(stages: StageDefinition[], elements: Element<EventFields>[], firstCut: number, secondCut: number): Promise<BehaviourRun> {
  const definition = behaviour({ name: "test", stages });
  const dir = mkdtempSync(join(tmpdir(), "flusso-clusters-"));
  const outputs: Emitted[] = [];
  const counts: Record<string, number> = {};
  const count = (counter: string, by: number) => (counts[counter] = (counts[counter] ?? 0) + by);
  const feed = async (logic: OperatorLogic<EventFields, BehaviourOutput>, part: Element<EventFields>[]) => {
    for (const e of await lastValueFrom(from(part).pipe(operate(logic, () => {}), toArray()), { defaultValue: [] })) {
      if (e.kind === "record") outputs.push({ kind: e.value.kind, key: e.key, time: e.time, body: e.value.body as Record<string, unknown> });
    }
  };
  const meta = (checkpointId: number) => ({ shape: "t", sourcePosition: 0, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 });
  const first = new StateStore(dir);
  const logic = definition.build(storeOperatorContext(first, definition.name, () => {}, count));
  await feed(logic, elements.slice(0, firstCut));
  await first.commit(meta(1));
  await feed(logic, elements.slice(firstCut, secondCut));
  await first.commit(meta(2));
  await first.close();
  const second = new StateStore(dir);
  const lastWatermark = elements.slice(0, secondCut).filter((e) => e.kind === "watermark").at(-1);
  await feed(definition.build(storeOperatorContext(second, definition.name, () => {}, count)), [...(lastWatermark ? [lastWatermark] : []), ...elements.slice(secondCut)]);
  await second.close();
  return { outputs, counts, byKind: (kind) => outputs.filter((o) => o.kind === kind) };
}
