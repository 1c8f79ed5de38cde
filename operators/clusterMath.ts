// Arithmetic of the clusters stage: standardising feature vectors, nearest centroids, matching a
// run's centroids to the previous run's so labels survive re-runs, and naming clusters by rules
// or, failing a rule, by the feature their centroid stands out on.
import { mulberry32 } from "../engine/random.ts";

/** Per-feature mean and spread of one run's vectors: z = (x - mean) / std. */
export type Standardisation = { means: number[]; stds: number[] };

/**
 * A spread this small against the mean is rounding, not data: 35 users all at 1/7 average to a
 * mean one unit in the last place off, and would each be one "standard deviation" from it.
 */
const NO_SPREAD = 1e-9;

/**
 * Population mean and standard deviation per feature. A feature with no spread (to rounding) gets
 * std 1 (as scikit-learn does) and its value as the mean: every z of it is 0 in the run, and
 * finite for the vectors that come later.
 */
export function standardisation(vectors: ReadonlyArray<ReadonlyArray<number>>): Standardisation {
  const dims = vectors[0].length;
  const means = new Array<number>(dims).fill(0);
  const stds = new Array<number>(dims).fill(0);
  for (const v of vectors) for (let d = 0; d < dims; d++) means[d] += v[d];
  for (let d = 0; d < dims; d++) means[d] /= vectors.length;
  for (const v of vectors) {
    for (let d = 0; d < dims; d++) {
      const delta = v[d] - means[d];
      stds[d] += delta * delta;
    }
  }
  for (let d = 0; d < dims; d++) {
    const std = Math.sqrt(stds[d] / vectors.length);
    if (std > NO_SPREAD * Math.max(1, Math.abs(means[d]))) stds[d] = std;
    else {
      // The values are one: take it as the mean, so that their z is exactly 0.
      stds[d] = 1;
      means[d] = vectors[0][d];
    }
  }
  return { means, stds };
}

/** The z-scores of a raw vector. */
export function standardise(vector: ReadonlyArray<number>, s: Standardisation): number[] {
  const z = new Array<number>(vector.length);
  for (let d = 0; d < vector.length; d++) z[d] = (vector[d] - s.means[d]) / s.stds[d];
  return z;
}

/** A z-space point back in raw feature values. */
export function unstandardise(z: ReadonlyArray<number>, s: Standardisation): number[] {
  const raw = new Array<number>(z.length);
  for (let d = 0; d < z.length; d++) raw[d] = z[d] * s.stds[d] + s.means[d];
  return raw;
}

/**
 * The index of the centroid (in z-space) nearest to a raw vector, standardised on the fly so the
 * per-step path allocates nothing. Ties go to the lower index.
 */
export function nearestCentroid(vector: ArrayLike<number>, s: Standardisation, centroids: ReadonlyArray<ReadonlyArray<number>>): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let c = 0; c < centroids.length; c++) {
    const centroid = centroids[c];
    let distance = 0;
    for (let d = 0; d < centroid.length; d++) {
      const delta = (vector[d] - s.means[d]) / s.stds[d] - centroid[d];
      distance += delta * delta;
    }
    if (distance < bestDistance) {
      bestDistance = distance;
      best = c;
    }
  }
  return best;
}

/** The index of the point in `points` nearest to `z` (both in the same space); ties to the lower index. */
export function nearestPoint(z: ReadonlyArray<number>, points: ReadonlyArray<ReadonlyArray<number>>): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let p = 0; p < points.length; p++) {
    const distance = squaredDistance(z, points[p]);
    if (distance < bestDistance) {
      bestDistance = distance;
      best = p;
    }
  }
  return best;
}

export function squaredDistance(a: ReadonlyArray<number>, b: ReadonlyArray<number>): number {
  let sum = 0;
  for (let d = 0; d < a.length; d++) {
    const delta = a[d] - b[d];
    sum += delta * delta;
  }
  return sum;
}

/**
 * Whether `vectors` hold at least `k` distinct points. k-means++ picks its seeds among distinct
 * points and divides by the distance left: with fewer, it has nothing to pick and yields NaN.
 */
export function hasDistinctPoints(vectors: ReadonlyArray<ReadonlyArray<number>>, k: number): boolean {
  const distinct: Array<ReadonlyArray<number>> = [];
  for (const v of vectors) {
    if (!distinct.some((seen) => squaredDistance(seen, v) === 0)) distinct.push(v);
    if (distinct.length >= k) return true;
  }
  return false;
}

/**
 * k-means++ seeds (Arthur & Vassilvitskii), in the greedy form of scikit-learn and ml-kmeans: each
 * next seed is the best of 2 + ln k candidates drawn with probability proportional to their squared
 * distance to the nearest seed so far. The same for the same points and seed. Written here rather
 * than taken from ml-kmeans, whose version allocates a row per point per candidate: ~100 ms for 20k
 * points against ~3 ms here. Needs at least k distinct points.
 */
export function kmeansPlusPlus(points: ReadonlyArray<ReadonlyArray<number>>, k: number, seed: number): number[][] {
  const random = mulberry32(seed);
  const n = points.length;
  const trials = 2 + Math.floor(Math.log(k));
  const seeds = [points[Math.floor(random() * n)]];
  /** Squared distance of each point to its nearest seed, and their sum. */
  const nearest = new Float64Array(n);
  let potential = 0;
  for (let p = 0; p < n; p++) potential += nearest[p] = squaredDistance(points[p], seeds[0]);
  const trial = new Float64Array(n);
  const best = new Float64Array(n);
  while (seeds.length < k) {
    let bestCandidate = 0;
    let bestPotential = Infinity;
    for (let t = 0; t < trials; t++) {
      const drawn = drawByWeight(nearest, potential, random());
      const candidate = points[drawn];
      let trialPotential = 0;
      for (let p = 0; p < n; p++) trialPotential += trial[p] = Math.min(nearest[p], squaredDistance(points[p], candidate));
      if (trialPotential < bestPotential) {
        bestPotential = trialPotential;
        bestCandidate = drawn;
        best.set(trial);
      }
    }
    seeds.push(points[bestCandidate]);
    nearest.set(best);
    potential = bestPotential;
  }
  return seeds.map((s) => s.slice());
}

/** The index drawn by `u` in [0, 1) with probability proportional to `weights` (summing to `total`). */
function drawByWeight(weights: Float64Array, total: number, u: number): number {
  let rest = u * total;
  for (let i = 0; i < weights.length; i++) {
    rest -= weights[i];
    if (rest < 0) return i;
  }
  // Rounding left a crumb: the last point with any weight.
  let last = weights.length - 1;
  while (last > 0 && weights[last] === 0) last--;
  return last;
}

/**
 * The assignment of `next` centroids to the slots of `previous` ones (same count, same space) with
 * the least total squared distance: `slotOf[i]` is the slot of `next[i]`. Exact, by dynamic
 * programming over the subsets of slots taken (k^2 2^k steps: instant for k <= 16); ties go to
 * the lower slot, so the result is deterministic.
 */
export function matchCentroids(next: ReadonlyArray<ReadonlyArray<number>>, previous: ReadonlyArray<ReadonlyArray<number>>): number[] {
  const k = next.length;
  const full = 1 << k;
  // best[taken]: least cost of giving next[0 .. popcount(taken) - 1] the slots in `taken`.
  const best = new Float64Array(full).fill(Infinity);
  const lastSlot = new Int8Array(full);
  best[0] = 0;
  for (let taken = 0; taken < full; taken++) {
    if (best[taken] === Infinity) continue;
    const i = popcount(taken);
    if (i >= k) continue;
    for (let slot = 0; slot < k; slot++) {
      const bit = 1 << slot;
      if (taken & bit) continue;
      const cost = best[taken] + squaredDistance(next[i], previous[slot]);
      if (cost < best[taken | bit]) {
        best[taken | bit] = cost;
        lastSlot[taken | bit] = slot;
      }
    }
  }
  const slotOf = new Array<number>(k);
  let taken = full - 1;
  for (let i = k - 1; i >= 0; i--) {
    slotOf[i] = lastSlot[taken];
    taken &= ~(1 << slotOf[i]);
  }
  return slotOf;
}

function popcount(bits: number): number {
  let count = 0;
  for (let b = bits; b !== 0; b &= b - 1) count++;
  return count;
}

/** The name a cluster gets when neither a rule nor its centroid (describedNames) names it: `cluster_<slot>`. */
export function fallbackName(slot: number): string {
  return `cluster_${slot}`;
}

/** A name describedNames can give: rules may not take these, so a rule's name always means its rule. */
export function isDescribedName(name: string, features: readonly string[]): boolean {
  const match = /^(high|low)_(.+)$/.exec(name);
  return match !== null && features.includes(match[2]);
}

/**
 * Names for a cluster no rule names, read off its centroid's z-scores: `high_<feature>` or
 * `low_<feature>` for each feature the centroid is off the mean on, the one that stands out most
 * first (ties in feature order). The name the cluster had before (`previous`) comes first while
 * its feature still points the same way: a cluster keeps its name from run to run unless it
 * would now say the opposite of the centroid.
 */
export function describedNames(z: readonly number[], features: readonly string[], previous: string | undefined): string[] {
  const order = features.map((_, d) => d).filter((d) => Number.isFinite(z[d]) && z[d] !== 0);
  order.sort((a, b) => Math.abs(z[b]) - Math.abs(z[a]) || a - b);
  const names = order.map((d) => `${z[d] > 0 ? "high" : "low"}_${features[d]}`);
  const kept = previous === undefined ? -1 : names.indexOf(previous);
  if (kept > 0) names.unshift(...names.splice(kept, 1));
  return names;
}

/**
 * Names the clusters so that no two share a name. `candidates[slot]`: the names the slot may take,
 * in its order of preference (the rules that hold for its centroid, then describedNames). In rounds:
 * 1. every unnamed slot proposes its first candidate no slot has taken yet;
 * 2. a name proposed by several goes to the slot that had it in the previous run, else to the
 *    larger cluster, else to the lower slot; the others try their next candidate in the next round;
 * 3. a slot left with no candidate is named `cluster_<slot>`.
 */
export function nameClusters(candidates: ReadonlyArray<ReadonlyArray<string>>, sizes: ReadonlyArray<number>, previous: ReadonlyArray<string>): string[] {
  const k = candidates.length;
  const names = new Array<string | undefined>(k);
  const taken = new Set<string>();
  const nextCandidate = new Array<number>(k).fill(0);
  for (;;) {
    // 1.
    const proposals = new Map<string, number[]>();
    for (let slot = 0; slot < k; slot++) {
      if (names[slot] !== undefined) continue;
      const own = candidates[slot];
      while (nextCandidate[slot] < own.length && taken.has(own[nextCandidate[slot]])) nextCandidate[slot]++;
      if (nextCandidate[slot] >= own.length) continue;
      const name = own[nextCandidate[slot]];
      const slots = proposals.get(name);
      if (slots) slots.push(slot);
      else proposals.set(name, [slot]);
    }
    if (proposals.size === 0) break;
    // 2.
    for (const [name, slots] of proposals) {
      const winner = slots.reduce((a, b) => (beats(b, a, name, sizes, previous) ? b : a));
      names[winner] = name;
      taken.add(name);
    }
  }
  // 3.
  // Array.from, not map: map skips the holes of slots never named.
  return Array.from(names, (name, slot) => name ?? fallbackName(slot));
}

/** Whether slot `a` wins `name` over slot `b` (b < a in slot order). */
function beats(a: number, b: number, name: string, sizes: ReadonlyArray<number>, previous: ReadonlyArray<string>): boolean {
  const aHadIt = previous[a] === name;
  const bHadIt = previous[b] === name;
  if (aHadIt !== bHadIt) return aHadIt;
  return sizes[a] > sizes[b];
}
