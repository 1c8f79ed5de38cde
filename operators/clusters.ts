// Clusters: k-means over the standardised feature vectors of recently active users, re-run every
// period of event time with labels kept across runs; users follow the nearest centroid between runs;
// daily cohorts per cluster measure retention.
import { kmeans } from "ml-kmeans";
import { END_OF_TIME } from "../engine/elements.ts";
import type { SlotState } from "../engine/keyedSlots.ts";
import type { KeyedValueState } from "../engine/keyedState.ts";
import {
  describedNames,
  hasDistinctPoints,
  kmeansPlusPlus,
  matchCentroids,
  nameClusters,
  nearestCentroid,
  nearestPoint,
  standardisation,
  standardise,
  unstandardise,
  type Standardisation,
} from "./clusterMath.ts";
import { DEFAULT_OUTPUT_DIGITS, isoTime, toDigits } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { multiplesIn, unionSorted } from "../engine/rounds.ts";

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** Key of the records and state that belong to no user. */
const ALL = "*";

/** A naming rule, evaluated on a centroid's z-scores by feature name; only `true` holds. */
export type ClusterNameRule = {
  name: string;
  when: (z: Record<string, number>) => unknown;
};

export type ClustersOptions = {
  /** Names the stage's state. Default "clusters". */
  name?: string;
  /** The view variable holding the user's cluster name. Default DEFAULT_CLUSTER_VAR. */
  variable?: string;
  /** Numeric view variables making up the vector, in order. A user missing one is not clustered. */
  features: string[];
  /** Number of clusters, 2 to 16. Default 5. */
  k?: number;
  /** Event time between runs: a run when the watermark crosses a multiple of it. Default 30 minutes. */
  everyMs?: number;
  /** A run clusters the users whose last event is at most this long before its boundary. Default 30 minutes. */
  activeWithinMs?: number;
  /** Seed of the k-means++ initialisation. Default 42. */
  seed?: number;
  /** Upper bound of k-means iterations per run. Default 100. */
  maxIterations?: number;
  /**
   * Naming rules in priority order; a cluster no rule names is named after the feature its
   * centroid stands out on (`high_visit_frequency`, `low_p_exit`: see describedNames). Default none.
   */
  names?: ClusterNameRule[];
  /**
   * Cohort retention: a user joins the cohort (UTC day, cluster) at their first event of the day,
   * and is retained when active during the day starting this long after the cohort's day.
   * null: no report. Default 7 days.
   */
  retentionAfterMs?: number | null;
  /** Significant digits of centroids (means and z-scores) and retention rates in outputs. Default DEFAULT_OUTPUT_DIGITS. */
  digits?: number;
};

export const DEFAULT_CLUSTER_VAR = "cluster";
const DEFAULT_K = 5;

/** The output kinds of a user's cluster change, of a run, and of a cohort's retention. */
export const CLUSTER_OUTPUT = "cluster";
export const CLUSTERS_OUTPUT = "clusters";
export const CLUSTER_RETENTION_OUTPUT = "cluster_retention";

/** "cluster": a user's cluster name changed (previous null: the user's first). */
export type ClusterChange = { output: typeof CLUSTER_OUTPUT; user_id: string; time: string; time_ms: number; cluster: string; previous: string | null };

/** "clusters": one per run, the clusters in slot order: members' mean raw values, the centroid's z-scores. */
export type ClustersRun = {
  output: typeof CLUSTERS_OUTPUT;
  time: string;
  time_ms: number;
  run: number;
  users: number;
  centroids: Array<{ name: string; size: number; mean: Record<string, number>; z: Record<string, number> }>;
};

/** "cluster_retention": one per cohort, once its measuring day is over. */
export type ClusterRetention = {
  output: typeof CLUSTER_RETENTION_OUTPUT;
  time: string;
  time_ms: number;
  /** The cohort's UTC day, "2024-05-20". */
  cohort_day: string;
  cluster: string;
  users: number;
  retained: number;
  rate: number;
};

/** What the stage keeps per user. */
type UserCluster = {
  /** The last complete feature vector, raw values; null until the user has one. */
  vector: number[] | null;
  /** Time of the user's latest event. */
  activeMs: number;
  /** The user's cluster slot, as of model run `run`; -1 before the first assignment. */
  slot: number;
  run: number;
  /** The cluster name last written, to tell a change. */
  label: string | null;
  /** Retention cohorts joined and not yet settled: [cohort day start ms, cluster name]. */
  cohorts: Array<[number, string]>;
};

/** The model of the last run and the stage's progress, kept under one key. */
type Model = Standardisation & {
  /** Runs done; 0: no model yet. */
  run: number;
  /** The last period boundary handled (run or skipped); null before the first. */
  boundaryMs: number | null;
  /** Per slot, in the run's z-space. */
  centroids: number[][];
  /** Per slot. */
  names: string[];
  /** Cohorts of days up to this one have been reported; null before the first report. */
  reportedDayMs: number | null;
};

/** Users and retained users of one cohort. */
type CohortCounts = [users: number, retained: number];

export function clusters(options: ClustersOptions): StageDefinition {
  const name = options.name ?? "clusters";
  const settings = settingsOf(options);
  return {
    name,
    // Users' vectors, the model's scaling and centroids are laid out by the features, in order, and k.
    stateShape: { layout: { features: options.features, k: settings.k } },
    rounds: {
      boundariesIn: (afterMs, toMs) => boundariesIn(settings, afterMs, toMs),
      merge: (roundMs, previous, partials) => mergeRound(settings, roundMs, previous as ClustersRound | undefined, partials as ReadonlyArray<ClustersPartial | undefined>),
    },
    build: (ctx) =>
      new ClustersLogic(settings, ctx.userState<UserCluster>("users"), ctx.valueState<Model>("model"), ctx.valueState<CohortCounts>("cohorts"), ctx.isGrouped === true, ctx.drainsAtEnd ?? true),
  };
}

/** The options with their defaults. */
type Settings = {
  variable: string;
  features: string[];
  k: number;
  everyMs: number;
  activeWithinMs: number;
  seed: number;
  maxIterations: number;
  rules: ClusterNameRule[];
  retentionAfterMs: number | null;
  digits: number;
};

function settingsOf(options: ClustersOptions): Settings {
  return {
    variable: options.variable ?? DEFAULT_CLUSTER_VAR,
    features: options.features,
    k: options.k ?? DEFAULT_K,
    everyMs: options.everyMs ?? 30 * MINUTE_MS,
    activeWithinMs: options.activeWithinMs ?? 30 * MINUTE_MS,
    seed: options.seed ?? 42,
    maxIterations: options.maxIterations ?? 100,
    rules: options.names ?? [],
    retentionAfterMs: options.retentionAfterMs === undefined ? 7 * DAY_MS : options.retentionAfterMs,
    digits: options.digits ?? DEFAULT_OUTPUT_DIGITS,
  };
}

/** The model's part that one run hands to the next: scaling, centroids by slot, names, runs so far, cohorts reported. */
type ModelCore = Standardisation & Pick<Model, "run" | "centroids" | "names" | "reportedDayMs">;

const NO_MODEL: ModelCore = { run: 0, means: [], stds: [], centroids: [], names: [], reportedDayMs: null };

/** What one k-means run makes of vectors in a fixed order, given the model before it. */
type Fit = { scaling: Standardisation; centroids: number[][]; names: string[]; slots: number[]; sizes: number[] };

/**
 * One run over `vectors` (in an order that does not depend on arrival or restore):
 * 1. fewer than k distinct vectors: no run (undefined);
 * 2. standardise, k-means (ml-kmeans from k-means++ seeds drawn with the configured seed);
 * 3. match the centroids to the previous run's slots, compared in this run's z-space;
 * 4. every vector's nearest centroid, the clusters' names.
 */
function fit(settings: Settings, vectors: number[][], previous: ModelCore): Fit | undefined {
  // 1.
  if (!hasDistinctPoints(vectors, settings.k)) return undefined;
  // 2.
  const scaling = standardisation(vectors);
  const points = vectors.map((v) => standardise(v, scaling));
  const seeds = kmeansPlusPlus(points, settings.k, settings.seed);
  const result = kmeans(points, settings.k, { initialization: seeds, maxIterations: settings.maxIterations });
  // 3.
  const centroids = new Array<number[]>(settings.k);
  if (previous.run === 0) for (let i = 0; i < settings.k; i++) centroids[i] = result.centroids[i];
  else {
    const previousCentroids = previous.centroids.map((c) => standardise(unstandardise(c, previous), scaling));
    const slotOf = matchCentroids(result.centroids, previousCentroids);
    for (let i = 0; i < settings.k; i++) centroids[slotOf[i]] = result.centroids[i];
  }
  // 4.
  const slots = points.map((z) => nearestPoint(z, centroids));
  const sizes = new Array<number>(settings.k).fill(0);
  for (const slot of slots) sizes[slot]++;
  const candidates = centroids.map((c, slot) => [...holdingRules(settings, c), ...describedNames(c, settings.features, previous.names[slot])]);
  return { scaling, centroids, names: nameClusters(candidates, sizes, previous.names), slots, sizes };
}

/** The names of the rules that hold for a centroid, in rule order. */
function holdingRules(settings: Settings, centroid: number[]): string[] {
  const z = byFeature(settings.features, centroid);
  return settings.rules.filter((rule) => rule.when(z) === true).map((rule) => rule.name);
}

/** `values` by feature name; with `digits`, rounded for an output. */
function byFeature(features: readonly string[], values: readonly number[], digits?: number): Record<string, number> {
  const record: Record<string, number> = {};
  for (let i = 0; i < features.length; i++) record[features[i]] = digits === undefined ? values[i] : toDigits(values[i], digits);
  return record;
}

/** The start of the measuring day after which a cohort is reported, at watermark `watermarkMs`: cohorts of days up to it are due. */
function dueDayAt(settings: Settings, watermarkMs: number): number {
  return Math.floor((watermarkMs - settings.retentionAfterMs! - DAY_MS) / DAY_MS) * DAY_MS;
}

// --- In a group's rounds (engine/rounds.ts): one model for the users of every partition. ---

/**
 * A partition's partial: its users active since the first round it stands for, in user order, as
 * [active ms, ...vector] laid end to end in float64s (bytes: a typed array is not packed as one);
 * its open cohorts; at its end, the end of the period of its
 * newest event.
 */
type ClustersPartial = { users: Uint8Array; cohorts: Array<[dayMs: number, cluster: string, users: number, retained: number]>; lastBoundaryMs?: number };

/** A round's model: the model after it, and what the round made (a run, retention reports). */
type ClustersRound = {
  core: ModelCore;
  /** The run's boundary (the end: the end of the period of the group's newest event); null: nothing to run at. */
  atMs: number | null;
  /** The run's summary, when there was one (undefined: skipped, too few distinct users). */
  ran?: { users: number; sizes: number[]; memberMeans: number[][] };
  /** Cohorts reported at this round, summed over the group, in (day, cluster) order. */
  retention: Array<[dayMs: number, cluster: string, users: number, retained: number]>;
};

/** Runs at multiples of `everyMs`; with retention, also where a measuring day ends. */
function boundariesIn(settings: Settings, afterMs: number, toMs: number): number[] {
  const runs = multiplesIn(afterMs, toMs, settings.everyMs);
  if (settings.retentionAfterMs === null) return runs;
  return unionSorted([runs, multiplesIn(afterMs, toMs, DAY_MS, settings.retentionAfterMs % DAY_MS)]);
}

function mergeRound(settings: Settings, roundMs: number, previous: ClustersRound | undefined, partials: ReadonlyArray<ClustersPartial | undefined>): ClustersRound {
  let core = previous?.core ?? NO_MODEL;
  const isEnd = roundMs === END_OF_TIME;
  const isRun = isEnd || roundMs % settings.everyMs === 0;
  let atMs: number | null = roundMs;
  if (isEnd) {
    const ends = partials.flatMap((p) => (p?.lastBoundaryMs === undefined ? [] : [p.lastBoundaryMs]));
    atMs = ends.length === 0 ? null : Math.max(...ends);
  }
  let ran: ClustersRound["ran"];
  if (isRun && atMs !== null) {
    // The run's users, partition by partition, each partition's in user order.
    const sinceMs = atMs - settings.activeWithinMs;
    const vectors: number[][] = [];
    const d = settings.features.length;
    for (const partial of partials) {
      const users = partial === undefined ? new Float64Array(0) : new Float64Array(Uint8Array.from(partial.users).buffer);
      for (let at = 0; at < users.length; at += d + 1) if (users[at] >= sinceMs) vectors.push(Array.from(users.subarray(at + 1, at + 1 + d)));
    }
    const result = fit(settings, vectors, core);
    if (result !== undefined) {
      core = { ...core, run: core.run + 1, means: result.scaling.means, stds: result.scaling.stds, centroids: result.centroids, names: result.names };
      ran = { users: vectors.length, sizes: result.sizes, memberMeans: memberMeans(vectors, result.slots, result.centroids.map((z) => unstandardise(z, result.scaling))) };
    }
  }
  const retention: ClustersRound["retention"] = [];
  if (!isEnd && settings.retentionAfterMs !== null) {
    const dueDayMs = dueDayAt(settings, roundMs);
    const reportedDayMs = core.reportedDayMs;
    if (reportedDayMs === null || dueDayMs > reportedDayMs) {
      const sums = new Map<string, [number, string, number, number]>();
      for (const partial of partials) {
        for (const [dayMs, cluster, users, retained] of partial?.cohorts ?? []) {
          if (dayMs > dueDayMs || (reportedDayMs !== null && dayMs <= reportedDayMs)) continue;
          const key = cohortKey(dayMs, cluster);
          const sum = sums.get(key) ?? [dayMs, cluster, 0, 0];
          sum[2] += users;
          sum[3] += retained;
          sums.set(key, sum);
        }
      }
      retention.push(...[...sums.values()].sort(byDayThenCluster));
      core = { ...core, reportedDayMs: dueDayMs };
    }
  }
  return { core, atMs, ran, retention };
}

function byDayThenCluster(a: [number, string, ...unknown[]], b: [number, string, ...unknown[]]): number {
  return a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
}

class ClustersLogic implements StageLogic {
  private readonly variable: string;
  private readonly features: string[];
  private readonly everyMs: number;
  private readonly activeWithinMs: number;
  private readonly retentionAfterMs: number | null;
  private readonly digits: number;
  /** A copy of the "model" state under ALL, read once at build: every change is written back. */
  private model: Model;
  /** The vector of the current step, reused: no array per step. */
  private readonly scratch: number[];
  /**
   * The users with an event since the last run's activity cut, by name: a run looks at these, not
   * at every user ever seen. Built from the state at the first run, then kept by the steps.
   */
  private recent: Map<string, UserCluster> | undefined;
  /** Users per cluster name: counted on the first query, then kept by every change of a user's cluster. */
  private sizes: Map<string, number> | undefined;
  readonly view: StageView = {
    user: (user) => {
      const entry = this.users.get(user);
      if (entry === undefined) return undefined;
      return { cluster: entry.label, run: entry.label === null ? null : entry.run, active: isoTime(entry.activeMs), active_ms: entry.activeMs };
    },
    views: { clusters: () => this.sizesView() },
  };

  constructor(
    private readonly settings: Settings,
    private readonly users: SlotState<UserCluster>,
    private readonly modelState: KeyedValueState<Model>,
    private readonly cohorts: KeyedValueState<CohortCounts>,
    /** One partition of a group: runs and retention reports come from the group's rounds (offer, accept). */
    private readonly isGrouped: boolean,
    /** False: the input's end is no run (as alone, where the end does not reach the stage). */
    private readonly drainsAtEnd: boolean,
  ) {
    this.variable = settings.variable;
    this.features = settings.features;
    this.everyMs = settings.everyMs;
    this.activeWithinMs = settings.activeWithinMs;
    this.retentionAfterMs = settings.retentionAfterMs;
    this.digits = settings.digits;
    this.model = modelState.get(ALL) ?? { run: 0, boundaryMs: null, means: [], stds: [], centroids: [], names: [], reportedDayMs: null };
    this.scratch = new Array<number>(this.features.length).fill(0);
  }

  step(view: UserView, out: StageOutput): void {
    const event = view.event;
    // An event always changes the entry (its activity time): read it for update, one lookup.
    let entry = event ? this.users.getForUpdate(view.user) : this.users.get(view.user);
    if (entry === undefined) {
      if (!event) return;
      entry = { vector: null, activeMs: view.timeMs, slot: -1, run: 0, label: null, cohorts: [] };
      this.users.set(view.user, entry);
    }
    let isChanged = this.follow(entry, view.vars);
    const label = entry.slot < 0 ? null : this.model.names[entry.slot];
    // A user once assigned always has a slot: the label only goes from null to names and between names.
    if (label !== null && label !== entry.label) {
      const change: ClusterChange = { output: CLUSTER_OUTPUT, user_id: view.user, time: isoTime(view.timeMs), time_ms: view.timeMs, cluster: label, previous: entry.label };
      out.emit(CLUSTER_OUTPUT, view.user, view.timeMs, change);
      this.moveSize(entry.label, label);
      entry.label = label;
      isChanged = true;
    }
    if (event) {
      this.trackActivity(entry, view.timeMs, label);
      this.recent?.set(view.user, entry);
    } else {
      if (isChanged) this.users.touch(view.user);
      // Under a memory budget the entry may have left memory and been read back: `recent` must hold the one that changes.
      if (this.recent?.has(view.user)) this.recent.set(view.user, entry);
    }
    if (label !== null) view.vars[this.variable] = label;
  }

  forgetUser(user: string): boolean {
    const label = this.users.get(user)?.label ?? null;
    if (label !== null) this.moveSize(label, null);
    return this.recent?.delete(user) ?? false;
  }

  /**
   * Takes the step's feature vector, and moves the user to the nearest centroid when the vector
   * changed or the model did since the user's slot was chosen. True when the entry changed.
   */
  private follow(entry: UserCluster, vars: Record<string, unknown>): boolean {
    const vector = this.scratch;
    for (let i = 0; i < vector.length; i++) {
      const value = vars[this.features[i]];
      // Missing data: the user keeps the last complete vector and its cluster.
      if (typeof value !== "number" || !Number.isFinite(value)) return false;
      vector[i] = value;
    }
    let isChanged = false;
    if (entry.vector === null) {
      entry.vector = vector.slice();
      isChanged = true;
    } else if (!sameVector(entry.vector, vector)) {
      for (let i = 0; i < vector.length; i++) entry.vector[i] = vector[i];
      isChanged = true;
    }
    const model = this.model;
    if (model.run === 0 || (!isChanged && entry.run === model.run)) return isChanged;
    entry.slot = nearestCentroid(vector, model, model.centroids);
    entry.run = model.run;
    return true;
  }

  /**
   * An event of the user: 1. settles the cohorts whose measuring day holds it (retained) or that
   * were reported already; 2. joins the cohort of the day under the user's cluster, once a day.
   */
  private trackActivity(entry: UserCluster, timeMs: number, label: string | null): void {
    if (timeMs > entry.activeMs) entry.activeMs = timeMs;
    const afterMs = this.retentionAfterMs;
    if (afterMs === null) return;
    const reportedDayMs = this.model.reportedDayMs ?? -Infinity;
    const dayMs = Math.floor(timeMs / DAY_MS) * DAY_MS;
    const joined = entry.cohorts;
    let hasJoinedToday = false;
    // 1.
    for (let i = joined.length - 1; i >= 0; i--) {
      const cohortDayMs = joined[i][0];
      if (cohortDayMs === dayMs) hasJoinedToday = true;
      const measureFromMs = cohortDayMs + afterMs;
      if (cohortDayMs <= reportedDayMs) joined.splice(i, 1);
      else if (timeMs >= measureFromMs && timeMs < measureFromMs + DAY_MS) {
        this.countCohort(cohortDayMs, joined[i][1], 0, 1);
        joined.splice(i, 1);
      }
    }
    // 2. A late event of a day already reported joins nothing.
    if (label === null || hasJoinedToday || dayMs <= reportedDayMs) return;
    joined.push([dayMs, label]);
    this.countCohort(dayMs, label, 1, 0);
  }

  private countCohort(dayMs: number, cluster: string, users: number, retained: number): void {
    const key = cohortKey(dayMs, cluster);
    const counts = this.cohorts.getForUpdate(key);
    if (counts === undefined) this.cohorts.set(key, [users, retained]);
    else {
      counts[0] += users;
      counts[1] += retained;
    }
  }

  onWatermark(watermarkMs: number, out: StageOutput): void {
    if (this.isGrouped) return;
    this.runIfDue(watermarkMs, out);
    this.reportRetention(watermarkMs, out);
  }

  /**
   * Runs once for the latest period boundary the watermark crossed, however many periods it
   * jumped: the state holds only each user's latest vector, so only the latest period can be
   * clustered. END_OF_TIME (the input is over) runs for the end of the period of the last event.
   */
  private runIfDue(watermarkMs: number, out: StageOutput): void {
    const boundaryMs = watermarkMs === END_OF_TIME ? this.lastEventBoundaryMs() : Math.floor(watermarkMs / this.everyMs) * this.everyMs;
    if (boundaryMs === undefined || (this.model.boundaryMs !== null && boundaryMs <= this.model.boundaryMs)) return;
    this.model.boundaryMs = boundaryMs;
    this.modelState.set(ALL, this.model);
    this.run(boundaryMs, out);
  }

  /** The end of the period holding the latest event; undefined when there was none. */
  private lastEventBoundaryMs(): number | undefined {
    let latestMs = -Infinity;
    for (const [, entry] of this.users.entries()) latestMs = Math.max(latestMs, entry.activeMs);
    return latestMs === -Infinity ? undefined : Math.floor(latestMs / this.everyMs) * this.everyMs + this.everyMs;
  }

  /**
   * One run at `boundaryMs` (see fit): the active users with a complete vector, in user order; the
   * model stored; the run emitted, and the users whose cluster name changed.
   */
  private run(boundaryMs: number, out: StageOutput): void {
    const actives = this.activesAt(boundaryMs);
    const vectors = actives.map(([, entry]) => entry.vector!);
    const result = fit(this.settings, vectors, this.model);
    if (result === undefined) {
      out.count("cluster_runs_skipped");
      return;
    }
    const { scaling, centroids, names, slots, sizes } = result;
    this.model = { ...this.model, run: this.model.run + 1, means: scaling.means, stds: scaling.stds, centroids, names };
    this.modelState.set(ALL, this.model);
    const means = memberMeans(vectors, slots, centroids.map((z) => unstandardise(z, scaling)));
    out.emit(CLUSTERS_OUTPUT, ALL, boundaryMs, this.describeRun(boundaryMs, actives.length, centroids, means, sizes));
    for (let i = 0; i < actives.length; i++) this.assign(actives[i][0], slots[i], boundaryMs, out);
  }

  /**
   * The users active at `boundaryMs` (an event at most activeWithin before it) with a complete vector,
   * in user order: a run must not depend on the order events arrived or state was restored in.
   * Boundaries only grow: a user inactive at this one stays so until its next event, and leaves `recent`.
   */
  private activesAt(boundaryMs: number): Array<[string, UserCluster]> {
    const sinceMs = boundaryMs - this.activeWithinMs;
    const actives: Array<[string, UserCluster]> = [];
    const recent = (this.recent ??= new Map(this.users.entries()));
    for (const pair of recent) {
      if (pair[1].activeMs < sinceMs) recent.delete(pair[0]);
      else if (pair[1].vector !== null) actives.push(pair);
    }
    return actives.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /** The partition's partial for the group's rounds after `afterMs` (see ClustersPartial). Changes no state. */
  offer(afterMs: number, atEnd: boolean): ClustersPartial {
    // The users active at the first run boundary after afterMs: a superset of those of later ones.
    const actives = this.activesAt(Number.isFinite(afterMs) ? Math.floor(afterMs / this.everyMs) * this.everyMs + this.everyMs : -Infinity);
    const d = this.features.length;
    const users = new Float64Array(actives.length * (d + 1));
    actives.forEach(([, entry], i) => {
      users[i * (d + 1)] = entry.activeMs;
      users.set(entry.vector!, i * (d + 1) + 1);
    });
    const cohorts: ClustersPartial["cohorts"] = [];
    for (const key of this.cohorts.keys()) {
      const [dayMs, cluster] = parseCohortKey(key);
      const [users, retained] = this.cohorts.get(key)!;
      cohorts.push([dayMs, cluster, users, retained]);
    }
    return { users: new Uint8Array(users.buffer), cohorts, ...(atEnd ? { lastBoundaryMs: this.lastEventBoundaryMs() } : {}) };
  }

  /**
   * The group's round: its run (the model; the run's summary written by the reporting partition; this
   * partition's active users moved to their nearest centroid), then its retention reports (this
   * partition's counts of them dropped). At the end, cohorts still open go unmeasured, as alone.
   */
  accept(roundMs: number, model: unknown, reports: boolean, out: StageOutput): void {
    if (roundMs === END_OF_TIME && !this.drainsAtEnd) return;
    const round = model as ClustersRound;
    if (round.atMs !== null && (roundMs === END_OF_TIME || roundMs % this.everyMs === 0)) {
      const atMs = round.atMs;
      this.model = { ...this.model, ...round.core, reportedDayMs: this.model.reportedDayMs, boundaryMs: atMs };
      if (round.ran === undefined) {
        if (reports) out.count("cluster_runs_skipped");
      } else {
        const { centroids } = this.model;
        if (reports) out.emit(CLUSTERS_OUTPUT, ALL, atMs, this.describeRun(atMs, round.ran.users, centroids, round.ran.memberMeans, round.ran.sizes));
        for (const [user, entry] of this.activesAt(atMs)) this.assign(user, nearestCentroid(entry.vector!, this.model, centroids), atMs, out);
      }
    }
    for (const [dayMs, cluster, users, retained] of round.retention) if (reports) this.reportCohort(dayMs, cluster, users, retained, out);
    if (round.core.reportedDayMs !== null) {
      for (const key of [...this.cohorts.keys()]) if (parseCohortKey(key)[0] <= round.core.reportedDayMs) this.cohorts.delete(key);
    }
    this.model.reportedDayMs = round.core.reportedDayMs;
    this.modelState.set(ALL, this.model);
    if (roundMs === END_OF_TIME) this.reportRetention(END_OF_TIME, out);
  }

  private describeRun(timeMs: number, users: number, centroids: number[][], means: number[][], sizes: number[]): ClustersRun {
    return {
      output: CLUSTERS_OUTPUT,
      time: isoTime(timeMs),
      time_ms: timeMs,
      run: this.model.run,
      users,
      centroids: centroids.map((z, slot) => ({
        name: this.model.names[slot],
        size: sizes[slot],
        mean: byFeature(this.features, means[slot], this.digits),
        z: byFeature(this.features, z, this.digits),
      })),
    };
  }

  /** A user's slot as of the run just done. */
  private assign(user: string, slot: number, timeMs: number, out: StageOutput): void {
    const entry = this.users.getForUpdate(user)!;
    entry.slot = slot;
    entry.run = this.model.run;
    const label = this.model.names[slot];
    if (label === entry.label) return;
    const change: ClusterChange = { output: CLUSTER_OUTPUT, user_id: user, time: isoTime(timeMs), time_ms: timeMs, cluster: label, previous: entry.label };
    out.emit(CLUSTER_OUTPUT, user, timeMs, change);
    this.moveSize(entry.label, label);
    entry.label = label;
  }

  /** A user's cluster changed from `from` to `to` (null: none): the sizes follow, once counted. */
  private moveSize(from: string | null, to: string | null): void {
    const sizes = this.sizes;
    if (sizes === undefined) return;
    if (from !== null) sizes.set(from, (sizes.get(from) ?? 0) - 1);
    if (to !== null) sizes.set(to, (sizes.get(to) ?? 0) + 1);
  }

  /** Users per cluster now, every cluster of the current model named (0 when empty). */
  private sizesView(): Record<string, number> {
    if (this.sizes === undefined) {
      this.sizes = new Map();
      for (const [, entry] of this.users.entries()) if (entry.label !== null) this.sizes.set(entry.label, (this.sizes.get(entry.label) ?? 0) + 1);
    }
    const shown: Record<string, number> = Object.fromEntries(this.model.names.map((name) => [name, 0]));
    for (const [name, size] of this.sizes) if (size > 0 || name in shown) shown[name] = size;
    return shown;
  }

  /**
   * Reports, in (day, cluster) order, the cohorts whose measuring day is over. END_OF_TIME ends the
   * input rather than passing days: cohorts still open cannot be measured and are dropped, counted
   * in "cluster_cohorts_unmeasured", instead of reported as never retained.
   */
  private reportRetention(watermarkMs: number, out: StageOutput): void {
    const afterMs = this.retentionAfterMs;
    if (afterMs === null) return;
    if (watermarkMs === END_OF_TIME) {
      const open = [...this.cohorts.keys()];
      for (const key of open) this.cohorts.delete(key);
      if (open.length > 0) out.count("cluster_cohorts_unmeasured", open.length);
      return;
    }
    const dueDayMs = dueDayAt(this.settings, watermarkMs);
    if (this.model.reportedDayMs !== null && dueDayMs <= this.model.reportedDayMs) return;
    const due: Array<[number, string, CohortCounts]> = [];
    for (const key of this.cohorts.keys()) {
      const [dayMs, cluster] = parseCohortKey(key);
      if (dayMs <= dueDayMs) due.push([dayMs, cluster, this.cohorts.get(key)!]);
    }
    due.sort(byDayThenCluster);
    for (const [dayMs, cluster, [users, retained]] of due) {
      this.reportCohort(dayMs, cluster, users, retained, out);
      this.cohorts.delete(cohortKey(dayMs, cluster));
    }
    this.model.reportedDayMs = dueDayMs;
    this.modelState.set(ALL, this.model);
  }

  private reportCohort(dayMs: number, cluster: string, users: number, retained: number, out: StageOutput): void {
    const timeMs = dayMs + this.retentionAfterMs! + DAY_MS;
    const report: ClusterRetention = {
      output: CLUSTER_RETENTION_OUTPUT,
      time: isoTime(timeMs),
      time_ms: timeMs,
      cohort_day: new Date(dayMs).toISOString().slice(0, 10),
      cluster,
      users,
      retained,
      rate: toDigits(retained / users, this.digits),
    };
    out.emit(CLUSTER_RETENTION_OUTPUT, ALL, timeMs, report);
  }
}

/**
 * Per slot, the mean raw vector of its members: exact where the data is (0, not -1e-16 as the
 * centroid mapped back would be). A slot with no member keeps its centroid's values.
 */
function memberMeans(vectors: number[][], slots: number[], emptyMeans: number[][]): number[][] {
  const sums = emptyMeans.map((m) => new Array<number>(m.length).fill(0));
  const sizes = new Array<number>(emptyMeans.length).fill(0);
  vectors.forEach((v, i) => {
    sizes[slots[i]]++;
    for (let d = 0; d < v.length; d++) sums[slots[i]][d] += v[d];
  });
  return sums.map((sum, slot) => (sizes[slot] === 0 ? emptyMeans[slot] : sum.map((total) => total / sizes[slot])));
}

function sameVector(a: ReadonlyArray<number>, b: ReadonlyArray<number>): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Cluster names hold letters, digits, _ and - only: "|" cannot occur in them. */
function cohortKey(dayMs: number, cluster: string): string {
  return `${dayMs}|${cluster}`;
}

function parseCohortKey(key: string): [number, string] {
  const bar = key.indexOf("|");
  return [Number(key.slice(0, bar)), key.slice(bar + 1)];
}
