// CEL's `quantile("metric", q)`, in one place: its signature in the behaviour sections' expressions,
// the check that every metric it names is one the quantiles section keeps, and its value, read from
// the quantiles stage's latest digests (none before the first rebuild).
import type { Environment } from "@marcbachmann/cel-js";
import type { PublishedQuantiles } from "../operators/quantiles.ts";
import type { Reader } from "./reader.ts";

const SIGNATURE = "quantile(string, double): double";

/** A use of `quantile("metric", q)` with a literal metric, checked against the declared quantiles. */
type QuantileUse = { path: string; metric: string };

/** The quantile() of one pipeline: every expression of its behaviour sections calls this one. */
export class QuantileFunction {
  /** Where the quantiles stage publishes its digests when it is built (its `publishTo`). */
  readonly published: PublishedQuantiles = {};
  private readonly uses: QuantileUse[] = [];
  /** Metrics the quantiles section keeps digests of; its reader declares them. */
  private readonly metrics = new Set<string>();

  /** Makes `quantile(...)` callable in the expressions compiled against `env` (and its clones). */
  register(env: Environment): void {
    const published = this.published;
    env.registerFunction(SIGNATURE, (metric: string, q: number) => {
      const value = published.quantile?.(metric, q);
      // No data yet: the expression has no value, so a rule using it does not hold.
      if (value === undefined) throw new Error(`no quantile of ${metric} yet`);
      return value;
    });
  }

  /** Notes the metrics an expression at `path` names, to be checked once every section is read. */
  noteUses(path: string, source: string): void {
    for (const metric of literalMetrics(source)) this.uses.push({ path, metric });
  }

  /** A metric the quantiles section keeps digests of. */
  declareMetric(metric: string): void {
    this.metrics.add(metric);
  }

  /** Records an error at each use of a metric the quantiles section does not keep. */
  check(r: Reader): void {
    for (const use of this.uses) {
      if (!this.metrics.has(use.metric)) {
        const known = [...this.metrics];
        r.fail(use.path, `quantile("${use.metric}", ...) needs "${use.metric}" among quantiles.metrics (${known.length ? known.join(", ") : "none declared"})`);
      }
    }
  }
}

/** Literal metric names passed to quantile(...) in an expression's text. */
function literalMetrics(source: string): string[] {
  return [...source.matchAll(/quantile\(\s*"([^"]*)"/g)].map((m) => m[1]);
}
