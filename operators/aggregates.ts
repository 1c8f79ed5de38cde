// Rolling per-user aggregates over lookbacks (count, sum, avg, min, max, distinct, ratio, last,
// time since last), updated on every event and expired by wake-ups so values change when old
// events leave the lookback.
//
// Resolution: a lookback keeps its events in buckets of `resolutionMs` aligned on the epoch, and a
// bucket leaves the lookback as a whole when its end is `overMs` old. An event therefore counts for
// at least `overMs` and at most `overMs + resolutionMs` (it never leaves early: "a purchase within
// 30 days" is never missed), and a user holds at most overMs / resolutionMs + 1 buckets per
// aggregate, usually far fewer since only buckets with events exist. The default resolution is the
// largest round unit (1s, 5s, 15s, 1m, 5m, 15m, 1h, 6h, 1d) at most 1/24 of the lookback: an edge
// error of at most ~4% (7d: 6h, 1d: 1h, 30m: 1m), and round units put the expiries of different
// lookbacks on a shared grid, where they coincide more often and share wake-ups.
import { withoutNoise } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";

export type RollingKind = "count" | "sum" | "avg" | "min" | "max" | "distinct" | "ratio" | "last" | "since";

/** A condition over the view's variables: it holds only when it returns true. */
export type Condition = (vars: Record<string, unknown>) => unknown;

export type RollingAggregateSpec = {
  /** The variable its value is written under. */
  name: string;
  kind: RollingKind;
  /**
   * The events it takes: count counts them, ratio's numerator counts them, since measures from the
   * last of them. Default: every event. Pass the same function to several aggregates and it is
   * evaluated once per event.
   */
  where?: Condition;
  /** ratio only: the denominator's events (value = count(where) / count(per)). */
  per?: Condition;
  /** sum, avg, min, max, distinct, last: what is aggregated; no value (a missing field) is skipped. */
  value?: (vars: Record<string, unknown>) => unknown;
  /** The lookback. Required except for last (default: forever) and since (never expires). */
  overMs?: number;
  /** Bucket width (see the file header). Default: defaultResolutionMs(overMs). */
  resolutionMs?: number;
};

export type AggregatesOptions = {
  /** Names the stage's state. Default "aggregates". */
  name?: string;
  aggregates: RollingAggregateSpec[];
};

const ROUND_UNITS_MS = [1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000];

/** The largest round unit at most 1/24 of `overMs` (or 1/24 itself below a second). */
export function defaultResolutionMs(overMs: number): number {
  const target = overMs / 24;
  let best = Math.max(1, Math.floor(target));
  for (const unit of ROUND_UNITS_MS) if (unit <= target) best = unit;
  return best;
}

/**
 * The state's shape: per aggregate (by name), its kind and its buckets (lookback and resolution);
 * conditions and values may change, the counts kept so far stay.
 */
function stateShape(specs: RollingAggregateSpec[]): StateShape {
  return {
    parts: specs.map((spec): [string, StateShape] => {
      const buckets = spec.overMs === undefined ? {} : { overMs: spec.overMs, resolutionMs: spec.resolutionMs ?? defaultResolutionMs(spec.overMs) };
      return [spec.name, { layout: { kind: spec.kind, ...buckets } }];
    }),
  };
}

export function aggregates(options: AggregatesOptions): StageDefinition {
  const name = options.name ?? "aggregates";
  const shape = stateShape(options.aggregates);
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const users = ctx.userState<UserAggregates>("users");
      const logic = new AggregatesLogic(options.aggregates, users);
      if (ctx.restoredShape) relayoutAll(users, logic.relayout(partsFrom(ctx.restoredShape, shape)));
      return logic;
    },
  };
}

/**
 * One user's aggregates, all in one value (one state lookup per step). Each slot is a flat array:
 * bucketed kinds hold their totals then buckets `[expiryMs, ...fields]` ordered by expiry; the
 * bucket's expiry (its end + overMs) is its identity, so no separate bucket index is kept.
 * - count, sum: `[total, e, n, ...]`; avg: `[sum, n, e, sum, n, ...]`; ratio: `[num, den, e, num, den, ...]`
 * - min, max: `[extreme | NaN, e, extreme, ...]` (NaN, not null: a slot of numbers only is stored unboxed)
 * - distinct: `[value, e, value, e, ...]` ordered by e, the expiry of the value's latest bucket
 * - last: `[]` or `[value, timeMs, expiryMs]` (expiryMs NEVER without a lookback); since: `[]` or `[lastMs]`
 */
type UserAggregates = {
  /** The latest step time: values are as of it, and events older than a lookback from it are ignored. */
  latestMs: number;
  /** The one wake-up pending, at the next expiry (NEVER: none); moved when the expiry moves. */
  armedMs: number;
  /** The earliest expiry among the slots (NEVER: none). */
  nextExpiryMs: number;
  slots: unknown[][];
};

const NEVER = -1;

const enum Kind {
  Count,
  Sum,
  Avg,
  Min,
  Max,
  Distinct,
  Ratio,
  Last,
  Since,
}

const KIND: Record<RollingKind, Kind> = {
  count: Kind.Count,
  sum: Kind.Sum,
  avg: Kind.Avg,
  min: Kind.Min,
  max: Kind.Max,
  distinct: Kind.Distinct,
  ratio: Kind.Ratio,
  last: Kind.Last,
  since: Kind.Since,
};

/** Totals before the buckets of each kind (0 for the kinds without buckets). */
const HEAD: Record<Kind, number> = { [Kind.Count]: 1, [Kind.Sum]: 1, [Kind.Avg]: 2, [Kind.Min]: 1, [Kind.Max]: 1, [Kind.Distinct]: 0, [Kind.Ratio]: 2, [Kind.Last]: 0, [Kind.Since]: 0 };
/** Entries per bucket: its expiry, then its fields. */
const STRIDE: Record<Kind, number> = { [Kind.Count]: 2, [Kind.Sum]: 2, [Kind.Avg]: 3, [Kind.Min]: 2, [Kind.Max]: 2, [Kind.Distinct]: 2, [Kind.Ratio]: 3, [Kind.Last]: 3, [Kind.Since]: 1 };

/** A spec made ready for the hot path: kinds as numbers, conditions as indices into a shared list. */
type Prepared = {
  name: string;
  kind: Kind;
  where: number;
  per: number;
  value: ((vars: Record<string, unknown>) => unknown) | undefined;
  overMs: number;
  resolutionMs: number;
  /** Totals before the buckets, and entries per bucket, of its kind. */
  head: number;
  stride: number;
};

type UsersState = {
  get(key: string): UserAggregates | undefined;
  getForUpdate(key: string): UserAggregates | undefined;
  set(key: string, value: UserAggregates): void;
  delete(key: string): void;
};

const NO_CONDITION = -1;
const UNKNOWN = 0;
const HOLDS = 1;
const FAILS = 2;

class AggregatesLogic implements StageLogic {
  private readonly aggregates: Prepared[];
  /** Distinct conditions, each evaluated at most once per event. */
  private readonly conditions: Condition[] = [];
  /** Per condition, this event's result: UNKNOWN, HOLDS or FAILS. Reset on every event. */
  private readonly results: Int8Array;
  /**
   * Each aggregate as of `nowMs`: what left its lookback by then is left out (on a copy: the
   * user's wake-up drops it from the state when the watermark gets there).
   */
  readonly view: StageView = {
    user: (user, nowMs) => {
      const state = this.users.get(user);
      if (state === undefined) return undefined;
      const atMs = Math.max(nowMs, state.latestMs);
      return Object.fromEntries(
        this.aggregates.map((a, i) => {
          const slot = state.slots[i].slice();
          dropExpired(a, slot, atMs);
          return [a.name, valueOf(a.kind, slot, atMs) ?? null];
        }),
      );
    },
    wakeCause: () => "the oldest value of a rolling aggregate leaves its lookback",
  };

  constructor(
    specs: RollingAggregateSpec[],
    private readonly users: UsersState,
  ) {
    this.aggregates = specs.map((spec) => {
      const overMs = spec.overMs ?? NEVER;
      return {
        name: spec.name,
        kind: KIND[spec.kind],
        where: this.conditionIndex(spec.where),
        per: this.conditionIndex(spec.per),
        value: spec.value,
        overMs,
        resolutionMs: spec.resolutionMs ?? (overMs === NEVER ? 1 : defaultResolutionMs(overMs)),
        head: HEAD[KIND[spec.kind]],
        stride: STRIDE[KIND[spec.kind]],
      };
    });
    this.results = new Int8Array(this.conditions.length);
  }

  private conditionIndex(condition: Condition | undefined): number {
    if (condition === undefined) return NO_CONDITION;
    const known = this.conditions.indexOf(condition);
    return known >= 0 ? known : this.conditions.push(condition) - 1;
  }

  /**
   * 1. Moves the user's clock to the step (a late event does not move it back).
   * 2. Drops what left its lookback by then.
   * 3. Adds the event, if any.
   * 4. Asks for a wake-up at the next expiry, and writes the values.
   */
  step(view: UserView, out: StageOutput): void {
    const user = view.user;
    const event = view.event;
    let state = this.users.getForUpdate(user);
    if (state === undefined) {
      if (event === undefined) return this.writeValues(view.vars, undefined, view.timeMs);
      state = { latestMs: view.timeMs, armedMs: NEVER, nextExpiryMs: NEVER, slots: this.aggregates.map(emptySlot) };
      this.users.set(user, state);
    }
    // 1.
    if (view.timeMs > state.latestMs) state.latestMs = view.timeMs;
    const nowMs = state.latestMs;
    // Timers fire in time order: a wake-up at or after the armed time means it has fired.
    if (event === undefined && state.armedMs !== NEVER && view.timeMs >= state.armedMs) state.armedMs = NEVER;
    // 2.
    if (state.nextExpiryMs !== NEVER && state.nextExpiryMs <= nowMs) {
      this.expire(state, nowMs);
      if (event === undefined && this.isEmpty(state)) {
        if (state.armedMs !== NEVER) out.cancelWake(user, state.armedMs);
        this.users.delete(user);
        return this.writeValues(view.vars, undefined, nowMs);
      }
    }
    // 3.
    if (event !== undefined) this.add(state, view.vars, view.timeMs, nowMs);
    // 4. One wake-up, at the next expiry: one pending elsewhere (a late event's bucket came first) is withdrawn.
    if (state.armedMs !== state.nextExpiryMs) {
      if (state.armedMs !== NEVER) out.cancelWake(user, state.armedMs);
      if (state.nextExpiryMs !== NEVER) out.wakeAt(user, state.nextExpiryMs);
      state.armedMs = state.nextExpiryMs;
    }
    this.writeValues(view.vars, state, nowMs);
  }

  pendingWake(user: string): number | undefined {
    const state = this.users.get(user);
    return state === undefined || state.armedMs === NEVER ? undefined : state.armedMs;
  }

  /**
   * A user's aggregates restored under other aggregates, laid out as `from` says (see partsFrom):
   * an added one starts empty; undefined when nothing is left. The wake-up pending stays: it only
   * steps the user, who then asks for the next expiry.
   */
  relayout(from: Array<number | undefined>): (state: UserAggregates) => UserAggregates | undefined {
    return (state) => {
      state.slots = pickParts(state.slots, from, (i) => emptySlot(this.aggregates[i]));
      state.nextExpiryMs = this.nextExpiry(state.slots);
      return this.isEmpty(state) ? undefined : state;
    };
  }

  private holds(condition: number, vars: Record<string, unknown>): boolean {
    if (condition === NO_CONDITION) return true;
    let result = this.results[condition];
    if (result === UNKNOWN) {
      result = this.conditions[condition](vars) === true ? HOLDS : FAILS;
      this.results[condition] = result;
    }
    return result === HOLDS;
  }

  private add(state: UserAggregates, vars: Record<string, unknown>, timeMs: number, nowMs: number): void {
    this.results.fill(UNKNOWN);
    const aggregates = this.aggregates;
    for (let i = 0; i < aggregates.length; i++) {
      const a = aggregates[i];
      const slot = state.slots[i];
      if (a.kind === Kind.Ratio) {
        const isCounted = this.holds(a.where, vars);
        const isPer = this.holds(a.per, vars);
        if (isCounted || isPer) addRatio(a, slot as number[], timeMs, nowMs, isCounted, isPer);
      } else if (this.holds(a.where, vars)) {
        if (a.kind === Kind.Since) addSince(slot as number[], timeMs);
        else addValue(a, slot, vars, timeMs, nowMs);
      }
    }
    state.nextExpiryMs = this.nextExpiry(state.slots);
  }

  /** Drops every bucket, distinct value and last value whose expiry is at or before `nowMs`. */
  private expire(state: UserAggregates, nowMs: number): void {
    for (let i = 0; i < this.aggregates.length; i++) dropExpired(this.aggregates[i], state.slots[i], nowMs);
    state.nextExpiryMs = this.nextExpiry(state.slots);
  }

  private nextExpiry(slots: unknown[][]): number {
    let next = NEVER;
    for (let i = 0; i < this.aggregates.length; i++) {
      const e = firstExpiry(this.aggregates[i], slots[i]);
      if (e !== NEVER && (next === NEVER || e < next)) next = e;
    }
    return next;
  }

  /** Nothing left to remember: no bucket, no distinct value, no last value, no since. */
  private isEmpty(state: UserAggregates): boolean {
    for (let i = 0; i < this.aggregates.length; i++) if (state.slots[i].length > this.aggregates[i].head) return false;
    return true;
  }

  /** Writes every value into the view; `state` undefined: the empty lookback (counts and sums 0, the rest no value). */
  private writeValues(vars: Record<string, unknown>, state: UserAggregates | undefined, nowMs: number): void {
    const aggregates = this.aggregates;
    for (let i = 0; i < aggregates.length; i++) {
      const a = aggregates[i];
      vars[a.name] = state === undefined ? emptyValue(a.kind) : valueOf(a.kind, state.slots[i], nowMs);
    }
  }
}

/** Counts the event in ratio's numerator and/or denominator, unless it is older than the lookback. */
function addRatio(a: Prepared, slot: number[], timeMs: number, nowMs: number, isCounted: boolean, isPer: boolean): void {
  const e = expiryOf(timeMs, a);
  if (e <= nowMs) return;
  const at = bucketAt(slot, a.head, a.stride, e, 0);
  if (isCounted) {
    slot[0] += 1;
    slot[at + 1] += 1;
  }
  if (isPer) {
    slot[1] += 1;
    slot[at + 2] += 1;
  }
}

/** since keeps the latest matching time, whatever order events come in. */
function addSince(slot: number[], timeMs: number): void {
  if (slot.length === 0 || timeMs > slot[0]) slot[0] = timeMs;
}

/** Adds a matching event to count, sum, avg, min, max, distinct or last, unless it is older than the lookback. */
function addValue(a: Prepared, slot: unknown[], vars: Record<string, unknown>, timeMs: number, nowMs: number): void {
  const e = a.overMs === NEVER ? NEVER : expiryOf(timeMs, a);
  if (e !== NEVER && e <= nowMs) return;
  if (a.kind === Kind.Count) {
    const at = bucketAt(slot as number[], a.head, a.stride, e, 0);
    (slot as number[])[0] += 1;
    (slot as number[])[at + 1] += 1;
    return;
  }
  const value = a.value!(vars);
  if (a.kind === Kind.Distinct) {
    const key = toKey(value);
    if (key !== undefined) seeDistinct(slot, key, e);
  } else if (a.kind === Kind.Last) {
    if (value !== undefined && value !== null && (slot.length === 0 || timeMs >= (slot[1] as number))) {
      slot[0] = typeof value === "bigint" ? Number(value) : value;
      slot[1] = timeMs;
      slot[2] = e;
    }
  } else {
    const x = toNumber(value);
    if (x !== undefined) addNumber(a, slot as number[], e, x);
  }
}

/** sum and avg add up (avg also counts); min and max keep the extreme, in the totals and in the bucket. */
function addNumber(a: Prepared, slot: number[], expiryMs: number, x: number): void {
  if (a.kind === Kind.Min || a.kind === Kind.Max) {
    const pick = a.kind === Kind.Min ? Math.min : Math.max;
    const at = bucketAt(slot, a.head, a.stride, expiryMs, x);
    slot[0] = Number.isNaN(slot[0]) ? x : pick(slot[0], x);
    slot[at + 1] = pick(slot[at + 1], x);
    return;
  }
  const at = bucketAt(slot, a.head, a.stride, expiryMs, 0);
  slot[0] += x;
  slot[at + 1] += x;
  if (a.kind === Kind.Avg) {
    slot[1] += 1;
    slot[at + 2] += 1;
  }
}

function dropExpired(a: Prepared, slot: unknown[], nowMs: number): void {
  if (a.kind === Kind.Since) return;
  if (a.kind === Kind.Last) {
    if (slot.length > 0 && slot[2] !== NEVER && (slot[2] as number) <= nowMs) slot.length = 0;
    return;
  }
  // Distinct entries are [value, e]: the expiry is their second field, a bucket's its first.
  const offset = a.kind === Kind.Distinct ? 1 : 0;
  let end = a.head;
  while (end < slot.length && (slot[end + offset] as number) <= nowMs) end += a.stride;
  if (end === a.head) return;
  slot.splice(a.head, end - a.head);
  if (a.kind !== Kind.Distinct) recomputeTotals(a, slot as number[]);
}

/** When the slot's oldest entry leaves the lookback, or NEVER. */
function firstExpiry(a: Prepared, slot: unknown[]): number {
  if (slot.length <= a.head || a.kind === Kind.Since) return NEVER;
  if (a.kind === Kind.Last) return slot[2] as number;
  if (a.kind === Kind.Distinct) return slot[1] as number;
  return slot[a.head] as number;
}

/** A slot with nothing in it: zero totals, or no extreme (NaN) for min and max. */
function emptySlot(a: Prepared): unknown[] {
  const slot = new Array<number>(a.head);
  for (let i = 0; i < a.head; i++) slot[i] = a.kind === Kind.Min || a.kind === Kind.Max ? NaN : 0;
  return slot;
}

/** The expiry of the bucket holding `timeMs`: when its end is `overMs` old. */
function expiryOf(timeMs: number, a: Prepared): number {
  return (Math.floor(timeMs / a.resolutionMs) + 1) * a.resolutionMs + a.overMs;
}

/**
 * Index of the bucket expiring at `expiryMs` (buckets of `stride` entries after `head` totals,
 * ordered by expiry), added with its fields at `initial` if absent. In order, it is the last one or
 * a new one at the end; a late event may need one in the middle.
 */
function bucketAt(slot: number[], head: number, stride: number, expiryMs: number, initial: number): number {
  let at = slot.length - stride;
  if (at < head || slot[at] < expiryMs) {
    slot.push(expiryMs, initial);
    if (stride === 3) slot.push(initial);
    return slot.length - stride;
  }
  while (at >= head && slot[at] > expiryMs) at -= stride;
  if (at >= head && slot[at] === expiryMs) return at;
  at += stride;
  if (stride === 3) slot.splice(at, 0, expiryMs, initial, initial);
  else slot.splice(at, 0, expiryMs, initial);
  return at;
}

/** Records that `value` was seen in the bucket expiring at `expiryMs`, keeping entries ordered by expiry. */
function seeDistinct(slot: unknown[], value: string | number | boolean, expiryMs: number): void {
  let at = 0;
  while (at < slot.length && slot[at] !== value) at += 2;
  if (at < slot.length) {
    if ((slot[at + 1] as number) >= expiryMs) return;
    slot.splice(at, 2);
  }
  let insertAt = slot.length;
  while (insertAt > 0 && (slot[insertAt - 1] as number) > expiryMs) insertAt -= 2;
  if (insertAt === slot.length) slot.push(value, expiryMs);
  else slot.splice(insertAt, 0, value, expiryMs);
}

function recomputeTotals(a: Prepared, slot: number[]): void {
  const { head, stride } = a;
  if (a.kind === Kind.Min || a.kind === Kind.Max) {
    let extreme = NaN;
    const pick = a.kind === Kind.Min ? Math.min : Math.max;
    for (let at = head; at < slot.length; at += stride) extreme = Number.isNaN(extreme) ? slot[at + 1] : pick(extreme, slot[at + 1]);
    slot[0] = extreme;
    return;
  }
  // Summed afresh rather than subtracted: an empty lookback is exactly 0, with no rounding residue.
  let first = 0;
  let second = 0;
  for (let at = head; at < slot.length; at += stride) {
    first += slot[at + 1] as number;
    if (stride === 3) second += slot[at + 2] as number;
  }
  slot[0] = first;
  if (head === 2) slot[1] = second;
}

function valueOf(kind: Kind, slot: unknown[], nowMs: number): unknown {
  switch (kind) {
    case Kind.Count:
      return slot[0];
    // Sums and averages of decimals without the noise of adding them (2341.7, not 2341.7000000000003),
    // so that `avg_order_30d > 200.0` means what it says; the slot keeps the unrounded sum.
    case Kind.Sum:
      return withoutNoise(slot[0] as number);
    case Kind.Avg:
      return (slot[1] as number) > 0 ? withoutNoise((slot[0] as number) / (slot[1] as number)) : undefined;
    case Kind.Ratio:
      return (slot[1] as number) > 0 ? (slot[0] as number) / (slot[1] as number) : undefined;
    case Kind.Min:
    case Kind.Max:
      return Number.isNaN(slot[0]) ? undefined : slot[0];
    case Kind.Distinct:
      return slot.length / 2;
    case Kind.Last:
      return slot.length > 0 ? slot[0] : undefined;
    case Kind.Since:
      return slot.length > 0 ? nowMs - (slot[0] as number) : undefined;
  }
}

function emptyValue(kind: Kind): unknown {
  return kind === Kind.Count || kind === Kind.Sum || kind === Kind.Distinct ? 0 : undefined;
}

function toNumber(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (typeof value === "bigint") return Number(value);
  return undefined;
}

/** A value distinct counts, compared by ===; CEL ints become numbers so 3 and 3.0 are one. */
function toKey(value: unknown): string | number | boolean | undefined {
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isNaN(value) ? undefined : value;
  if (typeof value === "bigint") return Number(value);
  return undefined;
}
