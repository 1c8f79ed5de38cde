// Accumulators of window aggregates: how each kind starts, takes a value, merges (for sessions),
// is stored in a checkpoint and turns into its result.
import { withoutNoise } from "./outputFormat.ts";

export type AggregateKind = "count" | "sum" | "avg" | "min" | "max" | "first" | "last" | "distinct";

export type AggregateSpec<E> = {
  /** The output field. */
  readonly name: string;
  readonly kind: AggregateKind;
  /** The value aggregated; undefined (a missing field) is skipped. Not used by count. */
  readonly value?: (event: E) => unknown;
  /** Only events for which this holds are aggregated. Default: all. */
  readonly where?: (event: E) => boolean;
};

/** One aggregate's behaviour over its accumulator slot. */
export type Accumulator<E> = {
  readonly name: string;
  init(): unknown;
  /** Takes one event; may update `slot` in place, and returns the slot to keep. */
  add(slot: unknown, event: E, timeMs: number): unknown;
  /** Combines two slots (sessions merging); may update `a` in place, and returns the slot to keep. */
  merge(a: unknown, b: unknown): unknown;
  result(slot: unknown): unknown;
  /** True when the slot must be converted to be stored (a Set); encode/decode do it. */
  readonly needsCodec: boolean;
  encode(slot: unknown): unknown;
  decode(stored: unknown): unknown;
};

type Timed = [timeMs: number, value: unknown] | null;
type Numeric = (a: number, b: number) => number;

const identity = (x: unknown) => x;

function numeric(kind: "sum" | "min" | "max"): { init: () => number | null; pick: Numeric } {
  if (kind === "sum") return { init: () => 0, pick: (a, b) => a + b };
  return { init: () => null, pick: kind === "min" ? Math.min : Math.max };
}

function toNumber(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (typeof value === "bigint") return Number(value);
  return undefined;
}

export function accumulator<E>(spec: AggregateSpec<E>): Accumulator<E> {
  const where = spec.where;
  const read = spec.value ?? (() => undefined);
  const base = { name: spec.name, needsCodec: false, encode: identity, decode: identity };
  switch (spec.kind) {
    case "count":
      return {
        ...base,
        init: () => 0,
        add: (n, event) => (where === undefined || where(event) ? (n as number) + 1 : n),
        merge: (a, b) => (a as number) + (b as number),
        result: identity,
      };
    case "sum":
    case "min":
    case "max": {
      const { init, pick } = numeric(spec.kind);
      return {
        ...base,
        init,
        add(slot, event) {
          if (where !== undefined && !where(event)) return slot;
          const x = toNumber(read(event));
          if (x === undefined) return slot;
          return slot === null ? x : pick(slot as number, x);
        },
        merge: (a, b) => (a === null ? b : b === null ? a : pick(a as number, b as number)),
        // min and max are inputs themselves; a sum adds, and shows the noise of adding (shown to
        // 12 significant digits, see outputFormat.ts; the state keeps the unrounded sum).
        result: spec.kind === "sum" ? (s) => withoutNoise(s as number) : identity,
      };
    }
    case "avg":
      return {
        ...base,
        init: () => [0, 0],
        add(slot, event) {
          if (where !== undefined && !where(event)) return slot;
          const x = toNumber(read(event));
          if (x === undefined) return slot;
          const s = slot as [number, number];
          s[0] += x;
          s[1]++;
          return s;
        },
        merge: (a, b) => [(a as number[])[0] + (b as number[])[0], (a as number[])[1] + (b as number[])[1]],
        result: (s) => ((s as number[])[1] === 0 ? null : withoutNoise((s as number[])[0] / (s as number[])[1])),
      };
    case "first":
    case "last": {
      const isFirst = spec.kind === "first";
      // Ties in event time keep the earlier arrival for `first` and take the later one for `last`.
      const wins = (candidateMs: number, currentMs: number) => (isFirst ? candidateMs < currentMs : candidateMs >= currentMs);
      return {
        ...base,
        init: () => null,
        add(slot, event, timeMs) {
          if (where !== undefined && !where(event)) return slot;
          const x = read(event);
          if (x === undefined) return slot;
          const current = slot as Timed;
          if (current === null) return [timeMs, x];
          if (wins(timeMs, current[0])) {
            current[0] = timeMs;
            current[1] = x;
          }
          return current;
        },
        merge(a, b) {
          const [x, y] = [a as Timed, b as Timed];
          if (x === null) return y;
          if (y === null) return x;
          return wins(y[0], x[0]) ? y : x;
        },
        result: (slot) => (slot === null ? null : (slot as [number, unknown])[1]),
      };
    }
    case "distinct":
      return {
        name: spec.name,
        needsCodec: true,
        init: () => new Set(),
        add(slot, event) {
          if (where !== undefined && !where(event)) return slot;
          const x = read(event);
          if (x !== undefined && x !== null) (slot as Set<unknown>).add(typeof x === "object" ? JSON.stringify(x) : x);
          return slot;
        },
        merge(a, b) {
          for (const x of b as Set<unknown>) (a as Set<unknown>).add(x);
          return a;
        },
        result: (slot) => (slot as Set<unknown>).size,
        encode: (slot) => [...(slot as Set<unknown>)],
        decode: (stored) => new Set(stored as unknown[]),
      };
  }
}
