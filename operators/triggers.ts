// Triggers: marketing messages fired by earlier stages' signals (segment entry, sequence match,
// score alert, phase change), sent per channel within consent, cooldowns and frequency caps,
// held through the user's quiet hours, with follow-ups at local times that a conversion cancels.
// Every message names its recipient and carries an id derived from what it is, never from a count.
import { createHash } from "node:crypto";
import { isoTime } from "./outputFormat.ts";
import { triggerBody, type TriggerFacts, type TriggerTemplate } from "./triggerTemplate.ts";
import { isoInZone, isWithinDaily, localTimeOfDayMs, nextLocalTime, timeZone, UTC, type TimeZone } from "./localTime.ts";
import type { Signal, StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import type { SlotState } from "../engine/keyedSlots.ts";
import { armOf, HOLDOUT, type Assignment, type Variant } from "../engine/assignment.ts";
import { relayoutAll, type StateShape } from "./stateShape.ts";

type Vars = Record<string, unknown>;
type Condition = (vars: Vars) => unknown;

/** The output kind of a message sent. */
export const TRIGGER_OUTPUT = "trigger";

/** The "segmento" of a message when nothing else says one (see TriggersOptions.defaultSegment). */
export const DEFAULT_SEGMENT = "nuovo_cliente";

/** Where a message names its recipient when no key field is given. */
export const DEFAULT_RECIPIENT_FIELD = "user_id";

/** A message sent later on one channel, in the user's local time. */
export type FollowUp = {
  channel: string;
  /** Local time of day, ms after midnight: the first one after the first message (plus `afterMs`). */
  atMs?: number;
  /** How long after the first message at the earliest. Default 0. */
  afterMs?: number;
};

export type TriggerRule = {
  /** Names the rule in state; unique. */
  name: string;
  /** The signal that fires the rule: its kind and name (`{ kind: "sequence", name: "cart_abandoned" }`). */
  on: { kind: Signal["kind"]; name: string };
  /** Extra condition on the user's values when the signal comes; must be true. Default: none. */
  when?: Condition;
  /** The "trigger" value of the body. Default: the rule's name. */
  trigger?: string;
  /** The "messaggio" value of the body. */
  message: string;
  /** Where the first message goes, consent, cooldown and cap allowing. */
  channels: string[];
  /** After this rule fired on a channel, it does not fire on that channel again for this long. Default 0. */
  cooldownMs?: number;
  /** At most `max` messages on a channel to the user (any rule's) within any `perMs`. Default: no cap. */
  cap?: { max: number; perMs: number };
  /** Sent after the first message, in this order; cancelled when the user converts. Default none. */
  followUps?: FollowUp[];
  /** The first message goes this long after the signal (then quiet hours apply); a conversion meanwhile cancels it. Default 0. */
  delayMs?: number;
  /**
   * An experiment on the rule (operators/experiments.ts): each user is in one arm. The held-out arm
   * gets nothing from the rule (its cooldowns and caps are not spent); a variant may change the
   * message, channels and delay. Either way the firing is an exposure, signalled to the experiments stage.
   */
  experiment?: TriggerExperiment;
};

/** A variant of a rule under experiment: what it changes of the rule's message. */
export type TriggerVariant = Variant & { message?: string; channels?: string[]; delayMs?: number };

export type TriggerExperiment = Omit<Assignment, "variants"> & { variants: readonly TriggerVariant[] };

export type TriggersOptions = {
  /** Names the stage's state. Default "triggers". */
  name?: string;
  rules: TriggerRule[];
  /** Event field with the user's time zone (IANA name or "+02:00"). Default: every user in UTC. */
  timezoneField?: string;
  /** Event field with per-channel consent flags ({ email: true }). Default: consent is not checked. */
  consentField?: string;
  /** Daily local window (ms after midnight; may run over midnight) in which nothing is sent. Default none. */
  quietHours?: { fromMs: number; toMs: number };
  /** True on an event by which the user converts: their pending messages are cancelled. Default: none. */
  converts?: Condition;
  /**
   * The "segmento" value (a string). Default, and where it gives none or "": the segment entered
   * for a segment signal, else the user's current segment (`currentSegment`), else `defaultSegment`.
   */
  segment?: Condition;
  /** The user's current segment (a string), e.g. the first segment group's var. Default: none. */
  currentSegment?: Condition;
  /** The "segmento" when nothing else gives one. Default DEFAULT_SEGMENT. */
  defaultSegment?: string;
  /** The body of a message. Default: the seed shape (see triggerTemplate.ts). */
  template?: TriggerTemplate;
  /** The field a message names its recipient under: the pipeline's key field. Default DEFAULT_RECIPIENT_FIELD. */
  recipientField?: string;
  /** Part of every message id: the pipeline's name, so two pipelines' messages never share one. Default "". */
  pipeline?: string;
};

/** A message waiting for its time: held through quiet hours, or a follow-up. Plain data for checkpoints. */
type Pending = {
  rule: string;
  /** When it is to be sent (event time). */
  atMs: number;
  /** Event time of the signal that fired the rule. */
  triggerMs: number;
  segment: string;
  channels: string[];
  isFollowUp: boolean;
  /** Which follow-up (from 1, in the rule's order); absent for a first message (and in state written before it was kept). */
  followUp?: number;
  /** The experiment's variant the message is of (absent: the rule's own message). */
  variant?: string;
  /** Firings of the rule for the user at the same signal time before this one (absent: none). Part of the id. */
  occurrence?: number;
  /** The values the template reads, as they were when the rule fired. */
  vars: Vars;
};

/** What the stage keeps per user. Absent fields: nothing known yet. */
type UserState = {
  /** Last valid time zone the user's events named. */
  zone?: string;
  /** Channels (of those the rules use, in their order) the user last consented to. */
  consent?: string[];
  /** `rule/channel` -> when the rule last fired on the channel, for cooldowns. */
  firedMs?: Record<string, number>;
  /** channel -> send times within the longest cap window, for frequency caps. */
  sentMs?: Record<string, number[]>;
  /** Messages waiting, earliest first. */
  pending?: Pending[];
  /**
   * rule -> [signal time, occurrence] of its latest firing: a rule fired twice for the same signal
   * time (events in the same millisecond) gives its messages different ids.
   */
  firings?: Record<string, [number, number]>;
  /** The one wake-up pending, at the first waiting message (absent: none). */
  wakeMs?: number;
};

export function triggers(options: TriggersOptions): StageDefinition {
  const name = options.name ?? "triggers";
  // Cooldowns and waiting messages are kept by rule name; zones, consent and caps by user and channel.
  const shape: StateShape = { parts: options.rules.map((rule): [string, StateShape] => [rule.name, {}]) };
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const users = ctx.userState<UserState>("users");
      if (ctx.restoredShape) relayoutAll(users, forgetRulesGone(new Set(options.rules.map((rule) => rule.name))));
      return new TriggersLogic(options, users);
    },
  };
}

/**
 * A user's state restored under other rules: the cooldowns and waiting messages of rules no longer
 * there (removed, or renamed: a renamed rule starts with no cooldown) are dropped, and the pending
 * wake-up moves to the first message still waiting. Caps count a channel's messages whichever rule
 * sent them: they stay.
 */
function forgetRulesGone(rules: ReadonlySet<string>): (state: UserState) => UserState {
  return (state) => {
    if (state.firedMs !== undefined) {
      state.firedMs = Object.fromEntries(Object.entries(state.firedMs).filter(([ruleChannel]) => rules.has(ruleChannel.slice(0, ruleChannel.lastIndexOf("/")))));
    }
    if (state.pending !== undefined) {
      const pending = state.pending.filter((message) => rules.has(message.rule));
      state.pending = pending.length === 0 ? undefined : pending;
      if (pending.length === 0) delete state.wakeMs;
      else state.wakeMs = pending[0].atMs;
    }
    return state;
  };
}

class TriggersLogic implements StageLogic {
  private readonly rulesBySignal = new Map<string, TriggerRule[]>();
  private readonly rulesByName = new Map<string, TriggerRule>();
  /** Every channel a rule or follow-up uses: the only ones whose consent is kept. */
  private readonly channels: string[];
  /** Send times older than this no cap looks at. 0: no rule has a cap, none are kept. */
  private readonly capWindowMs: number;
  private readonly recipientField: string;
  /** Messages sent in this run, per channel (a message on two channels counts on each). */
  private readonly sentByChannel = new Map<string, number>();
  /** What the user's triggers keep: zone, consent, the messages waiting, when each rule last fired per channel. */
  readonly view: StageView = {
    user: (user) => {
      const state = this.users.get(user);
      if (state === undefined) return undefined;
      const lastFired = Object.fromEntries(Object.entries(state.firedMs ?? {}).map(([ruleChannel, ms]) => [ruleChannel, { time: isoTime(ms), time_ms: ms }]));
      const waiting = (state.pending ?? []).map((p) => ({ rule: p.rule, send_at: isoTime(p.atMs), send_at_ms: p.atMs, channels: p.channels, follow_up: p.isFollowUp }));
      return { zone: state.zone ?? null, consent: state.consent ?? null, waiting, last_fired: lastFired };
    },
    wakeCause: (user) => {
      const first = this.users.get(user)?.pending?.[0];
      return first === undefined ? "a message that no longer waits" : `a ${first.isFollowUp ? "follow-up" : "message"} of rule "${first.rule}" is due`;
    },
    views: {
      triggersByChannel: () => Object.fromEntries([...this.channels.map((channel): [string, number] => [channel, 0]), ...this.sentByChannel]),
    },
  };

  constructor(
    private readonly options: TriggersOptions,
    private readonly users: SlotState<UserState>,
  ) {
    const channels = new Set<string>();
    let capWindowMs = 0;
    for (const rule of options.rules) {
      const key = signalKey(rule.on.kind, rule.on.name);
      this.rulesBySignal.set(key, [...(this.rulesBySignal.get(key) ?? []), rule]);
      this.rulesByName.set(rule.name, rule);
      for (const channel of rule.channels) channels.add(channel);
      for (const followUp of rule.followUps ?? []) channels.add(followUp.channel);
      if (rule.cap) capWindowMs = Math.max(capWindowMs, rule.cap.perMs);
    }
    this.channels = [...channels];
    this.capWindowMs = capWindowMs;
    this.recipientField = options.recipientField ?? DEFAULT_RECIPIENT_FIELD;
  }

  /**
   * 1. Send what fell due at or before this step. 2. Remember the event's zone and consent.
   * 3. A conversion cancels what is pending. 4. Fire the rules the step's signals match.
   * 5. One wake-up, at the first message still waiting.
   */
  step(view: UserView, out: StageOutput): void {
    const user = view.user;
    let state = this.users.get(user);
    // 1.
    if (state?.pending !== undefined && state.pending.length > 0 && state.pending[0].atMs <= view.timeMs) {
      this.sendDue(user, state, view.timeMs, out);
      this.users.touch(user);
    }
    // 2.
    if (view.event !== undefined) {
      state = this.rememberZone(view, state, out);
      state = this.rememberConsent(view, state);
    }
    // 3.
    if (state?.pending !== undefined && state.pending.length > 0 && this.isConversion(view)) {
      out.count("triggers_cancelled", state.pending.length);
      state.pending = undefined;
      this.users.touch(user);
    }
    // 4.
    const signals = view.signals;
    for (let i = 0; i < signals.length; i++) {
      const rules = this.rulesBySignal.get(signalKey(signals[i].kind, signals[i].name));
      if (rules === undefined) continue;
      state ??= {};
      for (const rule of rules) if (!isFiredEarlierInStep(signals, i, rule)) this.fire(rule, signals[i], view, state, out);
      this.users.set(user, state);
    }
    // 5.
    if (state !== undefined) this.rearm(user, state, out);
  }

  pendingWake(user: string): number | undefined {
    return this.users.get(user)?.wakeMs;
  }

  /** Moves the pending wake-up to the first waiting message, withdrawing it when none waits (a conversion). */
  private rearm(user: string, state: UserState, out: StageOutput): void {
    const nextMs = state.pending?.[0]?.atMs;
    if (nextMs === state.wakeMs) return;
    // One that has fired is no longer pending: withdrawing it does nothing.
    if (state.wakeMs !== undefined) out.cancelWake(user, state.wakeMs);
    if (nextMs !== undefined) out.wakeAt(user, nextMs);
    if (nextMs === undefined) delete state.wakeMs;
    else state.wakeMs = nextMs;
    this.users.touch(user);
  }

  private sendDue(user: string, state: UserState, nowMs: number, out: StageOutput): void {
    const pending = state.pending!;
    // Sending a first message may schedule follow-ups already due: they join this loop.
    while (pending.length > 0 && pending[0].atMs <= nowMs) this.send(user, state, pending.shift()!, out);
    if (pending.length === 0) state.pending = undefined;
  }

  private rememberZone(view: UserView, state: UserState | undefined, out: StageOutput): UserState | undefined {
    if (this.options.timezoneField === undefined) return state;
    // From the event itself: a field of its own is a cheaper read than one through the view.
    const zone = view.event![this.options.timezoneField];
    if (typeof zone !== "string" || zone === state?.zone) return state;
    if (timeZone(zone) === undefined) {
      out.count("triggers_unknown_timezone");
      return state;
    }
    if (state === undefined) state = {};
    state.zone = zone;
    this.users.set(view.user, state);
    return state;
  }

  /** Keeps the channels the event's consent flags set to true, when they differ from those known. */
  private rememberConsent(view: UserView, state: UserState | undefined): UserState | undefined {
    if (this.options.consentField === undefined) return state;
    const flags = view.event![this.options.consentField];
    if (flags === null || typeof flags !== "object") return state;
    const known = state?.consent;
    // Compare without building a list: both are in `this.channels` order.
    let same = true;
    let n = 0;
    for (const channel of this.channels) {
      if (consentFlag(flags, channel) !== true) continue;
      if (known?.[n] !== channel) same = false;
      n++;
    }
    if (same && n === (known?.length ?? 0)) return state;
    if (state === undefined) state = {};
    state.consent = this.channels.filter((channel) => consentFlag(flags, channel) === true);
    this.users.set(view.user, state);
    return state;
  }

  /** A conversion signal of an earlier stage, or an event `converts` holds for. */
  private isConversion(view: UserView): boolean {
    for (const signal of view.signals) if (signal.kind === "conversion") return true;
    return view.event !== undefined && this.options.converts?.(view.vars) === true;
  }

  /**
   * The rule fires: its first message goes now, or waits for its delay and the end of the user's
   * quiet hours. Under an experiment the firing is the user's exposure, whatever happens to the
   * message: a held-out user gets none, a variant's message is its own.
   */
  private fire(rule: TriggerRule, signal: Signal, view: UserView, state: UserState, out: StageOutput): void {
    if (rule.when !== undefined && rule.when(view.vars) !== true) return;
    let variant: TriggerVariant | undefined;
    if (rule.experiment !== undefined) {
      const arm = armOf(rule.experiment, view.user);
      view.signals.push({ kind: "exposure", name: rule.experiment.experiment, timeMs: view.timeMs, detail: { arm, rule: rule.name } });
      if (arm === HOLDOUT) {
        out.count("triggers_held_out");
        return;
      }
      variant = rule.experiment.variants.find((v) => v.name === arm);
    }
    const segment = this.segmentOf(signal, view.vars);
    const atMs = this.afterQuietHours(this.zoneOf(state), view.timeMs + (variant?.delayMs ?? rule.delayMs ?? 0));
    const occurrence = this.occurrence(state, rule, signal.timeMs);
    const channels = variant?.channels ?? rule.channels;
    const first: Pending = { rule: rule.name, atMs, triggerMs: signal.timeMs, segment, channels, isFollowUp: false, vars: view.vars };
    if (variant !== undefined) first.variant = variant.name;
    if (occurrence > 0) first.occurrence = occurrence;
    if (atMs === view.timeMs) {
      this.send(view.user, state, first, out, true);
      return;
    }
    // One first message per rule waits at a time: the morning should not bring a burst of copies.
    if (state.pending?.some((p) => p.rule === rule.name && !p.isFollowUp)) {
      out.count("triggers_coalesced");
      return;
    }
    first.vars = this.kept(view.vars);
    this.schedule(state, first);
    out.count("triggers_deferred");
  }

  /** How many times the rule fired for the user at this signal time before (0 nearly always), counting this firing. */
  private occurrence(state: UserState, rule: TriggerRule, signalMs: number): number {
    const firings = (state.firings ??= {});
    const latest = firings[rule.name];
    const occurrence = latest !== undefined && latest[0] === signalMs ? latest[1] + 1 : 0;
    firings[rule.name] = [signalMs, occurrence];
    return occurrence;
  }

  /**
   * Sends one message on the channels that pass consent, cooldown (first messages only) and cap;
   * with none left it is suppressed. A first message that goes out starts the rule's follow-ups.
   * `hasLiveVars`: `message.vars` is the step's view, not values kept for a waiting message.
   */
  private send(user: string, state: UserState, message: Pending, out: StageOutput, hasLiveVars = false): void {
    const rule = this.rulesByName.get(message.rule);
    if (rule === undefined) {
      out.count("triggers_rule_gone"); // restored from a checkpoint of a pipeline with that rule
      return;
    }
    const channels = this.allowedChannels(rule, state, message, out);
    if (channels.length === 0) {
      out.count("triggers_suppressed");
      return;
    }
    this.recordSent(rule, state, message, channels);
    const followUpNumber = message.isFollowUp ? (message.followUp ?? this.followUpNumberOf(rule, message)) : 0;
    const facts: TriggerFacts = {
      id: messageId(this.options.pipeline ?? "", rule.name, user, message.triggerMs, followUpNumber, message.occurrence ?? 0),
      rule: rule.name,
      name: rule.trigger ?? rule.name,
      message: this.messageOf(rule, message.variant),
      segment: message.segment,
      timeMs: message.triggerMs,
      time: isoTime(message.triggerMs),
      sendAtMs: message.atMs,
      sendAt: isoInZone(this.zoneOf(state), message.atMs),
      channels,
      followUp: message.isFollowUp,
      followUpNumber,
    };
    const body = triggerBody(this.recipientField, user, facts, this.options.template, message.vars);
    out.emit(TRIGGER_OUTPUT, user, message.atMs, body);
    out.count("triggers_sent");
    for (const channel of channels) this.sentByChannel.set(channel, (this.sentByChannel.get(channel) ?? 0) + 1);
    if (message.isFollowUp || rule.followUps === undefined || rule.followUps.length === 0) return;
    this.startFollowUps(state, rule, message, hasLiveVars ? this.kept(message.vars) : message.vars);
  }

  private allowedChannels(rule: TriggerRule, state: UserState, message: Pending, out: StageOutput): string[] {
    const allowed: string[] = [];
    for (const channel of message.channels) {
      if (this.options.consentField !== undefined && !(state.consent?.includes(channel) ?? false)) {
        out.count("triggers_channel_without_consent");
      } else if (!message.isFollowUp && this.isCoolingDown(rule, state, channel, message.atMs)) {
        out.count("triggers_channel_in_cooldown");
      } else if (rule.cap !== undefined && this.isCapped(rule.cap, state, channel, message.atMs)) {
        out.count("triggers_channel_capped");
      } else allowed.push(channel);
    }
    return allowed;
  }

  private isCoolingDown(rule: TriggerRule, state: UserState, channel: string, atMs: number): boolean {
    const firedMs = state.firedMs?.[`${rule.name}/${channel}`];
    return firedMs !== undefined && rule.cooldownMs !== undefined && atMs - firedMs < rule.cooldownMs;
  }

  private isCapped(cap: { max: number; perMs: number }, state: UserState, channel: string, atMs: number): boolean {
    let recent = 0;
    for (const sentMs of state.sentMs?.[channel] ?? []) if (sentMs > atMs - cap.perMs) recent++;
    return recent >= cap.max;
  }

  private recordSent(rule: TriggerRule, state: UserState, message: Pending, channels: string[]): void {
    for (const channel of channels) {
      if (!message.isFollowUp && (rule.cooldownMs ?? 0) > 0) (state.firedMs ??= {})[`${rule.name}/${channel}`] = message.atMs;
      if (this.capWindowMs > 0) {
        const sentMs = ((state.sentMs ??= {})[channel] ??= []).filter((t) => t > message.atMs - this.capWindowMs);
        sentMs.push(message.atMs);
        state.sentMs[channel] = sentMs;
      }
    }
  }

  /**
   * Schedules the rule's follow-ups after its first message went out at `first.atMs`, replacing
   * any still pending from an earlier firing. Each goes at the first local `at` after the first
   * message plus its `after`, and not before the follow-up above it: a sequence keeps its order.
   */
  private startFollowUps(state: UserState, rule: TriggerRule, first: Pending, vars: Vars): void {
    // In place: sendDue may be walking this very list.
    const pending = state.pending ?? [];
    for (let i = pending.length - 1; i >= 0; i--) if (pending[i].rule === rule.name && pending[i].isFollowUp) pending.splice(i, 1);
    const zone = this.zoneOf(state);
    let previousMs = -Infinity;
    rule.followUps!.forEach((followUp, i) => {
      const earliestMs = first.atMs + (followUp.afterMs ?? 0);
      let atMs = followUp.atMs === undefined ? earliestMs : nextLocalTime(zone, earliestMs, followUp.atMs);
      if (atMs < previousMs) atMs = followUp.atMs === undefined ? previousMs : nextLocalTime(zone, previousMs - 1, followUp.atMs);
      atMs = this.afterQuietHours(zone, atMs);
      previousMs = atMs;
      const next: Pending = { rule: rule.name, atMs, triggerMs: first.triggerMs, segment: first.segment, channels: [followUp.channel], isFollowUp: true, followUp: i + 1, vars };
      if (first.occurrence !== undefined) next.occurrence = first.occurrence;
      if (first.variant !== undefined) next.variant = first.variant;
      this.schedule(state, next);
    });
  }

  /** Adds a waiting message in time order (after those due at the same time); the step's end moves the wake-up. */
  private schedule(state: UserState, message: Pending): void {
    const pending = (state.pending ??= []);
    let i = pending.length;
    while (i > 0 && pending[i - 1].atMs > message.atMs) i--;
    pending.splice(i, 0, message);
  }

  /** `timeMs`, or the end of the quiet hours it falls in, local time. */
  private afterQuietHours(zone: TimeZone, timeMs: number): number {
    const quiet = this.options.quietHours;
    if (quiet === undefined || !isWithinDaily(localTimeOfDayMs(zone, timeMs), quiet.fromMs, quiet.toMs)) return timeMs;
    return nextLocalTime(zone, timeMs, quiet.toMs);
  }

  private zoneOf(state: UserState): TimeZone {
    return state.zone === undefined ? UTC : (timeZone(state.zone) ?? UTC);
  }

  /** "segmento": the configured expression's, else the segment entered, else the user's current one, else the default. Never "". */
  private segmentOf(signal: Signal, vars: Vars): string {
    const segment = this.options.segment?.(vars);
    if (typeof segment === "string" && segment !== "") return segment;
    if (signal.kind === "segment_enter") return signal.name;
    const current = this.options.currentSegment?.(vars);
    if (typeof current === "string" && current !== "") return current;
    return this.options.defaultSegment ?? DEFAULT_SEGMENT;
  }

  /** The text of a message: its variant's, when the rule is under an experiment and the variant has one. */
  private messageOf(rule: TriggerRule, variant: string | undefined): string {
    if (variant === undefined) return rule.message;
    return rule.experiment?.variants.find((v) => v.name === variant)?.message ?? rule.message;
  }

  /** A follow-up restored from state that did not keep its number: the first of the rule's on its channel. */
  private followUpNumberOf(rule: TriggerRule, message: Pending): number {
    const index = rule.followUps?.findIndex((f) => f.channel === message.channels[0]) ?? -1;
    return index + 1;
  }

  /** The values the template reads, copied: a waiting message must not hold the whole view. */
  private kept(vars: Vars): Vars {
    const kept: Vars = {};
    for (const name of this.options.template?.reads ?? []) {
      const value = vars[name];
      if (value !== undefined) kept[name] = value;
    }
    return kept;
  }
}

/**
 * A message's id: a hash of what the message is (pipeline, rule, recipient, the time of the signal
 * that fired it, which follow-up), so the same message produced again (a replay after a crash) has
 * the same id and two different messages never share one. `occurrence` (a second firing of the rule
 * for the same signal time) joins the identity only when it is not 0. 16 characters of
 * base64url(SHA-256): 96 bits.
 */
export function messageId(pipeline: string, rule: string, user: string, signalMs: number, followUp: number, occurrence = 0): string {
  const identity = [pipeline, rule, user, signalMs, followUp];
  if (occurrence > 0) identity.push(occurrence);
  return createHash("sha256").update(JSON.stringify(identity)).digest("base64url").slice(0, 16);
}

function signalKey(kind: string, name: string): string {
  return `${kind}\u0000${name}`;
}

/** Whether an earlier signal of this step already fired `rule`: a rule fires once per step. */
function isFiredEarlierInStep(signals: readonly Signal[], index: number, rule: TriggerRule): boolean {
  for (let i = 0; i < index; i++) if (signals[i].kind === rule.on.kind && signals[i].name === rule.on.name) return true;
  return false;
}

function consentFlag(flags: object, channel: string): unknown {
  return flags instanceof Map ? flags.get(channel) : (flags as Record<string, unknown>)[channel];
}
