// The statistics of an experiment's report: Pearson's chi-squared over the arms' conversions, Welch's
// t-test on revenue per exposed user, Wilson intervals for rates, and the minimum detectable effect.
// The distributions come from @stdlib (chi-squared and Student's t CDFs, the normal quantile).
import chisquareCdf from "@stdlib/stats-base-dists-chisquare-cdf";
import normalQuantile from "@stdlib/stats-base-dists-normal-quantile";
import tCdf from "@stdlib/stats-base-dists-t-cdf";

/** One arm's sums: users whose attribution window has closed, those who converted, and their revenue. */
export type ArmSums = { exposed: number; converted: number; revenueSum: number; revenueSumOfSquares: number };

/** Significance level of the intervals and of the minimum detectable effect: two-sided 5%. */
export const ALPHA = 0.05;
/** Power of the minimum detectable effect. */
export const POWER = 0.8;
/** Below this expected count in a cell, the chi-squared p-value is not to be trusted. */
export const MIN_EXPECTED_COUNT = 5;

export type ChiSquared = {
  statistic: number;
  degrees_of_freedom: number;
  p_value: number;
  /** Some cell's expected count is below 5: the p-value is not to be trusted. */
  low_expected_counts: boolean;
};

/**
 * Pearson's chi-squared test of independence on the 2 x k table (converted, not converted) x arms,
 * without continuity correction. Undefined when it cannot be computed: fewer than two arms with
 * users, or nobody (or everybody) converted.
 */
export function chiSquared(arms: readonly ArmSums[]): ChiSquared | undefined {
  const used = arms.filter((a) => a.exposed > 0);
  const total = used.reduce((s, a) => s + a.exposed, 0);
  const converted = used.reduce((s, a) => s + a.converted, 0);
  if (used.length < 2 || converted === 0 || converted === total) return undefined;
  let statistic = 0;
  let isLow = false;
  for (const arm of used) {
    for (const [observed, rowTotal] of [
      [arm.converted, converted],
      [arm.exposed - arm.converted, total - converted],
    ]) {
      const expected = (rowTotal * arm.exposed) / total;
      if (expected < MIN_EXPECTED_COUNT) isLow = true;
      statistic += (observed - expected) ** 2 / expected;
    }
  }
  const df = used.length - 1;
  return { statistic, degrees_of_freedom: df, p_value: upperTail(1 - chisquareCdf(statistic, df)), low_expected_counts: isLow };
}

export type WelchT = { statistic: number; degrees_of_freedom: number; p_value: number };

/** The mean and the sample variance (n - 1) of an arm's revenue per exposed user; undefined below two users. */
export function revenueMoments(arm: ArmSums): { mean: number; variance: number } | undefined {
  if (arm.exposed < 2) return undefined;
  const mean = arm.revenueSum / arm.exposed;
  // Clamped: rounding can take a constant sample a hair below zero.
  const variance = Math.max(0, (arm.revenueSumOfSquares - arm.exposed * mean * mean) / (arm.exposed - 1));
  return { mean, variance };
}

/**
 * Welch's t-test of `variant` against `holdout` on revenue per exposed user (0 for those who did not
 * convert), two-sided. Undefined below two users in either arm, or with no variance in both.
 */
export function welchT(variant: ArmSums, holdout: ArmSums): WelchT | undefined {
  const a = revenueMoments(variant);
  const b = revenueMoments(holdout);
  if (a === undefined || b === undefined) return undefined;
  const seA = a.variance / variant.exposed;
  const seB = b.variance / holdout.exposed;
  if (seA + seB === 0) return undefined;
  const statistic = (a.mean - b.mean) / Math.sqrt(seA + seB);
  const df = (seA + seB) ** 2 / (seA ** 2 / (variant.exposed - 1) + seB ** 2 / (holdout.exposed - 1));
  return { statistic, degrees_of_freedom: df, p_value: upperTail(2 * (1 - tCdf(Math.abs(statistic), df))) };
}

/** The Wilson score interval of a rate at 1 - ALPHA; undefined with no users. */
export function wilsonInterval(successes: number, n: number): [number, number] | undefined {
  if (n === 0) return undefined;
  const z = normalQuantile(1 - ALPHA / 2, 0, 1);
  const p = successes / n;
  const denominator = 1 + (z * z) / n;
  const centre = (p + (z * z) / (2 * n)) / denominator;
  const half = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / denominator;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/**
 * The smallest difference of conversion rates (absolute, variant minus holdout) a two-sided test at
 * ALPHA would detect with POWER at these sample sizes, around the holdout's rate (the pooled rate
 * while the holdout has none converted). Undefined without users in both, or at a rate of 0 or 1.
 */
export function minimumDetectableEffect(variant: ArmSums, holdout: ArmSums): number | undefined {
  if (variant.exposed === 0 || holdout.exposed === 0) return undefined;
  const pooled = (variant.converted + holdout.converted) / (variant.exposed + holdout.exposed);
  const base = holdout.converted > 0 ? holdout.converted / holdout.exposed : pooled;
  if (base <= 0 || base >= 1) return undefined;
  const z = normalQuantile(1 - ALPHA / 2, 0, 1) + normalQuantile(POWER, 0, 1);
  return z * Math.sqrt(base * (1 - base) * (1 / variant.exposed + 1 / holdout.exposed));
}

/** A p-value from 1 - CDF: within [0, 1] whatever the rounding. */
function upperTail(p: number): number {
  return Math.min(1, Math.max(0, p));
}
