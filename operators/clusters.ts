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
  return {
    name,
    // Users' vectors, the model's scaling and centroids are laid out by the features, in order, and k.
    stateShape: { layout: { features: options.features, k: options.k ?? DEFAULT_K } },
    build: (ctx) =>
      new ClustersLogic(options, ctx.userState<UserCluster>("users"), ctx.valueState<Model>("model"), ctx.valueState<CohortCounts>("cohorts")),
  };
}

class ClustersLogic implements StageLogic {
  private readonly variable: string;
  private readonly features: string[];
  private readonly k: number;
  private readonly everyMs: number;
  private readonly activeWithinMs: number;
  private readonly seed: number;
  private readonly maxIterations: number;
  private readonly rules: ClusterNameRule[];
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
    options: ClustersOptions,
    private readonly users: SlotState<UserCluster>,
    private readonly modelState: KeyedValueState<Model>,
    private readonly cohorts: KeyedValueState<CohortCounts>,
  ) {
    this.variable = options.variable ?? DEFAULT_CLUSTER_VAR;
    this.features = options.features;
    this.k = options.k ?? DEFAULT_K;
    this.everyMs = options.everyMs ?? 30 * MINUTE_MS;
    this.activeWithinMs = options.activeWithinMs ?? 30 * MINUTE_MS;
    this.seed = options.seed ?? 42;
    this.maxIterations = options.maxIterations ?? 100;
    this.rules = options.names ?? [];
    this.retentionAfterMs = options.retentionAfterMs === undefined ? 7 * DAY_MS : options.retentionAfterMs;
    this.digits = options.digits ?? DEFAULT_OUTPUT_DIGITS;
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
    } else if (isChanged) this.users.touch(view.user);
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
   * One run at `boundaryMs`:
   * 1. the active users with a complete vector, in user order (the run must not depend on the
   *    order events arrived or state was restored in); fewer than k distinct vectors: no run;
   * 2. standardise, k-means (ml-kmeans from k-means++ seeds drawn with the configured seed);
   * 3. match the centroids to the previous run's slots, compared in this run's z-space;
   * 4. assign every active user to the nearest centroid, name the clusters;
   * 5. store the model, emit the run and the users whose cluster name changed.
   */
  private run(boundaryMs: number, out: StageOutput): void {
    // 1.
    const sinceMs = boundaryMs - this.activeWithinMs;
    const actives: Array<[string, UserCluster]> = [];
    const recent = (this.recent ??= new Map(this.users.entries()));
    for (const pair of recent) {
      // Boundaries only grow: a user inactive at this one stays so until its next event.
      if (pair[1].activeMs < sinceMs) recent.delete(pair[0]);
      else if (pair[1].vector !== null) actives.push(pair);
    }
    actives.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const active = actives.map(([user]) => user);
    const vectors = actives.map(([, entry]) => entry.vector!);
    if (!hasDistinctPoints(vectors, this.k)) {
      out.count("cluster_runs_skipped");
      return;
    }
    // 2.
    const scaling = standardisation(vectors);
    const points = vectors.map((v) => standardise(v, scaling));
    const seeds = kmeansPlusPlus(points, this.k, this.seed);
    const result = kmeans(points, this.k, { initialization: seeds, maxIterations: this.maxIterations });
    // 3.
    const previous = this.model;
    const centroids = new Array<number[]>(this.k);
    if (previous.run === 0) for (let i = 0; i < this.k; i++) centroids[i] = result.centroids[i];
    else {
      const previousCentroids = previous.centroids.map((c) => standardise(unstandardise(c, previous), scaling));
      const slotOf = matchCentroids(result.centroids, previousCentroids);
      for (let i = 0; i < this.k; i++) centroids[slotOf[i]] = result.centroids[i];
    }
    // 4.
    const slots = points.map((z) => nearestPoint(z, centroids));
    const sizes = new Array<number>(this.k).fill(0);
    for (const slot of slots) sizes[slot]++;
    const candidates = centroids.map((c, slot) => [...this.holdingRules(c), ...describedNames(c, this.features, previous.names[slot])]);
    const names = nameClusters(candidates, sizes, previous.names);
    // 5.
    this.model = { ...previous, run: previous.run + 1, means: scaling.means, stds: scaling.stds, centroids, names };
    this.modelState.set(ALL, this.model);
    const means = memberMeans(vectors, slots, centroids.map((z) => unstandardise(z, scaling)));
    out.emit(CLUSTERS_OUTPUT, ALL, boundaryMs, this.describeRun(boundaryMs, active.length, centroids, means, sizes));
    for (let i = 0; i < active.length; i++) this.assign(active[i], slots[i], boundaryMs, out);
  }

  /** The names of the rules that hold for a centroid, in rule order. */
  private holdingRules(centroid: number[]): string[] {
    const z = this.byFeature(centroid);
    return this.rules.filter((rule) => rule.when(z) === true).map((rule) => rule.name);
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
        mean: this.byFeature(means[slot], this.digits),
        z: this.byFeature(z, this.digits),
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

  /** `values` by feature name; with `digits`, rounded for an output. */
  private byFeature(values: number[], digits?: number): Record<string, number> {
    const record: Record<string, number> = {};
    for (let i = 0; i < this.features.length; i++) record[this.features[i]] = digits === undefined ? values[i] : toDigits(values[i], digits);
    return record;
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
    const dueDayMs = Math.floor((watermarkMs - afterMs - DAY_MS) / DAY_MS) * DAY_MS;
    if (this.model.reportedDayMs !== null && dueDayMs <= this.model.reportedDayMs) return;
    const due: Array<[number, string, CohortCounts]> = [];
    for (const key of this.cohorts.keys()) {
      const [dayMs, cluster] = parseCohortKey(key);
      if (dayMs <= dueDayMs) due.push([dayMs, cluster, this.cohorts.get(key)!]);
    }
    due.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    for (const [dayMs, cluster, [users, retained]] of due) {
      const timeMs = dayMs + afterMs + DAY_MS;
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
      this.cohorts.delete(cohortKey(dayMs, cluster));
    }
    this.model.reportedDayMs = dueDayMs;
    this.modelState.set(ALL, this.model);
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
