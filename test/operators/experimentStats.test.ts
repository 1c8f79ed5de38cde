// The statistics of experiment reports against reference values computed with scipy 1.17.1
// (scipy.stats.chi2_contingency(table, correction=False); scipy.stats.ttest_ind(a, b, equal_var=False)),
// the figures written here as literals.
import { describe, expect, it } from "vitest";
import { chiSquared, minimumDetectableEffect, revenueMoments, welchT, wilsonInterval, type ArmSums } from "../../operators/experimentStats.ts";

const arm = (exposed: number, converted: number, revenueSum = 0, revenueSumOfSquares = 0): ArmSums => ({ exposed, converted, revenueSum, revenueSumOfSquares });

describe("chi-squared over the arms' conversions", () => {
  it("matches scipy on a 2 x 3 table (no continuity correction)", () => {
    // chi2_contingency([[20, 60, 70], [180, 340, 310]], correction=False)
    const result = chiSquared([arm(200, 20), arm(400, 60), arm(380, 70)])!;
    expect(result.statistic).toBeCloseTo(7.216909744240118, 9);
    expect(result.p_value).toBeCloseTo(0.02709367773784808, 9);
    expect(result.degrees_of_freedom).toBe(2);
    expect(result.low_expected_counts).toBe(false);
  });

  it("flags an expected count below 5, and still gives scipy's figures", () => {
    // chi2_contingency([[2, 6], [28, 29]], correction=False): the smallest expected count is 3.69
    const result = chiSquared([arm(30, 2), arm(35, 6)])!;
    expect(result.statistic).toBeCloseTo(1.6426482873851302, 9);
    expect(result.p_value).toBeCloseTo(0.19996249949851333, 9);
    expect(result.low_expected_counts).toBe(true);
  });

  it("is undefined when nobody or everybody converted, or with one arm", () => {
    expect(chiSquared([arm(10, 0), arm(10, 0)])).toBeUndefined();
    expect(chiSquared([arm(10, 10), arm(5, 5)])).toBeUndefined();
    expect(chiSquared([arm(10, 3), arm(0, 0)])).toBeUndefined();
  });
});

describe("Welch's t-test on revenue per exposed user", () => {
  // a: 40 zeros and 20.5, 33, 12.25, 48, 19.99, 25, 60, 15.5; b: 45 zeros and 18, 22.5, 30
  const a = arm(48, 8, 234.24, 8828.1626);
  const b = arm(48, 3, 70.5, 1730.25);

  it("matches scipy.stats.ttest_ind(a, b, equal_var=False)", () => {
    const result = welchT(a, b)!;
    expect(result.statistic).toBeCloseTo(1.6790625323381383, 9);
    expect(result.p_value).toBeCloseTo(0.09786546649402633, 9);
    expect(result.degrees_of_freedom).toBeCloseTo(66.04378411942857, 9);
  });

  it("gives the arms' mean and sample variance", () => {
    expect(revenueMoments(a)!.mean).toBeCloseTo(4.88, 12);
    expect(revenueMoments(a)!.variance).toBeCloseTo(163.51215744680852, 9);
    expect(revenueMoments(b)!.variance).toBeCloseTo(34.61070478723404, 9);
  });

  it("is undefined below two users, or with no variance in either arm", () => {
    expect(welchT(arm(1, 1, 5, 25), b)).toBeUndefined();
    expect(welchT(arm(10, 0), arm(10, 0))).toBeUndefined();
  });
});

describe("rates' intervals and the minimum detectable effect", () => {
  it("gives the Wilson interval (the score formula in Python with scipy.stats.norm.ppf(0.975))", () => {
    const [low, high] = wilsonInterval(10, 100)!;
    expect(low).toBeCloseTo(0.0552291370606751, 9);
    expect(high).toBeCloseTo(0.17436566150491345, 9);
    expect(wilsonInterval(0, 0)).toBeUndefined();
  });

  it("shrinks the detectable effect as arms grow, and has none without a rate to vary", () => {
    const small = minimumDetectableEffect(arm(100, 10), arm(100, 10))!;
    const large = minimumDetectableEffect(arm(10_000, 1_000), arm(10_000, 1_000))!;
    // (norm.ppf(0.975) + norm.ppf(0.8)) * sqrt(0.1 * 0.9 * (2 / 100))
    expect(small).toBeCloseTo(0.11886119434798037, 9);
    expect(large).toBeCloseTo(small / 10, 9);
    expect(minimumDetectableEffect(arm(100, 0), arm(100, 0))).toBeUndefined();
  });
});
