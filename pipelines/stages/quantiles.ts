// Reads `quantiles:` (metrics, compression, period, report) into the quantiles stage, and makes
// `quantile("metric", q)` (celQuantile.ts) usable in every section's expressions for its metrics.
import { quantiles, QUANTILES_OUTPUT } from "../../operators/quantiles.ts";
import type { StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

const NUMERIC = ["double", "int", "uint"];
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The shortest rebuild period: a rebuild walks every user's latest values. */
const MIN_EVERY: readonly [number, string] = [60_000, "1m"];

/**
 * ```yaml
 * quantiles:
 *   metrics: [lead_score, visit_frequency]   # numeric values declared above (features, scores, fields)
 *   compression: 100                         # optional, default 100
 *   every: 1h                                # optional: rebuild period, default 1h (or report's)
 *   report: 1h                               # optional: true, or the period; emits "quantiles" records
 * ```
 * Then `lead_score > quantile("lead_score", 0.9)` holds for users in the top 10% of the latest
 * rebuild; before the first rebuild `quantile` has no value and such a condition does not hold.
 */
export const readQuantiles: StageReader = (r, path, value, scope, context) => {
  const obj = r.object(path, value, ["metrics", "compression", "every", "report"], ["metrics"]);
  if (!obj) return undefined;
  const errorsBefore = r.errors.length;
  const metrics = obj.metrics === undefined ? [] : readMetrics(r, joinPath(path, "metrics"), obj.metrics, scope);
  const compression = obj.compression === undefined ? undefined : r.number(joinPath(path, "compression"), obj.compression, { min: 10, max: 10_000 });
  const everyMs = obj.every === undefined ? undefined : r.duration(joinPath(path, "every"), obj.every, "1h", { positive: true, atLeast: MIN_EVERY });
  const report = readReport(r, joinPath(path, "report"), obj.report, everyMs);
  if (r.errors.length > errorsBefore) return undefined;
  const definition = quantiles({ metrics, compression, everyMs: everyMs ?? report.everyMs, report: report.isOn, publishTo: scope.quantile.published, digits: context.digits });
  return { definition, outputs: report.isOn ? [QUANTILES_OUTPUT] : [] };
};

function readMetrics(r: Reader, path: string, value: unknown, scope: Scope): string[] {
  const list = r.list(path, value, { nonEmpty: true });
  const metrics: string[] = [];
  for (const [i, entry] of (list ?? []).entries()) {
    const at = joinPath(path, i);
    if (typeof entry !== "string" || !NAME.test(entry)) {
      r.fail(at, `expected the name of a value declared above, like lead_score, got ${JSON.stringify(entry)}`);
      continue;
    }
    if (metrics.includes(entry)) {
      r.fail(at, `"${entry}" is listed twice`);
      continue;
    }
    // Compiling the bare name checks that it is declared above and is a number.
    if (!scope.compile(r, at, entry, NUMERIC)) continue;
    metrics.push(entry);
    scope.quantile.declareMetric(entry);
  }
  return metrics;
}

/** `report: true` reports at every rebuild; `report: 1h` also sets the period. */
function readReport(r: Reader, path: string, value: unknown, everyMs: number | undefined): { isOn: boolean; everyMs?: number } {
  if (value === undefined || value === false) return { isOn: false };
  if (value === true) return { isOn: true };
  const periodMs = r.duration(path, value, "1h", { positive: true, atLeast: MIN_EVERY });
  if (periodMs !== undefined && everyMs !== undefined && periodMs !== everyMs) {
    r.fail(path, `reports come with each rebuild: give the period once (every: ${String(value)}), or report: true`);
  }
  return { isOn: true, everyMs: periodMs };
}
