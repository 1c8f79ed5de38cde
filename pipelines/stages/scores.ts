// Reads `scores:` (name: decay, weighted events, boost, rules, alerts) into the scores stage.
import { EVENT_TYPE_FIELD, PAGE_FIELD } from "../../operators/eventFields.ts";
import {
  ALERT_OUTPUT,
  halfLifeFromFactorMs,
  halfLifeFromLossMs,
  scores,
  type ScoreAlert,
  type ScoreRule,
  type ScoreSpec,
  type WeightedEvent,
} from "../../operators/scores.ts";
import type { StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Obj, Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

const NUMERIC = ["double", "int", "uint"];
const SCORE_FIELDS = ["halfLife", "lose", "factor", "per", "events", "boost", "rules", "alert", "drivers"];
const MAX_RULES = 30;
const NAME = /^[A-Za-z0-9_-]+$/;

/**
 * ```yaml
 * scores:
 *   lead_score:
 *     halfLife: 7d                 # or lose: 0.25, per: 30d | factor: 0.82, per: 24h | none: no decay
 *     events:                      # each one's count is the variable lead_score_<name>
 *       pricing_visit: { when: 'page.startsWith("/pricing")', points: 10 }
 *       whitepaper_download: 25    # a number: points for events of that event_type
 *       email_open: { points: 15, every: 3 }
 *       video_view: 5
 *       long_read: { when: 'session_duration_sec > 60.0', points: 20 }
 *       demo_call: 0
 *     boost: { factor: 1.3, within: 48h }
 *     rules:                       # name: how an alert's drivers name it; default rules[<index>]
 *       - { name: pricing_and_whitepaper, when: 'lead_score_pricing_visit >= 2.0 && lead_score_whitepaper_download >= 1.0', within: 24h, points: 15 }
 *       - { when: 'lead_score_email_open >= 3.0', points: 25 }
 *       - { when: 'lead_score_last == "demo_call"', points: 40 }
 *       - { when: 'lead_score_last == "demo_call"', within: 12h, points: 10 }
 *     alert: { at: 80, message: "send a demo now, follow up within 2 hours" }
 * ```
 * A weighted event matches events of its `type` (default: its name, unless it has a `when`) for
 * which `when` holds. Declares `<score>_<event>` (count) and `<score>_last` (event_type of the
 * latest weighted event) for the rules and later stages, then `<score>` (the value at the step).
 */
export const readScores: StageReader = (r, path, value, scope, context) => {
  // Read off the event directly (matching by type, what the outputs show; eventFields.ts): privacy.keep must keep them.
  for (const field of [EVENT_TYPE_FIELD, PAGE_FIELD]) if (scope.fields().includes(field)) scope.useField(field);
  const entries = r.entries(path, value, "score, like lead_score: { halfLife: 7d, events: {...} }");
  if (!entries) return undefined;
  const specs: ScoreSpec[] = [];
  for (const [name, entry] of entries) {
    const spec = readScore(r, joinPath(path, name), name, entry, scope);
    if (spec) specs.push(spec);
  }
  // Only a score with an alert writes "alert" outputs: a sink cannot ask for them otherwise.
  const outputs = specs.some((spec) => (spec.alerts?.length ?? 0) > 0) ? [ALERT_OUTPUT] : [];
  return { definition: scores({ scores: specs, digits: context.digits }), outputs };
};

function readScore(r: Reader, path: string, name: string, value: unknown, scope: Scope): ScoreSpec | undefined {
  const obj = r.object(path, value, SCORE_FIELDS, ["events"]);
  if (!obj) return undefined;
  const errorsBefore = r.errors.length;
  const halfLifeMs = readDecay(r, path, obj);
  const events = obj.events === undefined ? [] : readEvents(r, joinPath(path, "events"), name, obj.events, scope);
  // Declared after the events' expressions and before the rules: only the rules see the counts.
  for (const e of events) scope.declare(r, joinPath(joinPath(path, "events"), e.name), e.countVar, "double");
  const lastTypeVar = `${name}_last`;
  scope.declare(r, path, lastTypeVar, "string");
  const boost = obj.boost === undefined ? undefined : readBoost(r, joinPath(path, "boost"), obj.boost);
  const rules = obj.rules === undefined ? [] : readRules(r, joinPath(path, "rules"), obj.rules, scope);
  const alerts = obj.alert === undefined ? [] : readAlerts(r, joinPath(path, "alert"), name, obj.alert);
  const driverCount = obj.drivers === undefined ? undefined : r.number(joinPath(path, "drivers"), obj.drivers, { min: 0, max: 50, integer: true });
  // Declared last, so nothing in the score refers to the score itself.
  scope.declare(r, path, name, "double");
  if (r.errors.length > errorsBefore) return undefined;
  return { name, halfLifeMs, events, lastTypeVar, boost, rules, alerts, driverCount };
}

/** The half-life from `halfLife`, `lose` + `per` or `factor` + `per`; Infinity (no decay) when none is given. */
function readDecay(r: Reader, path: string, obj: Obj): number | undefined {
  const given = ["halfLife", "lose", "factor"].filter((k) => obj[k] !== undefined);
  if (given.length > 1) return r.fail(path, `expected one of halfLife, lose + per, factor + per for the decay, got ${given.join(" and ")}`);
  const perPath = joinPath(path, "per");
  if (given.length === 0) {
    if (obj.per !== undefined) r.fail(perPath, "goes with lose (fraction lost per period) or factor (kept per period)");
    return Infinity;
  }
  if (given[0] === "halfLife") {
    if (obj.per !== undefined) r.fail(perPath, "goes with lose or factor, not halfLife");
    return r.duration(joinPath(path, "halfLife"), obj.halfLife, "7d", { positive: true });
  }
  const perMs = obj.per === undefined ? r.fail(perPath, `is required with ${given[0]}`) : r.duration(perPath, obj.per, "30d", { positive: true });
  if (given[0] === "lose") {
    const lose = r.number(joinPath(path, "lose"), obj.lose, { min: 0, max: 0.999999 });
    if (lose === 0) return Infinity;
    return lose === undefined || perMs === undefined ? undefined : halfLifeFromLossMs(lose, perMs);
  }
  const factor = r.number(joinPath(path, "factor"), obj.factor, { min: 0.000001, max: 1 });
  return factor === undefined || perMs === undefined ? undefined : halfLifeFromFactorMs(factor, perMs);
}

function readEvents(r: Reader, path: string, score: string, value: unknown, scope: Scope): WeightedEvent[] {
  const entries = r.entries(path, value, "weighted event, like whitepaper_download: 25");
  if (!entries) return [];
  const events: WeightedEvent[] = [];
  for (const [name, entry] of entries) {
    const e = readEvent(r, joinPath(path, name), `${score}_${name}`, name, entry, scope);
    if (e) events.push(e);
  }
  return events;
}

function readEvent(r: Reader, path: string, countVar: string, name: string, value: unknown, scope: Scope): WeightedEvent | undefined {
  if (typeof value === "number") {
    const points = r.number(path, value);
    return points === undefined ? undefined : { name, countVar, type: name, points };
  }
  const obj = r.object(path, value, ["type", "when", "points", "every"], ["points"]);
  if (!obj) return undefined;
  const errorsBefore = r.errors.length;
  const type = obj.type !== undefined ? r.string(joinPath(path, "type"), obj.type) : obj.when === undefined ? name : undefined;
  const when = obj.when === undefined ? undefined : scope.compile(r, joinPath(path, "when"), obj.when, ["bool"]);
  const pointsPath = joinPath(path, "points");
  let points: WeightedEvent["points"] | undefined;
  if (typeof obj.points === "string") points = scope.compile(r, pointsPath, obj.points, NUMERIC)?.evaluate;
  else if (obj.points !== undefined) points = r.number(pointsPath, obj.points);
  const every = obj.every === undefined ? undefined : r.number(joinPath(path, "every"), obj.every, { min: 1, integer: true });
  if (r.errors.length > errorsBefore || points === undefined) return undefined;
  return { name, countVar, type, when: when?.evaluate, points, every };
}

function readBoost(r: Reader, path: string, value: unknown): ScoreSpec["boost"] {
  const obj = r.object(path, value, ["factor", "within"], ["factor", "within"]);
  if (!obj || obj.factor === undefined || obj.within === undefined) return undefined;
  const factor = r.number(joinPath(path, "factor"), obj.factor, { min: 0 });
  const withinMs = r.duration(joinPath(path, "within"), obj.within, "48h", { positive: true });
  return factor === undefined || withinMs === undefined ? undefined : { factor, withinMs };
}

function readRules(r: Reader, path: string, value: unknown, scope: Scope): ScoreRule[] {
  const list = r.list(path, value);
  if (!list) return [];
  if (list.length > MAX_RULES) r.fail(path, `expected at most ${MAX_RULES} rules, got ${list.length}`);
  const rules: ScoreRule[] = [];
  const names = new Set<string>();
  for (const [i, entry] of list.entries()) {
    const at = joinPath(path, i);
    const obj = r.object(at, entry, ["name", "when", "within", "points"], ["points"]);
    if (!obj) continue;
    const name = obj.name === undefined ? undefined : r.string(joinPath(at, "name"), obj.name, NAME);
    if (name !== undefined && names.has(name)) r.fail(joinPath(at, "name"), `"${name}" names another rule of this score: an alert's drivers tell rules apart by name`);
    if (name !== undefined) names.add(name);
    const when = obj.when === undefined ? undefined : scope.compile(r, joinPath(at, "when"), obj.when, ["bool"]);
    const withinMs = obj.within === undefined ? undefined : r.duration(joinPath(at, "within"), obj.within, "24h", { positive: true });
    const points = obj.points === undefined ? undefined : r.number(joinPath(at, "points"), obj.points);
    if (points !== undefined) rules.push({ name: name ?? `rules[${i}]`, when: when?.evaluate, withinMs, points });
  }
  return rules;
}

/** `alert: { at, message }`, or a list of them for several thresholds. */
function readAlerts(r: Reader, path: string, score: string, value: unknown): ScoreAlert[] {
  const entries = Array.isArray(value) ? value.map((v, i) => [joinPath(path, i), v] as const) : [[path, value] as const];
  if (entries.length > MAX_RULES) r.fail(path, `expected at most ${MAX_RULES} alerts, got ${entries.length}`);
  const alerts: ScoreAlert[] = [];
  for (const [at, entry] of entries) {
    const obj = r.object(at, entry, ["at", "message"], ["at"]);
    if (!obj || obj.at === undefined) continue;
    const threshold = r.number(joinPath(at, "at"), obj.at);
    const message = obj.message === undefined ? `${score} reached ${String(obj.at)}` : r.string(joinPath(at, "message"), obj.message);
    if (threshold !== undefined && message !== undefined) alerts.push({ threshold, message });
  }
  return alerts;
}
