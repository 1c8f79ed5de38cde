// Quantiles across users: a t-digest per metric of every user's latest value, rebuilt once per period
// of event time, checkpointed, read by `quantile("metric", q)` in expressions and optionally reported.
import { DEFAULT_OUTPUT_DIGITS, isoTime, toDigits } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, UserView } from "./stage.ts";
import { partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";
import { digestOf, lookupOf, mergeDigests, quantileAt, quantileOf, type Digest, type DigestLookup } from "./tdigest.ts";
import { END_OF_TIME } from "../engine/elements.ts";
import { multiplesIn } from "../engine/rounds.ts";

export type QuantilesOptions = {
  /** Names the stage's state. Default "quantiles". */
  name?: string;
  /** View variables (numbers) whose distribution over users is kept. */
  metrics: string[];
  /** The t-digest's compression: a digest keeps at most about this many centroids (half when built from values). Default 100. */
  compression?: number;
  /** The digests are rebuilt from users' latest values at every multiple of this, when any changed. Default 1 h. */
  everyMs?: number;
  /** Emit a "quantiles" record per metric at each rebuild. Default false. */
  report?: boolean;
  /** Where `quantile(metric, q)` is published for other stages' expressions. Default: not published. */
  publishTo?: PublishedQuantiles;
  /** Significant digits of the reported quantiles, min and max. Default DEFAULT_OUTPUT_DIGITS. */
  digits?: number;
};

/**
 * The stage's quantiles as other stages read them (CEL's quantile(), pipelines/celQuantile.ts):
 * filled in when the stage is built; undefined where a metric has no digest yet.
 */
export type PublishedQuantiles = { quantile?: (metric: string, q: number) => number | undefined };

/** The output kind of a quantiles report. */
export const QUANTILES_OUTPUT = "quantiles";

/** The "quantiles" output, one per metric at each rebuild. */
export type QuantilesReport = {
  output: typeof QUANTILES_OUTPUT;
  time: string;
  time_ms: number;
  metric: string;
  count: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
};


/** What is kept across users, under one key. */
type DigestsState = {
  /** Per metric, the digest of the last rebuild (null: no user had a value). */
  digests: Array<Digest | null>;
  /** Set when a user's value changed since the last rebuild: the boundary the next rebuild is due at. */
  dueAtMs: number | null;
  /** The latest watermark: a rebuild is never due at or before it (it would be missed, or made twice). */
  watermarkMs: number | null;
};

const ALL_USERS = "*";
const HOUR_MS = 3_600_000;

/** A partition's partial in a group's rounds: the digests of its users' latest values, and when it changed first since its last rebuild. */
type QuantilesPartial = { digests: Array<Digest | null>; dueAtMs: number | null };

/** A round's model: the group's digests, and the boundary of the rebuild it makes (null: nothing changed). */
type QuantilesRound = { roundMs: number; digests: Array<Digest | null>; rebuiltAtMs: number | null };

/**
 * The group's digests at a round: when some partition's values changed since the round before, its
 * digests merged in partition order, labelled with the first boundary due (alone, the rebuild's).
 */
function mergeRound(options: QuantilesOptions, roundMs: number, previous: QuantilesRound | undefined, partials: ReadonlyArray<QuantilesPartial | undefined>): QuantilesRound {
  const previousMs = previous?.roundMs ?? -Infinity;
  let rebuiltAtMs: number | null = null;
  for (const partial of partials) {
    const dueMs = partial?.dueAtMs;
    if (dueMs === null || dueMs === undefined || dueMs <= previousMs || (roundMs !== END_OF_TIME && dueMs > roundMs)) continue;
    if (rebuiltAtMs === null || dueMs < rebuiltAtMs) rebuiltAtMs = dueMs;
  }
  if (rebuiltAtMs === null) return { roundMs, digests: previous?.digests ?? options.metrics.map(() => null), rebuiltAtMs };
  const compression = options.compression ?? DEFAULT_COMPRESSION;
  const digests = options.metrics.map((_, i) => partials.reduce<Digest | null>((merged, partial) => (partial === undefined ? merged : mergeDigests(merged, partial.digests[i], compression)), null));
  return { roundMs, digests, rebuiltAtMs };
}

const DEFAULT_COMPRESSION = 100;

export function quantiles(options: QuantilesOptions): StageDefinition {
  const name = options.name ?? "quantiles";
  // Per metric, by name: each user's latest value, and the digest of the last rebuild.
  const shape: StateShape = { parts: options.metrics.map((m): [string, StateShape] => [m, {}]) };
  const everyMs = options.everyMs ?? HOUR_MS;
  return {
    name,
    stateShape: shape,
    rounds: {
      boundariesIn: (afterMs, toMs) => multiplesIn(afterMs, toMs, everyMs),
      merge: (roundMs, previous, partials) => mergeRound(options, roundMs, previous as QuantilesRound | undefined, partials as ReadonlyArray<QuantilesPartial | undefined>),
    },
    build: (ctx) => {
      const values = ctx.userState<Array<number | null>>("values");
      const digests = ctx.valueState<DigestsState>("digests");
      if (ctx.restoredShape) {
        const from = partsFrom(ctx.restoredShape, shape);
        relayoutAll(values, (latest) => pickParts(latest, from, () => null));
        const state = digests.get(ALL_USERS);
        if (state !== undefined) digests.set(ALL_USERS, { ...state, digests: pickParts(state.digests, from, () => null) });
      }
      return new QuantilesLogic(options, values, digests, ctx.isGrouped === true, ctx.drainsAtEnd ?? true);
    },
  };
}

type ValueState<V> = {
  readonly size: number;
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  touch(key: string): void;
  entries(): IterableIterator<[string, V]>;
};

class QuantilesLogic implements StageLogic {
  private readonly metrics: string[];
  private readonly metricIndex: Map<string, number>;
  private readonly compression: number;
  private readonly everyMs: number;
  private readonly state: DigestsState;
  /** Per metric, the digest's cumulative centre positions for quick lookups; derived from the state. */
  private lookups: Array<DigestLookup | null>;
  /** This instance's quantile(), as published to expressions. */
  private readonly published: (metric: string, q: number) => number | undefined = (metric, q) => this.quantile(metric, q);

  constructor(
    private readonly options: QuantilesOptions,
    /** Each user's latest value per metric (null: none yet). */
    private readonly values: ValueState<Array<number | null>>,
    private readonly digests: ValueState<DigestsState>,
    /** One partition of a group: the digests come from the group's rounds (offer, accept). */
    private readonly isGrouped: boolean,
    /** False: the input's end rebuilds nothing (as alone, where the end does not reach the stage). */
    private readonly drainsAtEnd: boolean,
  ) {
    this.metrics = options.metrics;
    this.metricIndex = new Map(options.metrics.map((m, i) => [m, i]));
    this.compression = options.compression ?? DEFAULT_COMPRESSION;
    this.everyMs = options.everyMs ?? HOUR_MS;
    let state = digests.get(ALL_USERS);
    if (state === undefined) {
      state = { digests: options.metrics.map(() => null), dueAtMs: null, watermarkMs: null };
      digests.set(ALL_USERS, state);
    }
    this.state = state;
    this.lookups = state.digests.map((d) => (d === null ? null : lookupOf(d)));
  }

  /** Expressions' quantile() reads this instance's digests (several jobs may share them in one process). */
  activate(): void {
    if (this.options.publishTo) this.options.publishTo.quantile = this.published;
  }

  /** Records the user's values that changed; marks a rebuild due at the next period boundary. */
  step(view: UserView): void {
    let latest = this.values.get(view.user);
    let isChanged = false;
    for (let i = 0; i < this.metrics.length; i++) {
      const value = view.vars[this.metrics[i]];
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      if (latest === undefined) {
        latest = new Array<number | null>(this.metrics.length).fill(null);
        this.values.set(view.user, latest);
      } else if (latest[i] === value) continue;
      latest[i] = value;
      isChanged = true;
    }
    if (!isChanged) return;
    this.values.touch(view.user);
    if (this.state.dueAtMs === null) this.markDue(view.timeMs);
  }

  /**
   * The first boundary after the change, unless the watermark has passed it: then the next one
   * after the watermark (a late change goes into the next rebuild, never into one already made).
   */
  private markDue(timeMs: number): void {
    const s = this.state;
    const afterWatermarkMs = s.watermarkMs === null ? -Infinity : this.nextBoundary(s.watermarkMs);
    s.dueAtMs = Math.max(this.nextBoundary(timeMs), afterWatermarkMs);
    this.digests.touch(ALL_USERS);
  }

  private nextBoundary(timeMs: number): number {
    return Math.floor(timeMs / this.everyMs) * this.everyMs + this.everyMs;
  }

  /**
   * Rebuilds once when the watermark has passed the due boundary, however far it jumped: the
   * digests then describe users' latest values, labelled with that boundary.
   */
  onWatermark(watermarkMs: number, out: StageOutput): void {
    const s = this.state;
    s.watermarkMs = watermarkMs;
    this.digests.touch(ALL_USERS);
    if (this.isGrouped || s.dueAtMs === null || watermarkMs < s.dueAtMs) return;
    const timeMs = s.dueAtMs;
    s.digests = this.metrics.map((_, i) => this.rebuild(i));
    this.lookups = s.digests.map((d) => (d === null ? null : lookupOf(d)));
    s.dueAtMs = null;
    if (this.options.report) this.report(timeMs, out);
  }

  /**
   * The partition's digests and first change, for the group's rounds after `afterMs`. A change due
   * before them (made before the partition's first watermark) is due at the first. Changes nothing.
   */
  offer(afterMs: number): QuantilesPartial {
    const dueMs = this.state.dueAtMs;
    const firstMs = Number.isFinite(afterMs) ? this.nextBoundary(afterMs) : -Infinity;
    return { digests: this.metrics.map((_, i) => this.rebuild(i)), dueAtMs: dueMs === null ? null : Math.max(dueMs, firstMs) };
  }

  /** The group's digests as of the round; the reporting partition reports a rebuild. */
  accept(roundMs: number, model: unknown, reports: boolean, out: StageOutput): void {
    if (roundMs === END_OF_TIME && !this.drainsAtEnd) return;
    const round = model as QuantilesRound;
    const s = this.state;
    s.digests = round.digests;
    this.lookups = s.digests.map((d) => (d === null ? null : lookupOf(d)));
    if (s.dueAtMs !== null && (roundMs === END_OF_TIME || s.dueAtMs <= roundMs)) s.dueAtMs = null;
    this.digests.touch(ALL_USERS);
    if (round.rebuiltAtMs !== null && reports && this.options.report) this.report(round.rebuiltAtMs, out);
  }

  private rebuild(metric: number): Digest | null {
    const values = new Float64Array(this.values.size);
    let n = 0;
    for (const [, latest] of this.values.entries()) {
      const value = latest[metric];
      if (value !== null && value !== undefined) values[n++] = value;
    }
    return n === 0 ? null : digestOf(values.subarray(0, n), this.compression);
  }

  private report(timeMs: number, out: StageOutput): void {
    for (let i = 0; i < this.metrics.length; i++) {
      const digest = this.state.digests[i];
      if (digest === null) continue;
      const digits = this.options.digits ?? DEFAULT_OUTPUT_DIGITS;
      const q = (p: number) => toDigits(quantileOf(digest, p)!, digits);
      const body: QuantilesReport = {
        output: QUANTILES_OUTPUT,
        time: isoTime(timeMs),
        time_ms: timeMs,
        metric: this.metrics[i],
        count: digest.count,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        min: toDigits(digest.min, digits),
        max: toDigits(digest.max, digits),
      };
      out.emit(QUANTILES_OUTPUT, this.metrics[i], timeMs, body);
    }
  }

  /** The value below which a share `q` of users' latest values lie, as of the last rebuild. */
  quantile(metric: string, q: number): number | undefined {
    const i = this.metricIndex.get(metric);
    const lookup = i === undefined ? null : this.lookups[i];
    return lookup === null ? undefined : quantileAt(lookup, q);
  }
}
