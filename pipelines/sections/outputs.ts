// Reads `outputs:` (how every output shows its numbers): the significant digits of scores and
// statistics. A setting of the output contract, not of one stage: every stage that writes a score
// or a statistic (scores, clusters, quantiles) reads it from here.
import { DEFAULT_OUTPUT_DIGITS } from "../../operators/outputFormat.ts";
import type { Reader } from "../reader.ts";

export type OutputsSpec = {
  /** Significant digits of scores, z-scores, centroids, quantiles and rates in outputs. Default 6. */
  digits: number;
};

/** The most digits worth asking for: a double holds 15-17 significant digits. */
const MAX_DIGITS = 17;

/** `outputs: { digits: 6 }`; every field optional. */
export function readOutputs(r: Reader, value: unknown): OutputsSpec {
  const spec: OutputsSpec = { digits: DEFAULT_OUTPUT_DIGITS };
  if (value === undefined) return spec;
  const obj = r.object("outputs", value, ["digits"]);
  if (!obj) return spec;
  if (obj.digits !== undefined) spec.digits = r.number("outputs.digits", obj.digits, { min: 1, max: MAX_DIGITS, integer: true }) ?? spec.digits;
  return spec;
}
