// Experiments on triggers: which arm a user is in (a hash of the experiment and the user), when they
// were exposed (the moment the rule fired, held out or not: the triggers stage raises an `exposure`
// signal), whether they converted within the attribution window after it (event time), and the
// report: per arm and per segment at exposure, conversion and revenue with their tests.
import { HOLDOUT, type Assignment } from "../engine/assignment.ts";
import { END_OF_TIME } from "../engine/elements.ts";
import { multiplesIn, unionSorted } from "../engine/rounds.ts";
import { chiSquared, minimumDetectableEffect, revenueMoments, welchT, wilsonInterval, type ArmSums } from "./experimentStats.ts";
import { DEFAULT_OUTPUT_DIGITS, isoTime, toDigits } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";

type Vars = Record<string, unknown>;

export type ExperimentSpec = Assignment & {
  /** The trigger rule the experiment is on. */
  rule: string;
  /** True on an event that is a conversion. */
  goal: (vars: Vars) => unknown;
  /** The revenue of a conversion event (a number); undefined: revenue is not measured. */
  value?: (vars: Vars) => unknown;
  /** The attribution window after the first exposure, in event time. */
  withinMs: number;
  /** View variables (segment groups) the report is also broken down by, as of exposure. */
  by: readonly string[];
  /** An `experiment` report every multiple of this, and at the end. */
  reportEveryMs: number;
};

export type ExperimentsOptions = {
  /** Names the stage's state. Default "experiments". */
  name?: string;
  experiments: readonly ExperimentSpec[];
  /** Significant digits of rates and statistics in reports. Default DEFAULT_OUTPUT_DIGITS. */
  digits?: number;
};

export const EXPOSURE_OUTPUT = "exposure";
export const CONVERSION_OUTPUT = "conversion";
export const EXPERIMENT_OUTPUT = "experiment";

/** A user's part in one experiment. Plain data for checkpoints. */
type Exposure = {
  /** Event time of the first exposure. */
  atMs: number;
  arm: string;
  /** Per `by` group, the user's segment at exposure (null: none). */
  segments: Array<string | null>;
  converted: boolean;
  /** Revenue of the goal events in the window. */
  value: number;
  /** The window has closed and the user is counted. */
  isClosed: boolean;
};

/**
 * What is counted, per experiment: per cell (the whole experiment, or a segment of a `by` group) and
 * arm, the users whose window has closed, and those whose window is still open.
 */
type Counts = { cells: Record<string, ArmSums>; open: Record<string, number> };

/** The key of the newest event time in its state. */
const NEWEST_EVENT = "*";

/** The cell of the whole experiment; a segment's is `<group index>|<segment>`. */
const OVERALL = "*";

export function experiments(options: ExperimentsOptions): StageDefinition {
  const name = options.name ?? "experiments";
  const specs = options.experiments;
  return {
    name,
    // Users' records and the counts are kept by experiment name.
    stateShape: { parts: specs.map((s): [string, {}] => [s.experiment, {}]) },
    rounds: {
      boundariesIn: (afterMs, toMs) => boundariesOf(specs, afterMs, toMs),
      merge: (roundMs, _previous, partials) => mergeCounts(specs, partials as ReadonlyArray<ExperimentsPartial | undefined>, roundMs),
    },
    build: (ctx) =>
      new ExperimentsLogic(options, ctx.userState<Record<string, Exposure>>("users"), ctx.valueState<Counts>("counts"), ctx.valueState<object>("reports"), ctx.valueState<number>("newest"), ctx.isGrouped === true),
  };
}

/** Every experiment's report times in (afterMs, toMs]. */
function boundariesOf(specs: readonly ExperimentSpec[], afterMs: number, toMs: number): number[] {
  return unionSorted(specs.map((s) => multiplesIn(afterMs, toMs, s.reportEveryMs)));
}

/** A partition's counts, by experiment, and at its end the time of its newest event. */
type ExperimentsPartial = { counts: Record<string, Counts>; lastEventMs?: number };

/** The group's counts at a round: every partition's added up, and the time the round reports at. */
type ExperimentsRound = { counts: Record<string, Counts>; atMs: number | null };

function mergeCounts(specs: readonly ExperimentSpec[], partials: ReadonlyArray<ExperimentsPartial | undefined>, roundMs: number): ExperimentsRound {
  const counts: Record<string, Counts> = {};
  for (const spec of specs) {
    const merged: Counts = { cells: {}, open: {} };
    for (const partial of partials) {
      const own = partial?.counts[spec.experiment];
      if (own === undefined) continue;
      for (const [key, sums] of Object.entries(own.cells)) addSums((merged.cells[key] ??= emptySums()), sums);
      for (const [key, n] of Object.entries(own.open)) merged.open[key] = (merged.open[key] ?? 0) + n;
    }
    counts[spec.experiment] = merged;
  }
  const ends = partials.flatMap((p) => (p?.lastEventMs === undefined ? [] : [p.lastEventMs]));
  const atMs = roundMs !== END_OF_TIME ? roundMs : ends.length === 0 ? null : Math.max(...ends);
  return { counts, atMs };
}

function emptySums(): ArmSums {
  return { exposed: 0, converted: 0, revenueSum: 0, revenueSumOfSquares: 0 };
}

function addSums(to: ArmSums, from: ArmSums): void {
  to.exposed += from.exposed;
  to.converted += from.converted;
  to.revenueSum += from.revenueSum;
  to.revenueSumOfSquares += from.revenueSumOfSquares;
}

type UserExposures = Record<string, Exposure>;

type UserState<V> = {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  touch(key: string): void;
};

type ValueState<V> = { get(key: string): V | undefined; set(key: string, value: V): void; touch(key: string): void };

class ExperimentsLogic implements StageLogic {
  private readonly specs: readonly ExperimentSpec[];
  private readonly digits: number;
  /** The newest event time seen (kept in state under NEWEST_EVENT): the end's report is dated with it. */
  private lastEventMs: number;
  /** GET /api/v1/experiments: each experiment's latest report (null before its first). */
  readonly view: StageView = {
    user: (user) => {
      const exposures = this.users.get(user);
      if (exposures === undefined) return undefined;
      return Object.fromEntries(
        this.specs.flatMap((spec) => {
          const e = exposures[spec.experiment];
          if (e === undefined) return [];
          const shown = { arm: e.arm === HOLDOUT ? HOLDOUT : "variant", variant: e.arm === HOLDOUT ? null : e.arm, exposed_at: isoTime(e.atMs), window_ends: isoTime(e.atMs + spec.withinMs), converted: e.converted, value: e.value, counted: e.isClosed };
          return [[spec.experiment, shown]];
        }),
      );
    },
    views: { experiments: () => ({ experiments: this.specs.map((spec) => ({ experiment: spec.experiment, rule: spec.rule, report: this.reports.get(spec.experiment) ?? null })) }) },
  };

  constructor(
    options: ExperimentsOptions,
    private readonly users: UserState<UserExposures>,
    private readonly counts: ValueState<Counts>,
    /** Each experiment's latest report, for queries (in a group, the reporting partition's). */
    private readonly reports: ValueState<object>,
    private readonly newestEvent: ValueState<number>,
    private readonly isGrouped: boolean,
  ) {
    this.lastEventMs = newestEvent.get(NEWEST_EVENT) ?? -Infinity;
    this.specs = options.experiments;
    this.digits = options.digits ?? DEFAULT_OUTPUT_DIGITS;
    if (!isGrouped) this.boundaries = { in: (afterMs, toMs) => boundariesOf(this.specs, afterMs, toMs), reach: (boundaryMs, out) => this.reachAlone(boundaryMs, out) };
  }

  /**
   * 1. Closes the windows that ended before this step (the user is counted, converted or not).
   * 2. An event the goal holds for, inside an open window, converts (its value adds up).
   * 3. An exposure signal of the step starts the user's window, once per experiment.
   * 4. One wake-up, at the end of the first window still open.
   */
  step(view: UserView, out: StageOutput): void {
    if (view.event !== undefined && view.timeMs > this.lastEventMs) {
      this.lastEventMs = view.timeMs;
      this.newestEvent.set(NEWEST_EVENT, view.timeMs);
    }
    let exposures = this.users.get(view.user);
    const wakeBefore = exposures === undefined ? undefined : this.wakeOf(exposures);
    if (exposures !== undefined) {
      // 1. and 2.
      for (const spec of this.specs) {
        const exposure = exposures[spec.experiment];
        if (exposure === undefined || exposure.isClosed) continue;
        if (exposure.atMs + spec.withinMs < view.timeMs) this.close(spec, exposure);
        else if (view.event !== undefined && view.timeMs >= exposure.atMs && spec.goal(view.vars) === true) this.convert(spec, exposure, view, out);
        else continue;
        this.users.touch(view.user);
      }
    }
    // 3.
    for (const signal of view.signals) {
      if (signal.kind !== "exposure") continue;
      const spec = this.specs.find((s) => s.experiment === signal.name);
      if (spec === undefined) continue;
      exposures ??= {};
      if (exposures[spec.experiment] !== undefined) {
        out.count("experiment_exposed_again");
        continue;
      }
      exposures[spec.experiment] = this.expose(spec, signal.timeMs, String(signal.detail?.arm), view, out);
      this.users.set(view.user, exposures);
    }
    // 4.
    if (exposures === undefined) return;
    const wakeAfter = this.wakeOf(exposures);
    if (wakeAfter === wakeBefore) return;
    if (wakeBefore !== undefined) out.cancelWake(view.user, wakeBefore);
    if (wakeAfter !== undefined) out.wakeAt(view.user, wakeAfter);
  }

  pendingWake(user: string): number | undefined {
    const exposures = this.users.get(user);
    return exposures === undefined ? undefined : this.wakeOf(exposures);
  }

  /** The first millisecond after the first open window: the step that closes it. */
  private wakeOf(exposures: UserExposures): number | undefined {
    let wakeMs: number | undefined;
    for (const spec of this.specs) {
      const exposure = exposures[spec.experiment];
      if (exposure === undefined || exposure.isClosed) continue;
      const closeMs = exposure.atMs + spec.withinMs + 1;
      if (wakeMs === undefined || closeMs < wakeMs) wakeMs = closeMs;
    }
    return wakeMs;
  }

  private expose(spec: ExperimentSpec, atMs: number, arm: string, view: UserView, out: StageOutput): Exposure {
    const segments = spec.by.map((group) => {
      const segment = view.vars[group];
      return typeof segment === "string" && segment !== "" ? segment : null;
    });
    const exposure: Exposure = { atMs, arm, segments, converted: false, value: 0, isClosed: false };
    this.changeOpen(spec, exposure, 1);
    out.emit(EXPOSURE_OUTPUT, view.user, atMs, {
      output: EXPOSURE_OUTPUT,
      experiment: spec.experiment,
      user_id: view.user,
      time: isoTime(atMs),
      time_ms: atMs,
      arm: arm === HOLDOUT ? HOLDOUT : "variant",
      variant: arm === HOLDOUT ? null : arm,
      rule: spec.rule,
      segments: Object.fromEntries(spec.by.map((group, i) => [group, segments[i]])),
      window_ends: isoTime(atMs + spec.withinMs),
      window_ends_ms: atMs + spec.withinMs,
    });
    return exposure;
  }

  private convert(spec: ExperimentSpec, exposure: Exposure, view: UserView, out: StageOutput): void {
    const raw = spec.value?.(view.vars);
    const value = typeof raw === "number" && Number.isFinite(raw) ? raw : 0;
    exposure.converted = true;
    exposure.value += value;
    out.emit(CONVERSION_OUTPUT, view.user, view.timeMs, {
      output: CONVERSION_OUTPUT,
      experiment: spec.experiment,
      user_id: view.user,
      time: isoTime(view.timeMs),
      time_ms: view.timeMs,
      arm: exposure.arm === HOLDOUT ? HOLDOUT : "variant",
      variant: exposure.arm === HOLDOUT ? null : exposure.arm,
      value,
      exposed_at: isoTime(exposure.atMs),
      exposed_at_ms: exposure.atMs,
    });
  }

  /** The window is over: the user counts in the whole experiment's cell and in their segments'. */
  private close(spec: ExperimentSpec, exposure: Exposure): void {
    exposure.isClosed = true;
    this.changeOpen(spec, exposure, -1);
    const counts = this.countsOf(spec);
    for (const cell of cellsOf(exposure)) {
      const sums = (counts.cells[`${cell}|${exposure.arm}`] ??= emptySums());
      sums.exposed++;
      if (exposure.converted) sums.converted++;
      sums.revenueSum += exposure.value;
      sums.revenueSumOfSquares += exposure.value * exposure.value;
    }
    this.counts.touch(spec.experiment);
  }

  private changeOpen(spec: ExperimentSpec, exposure: Exposure, by: number): void {
    const counts = this.countsOf(spec);
    for (const cell of cellsOf(exposure)) counts.open[`${cell}|${exposure.arm}`] = (counts.open[`${cell}|${exposure.arm}`] ?? 0) + by;
    this.counts.touch(spec.experiment);
  }

  private countsOf(spec: ExperimentSpec): Counts {
    let counts = this.counts.get(spec.experiment);
    if (counts === undefined) {
      counts = { cells: {}, open: {} };
      this.counts.set(spec.experiment, counts);
    }
    return counts;
  }

  /** An erased user's open windows are dropped: nobody knows any more whether they converted. */
  forgetUser(user: string): boolean {
    const exposures = this.users.get(user);
    if (exposures === undefined) return false;
    for (const spec of this.specs) {
      const exposure = exposures[spec.experiment];
      if (exposure !== undefined && !exposure.isClosed) this.changeOpen(spec, exposure, -1);
    }
    return true;
  }

  /**
   * Alone (not in a group, whose rounds say when to report): a report at each multiple of an
   * experiment's period, once the windows that closed before it are counted, and at the end.
   */
  readonly boundaries?: StageLogic["boundaries"];

  private reachAlone(boundaryMs: number, out: StageOutput): void {
    if (boundaryMs === END_OF_TIME) {
      if (Number.isFinite(this.lastEventMs)) this.report(this.ownCounts(), this.lastEventMs, true, out);
      return;
    }
    for (const spec of this.specs) if (boundaryMs % spec.reportEveryMs === 0) this.reportOne(spec, this.countsOf(spec), boundaryMs, false, out);
  }

  private ownCounts(): Record<string, Counts> {
    return Object.fromEntries(this.specs.map((spec) => [spec.experiment, this.countsOf(spec)]));
  }

  offer(): ExperimentsPartial {
    return { counts: this.ownCounts(), ...(Number.isFinite(this.lastEventMs) ? { lastEventMs: this.lastEventMs } : {}) };
  }

  accept(roundMs: number, model: unknown, reports: boolean, out: StageOutput): void {
    const round = model as ExperimentsRound;
    if (!reports || round.atMs === null) return;
    const isFinal = roundMs === END_OF_TIME;
    for (const spec of this.specs) {
      // A round at another experiment's boundary reports nothing of this one.
      if (isFinal || roundMs % spec.reportEveryMs === 0) this.reportOne(spec, round.counts[spec.experiment] ?? { cells: {}, open: {} }, round.atMs, isFinal, out);
    }
  }

  private report(counts: Record<string, Counts>, atMs: number, isFinal: boolean, out: StageOutput): void {
    for (const spec of this.specs) this.reportOne(spec, counts[spec.experiment] ?? { cells: {}, open: {} }, atMs, isFinal, out);
  }

  private reportOne(spec: ExperimentSpec, counts: Counts, atMs: number, isFinal: boolean, out: StageOutput): void {
    const arms = [HOLDOUT, ...spec.variants.map((v) => v.name)];
    const cells: Array<{ group: string | null; segment: string | null; key: string }> = [{ group: null, segment: null, key: OVERALL }];
    const segmentKeys = new Set<string>();
    for (const key of [...Object.keys(counts.cells), ...Object.keys(counts.open)]) {
      const cell = key.slice(0, key.lastIndexOf("|"));
      if (cell !== OVERALL) segmentKeys.add(cell);
    }
    for (const key of [...segmentKeys].sort()) {
      const bar = key.indexOf("|");
      cells.push({ group: spec.by[Number(key.slice(0, bar))], segment: key.slice(bar + 1), key });
    }
    const report = {
      output: EXPERIMENT_OUTPUT,
      experiment: spec.experiment,
      rule: spec.rule,
      time: isoTime(atMs),
      time_ms: atMs,
      final: isFinal,
      attribution_window_ms: spec.withinMs,
      counted: "users whose attribution window has closed; those still inside it are `awaiting`",
      cells: cells.map((cell) => this.cellReport(cell.group, cell.segment, arms.map((arm) => counts.cells[`${cell.key}|${arm}`] ?? emptySums()), arms.map((arm) => counts.open[`${cell.key}|${arm}`] ?? 0), arms, spec)),
    };
    this.reports.set(spec.experiment, report);
    out.emit(EXPERIMENT_OUTPUT, spec.experiment, atMs, report);
  }

  private cellReport(group: string | null, segment: string | null, sums: ArmSums[], open: number[], arms: string[], spec: ExperimentSpec): object {
    const d = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? null : toDigits(x, this.digits));
    const rateOf = (s: ArmSums) => (s.exposed === 0 ? undefined : s.converted / s.exposed);
    const holdout = sums[0];
    const hasRevenue = spec.value !== undefined;
    const chi = chiSquared(sums);
    return {
      group,
      segment,
      arms: arms.map((arm, i) => {
        const moments = revenueMoments(sums[i]);
        const interval = wilsonInterval(sums[i].converted, sums[i].exposed);
        return {
          arm: i === 0 ? HOLDOUT : "variant",
          variant: i === 0 ? null : arm,
          exposed: sums[i].exposed,
          converted: sums[i].converted,
          awaiting: open[i],
          conversion_rate: d(rateOf(sums[i])),
          conversion_rate_ci: interval === undefined ? null : [d(interval[0]), d(interval[1])],
          ...(hasRevenue ? { revenue_mean: d(moments?.mean ?? (sums[i].exposed === 1 ? sums[i].revenueSum : undefined)), revenue_variance: d(moments?.variance) } : {}),
        };
      }),
      chi_squared: chi === undefined ? null : { statistic: d(chi.statistic), degrees_of_freedom: chi.degrees_of_freedom, p_value: d(chi.p_value), low_expected_counts: chi.low_expected_counts },
      // Against the holdout; in an experiment without one, against its first variant.
      variants: arms.slice(1).flatMap((variant, i) => {
        const baseline = spec.holdout > 0 ? 0 : 1;
        if (i + 1 === baseline) return [];
        const own = sums[i + 1];
        const against = sums[baseline];
        const rate = rateOf(own);
        const base = rateOf(against);
        const welch = hasRevenue ? welchT(own, against) : undefined;
        return [
          {
            variant,
            against: arms[baseline],
            uplift: d(rate === undefined || base === undefined ? undefined : rate - base),
            relative_uplift: d(rate === undefined || base === undefined || base === 0 ? undefined : (rate - base) / base),
            minimum_detectable_effect: d(minimumDetectableEffect(own, against)),
            ...(hasRevenue ? { welch_t: welch === undefined ? null : { statistic: d(welch.statistic), degrees_of_freedom: d(welch.degrees_of_freedom), p_value: d(welch.p_value) } } : {}),
          },
        ];
      }),
    };
  }
}

/** The cells a user counts in: the whole experiment, and their segment (if any) of each `by` group. */
function cellsOf(exposure: Exposure): string[] {
  const cells = [OVERALL];
  exposure.segments.forEach((segment, g) => {
    if (segment !== null) cells.push(`${g}|${segment}`);
  });
  return cells;
}
