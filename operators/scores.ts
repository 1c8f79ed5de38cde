// Decayed scores: per user, points from weighted events decaying exponentially in event time,
// a recency boost and rules on top, computed lazily at each step, with threshold alerts.
import { EVENT_TYPE_FIELD, PAGE_FIELD } from "./eventFields.ts";
import { DEFAULT_OUTPUT_DIGITS, isoTime, toDigits } from "./outputFormat.ts";
import type { Signal, StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partOf, partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";

type Vars = Record<string, unknown>;

/** A kind of event that adds points; the user's count of them is a variable the rules can use. */
export type WeightedEvent = {
  /** Names the event in config. */
  name: string;
  /** The variable holding the user's count of these events, e.g. `lead_score_pricing_visit`. */
  countVar: string;
  /** Matches only events whose `event_type` (EVENT_TYPE_FIELD) is this. Default: any type. */
  type?: string;
  /** A further condition on the event; anything but `true` does not match. Default: none. */
  when?: (vars: Vars) => unknown;
  /** Points per matching event, or a formula of the event; a formula without a number gives 0. */
  points: number | ((vars: Vars) => unknown);
  /** Points on every `every`-th matching event only (3: the 3rd, 6th, ... email open). Default 1. */
  every?: number;
};

/**
 * Points on top of the weighted events' points. Evaluated at each weighted event (counts
 * including it); the points then decay with the score from the user's latest weighted event.
 */
export type ScoreRule = {
  /** Names the rule in an alert's drivers. Default `rules[<index>]`. */
  name?: string;
  /** Condition over the view (this score's counts and last type included). Default: always. */
  when?: (vars: Vars) => unknown;
  /** Holds only while the latest weighted event is younger than this. Default: no limit. */
  withinMs?: number;
  points: number;
};

/** Fires once when the score reaches `threshold`; again only after the score was seen below it. */
export type ScoreAlert = { threshold: number; message: string };

export type ScoreSpec = {
  /** The score's name: the variable holding its value at the step's time. */
  name: string;
  /** Time for points to lose half their value. Default Infinity: no decay. */
  halfLifeMs?: number;
  events: WeightedEvent[];
  /** The variable holding the `event_type` of the user's latest weighted event. */
  lastTypeVar: string;
  /** Multiplies the weighted events' points while the latest weighted event is younger than `withinMs`. Default: none. */
  boost?: { factor: number; withinMs: number };
  /** At most 30 (a bit each in the state). Default none. */
  rules?: ScoreRule[];
  /** At most 30. Default none. */
  alerts?: ScoreAlert[];
  /** How many of the latest weighted events an alert lists among its drivers (the rest in one sum). Default 5. */
  driverCount?: number;
};

export type ScoresOptions = {
  /** Names the stage's state. Default "scores". */
  name?: string;
  scores: ScoreSpec[];
  /** Significant digits of the values and points an alert shows. Default DEFAULT_OUTPUT_DIGITS. */
  digits?: number;
};

/** A weighted event as the state keeps it: what the user did, when (ms) and the points it added (undecayed). */
export type Driver = { type: string | null; page: string | null; time: number; points: number };

/**
 * A share of the score as an alert explains it; the `points` of an alert's drivers add up to its
 * value (the score is `(P x boost + rules) x decay`, P the weighted events' points decayed to the
 * latest weighted event):
 * - `event`: one of the latest weighted events: the points it `earned`, and what is left of them
 *   at the latest weighted event (`points`);
 * - `earlier_events`: what is left of the weighted events not listed (older ones);
 * - `boost`: what the boost `factor` adds to P while the latest weighted event is recent;
 * - `rule`: the points of a rule that holds, by the rule's name;
 * - `decay`: what the score has lost since the latest weighted event (negative).
 */
export type ScoreDriver =
  | { driver: "event"; type: string | null; page: string | null; time: string; time_ms: number; earned: number; points: number }
  | { driver: "earlier_events"; points: number }
  | { driver: "boost"; factor: number; points: number }
  | { driver: "rule"; rule: string; points: number }
  | { driver: "decay"; points: number };

/** The output kind of a score alert. */
export const ALERT_OUTPUT = "alert";

/** The "alert" output. */
export type ScoreAlertRecord = {
  output: typeof ALERT_OUTPUT;
  user_id: string;
  time: string;
  time_ms: number;
  score: string;
  value: number;
  threshold: number;
  message: string;
  drivers: ScoreDriver[];
};

/** Half-life of a decay stated as a fraction `lose` lost per period: P * ln 2 / -ln(1 - p). */
export function halfLifeFromLossMs(lose: number, perMs: number): number {
  return (perMs * Math.LN2) / -Math.log(1 - lose);
}

/** Half-life of a decay stated as a factor kept per period (0.82 per 24 h). */
export function halfLifeFromFactorMs(factor: number, perMs: number): number {
  return factor === 1 ? Infinity : (perMs * Math.LN2) / -Math.log(factor);
}

/** One user's state for one score; the score itself is derived from it at read time. */
type ScoreState = {
  /** The weighted events' points decayed to `lastAtMs` (no boost, no rules). */
  points: number;
  /** Event time of the latest weighted event: what decay, boost and rule windows count from. */
  lastAtMs: number;
  lastType: string | null;
  /** Matching events per weighted event, never decayed. */
  counts: number[];
  /** Bit i: rule i held at the latest weighted event. */
  rulesHeld: number;
  /** Bit i: alert i fired and the score has not been seen below its threshold since. */
  alertsFired: number;
  /** The latest weighted events, oldest first. */
  drivers: Driver[];
};

/** A user's states, one per score in configured order (null before the score's first weighted event). */
type UserScores = Array<ScoreState | null>;

/**
 * The state's shape: per score (by name), its weighted events (by name), whose counts it keeps.
 * Rules and alerts are known by their place in the list: a bit each, kept for those still there.
 */
function stateShape(specs: ScoreSpec[]): StateShape {
  return { parts: specs.map((spec): [string, StateShape] => [spec.name, { parts: spec.events.map((e): [string, StateShape] => [e.name, {}]) }]) };
}

export function scores(options: ScoresOptions): StageDefinition {
  const name = options.name ?? "scores";
  const shape = stateShape(options.scores);
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const state = ctx.userState<UserScores>("scores");
      const prepared = options.scores.map(withDefaults);
      if (ctx.restoredShape) relayoutAll(state, relayout(prepared, ctx.restoredShape, shape));
      return new ScoresLogic(prepared, state, options.digits ?? DEFAULT_OUTPUT_DIGITS);
    },
  };
}

/**
 * A user's scores restored under other scores, laid out by name: a score added starts with none,
 * the counts of its weighted events follow their names, rules and alerts no longer there lose their bit.
 */
function relayout(scores: Score[], old: StateShape, now: StateShape): (states: UserScores) => UserScores | undefined {
  const from = partsFrom(old, now);
  const eventsFrom = now.parts!.map(([name, shape]) => partsFrom(partOf(old, name), shape));
  return (states) => {
    const next = pickParts(states, from, () => null).map((st, i) => {
      if (st === null) return null;
      const score = scores[i];
      st.counts = pickParts(st.counts, eventsFrom[i], () => 0);
      st.rulesHeld &= (2 ** score.rules.length - 1) | 0;
      st.alertsFired &= (2 ** score.alerts.length - 1) | 0;
      return st;
    });
    return next.every((st) => st === null) ? undefined : next;
  };
}

/** A spec with its defaults filled in and its decay as a rate. */
type Score = Required<Omit<ScoreSpec, "halfLifeMs" | "boost">> & {
  /** Each rule's name, as alerts show it. */
  ruleNames: string[];
  decayPerMs: number;
  boostFactor: number;
  boostWithinMs: number;
};

function withDefaults(spec: ScoreSpec): Score {
  if ((spec.rules?.length ?? 0) > 30 || (spec.alerts?.length ?? 0) > 30) throw new Error(`score ${spec.name}: at most 30 rules and 30 alerts`);
  const halfLifeMs = spec.halfLifeMs ?? Infinity;
  return {
    name: spec.name,
    events: spec.events,
    lastTypeVar: spec.lastTypeVar,
    rules: spec.rules ?? [],
    ruleNames: (spec.rules ?? []).map((rule, i) => rule.name ?? `rules[${i}]`),
    alerts: spec.alerts ?? [],
    driverCount: spec.driverCount ?? 5,
    decayPerMs: halfLifeMs === Infinity ? 0 : Math.LN2 / halfLifeMs,
    boostFactor: spec.boost?.factor ?? 1,
    boostWithinMs: spec.boost?.withinMs ?? 0,
  };
}

class ScoresLogic implements StageLogic {
  /** Per score, zeroed counts a user's first weighted event fills in; its new state takes them over. */
  private readonly unusedCounts: Array<number[] | undefined>;
  /**
   * Each score decayed to `nowMs` (the pipeline's time, not the user's last update), with the
   * latest weighted event it counts from; a score with none yet is 0.
   */
  readonly view: StageView = {
    user: (user, nowMs) => {
      const states = this.state.get(user);
      if (states === undefined) return undefined;
      return Object.fromEntries(
        this.scores.map((score, i) => {
          const st = states[i];
          if (st === null) return [score.name, { value: 0, last_weighted_event: null, last_weighted_event_ms: null, last_type: null }];
          const value = toDigits(valueAt(score, st, nowMs), this.digits);
          return [score.name, { value, last_weighted_event: isoTime(st.lastAtMs), last_weighted_event_ms: st.lastAtMs, last_type: st.lastType }];
        }),
      );
    },
  };

  constructor(
    private readonly scores: Score[],
    private readonly state: { get(key: string): UserScores | undefined; set(key: string, value: UserScores): void; touch(key: string): void },
    private readonly digits: number,
  ) {
    this.unusedCounts = scores.map(() => undefined);
  }

  /**
   * 1. Re-arms the alerts the score has been below since the last step: between weighted events
   *    a score only decays, so the score just before this event is the lowest since the last one.
   * 2. Writes the counts and the last type into the view, after applying the event if it is one
   *    of the score's weighted events; then (the rules read those) evaluates the rules.
   * 3. Writes the score at the step's time into the view.
   * 4. Re-arms or fires the alerts by the score now.
   */
  step(view: UserView, out: StageOutput): void {
    let states = this.state.get(view.user);
    let isChanged = false;
    for (let i = 0; i < this.scores.length; i++) {
      const score = this.scores[i];
      let st = states === undefined ? null : states[i];
      // 1.
      if (st !== null && st.alertsFired !== 0 && rearm(score, st, valueAt(score, st, view.timeMs))) isChanged = true;
      // 2.
      const counts = st === null ? this.freshCounts(i) : st.counts;
      const points = view.event === undefined ? undefined : matchedPoints(score, counts, view.vars);
      if (points !== undefined) {
        if (st === null) {
          st = newState(view.timeMs, counts);
          this.unusedCounts[i] = undefined;
          if (states === undefined) {
            states = new Array<ScoreState | null>(this.scores.length).fill(null);
            this.state.set(view.user, states);
          }
          states[i] = st;
        }
        applyEvent(score, st, view, points);
        writeVars(score, st, view.vars);
        st.rulesHeld = rulesHolding(score, view.vars);
        isChanged = true;
      } else writeVars(score, st, view.vars);
      // 3.
      const value = st === null ? 0 : valueAt(score, st, view.timeMs);
      view.vars[score.name] = value;
      // 4.
      if (st !== null && score.alerts.length > 0) {
        if (st.alertsFired !== 0 && rearm(score, st, value)) isChanged = true;
        if (fire(score, st, value, view, out, this.digits)) isChanged = true;
      }
    }
    if (isChanged && states !== undefined) this.state.touch(view.user);
  }

  private freshCounts(i: number): number[] {
    return (this.unusedCounts[i] ??= new Array<number>(this.scores[i].events.length).fill(0));
  }
}

function newState(timeMs: number, counts: number[]): ScoreState {
  return { points: 0, lastAtMs: timeMs, lastType: null, counts, rulesHeld: 0, alertsFired: 0, drivers: [] };
}

/**
 * The score at `timeMs`: (points x boost + rules holding) decayed from the latest weighted event.
 * Never extrapolated backwards: a step before the latest weighted event (a late event) reads the
 * score as of that event.
 */
function valueAt(score: Score, st: ScoreState, timeMs: number): number {
  const ageMs = timeMs > st.lastAtMs ? timeMs - st.lastAtMs : 0;
  let value = ageMs < score.boostWithinMs ? st.points * score.boostFactor : st.points;
  if (st.rulesHeld !== 0) {
    const rules = score.rules;
    for (let i = 0; i < rules.length; i++) {
      if ((st.rulesHeld & (1 << i)) !== 0 && (rules[i].withinMs === undefined || ageMs < rules[i].withinMs!)) value += rules[i].points;
    }
  }
  return score.decayPerMs === 0 ? value : value * Math.exp(-score.decayPerMs * ageMs);
}

/** Counts the event in every weighted event it matches; the points it adds, or undefined when it matches none. */
function matchedPoints(score: Score, counts: number[], vars: Vars): number | undefined {
  const eventType = vars[EVENT_TYPE_FIELD];
  let points: number | undefined;
  const events = score.events;
  for (let j = 0; j < events.length; j++) {
    const e = events[j];
    if (e.type !== undefined && e.type !== eventType) continue;
    if (e.when !== undefined && e.when(vars) !== true) continue;
    const count = ++counts[j];
    const earned = e.every === undefined || count % e.every === 0 ? pointsOf(e, vars) : 0;
    points = (points ?? 0) + earned;
  }
  return points;
}

function pointsOf(e: WeightedEvent, vars: Vars): number {
  if (typeof e.points === "number") return e.points;
  const value = e.points(vars);
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "bigint") return Number(value);
  return 0;
}

/** Adds the event's points, decayed to the latest weighted event when the event is older (disorder). */
function applyEvent(score: Score, st: ScoreState, view: UserView, points: number): void {
  const timeMs = view.timeMs;
  if (timeMs >= st.lastAtMs) {
    st.points = st.points * decay(score, timeMs - st.lastAtMs) + points;
    st.lastAtMs = timeMs;
    st.lastType = stringOrNull(view.vars[EVENT_TYPE_FIELD]);
  } else st.points += points * decay(score, st.lastAtMs - timeMs);
  if (score.driverCount > 0) addDriver(score, st, { type: stringOrNull(view.vars[EVENT_TYPE_FIELD]), page: stringOrNull(view.vars[PAGE_FIELD]), time: timeMs, points });
}

function decay(score: Score, ageMs: number): number {
  return score.decayPerMs === 0 ? 1 : Math.exp(-score.decayPerMs * ageMs);
}

/** Keeps the latest `driverCount` weighted events in time order (a late one goes in its place). */
function addDriver(score: Score, st: ScoreState, driver: Driver): void {
  const drivers = st.drivers;
  let at = drivers.length;
  while (at > 0 && drivers[at - 1].time > driver.time) at--;
  drivers.splice(at, 0, driver);
  while (drivers.length > score.driverCount) drivers.shift(); // more than one after `drivers` was lowered between runs
}

function writeVars(score: Score, st: ScoreState | null, vars: Vars): void {
  const events = score.events;
  for (let j = 0; j < events.length; j++) vars[events[j].countVar] = st === null ? 0 : st.counts[j];
  vars[score.lastTypeVar] = st === null || st.lastType === null ? undefined : st.lastType;
}

function rulesHolding(score: Score, vars: Vars): number {
  let held = 0;
  const rules = score.rules;
  for (let i = 0; i < rules.length; i++) {
    if (rules[i].when === undefined || rules[i].when!(vars) === true) held |= 1 << i;
  }
  return held;
}

/** Re-arms every fired alert whose threshold is above `value`; whether any was. */
function rearm(score: Score, st: ScoreState, value: number): boolean {
  let fired = st.alertsFired;
  for (let i = 0; i < score.alerts.length; i++) if ((fired & (1 << i)) !== 0 && value < score.alerts[i].threshold) fired &= ~(1 << i);
  if (fired === st.alertsFired) return false;
  st.alertsFired = fired;
  return true;
}

/** Fires every armed alert whose threshold `value` has reached; whether any did. */
function fire(score: Score, st: ScoreState, value: number, view: UserView, out: StageOutput, digits: number): boolean {
  let isFired = false;
  for (let i = 0; i < score.alerts.length; i++) {
    const alert = score.alerts[i];
    if ((st.alertsFired & (1 << i)) !== 0 || value < alert.threshold) continue;
    st.alertsFired |= 1 << i;
    isFired = true;
    const drivers = explain(score, st, view.timeMs).map((d) => roundedDriver(d, digits));
    const body: ScoreAlertRecord = {
      output: ALERT_OUTPUT,
      user_id: view.user,
      time: isoTime(view.timeMs),
      time_ms: view.timeMs,
      score: score.name,
      value: toDigits(value, digits),
      threshold: alert.threshold,
      message: alert.message,
      drivers,
    };
    out.emit(ALERT_OUTPUT, view.user, view.timeMs, body);
    out.count("score_alerts");
    const signal: Signal = { kind: "alert", name: score.name, timeMs: view.timeMs, detail: { value, threshold: alert.threshold, message: alert.message, drivers } };
    view.signals.push(signal);
  }
  return isFired;
}

/** Below this share of P, what the listed events leave unexplained is rounding, not older events. */
const RESIDUE = 1e-9;

/**
 * The score at `timeMs` taken apart (see ScoreDriver): the listed events' points decayed to the
 * latest weighted event, the rest of P, the boost, the rules that hold and the decay since; their
 * points add up to valueAt(score, st, timeMs), unrounded.
 */
function explain(score: Score, st: ScoreState, timeMs: number): ScoreDriver[] {
  const drivers: ScoreDriver[] = [];
  const ageMs = timeMs > st.lastAtMs ? timeMs - st.lastAtMs : 0;
  let listed = 0;
  // At most driverCount, also when it was lowered between runs: the rest count as earlier events.
  for (const d of score.driverCount === 0 ? [] : st.drivers.slice(-score.driverCount)) {
    const points = d.points * decay(score, st.lastAtMs - d.time);
    listed += points;
    drivers.push({ driver: "event", type: d.type, page: d.page, time: isoTime(d.time), time_ms: d.time, earned: d.points, points });
  }
  const earlier = st.points - listed;
  if (Math.abs(earlier) > RESIDUE * Math.max(1, Math.abs(st.points))) drivers.push({ driver: "earlier_events", points: earlier });
  let beforeDecay = st.points;
  if (ageMs < score.boostWithinMs && score.boostFactor !== 1) {
    const boost = st.points * (score.boostFactor - 1);
    drivers.push({ driver: "boost", factor: score.boostFactor, points: boost });
    beforeDecay += boost;
  }
  const rules = score.rules;
  for (let i = 0; i < rules.length; i++) {
    if ((st.rulesHeld & (1 << i)) === 0 || (rules[i].withinMs !== undefined && ageMs >= rules[i].withinMs!)) continue;
    drivers.push({ driver: "rule", rule: score.ruleNames[i], points: rules[i].points });
    beforeDecay += rules[i].points;
  }
  if (ageMs > 0 && score.decayPerMs !== 0) drivers.push({ driver: "decay", points: beforeDecay * (decay(score, ageMs) - 1) });
  return drivers;
}

/** A driver as the output shows it: its numbers to `digits` significant digits. */
function roundedDriver(d: ScoreDriver, digits: number): ScoreDriver {
  const points = toDigits(d.points, digits);
  switch (d.driver) {
    case "event":
      return { ...d, earned: toDigits(d.earned, digits), points };
    case "boost":
      return { ...d, factor: toDigits(d.factor, digits), points };
    default:
      return { ...d, points };
  }
}

function stringOrNull(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}
