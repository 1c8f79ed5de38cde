// Reads `windows:` (keyed event-time windows: tumbling, hopping or session, each with its
// aggregates) and refuses settings that would explode (too many windows per event or per key).
import type { Environment } from "@marcbachmann/cel-js";
import type { AggregateKind, AggregateSpec } from "../../operators/aggregations.ts";
import { DEFAULT_ALLOWED_LATENESS_MS, WINDOW_RESULT_FIELDS, type KeyedWindowOptions } from "../../operators/keyedWindow.ts";
import type { WindowAssigner } from "../../operators/windowAssigners.ts";
import { compileExpression, type Compiled } from "../expressions.ts";
import { describe, NAME, type Obj, type Reader } from "../reader.ts";

/** An aggregate as read: the operator's, with its expressions compiled. */
export type AggregateDef = Omit<AggregateSpec<unknown>, "value" | "where"> & { value?: Compiled; where?: Compiled };

/** A window as read: the operator's options, every default filled in, with its aggregates as read. */
export type WindowSpec = Required<Omit<KeyedWindowOptions<unknown>, "aggregates" | "restoredShape">> & { aggregates: AggregateDef[] };

/**
 * Windows in one pipeline. Each is an operator that sees every event and keeps one named state in
 * the store, whose LMDB environment holds MAX_STATE_DATABASES: with the store's own two and the
 * behaviour operator's at most four, 100 windows stay far below it, and 100 passes over every
 * event is already more than a pipeline should ask for.
 */
export const MAX_WINDOWS = 100;

/**
 * Hopping windows one event falls into (size / slide). The cost of an event grows with its square
 * (each window's slot is looked up among the key's open ones): measured here 54 us at 60, 335 us at
 * 288 and 2.5 ms at 1000. 500 keeps an event near 1 ms and admits a day in 5-minute hops (288).
 */
export const MAX_WINDOWS_PER_EVENT = 500;

/**
 * Windows one key may hold open at once: (size + allowedLateness) / slide (tumbling: size; session:
 * gap). Every event of the key looks through them, and each is kept in memory and checkpointed.
 */
export const MAX_OPEN_WINDOWS_PER_KEY = 10_000;

const AGGREGATE_KINDS: readonly AggregateKind[] = ["count", "sum", "avg", "min", "max", "first", "last", "distinct"];
const NUMERIC = ["double", "int", "uint"];

export function readWindows(r: Reader, value: unknown, env: Environment | undefined): WindowSpec[] | undefined {
  const list = r.list("windows", value, { nonEmpty: true });
  if (!list) return undefined;
  if (list.length > MAX_WINDOWS) return r.fail("windows", `expected at most ${MAX_WINDOWS} windows, got ${list.length}`);
  const windows = list.map((w, i) => readWindow(r, `windows[${i}]`, w, env));
  const names = windows.map((w) => w?.name).filter(Boolean);
  names.forEach((n, i) => {
    if (names.indexOf(n) !== i) r.fail(`windows[${i}].name`, `"${n}" names another window already`);
  });
  return windows as WindowSpec[];
}

function readWindow(r: Reader, path: string, value: unknown, env: Environment | undefined): WindowSpec | undefined {
  const w = r.object(path, value, ["name", "type", "size", "slide", "gap", "allowedLateness", "aggregate"], ["name", "type", "aggregate"]);
  if (!w) return undefined;
  const name = w.name === undefined ? undefined : r.string(`${path}.name`, w.name, NAME);
  const type = w.type === undefined ? undefined : r.choice(`${path}.type`, w.type, ["tumbling", "hopping", "session"] as const);
  const allowedLatenessMs = w.allowedLateness === undefined ? DEFAULT_ALLOWED_LATENESS_MS : r.duration(`${path}.allowedLateness`, w.allowedLateness, "1m");
  const assigner = type && readAssigner(r, path, type, w);
  const aggregates = w.aggregate === undefined ? undefined : readAggregates(r, `${path}.aggregate`, w.aggregate, env);
  if (!name || !assigner || allowedLatenessMs === undefined || !aggregates) return undefined;
  const [openWindows, formula] = openWindowsPerKey(assigner, allowedLatenessMs);
  if (openWindows > MAX_OPEN_WINDOWS_PER_KEY) {
    return r.fail(`${path}.allowedLateness`, `a key could hold ${openWindows} windows open at once (${formula}), over the limit of ${MAX_OPEN_WINDOWS_PER_KEY}`);
  }
  return { name, assigner, allowedLatenessMs, aggregates };
}

/** How many windows of one key can be open at once, and the formula that says so. */
function openWindowsPerKey(assigner: WindowAssigner, allowedLatenessMs: number): [number, string] {
  const [lengthMs, stepMs, formula] =
    assigner.type === "tumbling"
      ? [assigner.sizeMs, assigner.sizeMs, "(size + allowedLateness) / size"]
      : assigner.type === "hopping"
        ? [assigner.sizeMs, assigner.slideMs, "(size + allowedLateness) / slide"]
        : [assigner.gapMs, assigner.gapMs, "(gap + allowedLateness) / gap"];
  return [Math.ceil((lengthMs + allowedLatenessMs) / stepMs), formula];
}

function readAssigner(r: Reader, path: string, type: WindowAssigner["type"], w: Obj): WindowAssigner | undefined {
  const needs = { tumbling: ["size"], hopping: ["size", "slide"], session: ["gap"] }[type];
  for (const field of ["size", "slide", "gap"]) {
    if (needs.includes(field) && w[field] === undefined) r.fail(`${path}.${field}`, `is required for a ${type} window`);
    if (!needs.includes(field) && w[field] !== undefined) r.fail(`${path}.${field}`, `does not apply to a ${type} window`);
  }
  const size = w.size === undefined ? undefined : r.duration(`${path}.size`, w.size, "15m", { positive: true });
  const slide = w.slide === undefined ? undefined : r.duration(`${path}.slide`, w.slide, "5m", { positive: true });
  const gap = w.gap === undefined ? undefined : r.duration(`${path}.gap`, w.gap, "30m", { positive: true });
  if (type === "tumbling") return size === undefined ? undefined : { type, sizeMs: size };
  if (type === "session") return gap === undefined ? undefined : { type, gapMs: gap };
  if (size === undefined || slide === undefined) return undefined;
  if (slide > size) return r.fail(`${path}.slide`, `a slide of ${slide} ms is longer than the size of ${size} ms: events would fall between windows`);
  const windowsPerEvent = Math.ceil(size / slide);
  if (windowsPerEvent > MAX_WINDOWS_PER_EVENT) {
    return r.fail(`${path}.slide`, `every event would fall into ${windowsPerEvent} windows (size / slide), over the limit of ${MAX_WINDOWS_PER_EVENT}: use a longer slide`);
  }
  return { type, sizeMs: size, slideMs: slide };
}

function readAggregates(r: Reader, path: string, value: unknown, env: Environment | undefined): AggregateDef[] | undefined {
  const entries = r.entries(path, value, "aggregate");
  if (!entries) return undefined;
  const reserved = WINDOW_RESULT_FIELDS;
  const defs: AggregateDef[] = [];
  for (const [name, spec] of entries) {
    const at = `${path}.${name}`;
    if (reserved.includes(name)) {
      r.fail(at, `"${name}" is a field of every window result; choose another name`);
      continue;
    }
    const def = readAggregate(r, at, name, spec, env);
    if (def) defs.push(def);
  }
  return defs;
}

function readAggregate(r: Reader, path: string, name: string, spec: unknown, env: Environment | undefined): AggregateDef | undefined {
  if (spec === "count") return { name, kind: "count" };
  if (typeof spec === "string") return r.fail(path, `expected "count" or a mapping like { sum: field }, got ${describe(spec)}`);
  const obj = r.object(path, spec, [...AGGREGATE_KINDS, "where"]);
  if (!obj) return undefined;
  const kinds = Object.keys(obj).filter((k): k is AggregateKind => (AGGREGATE_KINDS as readonly string[]).includes(k));
  if (kinds.length !== 1) {
    return r.fail(path, `expected exactly one of ${AGGREGATE_KINDS.join(", ")}, got ${kinds.length === 0 ? "none" : kinds.join(" and ")}`);
  }
  const kind = kinds[0];
  if (!env) return undefined;
  const where = obj.where === undefined ? undefined : r.compiled(() => compileExpression(env, obj.where, `${path}.where`, ["bool"]));
  if (kind === "count") {
    // `count: <condition>` counts where the condition holds; `count: true` or `count: {}` counts all.
    const body = obj.count;
    if (body === true || (body && typeof body === "object" && Object.keys(body).length === 0)) return { name, kind, where };
    const condition = r.compiled(() => compileExpression(env, body, `${path}.count`, ["bool"]));
    if (!condition) return undefined;
    if (where) return r.fail(path, "give the condition either as count: <condition> or as where:, not both");
    return { name, kind, where: condition };
  }
  const expected = kind === "first" || kind === "last" || kind === "distinct" ? undefined : NUMERIC;
  const valueExpr = r.compiled(() => compileExpression(env, obj[kind], `${path}.${kind}`, expected));
  if (!valueExpr) return undefined;
  return { name, kind, value: valueExpr, where };
}
