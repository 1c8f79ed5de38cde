// A deterministic t-digest (Dunning's merging digest with the k1 scale function): built from sorted
// values in one pass, mergeable, and read by interpolation. Written here rather than taken from the
// `tdigest` package: that one compresses by reinserting centroids in Math.random() order, so the same
// input could give different quantiles from run to run and after a restart.

/** A t-digest: centroids sorted by mean with their weights, and the exact extremes. */
export type Digest = { means: number[]; weights: number[]; count: number; min: number; max: number };

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
export type DigestLookup = { positions: Float64Array; values: Float64Array; count: number };

/** Each centroid sits at the middle of its weight; the extremes at 0 and `count`. */
export function lookupOf(d: Digest): DigestLookup {
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

export function quantileAt(lookup: DigestLookup, q: number): number | undefined {
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
