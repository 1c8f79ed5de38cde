import { describe, expect, it } from "vitest";
import { END_OF_TIME } from "../../engine/elements.ts";
import { digestOf, mergeDigests, quantileOf, type Digest } from "../../operators/tdigest.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { ev, HOUR_MS, MINUTE_MS, runStages, stagesFromYaml, T0, wm, expectRestartsChangeNothing, outputTime } from "../behaviourHarness.ts";
import { mulberry32 } from "../harness.ts";

/** Users' depth (the event's session length) with its distribution kept, and a KBI reading it. */
const PIPELINE = `
features:
  depth: 'session_duration_sec'
kbis:
  top: { rules: [ { label: top, when: 'depth > quantile("depth", 0.9)' } ], default: rest }
quantiles: { metrics: [depth], report: 1h }
`;

const visit = (user: string, timeMs: number, seconds: number) => ev(user, timeMs, { event_type: "page_view", page: "/", session_duration_sec: seconds });

/** Users u1..u10 with depths 1..10, a minute apart from `fromMs`. */
const tenUsers = (fromMs: number) => Array.from({ length: 10 }, (_, i) => visit(`u${i + 1}`, fromMs + i * MINUTE_MS, i + 1));

const digestOfList = (values: number[], compression = 100) => digestOf(Float64Array.from(values), compression);

/** The share of `sorted` values below `x`, to judge an estimate by its rank. */
function rankOf(sorted: number[], x: number): number {
  let below = 0;
  while (below < sorted.length && sorted[below] < x) below++;
  return below / sorted.length;
}

function randomValues(seed: number, n: number): number[] {
  const random = mulberry32(seed);
  // Skewed like scores: most users low, a long tail.
  return Array.from({ length: n }, () => -Math.log(1 - random()) * 20);
}

describe("t-digest", () => {
  it("is exact for fewer values than its compression: the midpoint rule between sorted values", () => {
    const digest = digestOfList([7, 3, 10, 1, 5, 2, 9, 4, 8, 6]);
    expect(digest.count).toBe(10);
    expect(digest.means).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect([0, 0.05, 0.5, 0.9, 0.99, 1].map((q) => quantileOf(digest, q))).toEqual([1, 1, 5.5, 9.5, 10, 10]);
    expect(quantileOf(digestOfList([42]), 0.3)).toBe(42);
  });

  it("keeps about compression / 2 centroids and every quantile within 1% of rank on 20,000 skewed values", () => {
    const values = randomValues(7, 20_000);
    const digest = digestOfList(values);
    const sorted = [...values].sort((a, b) => a - b);
    expect(digest.means.length).toBeLessThanOrEqual(60);
    expect(digest.count).toBe(20_000);
    expect([digest.min, digest.max]).toEqual([sorted[0], sorted[sorted.length - 1]]);
    for (const q of [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]) {
      expect(Math.abs(rankOf(sorted, quantileOf(digest, q)!) - q), `q=${q}`).toBeLessThan(q > 0.98 ? 0.001 : 0.01);
    }
  });

  it("gives each centroid the mean and count of the run of sorted values it covers", () => {
    const digest = digestOfList(Array.from({ length: 1000 }, (_, i) => 1000 - i), 10);
    expect(digest.means.length).toBeLessThan(10);
    let before = 0;
    for (const [i, weight] of digest.weights.entries()) {
      // Values before+1 .. before+weight: their mean is the middle of the run.
      expect(digest.means[i]).toBeCloseTo(before + (weight + 1) / 2, 9);
      before += weight;
    }
    expect(before).toBe(1000);
  });

  it("merges two digests into one as accurate as the digest of all their values", () => {
    const a = randomValues(1, 10_000);
    const b = randomValues(2, 5_000).map((x) => x + 30);
    const merged = mergeDigests(digestOfList(a), digestOfList(b), 100)!;
    const sorted = [...a, ...b].sort((x, y) => x - y);
    expect(merged.count).toBe(15_000);
    expect([merged.min, merged.max]).toEqual([sorted[0], sorted[sorted.length - 1]]);
    expect(merged.means.length).toBeLessThanOrEqual(100);
    for (const q of [0.1, 0.5, 0.9, 0.99]) {
      expect(Math.abs(rankOf(sorted, quantileOf(merged, q)!) - q), `q=${q}`).toBeLessThan(0.01);
    }
    expect(mergeDigests(digestOfList([1, 2, 3, 4, 5]), digestOfList([6, 7, 8, 9, 10]), 100)).toEqual(digestOfList([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
  });

  it("merging with an empty digest gives the other", () => {
    const d: Digest = digestOfList([1, 2, 3]);
    expect(mergeDigests(d, null, 100)).toBe(d);
    expect(mergeDigests(null, d, 100)).toBe(d);
  });

  it("gives the same digest for the same values, whatever their order", () => {
    const values = randomValues(3, 5_000);
    expect(digestOfList([...values].reverse())).toEqual(digestOfList(values));
  });
});

describe("quantiles stage", () => {
  it("reports users' latest values at the period boundary and serves quantile() to expressions from then on", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const run = await runStages(stages, [
      ...tenUsers(T0),
      wm(T0 + HOUR_MS),
      visit("u10", T0 + HOUR_MS + 1, 10),
      visit("u5", T0 + HOUR_MS + 2, 5),
    ]);
    expect(run.byKind("quantiles").map((o) => [o.key, o.body])).toEqual([
      ["depth", { output: "quantiles", ...outputTime(T0 + HOUR_MS), metric: "depth", count: 10, p50: 5.5, p90: 9.5, p99: 10, min: 1, max: 10 }],
    ]);
    // Before the rebuild quantile() has no value, so nobody is "top"; after it, 10 > 9.5.
    const labels = run.byKind("kbi").map((o) => [o.key, o.time, o.body.label]);
    expect(labels.filter(([user]) => user === "u10")).toEqual([
      ["u10", T0 + 9 * MINUTE_MS, "rest"],
      ["u10", T0 + HOUR_MS + 1, "top"],
    ]);
    expect(labels.filter(([user]) => user === "u5")).toEqual([["u5", T0 + 4 * MINUTE_MS, "rest"]]);
  });

  it("describes each user's latest value: a changed value replaces the old one", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const run = await runStages(stages, [visit("u1", T0, 1), visit("u2", T0 + 1, 50), visit("u1", T0 + 2, 100), wm(T0 + HOUR_MS)]);
    expect(run.byKind("quantiles").map((o) => [o.body.count, o.body.min, o.body.max])).toEqual([[2, 50, 100]]);
  });

  it("rebuilds once however far the watermark jumps, and skips periods in which no value changed", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const run = await runStages(stages, [
      ...tenUsers(T0 + 10 * MINUTE_MS),
      wm(T0 + 3 * HOUR_MS + 30 * MINUTE_MS),
      visit("u1", T0 + 4 * HOUR_MS, 1), // unchanged: no rebuild due
      wm(T0 + 6 * HOUR_MS),
      visit("u1", T0 + 6 * HOUR_MS + 5, 20),
      wm(END_OF_TIME),
    ]);
    expect(run.byKind("quantiles").map((o) => [o.time, o.body.count, o.body.max])).toEqual([
      [T0 + HOUR_MS, 10, 10],
      [T0 + 7 * HOUR_MS, 10, 20],
    ]);
  });

  it("rebuilds at the first boundary after the first change, whatever changes after it", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const run = await runStages(stages, [
      visit("u1", T0 + 10 * MINUTE_MS, 1),
      visit("u2", T0 + HOUR_MS + 5 * MINUTE_MS, 2), // ahead of the watermark: does not put the rebuild off
      wm(T0 + HOUR_MS + MINUTE_MS),
    ]);
    expect(run.byKind("quantiles").map((o) => [o.time, o.body.count])).toEqual([[T0 + HOUR_MS, 2]]);
  });

  it("puts a change behind the watermark into the next rebuild, never one already made", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const run = await runStages(stages, [
      visit("u1", T0, 1),
      wm(T0 + HOUR_MS),
      wm(T0 + 2 * HOUR_MS + 30 * MINUTE_MS),
      visit("u2", T0 + 10 * MINUTE_MS, 5), // late: its own period was rebuilt long ago
      wm(T0 + 2 * HOUR_MS + 40 * MINUTE_MS),
      wm(T0 + 3 * HOUR_MS),
    ]);
    expect(run.byKind("quantiles").map((o) => [o.time, o.body.count])).toEqual([
      [T0 + HOUR_MS, 1],
      [T0 + 3 * HOUR_MS, 2],
    ]);
  });

  it("keeps a digest per metric, and reports none for a metric no user has a value of", async () => {
    const stages = stagesFromYaml(`
features: { depth: 'session_duration_sec', scroll: 'scroll_depth', spent: 'order_value' }
quantiles: { metrics: [depth, scroll, spent], every: 30m, report: true }
`);
    const run = await runStages(stages, [
      ev("u1", T0, { session_duration_sec: 10, scroll_depth: 0.5 }),
      ev("u2", T0, { session_duration_sec: 30 }),
      wm(T0 + HOUR_MS),
    ]);
    expect(run.byKind("quantiles").map((o) => o.body)).toEqual([
      { output: "quantiles", ...outputTime(T0 + 30 * MINUTE_MS), metric: "depth", count: 2, p50: 20, p90: 30, p99: 30, min: 10, max: 30 },
      { output: "quantiles", ...outputTime(T0 + 30 * MINUTE_MS), metric: "scroll", count: 1, p50: 0.5, p90: 0.5, p99: 0.5, min: 0.5, max: 0.5 },
    ]);
  });

  it("reports quantiles to outputs.digits significant digits", async () => {
    const stages = stagesFromYaml(`
features: { depth: 'session_duration_sec / 3.0' }
quantiles: { metrics: [depth], every: 30m, report: true }
outputs: { digits: 3 }
`);
    const run = await runStages(stages, [ev("u1", T0, { session_duration_sec: 10 }), ev("u2", T0, { session_duration_sec: 20 }), wm(T0 + HOUR_MS)]);
    // 10/3 and 20/3: the median 5, min 3.33, max 6.67.
    expect(run.byKind("quantiles").map((o) => o.body)).toEqual([
      { output: "quantiles", ...outputTime(T0 + 30 * MINUTE_MS), metric: "depth", count: 2, p50: 5, p90: 6.67, p99: 6.67, min: 3.33, max: 6.67 },
    ]);
  });

  it("emits nothing without report, while quantile() still works", async () => {
    const stages = stagesFromYaml(PIPELINE.replace("report: 1h", "every: 1h"));
    const run = await runStages(stages, [...tenUsers(T0), wm(T0 + HOUR_MS), visit("u10", T0 + HOUR_MS + 1, 10)]);
    expect(run.byKind("quantiles")).toEqual([]);
    expect(run.byKind("kbi").at(-1)!.body.label).toBe("top");
  });

  it("gives the same outputs with a restart at any point, quantile() included", async () => {
    const stages = stagesFromYaml(PIPELINE);
    const elements = [
      ...tenUsers(T0).slice(0, 5),
      wm(T0 + 5 * MINUTE_MS),
      ...tenUsers(T0).slice(5),
      wm(T0 + HOUR_MS),
      visit("u10", T0 + HOUR_MS + 1, 10),
      visit("u3", T0 + 50 * MINUTE_MS, 30), // late, into the next rebuild
      visit("u4", T0 + HOUR_MS + 20, 9.9),
      wm(T0 + 2 * HOUR_MS),
      visit("u4", T0 + 2 * HOUR_MS + 1, 9.9),
      visit("u3", T0 + 2 * HOUR_MS + 2, 30),
      wm(END_OF_TIME),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.byKind("quantiles").map((o) => [o.time, o.body.p90])).toEqual([
      [T0 + HOUR_MS, 9.5],
      [T0 + 2 * HOUR_MS, 20],
    ]);
    expect(whole.byKind("kbi").filter((o) => o.body.previous !== null).map((o) => [o.key, o.body.label])).toEqual([["u10", "top"], ["u3", "top"], ["u4", "top"], ["u4", "rest"]]);
    await expectRestartsChangeNothing(stages, elements, whole.outputs);
  });

  it("refuses an unknown field, and a metric that is not a number declared above, at its path", () => {
    expect(() => stagesFromYaml(`quantiles: { metrics: [session_duration_sec], period: 1h }`)).toThrow(/quantiles\.period: unknown field/);
    expect(() => stagesFromYaml(`quantiles: { metrics: [lead_score] }`)).toThrow(/quantiles\.metrics\[0\]: CEL type error/);
    expect(() => stagesFromYaml(`quantiles: { metrics: [page] }`)).toThrow(/quantiles\.metrics\[0\]: "page" is of type string, expected double/);
    expect(() => stagesFromYaml(`quantiles: { metrics: ['depth * 2.0'] }`)).toThrow(/quantiles\.metrics\[0\]: expected the name of a value declared above/);
    expect(() => stagesFromYaml(`quantiles: { metrics: [] }`)).toThrow(/quantiles\.metrics: expected at least one entry/);
  });

  it("refuses quantile() of a metric the section does not list, at the expression's path", () => {
    const yaml = PIPELINE.replace("metrics: [depth]", "metrics: [session_duration_sec]");
    expect(() => stagesFromYaml(yaml)).toThrow(/kbis\.top\.rules\[0\]\.when: quantile\("depth", \.\.\.\) needs "depth" among quantiles\.metrics \(session_duration_sec\)/);
  });

  it("refuses a report period that differs from the rebuild period", () => {
    expect(() => stagesFromYaml(`quantiles: { metrics: [session_duration_sec], every: 30m, report: 1h }`)).toThrow(/quantiles\.report: reports come with each rebuild/);
    expect(() => stagesFromYaml(`quantiles: { metrics: [session_duration_sec], every: 1h, report: 1h }`)).not.toThrow();
  });

  it("reports every bad value, not only the first", () => {
    let error: unknown;
    try {
      stagesFromYaml(`quantiles: { metrics: [nope, page], compression: 1, report: often }`);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PipelineInvalid);
    expect((error as PipelineInvalid).errors.map((e) => e.path)).toEqual(["quantiles.metrics[0]", "quantiles.metrics[1]", "quantiles.compression", "quantiles.report"]);
  });
});
