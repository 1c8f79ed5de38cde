// Reads `triggers:` (rules fired by signals, channels, quiet hours, follow-ups, body template) into
// the triggers stage.
import type { Signal } from "../../operators/stage.ts";
import { parseTimeOfDay } from "../../operators/localTime.ts";
import { MESSAGE_ID_FIELD, referencedNames, RENAMED_FACTS, type TriggerTemplate } from "../../operators/triggerTemplate.ts";
import { DEFAULT_SEGMENT, TRIGGER_OUTPUT, triggers, type FollowUp, type TriggerExperiment, type TriggerRule, type TriggersOptions, type TriggerVariant } from "../../operators/triggers.ts";
import { HOLDOUT, type Assignment } from "../../engine/assignment.ts";
import { CONVERSION_OUTPUT, EXPERIMENT_OUTPUT, experiments, EXPOSURE_OUTPUT, type ExperimentSpec } from "../../operators/experiments.ts";
import type { ReadContext, StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

const SECTION_FIELDS = ["timezone", "consent", "quietHours", "converts", "segment", "defaultSegment", "rules", "template"];
const RULE_FIELDS = ["on", "when", "trigger", "message", "channels", "cooldown", "cap", "followUps", "delay", "experiment"];
const EXPERIMENT_FIELDS = ["name", "holdout", "variants", "goal", "value", "within", "by", "report"];
const VARIANT_FIELDS = ["name", "weight", "message", "channels", "delay"];
/** The variant of an experiment that names none: the rule's message as it is. */
const DEFAULT_VARIANT = "treatment";
/** `on:` keys and the signal kinds they stand for. */
const SIGNAL_KINDS: Record<string, Signal["kind"]> = { segment: "segment_enter", sequence: "sequence", alert: "alert", phase: "phase" };
const NAME = /^[A-Za-z0-9_-]+$/;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The largest frequency cap: a user's send times on a channel are kept for the cap's period, up to
 * `max` of them, so a cap of a billion would keep every message ever sent. Caps are single digits.
 */
const MAX_CAP = 1_000;

/**
 * ```yaml
 * triggers:
 *   timezone: tz                  # event field with the user's zone ("Europe/Rome", "+02:00"); default UTC
 *   consent: consent              # event field with per-channel flags; default: consent not checked
 *   quietHours: { from: "21:00", to: "08:00" }      # user's local time; messages wait for `to`
 *   converts: 'event_type == "purchase"'            # cancels the user's pending messages
 *   segment: cluster              # CEL string for "segmento"; else (and when it gives none) the segment
 *                                 # entered, else the user's segment in the first group, else defaultSegment
 *   defaultSegment: nuovo_cliente # the default
 *   rules:
 *     cart_recovery:
 *       on: { sequence: cart_abandoned }   # or { segment: vip } | { alert: lead_score } | { phase: re_engagement }
 *       when: 'cluster != "fedele"'        # optional
 *       trigger: email_retargeting         # default the rule's name
 *       message: "Hai aggiunto al carrello ma non concluso - ecco il 10% di sconto"
 *       channels: [email, push]
 *       cooldown: 24h                      # per user per channel, between firings of this rule
 *       cap: { max: 3, per: 7d }           # messages per user per channel, any rule's
 *       followUps:                         # local times; cancelled when the user converts
 *         - { channel: email, at: "09:00" }
 *         - { channel: sms, at: "15:00", after: 2d }
 *       delay: 1d                          # the first message waits this long after the signal
 *       experiment:                        # holdout and variants, measured (operators/experiments.ts)
 *         name: cart_recovery_2024q2       # default the rule's name
 *         holdout: 10%                     # gets nothing, is measured
 *         variants:                        # default one, "treatment": the rule as it is
 *           - { name: sconto_10, weight: 1 }
 *           - { name: spedizione_gratis, weight: 1, message: "...", channels: [email], delay: 3d }
 *         goal: 'event_type == "purchase"' # a conversion
 *         value: order_value               # optional: revenue of a conversion, for the t-test
 *         within: 7d                       # attribution window after the first exposure
 *         by: [lifecycle]                  # segment groups the report is broken down by
 *         report: 1d                       # an `experiment` report every period, and at the end
 *   template:                             # optional; default the seed shape and delivery fields
 *     segmento: trigger.segment
 *     canali: trigger.channels
 *     send_at: trigger.sendAt
 * ```
 * Every message names its recipient under the key field's name and carries `message_id`; a
 * template reshapes the rest of the body.
 */
export const readTriggers: StageReader = (r, path, value, scope, context) => {
  const obj = r.object(path, value, SECTION_FIELDS, ["rules"]);
  if (!obj) return undefined;
  const options: TriggersOptions = { rules: [], recipientField: context.keyField, pipeline: context.pipeline };
  const group = context.segmentGroup;
  if (group !== undefined && scope.has(group)) options.currentSegment = (vars) => vars[group];
  if (obj.defaultSegment !== undefined) options.defaultSegment = r.string(joinPath(path, "defaultSegment"), obj.defaultSegment, NAME) ?? DEFAULT_SEGMENT;
  if (obj.timezone !== undefined) options.timezoneField = readField(r, joinPath(path, "timezone"), obj.timezone, scope, "string");
  if (obj.consent !== undefined) options.consentField = readField(r, joinPath(path, "consent"), obj.consent, scope, "map");
  if (obj.quietHours !== undefined) options.quietHours = readQuietHours(r, joinPath(path, "quietHours"), obj.quietHours);
  if (obj.converts !== undefined) options.converts = condition(r, joinPath(path, "converts"), obj.converts, scope, ["bool"]);
  if (obj.segment !== undefined) options.segment = condition(r, joinPath(path, "segment"), obj.segment, scope, ["string"]);
  if (obj.rules !== undefined) options.rules = readRules(r, joinPath(path, "rules"), obj.rules, scope);
  // Declared last: only the template sees the trigger's own facts.
  if (obj.template !== undefined) options.template = readTemplate(r, joinPath(path, "template"), obj.template, scope, context);
  const specs = readExperiments(r, joinPath(path, "rules"), obj.rules, options.rules, scope);
  if (specs.length === 0) return { definition: triggers(options), outputs: [TRIGGER_OUTPUT] };
  return { definition: triggers(options), outputs: [TRIGGER_OUTPUT, EXPOSURE_OUTPUT, CONVERSION_OUTPUT, EXPERIMENT_OUTPUT], then: experiments({ experiments: specs, digits: context.digits }), experiments: specs.map(assignmentOf) };
};

/** Who is in which arm, and nothing else (what the generator's users answer). */
function assignmentOf({ experiment, holdout, variants }: Assignment): Assignment {
  return { experiment, holdout, variants: variants.map(({ name, weight }) => ({ name, weight })) };
}

/**
 * The measuring part of the rules' experiments (their assignment is the rule's, read with it): the
 * goal, value, window, breakdown and report period, for the experiments stage that runs after the
 * triggers. Experiment names are unique in the pipeline.
 */
function readExperiments(r: Reader, path: string, value: unknown, rules: readonly TriggerRule[], scope: Scope): ExperimentSpec[] {
  const specs: ExperimentSpec[] = [];
  if (!rules.some((rule) => rule.experiment !== undefined)) return specs;
  const entries = new Map(r.entries(path, value, "rule") ?? []);
  for (const rule of rules) {
    if (rule.experiment === undefined) continue;
    const at = joinPath(joinPath(path, rule.name), "experiment");
    const obj = (entries.get(rule.name) as Record<string, unknown>).experiment as Record<string, unknown>;
    if (specs.some((s) => s.experiment === rule.experiment!.experiment)) {
      r.fail(joinPath(at, "name"), `two rules run the experiment "${rule.experiment.experiment}": give each its own name`);
      continue;
    }
    const errorsBefore = r.errors.length;
    const goal = obj.goal === undefined ? undefined : condition(r, joinPath(at, "goal"), obj.goal, scope, ["bool"]);
    const revenue = obj.value === undefined ? undefined : condition(r, joinPath(at, "value"), obj.value, scope, ["double", "int"]);
    const withinMs = r.duration(joinPath(at, "within"), obj.within, "7d", { positive: true });
    const reportEveryMs = obj.report === undefined ? DAY_MS : r.duration(joinPath(at, "report"), obj.report, "1d", { atLeast: [MINUTE_MS, "1m"] });
    const by = obj.by === undefined ? [] : (r.nameList(joinPath(at, "by"), obj.by) ?? []);
    for (const [i, group] of by.entries()) scope.compile(r, joinPath(joinPath(at, "by"), i), group, ["string"]);
    if (r.errors.length > errorsBefore || goal === undefined || withinMs === undefined || reportEveryMs === undefined) continue;
    specs.push({ ...rule.experiment, rule: rule.name, goal, value: revenue, withinMs, by, reportEveryMs });
  }
  return specs;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

/** An event field's name, checked to exist with the right type (the stage reads it off the event). */
function readField(r: Reader, path: string, value: unknown, scope: Scope, celType: string): string | undefined {
  const name = r.string(path, value);
  if (name === undefined) return undefined;
  if (!IDENTIFIER.test(name)) return r.fail(path, `expected the name of a field, got ${JSON.stringify(name)}`);
  if (!scope.compile(r, path, name, [celType])) return undefined;
  scope.useField(name); // read off the event, not through an expression: privacy.keep must keep it
  return name;
}

function readQuietHours(r: Reader, path: string, value: unknown): TriggersOptions["quietHours"] {
  const obj = r.object(path, value, ["from", "to"], ["from", "to"]);
  if (!obj || obj.from === undefined || obj.to === undefined) return undefined;
  const fromMs = timeOfDay(r, joinPath(path, "from"), obj.from);
  const toMs = timeOfDay(r, joinPath(path, "to"), obj.to);
  if (fromMs === undefined || toMs === undefined) return undefined;
  if (fromMs === toMs) return r.fail(path, `from and to are both ${obj.from as string}: quiet hours need a start and a different end`);
  return { fromMs, toMs };
}

function timeOfDay(r: Reader, path: string, value: unknown): number | undefined {
  const ms = parseTimeOfDay(value);
  if (ms === undefined) return r.fail(path, `expected a local time like "08:00", got ${JSON.stringify(value) ?? "nothing"}`);
  return ms;
}

function condition(r: Reader, path: string, source: unknown, scope: Scope, types: string[]): ((vars: Record<string, unknown>) => unknown) | undefined {
  const compiled = scope.compile(r, path, source, types);
  return compiled?.evaluate;
}

function readRules(r: Reader, path: string, value: unknown, scope: Scope): TriggerRule[] {
  const entries = r.entries(path, value, "rule, like cart_recovery: { on: { sequence: cart_abandoned }, message: ..., channels: [email] }");
  if (!entries) return [];
  const rules: TriggerRule[] = [];
  for (const [name, spec] of entries) {
    const at = joinPath(path, name);
    if (!NAME.test(name)) {
      r.fail(at, `expected a rule name of letters, digits, _ and -, got ${JSON.stringify(name)}`);
      continue;
    }
    const rule = readRule(r, at, name, spec, scope);
    if (rule) rules.push(rule);
  }
  return rules;
}

function readRule(r: Reader, path: string, name: string, value: unknown, scope: Scope): TriggerRule | undefined {
  const obj = r.object(path, value, RULE_FIELDS, ["on", "message", "channels"]);
  if (!obj) return undefined;
  const errorsBefore = r.errors.length;
  const on = obj.on === undefined ? undefined : readOn(r, joinPath(path, "on"), obj.on);
  const when = obj.when === undefined ? undefined : condition(r, joinPath(path, "when"), obj.when, scope, ["bool"]);
  const trigger = obj.trigger === undefined ? undefined : r.string(joinPath(path, "trigger"), obj.trigger);
  const message = obj.message === undefined ? undefined : r.string(joinPath(path, "message"), obj.message);
  const channels = obj.channels === undefined ? undefined : r.nameList(joinPath(path, "channels"), obj.channels);
  const cooldownMs = obj.cooldown === undefined ? undefined : r.duration(joinPath(path, "cooldown"), obj.cooldown, "24h");
  const cap = obj.cap === undefined ? undefined : readCap(r, joinPath(path, "cap"), obj.cap);
  const followUps = obj.followUps === undefined ? undefined : readFollowUps(r, joinPath(path, "followUps"), obj.followUps);
  const delayMs = obj.delay === undefined ? undefined : r.duration(joinPath(path, "delay"), obj.delay, "1d");
  const experiment = obj.experiment === undefined ? undefined : readAssignment(r, joinPath(path, "experiment"), name, obj.experiment);
  if (r.errors.length > errorsBefore || !on || message === undefined || !channels) return undefined;
  return { name, on, when, trigger, message, channels, cooldownMs, cap, followUps, delayMs, experiment };
}

/** Who gets what in a rule's experiment: the holdout's share and the variants (the rest is read by readExperiments). */
function readAssignment(r: Reader, path: string, rule: string, value: unknown): TriggerExperiment | undefined {
  const obj = r.object(path, value, EXPERIMENT_FIELDS, ["goal", "within"]);
  if (!obj) return undefined;
  const experiment = obj.name === undefined ? rule : r.string(joinPath(path, "name"), obj.name, NAME);
  const holdout = obj.holdout === undefined ? 0 : readShare(r, joinPath(path, "holdout"), obj.holdout);
  const variants = obj.variants === undefined ? [{ name: DEFAULT_VARIANT, weight: 1 }] : readVariants(r, joinPath(path, "variants"), obj.variants);
  if (experiment === undefined || holdout === undefined || variants === undefined) return undefined;
  return { experiment, holdout, variants };
}

/** A share like "10%" or 0.1, from 0 up to (not including) 1. */
function readShare(r: Reader, path: string, value: unknown): number | undefined {
  const share = typeof value === "string" && /^\d+(\.\d+)?%$/.test(value.trim()) ? Number(value.trim().slice(0, -1)) / 100 : typeof value === "number" ? value : NaN;
  if (!(share >= 0 && share < 1)) return r.fail(path, `expected a share from 0% up to (not including) 100%, like "10%" or 0.1, got ${JSON.stringify(value)}`);
  return share;
}

function readVariants(r: Reader, path: string, value: unknown): TriggerVariant[] | undefined {
  const list = r.list(path, value, { nonEmpty: true });
  if (!list) return undefined;
  const variants: TriggerVariant[] = [];
  list.forEach((item, i) => {
    const at = joinPath(path, i);
    const obj = r.object(at, item, VARIANT_FIELDS, ["name"]);
    if (!obj) return;
    const name = r.string(joinPath(at, "name"), obj.name, NAME);
    const weight = obj.weight === undefined ? 1 : r.number(joinPath(at, "weight"), obj.weight, { min: Number.MIN_VALUE, max: 1e6 });
    const message = obj.message === undefined ? undefined : r.string(joinPath(at, "message"), obj.message);
    const channels = obj.channels === undefined ? undefined : r.nameList(joinPath(at, "channels"), obj.channels);
    const delayMs = obj.delay === undefined ? undefined : r.duration(joinPath(at, "delay"), obj.delay, "3d");
    if (name === HOLDOUT) r.fail(joinPath(at, "name"), `"${HOLDOUT}" names the held-out arm: give the variant another name`);
    else if (name !== undefined && variants.some((v) => v.name === name)) r.fail(joinPath(at, "name"), `two variants are named "${name}"`);
    else if (name !== undefined && weight !== undefined && (obj.message === undefined || message !== undefined) && (obj.channels === undefined || channels !== undefined)) {
      variants.push({ name, weight, ...(message !== undefined ? { message } : {}), ...(channels !== undefined ? { channels } : {}), ...(delayMs !== undefined ? { delayMs } : {}) });
    }
  });
  return variants.length === list.length ? variants : undefined;
}

function readOn(r: Reader, path: string, value: unknown): TriggerRule["on"] | undefined {
  const picked = r.oneOf(path, value, Object.keys(SIGNAL_KINDS));
  if (!picked) return undefined;
  const name = r.string(joinPath(path, picked[0]), picked[1]);
  return name === undefined ? undefined : { kind: SIGNAL_KINDS[picked[0]], name };
}

function readCap(r: Reader, path: string, value: unknown): TriggerRule["cap"] {
  const obj = r.object(path, value, ["max", "per"], ["max", "per"]);
  if (!obj || obj.max === undefined || obj.per === undefined) return undefined;
  const max = r.number(joinPath(path, "max"), obj.max, { min: 1, max: MAX_CAP, integer: true });
  const perMs = r.duration(joinPath(path, "per"), obj.per, "7d", { positive: true });
  return max === undefined || perMs === undefined ? undefined : { max, perMs };
}

function readFollowUps(r: Reader, path: string, value: unknown): FollowUp[] | undefined {
  const list = r.list(path, value, { nonEmpty: true });
  if (!list) return undefined;
  const followUps: FollowUp[] = [];
  list.forEach((item, i) => {
    const at = joinPath(path, i);
    const obj = r.object(at, item, ["channel", "at", "after"], ["channel"]);
    if (!obj) return;
    const channel = obj.channel === undefined ? undefined : r.string(joinPath(at, "channel"), obj.channel, NAME);
    const atMs = obj.at === undefined ? undefined : timeOfDay(r, joinPath(at, "at"), obj.at);
    const afterMs = obj.after === undefined ? undefined : r.duration(joinPath(at, "after"), obj.after, "3d");
    if (obj.at === undefined && (obj.after === undefined || afterMs === 0)) {
      r.fail(at, `needs a local time (at: "09:00") or a delay (after: 3d), or both`);
      return;
    }
    if (channel !== undefined && (obj.at === undefined || atMs !== undefined) && (obj.after === undefined || afterMs !== undefined)) {
      followUps.push({ channel, atMs, afterMs });
    }
  });
  return followUps.length === list.length ? followUps : undefined;
}

function readTemplate(r: Reader, path: string, value: unknown, scope: Scope, context: ReadContext): TriggerTemplate | undefined {
  const entries = r.entries(path, value, "output field, like messaggio: trigger.message");
  if (!entries) return undefined;
  if (!scope.declare(r, path, "trigger", "map")) return undefined;
  const fields: TriggerTemplate["fields"][number][] = [];
  const reads = new Set<string>();
  let isRefused = false;
  for (const [key, source] of entries) {
    const at = joinPath(path, key);
    if (key === context.keyField || key === MESSAGE_ID_FIELD) {
      r.fail(at, `every message carries its recipient (${context.keyField}) and ${MESSAGE_ID_FIELD} already: drop this field`);
      isRefused = true;
      continue;
    }
    const compiled = scope.compile(r, at, source);
    if (!compiled) continue;
    const renamed = Object.keys(RENAMED_FACTS).find((old) => new RegExp(`\\btrigger\\.${old}\\b`).test(compiled.source));
    if (renamed !== undefined) {
      r.fail(at, `trigger.${renamed} is now trigger.${RENAMED_FACTS[renamed]} (the send time in the user's zone)`);
      isRefused = true;
      continue;
    }
    fields.push({ key, value: compiled.evaluate });
    for (const name of referencedNames(compiled.source)) if (name !== "trigger") reads.add(name);
  }
  return !isRefused && fields.length === entries.length ? { fields, reads: [...reads] } : undefined;
}
