// Deterministic assignment of keys to the arms of an experiment: a hash of (experiment, key) as a
// fraction in [0, 1), of which the first `holdout` is held out and the rest shared among variants by
// weight. The same key is in the same arm in any run, process or worker, at any time.
import { createHash } from "node:crypto";

/** The name of the held-out arm. */
export const HOLDOUT = "holdout";

export type Variant = { name: string; weight: number };

/** Who is in which arm: the share held out, and the variants' weights among the rest. */
export type Assignment = { experiment: string; holdout: number; variants: readonly Variant[] };

/** The arm of `key`: HOLDOUT or a variant's name. */
export function armOf(assignment: Assignment, key: string): string {
  const digest = createHash("sha256").update(assignment.experiment).update("\u0000").update(key).digest();
  const u = digest.readUIntBE(0, 6) / 2 ** 48;
  if (u < assignment.holdout) return HOLDOUT;
  const total = assignment.variants.reduce((sum, v) => sum + v.weight, 0);
  let at = ((u - assignment.holdout) / (1 - assignment.holdout)) * total;
  for (const variant of assignment.variants) {
    if (at < variant.weight) return variant.name;
    at -= variant.weight;
  }
  return assignment.variants[assignment.variants.length - 1].name;
}
