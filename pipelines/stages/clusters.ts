// Reads `clusters:` (k-means over earlier stages' numeric values, naming rules on centroid z-scores,
// cohort retention) into the clusters stage.
import { CLUSTER_OUTPUT, CLUSTER_RETENTION_OUTPUT, clusters, CLUSTERS_OUTPUT, DEFAULT_CLUSTER_VAR, type ClusterNameRule } from "../../operators/clusters.ts";
import { fallbackName, isDescribedName } from "../../operators/clusterMath.ts";
import { joinPath } from "../errors.ts";
import { celEnvironment, compileExpression } from "../expressions.ts";
import type { Obj, Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";
import type { StageReader } from "./stage.ts";

const FIELDS = ["name", "k", "every", "activeWithin", "seed", "maxIterations", "features", "names", "retention"];
const CLUSTER_NAME = /^[A-Za-z0-9_-]+$/;
const FALLBACK_NAME = /^cluster_\d+$/;
const NUMERIC = ["double", "int"];
const DAY_MS = 86_400_000;

/**
 * The shortest period between runs: a run is k-means over every active user (users x k x features
 * x iterations), so a run per millisecond of event time would never catch up with a replay.
 */
const MIN_EVERY: readonly [number, string] = [60_000, "1m"];

/** k-means rounds of one run; the default 100 is plenty (runs usually settle in under 30). */
const MAX_ITERATIONS = 1_000;

/**
 * ```yaml
 * clusters:
 *   name: cluster            # the "string" var holding the user's cluster name; the default
 *   k: 5                     # 2 to 16; default 5
 *   every: 30m               # a run each time event time crosses a multiple of it; default 30m
 *   activeWithin: 30m        # a run clusters the users with an event this recently; default 30m
 *   seed: 42                 # k-means++ seed; default 42
 *   maxIterations: 100       # default 100
 *   features: [p_exit, recent_interest, visit_frequency, cart_abandonment, content_interaction]
 *   names:                   # CEL over the centroid's z-scores; the first that holds names it
 *     - { name: occasionale_interessato, when: 'visit_frequency < -0.5 && recent_interest > 0.5' }
 *     - { name: fedele, when: 'visit_frequency > 1.0' }
 *   retention: { after: 7d } # cohort retention measured on the day 7d after; false: none; default 7d
 * ```
 * Features are numeric values of the schema or of earlier stages. A cluster no rule names (or
 * whose name a bigger cluster took) is named after the feature its centroid stands out on
 * (`high_visit_frequency`, `low_p_exit`), unique in the run; `cluster_<slot>` when all are taken.
 */
export const readClusters: StageReader = (r, path, value, scope, context) => {
  const errorsBefore = r.errors.length;
  const obj = r.object(path, value, FIELDS, ["features"]);
  if (!obj) return undefined;
  const at = (field: string) => joinPath(path, field);
  const k = obj.k === undefined ? undefined : r.number(at("k"), obj.k, { min: 2, max: 16, integer: true });
  const everyMs = obj.every === undefined ? undefined : r.duration(at("every"), obj.every, "30m", { positive: true, atLeast: MIN_EVERY });
  const activeWithinMs = obj.activeWithin === undefined ? undefined : r.duration(at("activeWithin"), obj.activeWithin, "30m", { positive: true });
  const seed = obj.seed === undefined ? undefined : r.number(at("seed"), obj.seed, { min: 0, max: 2 ** 32 - 1, integer: true });
  const maxIterations = obj.maxIterations === undefined ? undefined : r.number(at("maxIterations"), obj.maxIterations, { min: 1, max: MAX_ITERATIONS, integer: true });
  const features = readFeatureNames(r, at("features"), obj.features, scope);
  const names = obj.names === undefined ? [] : readNameRules(r, at("names"), obj.names, features);
  const retentionAfterMs = readRetention(r, at("retention"), obj.retention);
  const variable = obj.name === undefined ? DEFAULT_CLUSTER_VAR : r.string(at("name"), obj.name);
  // Declared last: the features and rules cannot refer to the cluster itself.
  if (variable !== undefined) scope.declare(r, obj.name === undefined ? path : at("name"), variable, "string");
  if (r.errors.length > errorsBefore) return undefined;
  const definition = clusters({ variable, features, k, everyMs, activeWithinMs, seed, maxIterations, names, retentionAfterMs, digits: context.digits });
  return { definition, outputs: retentionAfterMs === null ? [CLUSTER_OUTPUT, CLUSTERS_OUTPUT] : [CLUSTER_OUTPUT, CLUSTERS_OUTPUT, CLUSTER_RETENTION_OUTPUT] };
};

/** The feature names: distinct numeric values the scope holds (schema fields or earlier stages). */
function readFeatureNames(r: Reader, path: string, value: unknown, scope: Scope): string[] {
  const list = r.list(path, value, { nonEmpty: true }) ?? [];
  const names: string[] = [];
  list.forEach((item, i) => {
    const at = joinPath(path, i);
    const name = r.string(at, item);
    if (name === undefined) return;
    if (names.includes(name)) return r.fail(at, `"${name}" is listed twice`);
    names.push(name);
    if (!scope.has(name)) return r.fail(at, `"${name}" is not a field or a value of an earlier stage (features, kbis, scores, ... above clusters)`);
    scope.compile(r, at, name, NUMERIC);
  });
  return names;
}

/** Rules in their own CEL environment: the features as doubles, holding a centroid's z-scores. */
function readNameRules(r: Reader, path: string, value: unknown, features: string[]): ClusterNameRule[] {
  const list = r.list(path, value) ?? [];
  const env = celEnvironment(Object.fromEntries(features.filter((f) => CLUSTER_NAME.test(f)).map((f) => [f, "double"])));
  const rules: ClusterNameRule[] = [];
  list.forEach((item, i) => {
    const at = joinPath(path, i);
    const rule = r.object(at, item, ["name", "when"], ["name", "when"]);
    if (!rule) return;
    const name = r.string(joinPath(at, "name"), rule.name, CLUSTER_NAME);
    if (name !== undefined && FALLBACK_NAME.test(name)) {
      r.fail(joinPath(at, "name"), `"${name}" is reserved for clusters no rule names (cluster_<slot>, e.g. ${fallbackName(0)})`);
    } else if (name !== undefined && isDescribedName(name, features)) {
      r.fail(joinPath(at, "name"), `"${name}" is reserved for clusters no rule names, named after their centroid (high_<feature>, low_<feature>)`);
    }
    if (rule.when === undefined) return;
    const compiled = r.compiled(() => compileExpression(env, rule.when, joinPath(at, "when"), ["bool"]));
    if (name !== undefined && compiled) rules.push({ name, when: compiled.evaluate });
  });
  return rules;
}

/** `{ after: 7d }` (at least a day), `true` for the default 7 days, `false` for no report. */
function readRetention(r: Reader, path: string, value: unknown): number | null | undefined {
  if (value === undefined || value === true) return undefined;
  if (value === false) return null;
  const obj = r.object(path, value, ["after"]) as Obj | undefined;
  if (!obj || obj.after === undefined) return undefined;
  const afterMs = r.duration(joinPath(path, "after"), obj.after, "7d");
  if (afterMs !== undefined && afterMs < DAY_MS) return r.fail(joinPath(path, "after"), `expected at least a day (retention is measured over a day), got ${JSON.stringify(obj.after)}`);
  return afterMs;
}
