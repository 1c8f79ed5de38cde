// Quantiles across users: a t-digest per metric of every user's latest value, rebuilt once per period
// of event time, checkpointed, read by `quantile("metric", q)` in expressions and optionally reported.
import type { SharedLookups, StageDefinition, StageLogic, StageOutput, UserView } from "./stage.ts";

export type QuantilesOptions = {
  /** Names the stage's state. Default "quantiles". */
  name?: string;
  /** View variables (numbers) whose distribution over users is kept. */
  metrics: string[];
  /** The t-digest's compression: a digest keeps at most about this many centroids (half when built from values). Default 100. */
  compression?: number;
  /** The digests are rebuilt from users' latest values at every multiple of this, when any changed. Default 1 h. */
  everyMs?: number;
  /** Emit a "quantiles" record per metric at each rebuild. Default false. */
  report?: boolean;
  /** Where `quantile(metric, q)` is published for other stages' expressions. Default: not published. */
  shared?: SharedLookups;
};

/** The "quantiles" output, one per metric at each rebuild. */
export type QuantilesReport = {
  output: "quantiles";
  time: number;
  metric: string;
  count: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
};

/** A t-digest: centroids sorted by mean with their weights, and the exact extremes. */
export type Digest = { means: number[]; weights: number[]; count: number; min: number; max: number };

/** What is kept across users, under one key. */
type DigestsState = {
  /** Per metric, the digest of the last rebuild (null: no user had a value). */
  digests: Array<Digest | null>;
  /** Set when a user's value changed since the last rebuild: the boundary the next rebuild is due at. */
  dueAtMs: number | null;
  /** The latest watermark: a rebuild is never due at or before it (it would be missed, or made twice). */
  watermarkMs: number | null;
};

const ALL_USERS = "*";
const HOUR_MS = 3_600_000;

export function quantiles(options: QuantilesOptions): StageDefinition {
  const name = options.name ?? "quantiles";
  return {
    name,
    build: (ctx) => {
      const logic = new QuantilesLogic(options, ctx.valueState<Array<number | null>>("values"), ctx.valueState<DigestsState>("digests"));
      if (options.shared) options.shared.quantile = (metric, q) => logic.quantile(metric, q);
      return logic;
    },
  };
}

type ValueState<V> = {
  readonly size: number;
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  touch(key: string): void;
  keys(): IterableIterator<string>;
};

class QuantilesLogic implements StageLogic {
  private readonly metrics: string[];
  private readonly metricIndex: Map<string, number>;
  private readonly compression: number;
  private readonly everyMs: number;
  private readonly state: DigestsState;
  /** Per metric, the digest's cumulative centre positions for quick lookups; derived from the state. */
  private lookups: Array<DigestLookup | null>;

  constructor(
    private readonly options: QuantilesOptions,
    /** Each user's latest value per metric (null: none yet). */
    private readonly values: ValueState<Array<number | null>>,
    private readonly digests: ValueState<DigestsState>,
  ) {
    this.metrics = options.metrics;
    this.metricIndex = new Map(options.metrics.map((m, i) => [m, i]));
    this.compression = options.compression ?? 100;
    this.everyMs = options.everyMs ?? HOUR_MS;
    let state = digests.get(ALL_USERS);
    if (state === undefined) {
      state = { digests: options.metrics.map(() => null), dueAtMs: null, watermarkMs: null };
      digests.set(ALL_USERS, state);
    }
    this.state = state;
    this.lookups = state.digests.map((d) => (d === null ? null : lookupOf(d)));
  }

  /** Records the user's values that changed; marks a rebuild due at the next period boundary. */
  step(view: UserView): void {
    let latest = this.values.get(view.user);
    let isChanged = false;
    for (let i = 0; i < this.metrics.length; i++) {
      const value = view.vars[this.metrics[i]];
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      if (latest === undefined) {
        latest = new Array<number | null>(this.metrics.length).fill(null);
        this.values.set(view.user, latest);
      } else if (latest[i] === value) continue;
      latest[i] = value;
      isChanged = true;
    }
    if (!isChanged) return;
    this.values.touch(view.user);
    if (this.state.dueAtMs === null) this.markDue(view.timeMs);
  }

  /**
   * The first boundary after the change, unless the watermark has passed it: then the next one
   * after the watermark (a late change goes into the next rebuild, never into one already made).
   */
  private markDue(timeMs: number): void {
    const s = this.state;
    const afterWatermarkMs = s.watermarkMs === null ? -Infinity : this.nextBoundary(s.watermarkMs);
    s.dueAtMs = Math.max(this.nextBoundary(timeMs), afterWatermarkMs);
    this.digests.touch(ALL_USERS);
  }

  private nextBoundary(timeMs: number): number {
    return Math.floor(timeMs / this.everyMs) * this.everyMs + this.everyMs;
  }

  /**
   * Rebuilds once when the watermark has passed the due boundary, however far it jumped: the
   * digests then describe users' latest values, labelled with that boundary.
   */
  onWatermark(watermarkMs: number, out: StageOutput): void {
    const s = this.state;
    s.watermarkMs = watermarkMs;
    this.digests.touch(ALL_USERS);
    if (s.dueAtMs === null || watermarkMs < s.dueAtMs) return;
    const timeMs = s.dueAtMs;
    s.digests = this.metrics.map((_, i) => this.rebuild(i));
    this.lookups = s.digests.map((d) => (d === null ? null : lookupOf(d)));
    s.dueAtMs = null;
    if (this.options.report) this.report(timeMs, out);
  }

  private rebuild(metric: number): Digest | null {
    const values = new Float64Array(this.values.size);
    let n = 0;
    for (const user of this.values.keys()) {
      const value = this.values.get(user)?.[metric];
      if (value !== null && value !== undefined) values[n++] = value;
    }
    return n === 0 ? null : digestOf(values.subarray(0, n), this.compression);
  }

  private report(timeMs: number, out: StageOutput): void {
    for (let i = 0; i < this.metrics.length; i++) {
      const digest = this.state.digests[i];
      if (digest === null) continue;
      const q = (p: number) => quantileOf(digest, p)!;
      const body: QuantilesReport = { output: "quantiles", time: timeMs, metric: this.metrics[i], count: digest.count, p50: q(0.5), p90: q(0.9), p99: q(0.99), min: digest.min, max: digest.max };
      out.emit("quantiles", this.metrics[i], timeMs, body);
    }
  }

  /** The value below which a share `q` of users' latest values lie, as of the last rebuild. */
  quantile(metric: string, q: number): number | undefined {
    const i = this.metricIndex.get(metric);
    const lookup = i === undefined ? null : this.lookups[i];
    return lookup === null ? undefined : quantileAt(lookup, q);
  }
}

// ---- the t-digest (Dunning's merging digest with the k1 scale function) ----
// Written here rather than taken from the `tdigest` package: that one compresses by reinserting
// centroids in Math.random() order, so the same input could give different quantiles from run to
// run and after a restart; this one is deterministic and builds from sorted values in one pass.

/** The digest of `values` (sorted in place). */
export function digestOf(values: Float64Array, compression: number): Digest {
  values.sort();
  return compress(values, undefined, values.length, compression);
}

/** One digest of the values of both: centroids merged by mean and compressed again. */
export function mergeDigests(a: Digest | null, b: Digest | null, compression: number): Digest | null {
  if (a === null || a.count === 0) return b;
  if (b === null || b.count === 0) return a;
  const n = a.means.length + b.means.length;
  const means = new Float64Array(n);
  const weights = new Float64Array(n);
  let i = 0;
  let j = 0;
  for (let k = 0; k < n; k++) {
    const takeA = j >= b.means.length || (i < a.means.length && a.means[i] <= b.means[j]);
    means[k] = takeA ? a.means[i] : b.means[j];
    weights[k] = takeA ? a.weights[i++] : b.weights[j++];
  }
  const merged = compress(means, weights, n, compression);
  merged.min = Math.min(a.min, b.min);
  merged.max = Math.max(a.max, b.max);
  return merged;
}

/**
 * Merges centroids sorted by mean into as few as the k1 scale allows: a centroid may span one
 * unit of k(q) = compression / 2pi * asin(2q - 1), so those near the tails stay small.
 */
function compress(means: ArrayLike<number>, weights: ArrayLike<number> | undefined, n: number, compression: number): Digest {
  let total = 0;
  for (let i = 0; i < n; i++) total += weights === undefined ? 1 : weights[i];
  const outMeans: number[] = [];
  const outWeights: number[] = [];
  let mean = means[0];
  let weight = weights === undefined ? 1 : weights[0];
  let before = 0;
  let qLimit = qAfterOneUnit(0, compression);
  for (let i = 1; i < n; i++) {
    const w = weights === undefined ? 1 : weights[i];
    if ((before + weight + w) / total <= qLimit) {
      weight += w;
      // Incremental mean: equal values stay exactly equal.
      mean += ((means[i] - mean) * w) / weight;
      continue;
    }
    outMeans.push(mean);
    outWeights.push(weight);
    before += weight;
    qLimit = qAfterOneUnit(before / total, compression);
    mean = means[i];
    weight = w;
  }
  outMeans.push(mean);
  outWeights.push(weight);
  return { means: outMeans, weights: outWeights, count: total, min: means[0], max: means[n - 1] };
}

/** The q one unit of the k1 scale after `q`. */
function qAfterOneUnit(q: number, compression: number): number {
  const k = (compression / (2 * Math.PI)) * Math.asin(2 * q - 1) + 1;
  if (k >= compression / 4) return 1;
  return (Math.sin((k * 2 * Math.PI) / compression) + 1) / 2;
}

/** A digest as points (position in the sorted values, value) to interpolate between. */
type DigestLookup = { positions: Float64Array; values: Float64Array; count: number };

/** Each centroid sits at the middle of its weight; the extremes at 0 and `count`. */
function lookupOf(d: Digest): DigestLookup {
  const n = d.means.length;
  const positions = new Float64Array(n + 2);
  const values = new Float64Array(n + 2);
  values[0] = d.min;
  let before = 0;
  for (let i = 0; i < n; i++) {
    positions[i + 1] = before + d.weights[i] / 2;
    values[i + 1] = d.means[i];
    before += d.weights[i];
  }
  positions[n + 1] = d.count;
  values[n + 1] = d.max;
  return { positions, values, count: d.count };
}

/** The value at quantile `q` (0..1) of a digest; undefined for an empty one. */
export function quantileOf(d: Digest, q: number): number | undefined {
  return d.count === 0 ? undefined : quantileAt(lookupOf(d), q);
}

function quantileAt(lookup: DigestLookup, q: number): number | undefined {
  if (!(q >= 0 && q <= 1)) return undefined;
  const { positions, values } = lookup;
  const at = q * lookup.count;
  // The last point at or before `at`, by binary search.
  let lo = 0;
  let hi = positions.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (positions[mid] <= at) lo = mid;
    else hi = mid - 1;
  }
  if (lo === positions.length - 1) return values[lo];
  const span = positions[lo + 1] - positions[lo];
  return span === 0 ? values[lo] : values[lo] + ((at - positions[lo]) / span) * (values[lo + 1] - values[lo]);
}
