// What a stage's or a window's state depends on (its shape), and how the shape a state was written
// under compares with the one the configuration asks for now: kept, laid out anew, or refused.
import type { SlotState } from "../engine/keyedSlots.ts";

/**
 * What determines the layout and meaning of a state (JSON, stored with every checkpoint):
 * - `layout`: what the whole state depends on (a session gap, the fields dedup compares): a state
 *   written under another layout is refused;
 * - `parts`: the named parts the state holds per key, in the order it lays them out (one per
 *   aggregate, score, rule...), each with a shape of its own. A part added starts empty, a part gone
 *   is dropped with its values, a part whose own shape changed refuses the state; renaming a part
 *   is dropping it and adding another.
 * What changes only outputs (messages, templates, thresholds, conditions) is no part of a shape.
 */
export type StateShape = {
  readonly layout?: unknown;
  readonly parts?: ReadonlyArray<readonly [name: string, shape: StateShape]>;
};

/**
 * What makes a state written under `old` unusable under `now`, one line per change naming the
 * part (`views_7d: resolution 6h -> 1h`); empty when the state can be kept.
 */
export function shapeChanges(old: StateShape, now: StateShape, at = ""): string[] {
  const changes: string[] = [];
  const prefix = at === "" ? "" : `${at}: `;
  if (canonical(old.layout) !== canonical(now.layout)) changes.push(`${prefix}${layoutChange(old.layout, now.layout)}`);
  const oldParts = new Map(old.parts ?? []);
  for (const [name, shape] of now.parts ?? []) {
    const before = oldParts.get(name);
    if (before !== undefined) changes.push(...shapeChanges(before, shape, at === "" ? name : `${at}.${name}`));
  }
  return changes;
}

/** Whether `now` lays its parts out as `old` did, to any depth: same names in the same order. */
export function isSameLayout(old: StateShape, now: StateShape): boolean {
  const a = old.parts ?? [];
  const b = now.parts ?? [];
  return a.length === b.length && a.every(([name, shape], i) => b[i][0] === name && isSameLayout(shape, b[i][1]));
}

/** For each part of `now`, its index among the parts of `old`; undefined for a part `old` lacks. */
export function partsFrom(old: StateShape | undefined, now: StateShape): Array<number | undefined> {
  const names = (old?.parts ?? []).map(([name]) => name);
  return (now.parts ?? []).map(([name]) => {
    const i = names.indexOf(name);
    return i < 0 ? undefined : i;
  });
}

/** The part called `name` of `shape`, if it has one. */
export function partOf(shape: StateShape | undefined, name: string): StateShape | undefined {
  return shape?.parts?.find(([n]) => n === name)?.[1];
}

/** `values` laid out as `from` says (see partsFrom): a new part gets `empty(i)`. */
export function pickParts<T>(values: readonly T[], from: ReadonlyArray<number | undefined>, empty: (i: number) => T): T[] {
  return from.map((j, i) => (j === undefined ? empty(i) : values[j]));
}

/**
 * Lays every key's value of `slot` out anew with `relayout` (undefined: nothing of the key is left,
 * its value is dropped). Done once, when a stage is built from a state of an older layout.
 */
export function relayoutAll<V>(slot: SlotState<V>, relayout: (value: V) => V | undefined): void {
  for (const [key, value] of [...slot.entries()]) {
    const next = relayout(value);
    if (next === undefined) slot.delete(key);
    else slot.set(key, next);
  }
}

/** `value` as JSON with its object keys sorted: equal shapes give equal text. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v) =>
    v !== null && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v,
  );
}

/** `resolution 6h -> 1h, kind "count" -> "sum"`: the fields of two layouts that differ, or the layouts whole. */
function layoutChange(old: unknown, now: unknown): string {
  const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isRecord(old) || !isRecord(now)) return `${shown("", old)} -> ${shown("", now)}`;
  const fields = [...new Set([...Object.keys(old), ...Object.keys(now)])];
  return fields
    .filter((f) => canonical(old[f]) !== canonical(now[f]))
    .map((f) => `${f.endsWith("Ms") ? f.slice(0, -2) : f} ${shown(f, old[f])} -> ${shown(f, now[f])}`)
    .join(", ");
}

const UNITS: Array<[string, number]> = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]];

/** A layout value as a person reads it: durations (fields named `...Ms`) in their largest whole unit. */
function shown(field: string, value: unknown): string {
  if (value === undefined) return "none";
  if (field.endsWith("Ms") && typeof value === "number" && Number.isFinite(value) && value > 0) {
    const unit = UNITS.find(([, ms]) => value % ms === 0);
    return unit ? `${value / unit[1]}${unit[0]}` : `${value}ms`;
  }
  return JSON.stringify(value);
}
