// Reads `aggregates:` (name: one rolling aggregate over a lookback) into the aggregates
// stage, and declares each aggregate's value for later stages.
import { aggregates, defaultResolutionMs, type Condition, type RollingAggregateSpec, type RollingKind } from "../../operators/aggregates.ts";
import type { Obj, Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";
import type { StageReader } from "./stage.ts";

const KINDS: readonly RollingKind[] = ["count", "sum", "avg", "min", "max", "distinct", "ratio", "last", "since"];

/** The other fields each kind takes. */
const MODIFIERS: Record<RollingKind, readonly string[]> = {
  count: ["over", "resolution"],
  sum: ["where", "over", "resolution"],
  avg: ["where", "over", "resolution"],
  min: ["where", "over", "resolution"],
  max: ["where", "over", "resolution"],
  distinct: ["where", "over", "resolution"],
  ratio: ["over", "resolution"],
  last: ["where", "over", "resolution"],
  since: [],
};

/**
 * Buckets of one lookback (over / resolution): a user holds up to this many per aggregate, and a
 * wake-up may come at each one's expiry. 1000 is an edge error of 0.1% (the default resolution
 * gives ~4%) and admits the default resolution (1d) up to 1000 days.
 */
export const MAX_LOOKBACK_BUCKETS = 1_000;

const CONDITION = ["bool"];
const NUMERIC = ["double", "int", "uint"];
const COMPARABLE = ["string", "double", "int", "uint", "bool"];
/** The declared type of `last` per type of its expression: ints are turned into doubles like every number. */
const LAST_TYPE: Record<string, string> = { string: "string", double: "double", int: "double", uint: "double", bool: "bool", dyn: "dyn" };

/**
 * ```yaml
 * aggregates:
 *   visits_7d: { count: session_is_new, over: 7d }
 *   events_1d: { count: true, over: 1d }                     # every event
 *   revenue_30d: { sum: order_value, where: 'event_type == "purchase"', over: 30d }
 *   avg_order_90d: { avg: order_value, where: 'event_type == "purchase"', over: 90d, resolution: 1d }
 *   distinct_pages_1d: { distinct: page, over: 1d }
 *   purchases_per_cart_7d: { ratio: ['event_type == "purchase"', 'event_type == "add_to_cart"'], over: 7d }
 *   last_page: { last: page }                                # optional where and over
 *   since_purchase_ms: { since: 'event_type == "purchase"' }
 *   since_any_ms: { since: true }                            # every event
 * ```
 * min and max read like sum. ratio is count(first) / count(second), no value without the second
 * (cart abandonment is the feature `1.0 - purchases_per_cart_7d`). since is ms from the last
 * matching event to the step. Expressions may use the event's fields and earlier stages' values,
 * not other aggregates.
 */
export const readAggregates: StageReader = (r, path, value, scope) => {
  const errorsBefore = r.errors.length;
  const entries = r.entries(path, value, "aggregate, like visits_7d: { count: session_is_new, over: 7d }");
  if (!entries) return undefined;
  const read = new SpecReader(r, scope);
  const specs: RollingAggregateSpec[] = [];
  const declared: Array<[string, string, string]> = [];
  for (const [name, entry] of entries) {
    const at = `${path}.${name}`;
    const spec = read.aggregate(at, name, entry);
    if (spec) {
      specs.push(spec.spec);
      declared.push([at, name, spec.celType]);
    }
  }
  // Declared after all are read: an aggregate's expressions cannot use another aggregate.
  for (const [at, name, celType] of declared) scope.declare(r, at, name, celType);
  if (r.errors.length > errorsBefore) return undefined;
  return { definition: aggregates({ aggregates: specs }), outputs: [] };
};

class SpecReader {
  /** One function per condition text, so the stage evaluates a condition shared by aggregates once per event. */
  private readonly conditions = new Map<string, Condition>();

  constructor(
    private readonly r: Reader,
    private readonly scope: Scope,
  ) {}

  aggregate(path: string, name: string, entry: unknown): { spec: RollingAggregateSpec; celType: string } | undefined {
    const { r } = this;
    const kind = kindOf(r, path, entry);
    if (kind === undefined) return undefined;
    const obj = r.object(path, entry, [kind, ...MODIFIERS[kind]]);
    if (!obj) return undefined;
    const source = obj[kind];
    const spec: RollingAggregateSpec = { name, kind };
    let celType = "double";
    let isGood = this.lookback(path, kind, obj, spec);
    if (obj.where !== undefined) isGood = (spec.where = this.condition(`${path}.where`, obj.where)) !== undefined && isGood;
    switch (kind) {
      case "count":
      case "since":
        // `count: true` / `since: true` take every event (YAML reads true as a boolean, not as CEL).
        if (source !== true) isGood = (spec.where = this.condition(`${path}.${kind}`, source)) !== undefined && isGood;
        break;
      case "ratio": {
        const pair = r.list(`${path}.ratio`, source);
        if (pair !== undefined && pair.length !== 2) r.fail(`${path}.ratio`, `expected two conditions [counted, per], got ${pair.length}`);
        if (pair?.length !== 2) return undefined;
        spec.where = this.condition(`${path}.ratio[0]`, pair[0]);
        spec.per = this.condition(`${path}.ratio[1]`, pair[1]);
        isGood = spec.where !== undefined && spec.per !== undefined && isGood;
        break;
      }
      case "last": {
        const compiled = this.scope.compile(r, `${path}.last`, source, Object.keys(LAST_TYPE));
        if (compiled) spec.value = compiled.evaluate;
        celType = compiled ? LAST_TYPE[compiled.type] : celType;
        isGood = compiled !== undefined && isGood;
        break;
      }
      default: {
        const compiled = this.scope.compile(r, `${path}.${kind}`, source, kind === "distinct" ? COMPARABLE : NUMERIC);
        if (compiled) spec.value = compiled.evaluate;
        isGood = compiled !== undefined && isGood;
      }
    }
    return isGood ? { spec, celType } : undefined;
  }

  /** Reads `over` (required unless last or since) and `resolution` into the spec; false if bad. */
  private lookback(path: string, kind: RollingKind, obj: Obj, spec: RollingAggregateSpec): boolean {
    const { r } = this;
    if (obj.over === undefined) {
      if (kind !== "last" && kind !== "since") return r.fail(`${path}.over`, `is required: the lookback, like "7d"`) ?? false;
      if (obj.resolution !== undefined) return r.fail(`${path}.resolution`, "needs a lookback (over)") ?? false;
      return true;
    }
    spec.overMs = r.duration(`${path}.over`, obj.over, "7d", { positive: true });
    if (spec.overMs === undefined) return false;
    if (obj.resolution !== undefined) {
      spec.resolutionMs = r.duration(`${path}.resolution`, obj.resolution, "1h", { positive: true });
      if (spec.resolutionMs === undefined) return false;
      if (spec.resolutionMs > spec.overMs) return r.fail(`${path}.resolution`, `expected at most the lookback (${obj.over as string}), got ${JSON.stringify(obj.resolution)}`) ?? false;
    }
    const buckets = Math.ceil(spec.overMs / (spec.resolutionMs ?? defaultResolutionMs(spec.overMs)));
    if (buckets > MAX_LOOKBACK_BUCKETS) {
      const at = obj.resolution === undefined ? `${path}.over` : `${path}.resolution`;
      return r.fail(at, `the lookback would keep up to ${buckets} buckets per user (over / resolution), over the limit of ${MAX_LOOKBACK_BUCKETS}: give a coarser resolution`) ?? false;
    }
    return true;
  }

  private condition(path: string, source: unknown): Condition | undefined {
    const known = typeof source === "string" ? this.conditions.get(source.trim()) : undefined;
    if (known) return known;
    const compiled = this.scope.compile(this.r, path, source, CONDITION);
    if (!compiled) return undefined;
    const condition = compiled.evaluate;
    this.conditions.set(compiled.source.trim(), condition);
    return condition;
  }
}

/** The one kind key of an aggregate's mapping, or undefined (error recorded). */
function kindOf(r: Reader, path: string, entry: unknown): RollingKind | undefined {
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
    return r.fail(path, `expected a mapping with one of ${KINDS.join(", ")}, like { count: session_is_new, over: 7d }`);
  }
  const kinds = KINDS.filter((k) => (entry as Obj)[k] !== undefined);
  if (kinds.length === 1) return kinds[0];
  return r.fail(path, `expected exactly one of ${KINDS.join(", ")}, got ${kinds.length === 0 ? "none" : kinds.join(" and ")}`);
}
