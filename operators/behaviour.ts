// The behaviour operator: runs a pipeline's stages (dedup, aggregates, features, scores, phases,
// segments, triggers, ...) in order for every step of a user, an event or a wake-up, and sends
// what they produce downstream as `{ kind, body }` records routed to sinks by kind.
import { END_OF_TIME, type KindedOutput, type StreamRecord } from "../engine/elements.ts";
import { isoTime } from "./outputFormat.ts";
import type { OperatorContext, OperatorDefinition, OperatorLogic, Output } from "../engine/operator.ts";
import { KeyedSlots } from "../engine/keyedSlots.ts";
import type { TimerService } from "../engine/timers.ts";
import type { SlotState } from "../engine/keyedSlots.ts";
import type { OperatorView } from "../engine/operator.ts";
import { behaviourView } from "./behaviourView.ts";
import type { EventFields, StageContext, StageDefinition, StageLogic, StageOutput, UserView } from "./stage.ts";
import { unionSorted, type RoundMerger, type RoundParticipant } from "../engine/rounds.ts";
import { isSameLayout, type StateShape } from "./stateShape.ts";

/** One output of a stage: its kind ("features", "trigger", ...) and the object the sinks write. */
export type BehaviourOutput = KindedOutput;

/** The job counter of steps with no event: users woken for a stage's deadline. */
export const WAKE_UP_STEPS_COUNTER = "wake_up_steps";

export type BehaviourOptions = {
  /** Names the operator's state. */
  name: string;
  /** Run in this order; names must be unique. */
  stages: StageDefinition[];
  /**
   * Every variable a step may hold: the event's fields, then what the stages write. Known up
   * front, each step's vars start from one shape, which keeps V8's property access fast.
   * Default: the event's own fields are copied as they come.
   */
  varNames?: readonly string[];
  /** The event fields among varNames (copied from the event at each step). */
  eventFields?: readonly string[];
  /** The output kinds some sink takes; others are not emitted. Default: all. */
  wantedOutputs?: readonly string[];
  /**
   * A request to erase the user (GDPR): an event it holds for is not processed; instead every
   * stage forgets the user (its values, pending wake-ups, caches), and an `erasure` output records
   * what was erased. Default: no event erases.
   */
  erasesWhen?: (vars: Record<string, unknown>) => unknown;
  /**
   * Whether the end of a bounded input (the watermark at the end of time) wakes every user with a
   * pending deadline. False: event time ends at the input's horizon, which the job reaches first
   * (its `atEnd: stop`), and a replay ends with each user's state as of the last event, not with
   * messages dated after it. Default true.
   */
  drainsAtEnd?: boolean;
  /**
   * The shapes the restored state was written under, by stage (see StageDefinition.stateShape): a
   * stage not in it starts empty (it is new, or reset), one whose parts moved lays its values out
   * anew. Default: every stage's state is as its own shape says. (What a stage keeps apart from its
   * users, in `valueState`, starts empty when the job's `freshStates` name it.)
   */
  restoredShapes?: Readonly<Record<string, StateShape>>;
  /**
   * The job is one partition of a group (engine/cluster/): the stages that work across users do so
   * across the group's, in rounds (engine/rounds.ts). Default false.
   */
  isGrouped?: boolean;
};

/** A round's model as the behaviour operator's stages take it: each stage's, and which stages made a new one. */
type RoundModel = { stages: Record<string, unknown>; fresh: string[] };

/**
 * How a group merges the partials of the stages that work across users (StageDefinition.rounds):
 * undefined when no stage does. The leader runs it (engine/cluster/rounds.ts).
 */
export function behaviourMerger(stages: readonly StageDefinition[]): RoundMerger | undefined {
  const grouped = stages.filter((s) => s.rounds !== undefined);
  if (grouped.length === 0) return undefined;
  const boundariesIn = (afterMs: number, toMs: number) => unionSorted(grouped.map((s) => s.rounds!.boundariesIn(afterMs, toMs)));
  return {
    boundariesIn,
    merge: (roundMs, previous, partials) => {
      const before = previous as RoundModel | undefined;
      const model: RoundModel = { stages: {}, fresh: [] };
      for (const { name, rounds } of grouped) {
        const isItsRound = roundMs === END_OF_TIME || rounds!.boundariesIn(roundMs - 1, roundMs).length > 0;
        if (!isItsRound) {
          // Another stage's boundary: this one's model carries over to its next round.
          if (before?.stages[name] !== undefined) model.stages[name] = before.stages[name];
          continue;
        }
        model.stages[name] = rounds!.merge(roundMs, before?.stages[name], partials.map((p) => (p as Record<string, unknown> | undefined)?.[name]));
        model.fresh.push(name);
      }
      return model;
    },
  };
}

/** The output kind of the audit record of an erasure on request. */
export const ERASURE_OUTPUT = "erasure";

/** The audit record of an erasure: which stages held values of the user, and when it was asked. */
export type ErasureRecord = {
  output: typeof ERASURE_OUTPUT;
  user_id: string;
  /** Event time of the request. */
  time: string;
  time_ms: number;
  /** The stages that held values or wake-ups of the user (in stage order); empty: nothing was held. */
  stages: string[];
  /** Wake-ups withdrawn, of every stage. */
  wake_ups_withdrawn: number;
};

/** The job counter of users erased on request. */
export const ERASURES_COUNTER = "erasures";

/** The operator's state of every stage's per-user values (one record per user), and of their slot names. */
export const USER_RECORDS_STATE = "users";
export const SLOT_NAMES_STATE = "slot-names";

/**
 * The slot of the time of each user's latest event, in the users' records: not a stage's (the
 * part before "/" names no stage, so an erasure does not report it as one).
 */
export const LAST_EVENT_SLOT = "(user)/last_event";

export function behaviourOperatorName(pipeline: string): string {
  return `behaviour/${pipeline}`;
}

export function behaviour(options: BehaviourOptions): OperatorDefinition<EventFields, BehaviourOutput> {
  return { name: behaviourOperatorName(options.name), build: (ctx) => new BehaviourLogic(options, ctx) };
}

/**
 * A context whose state names are prefixed with the stage's, so stages cannot collide. `isFresh`:
 * the stage's user values start empty; `restoredShape`: they were written under another layout.
 */
function stageContext(ctx: OperatorContext, records: KeyedSlots, stage: string, isFresh: boolean, restoredShape: StateShape | undefined, isGrouped: boolean, drainsAtEnd: boolean): StageContext {
  return {
    restoredShape,
    isGrouped,
    drainsAtEnd,
    userState: (name) => records.slot(`${stage}/${name}`, { isFresh }),
    valueState: (name, options) => ctx.valueState(`${stage}/${name}`, options),
    mapState: (name, options) => ctx.mapState(`${stage}/${name}`, options),
    eventTimers: (name, options) => ctx.eventTimers(`${stage}/${name}`, options),
    processingTimers: (name) => ctx.processingTimers(`${stage}/${name}`),
    side: ctx.side,
    count: ctx.count,
  };
}

class BehaviourLogic implements OperatorLogic<EventFields, BehaviourOutput> {
  private readonly stages: StageLogic[];
  /**
   * Per stage, its wake-ups by user. Not checkpointed: each stage keeps its pending one in its own
   * state (moved there at every change), and they are rebuilt from it at a restart.
   */
  private readonly wakeUps: TimerService[];
  /** The wake-ups of the stages that can ask for some (say which they have pending): the ones to look at. */
  private readonly wakingTimers: TimerService[];
  /** Scratch: each waking stage's next due time, in wakeUpTo. */
  private readonly nextDueMs: number[];
  /** Every stage's per-user values, one record per user. */
  private readonly records: KeyedSlots;
  /** Where stage outputs go during the current call; set on every entry from the engine. */
  private downstream: Output<BehaviourOutput> | undefined;
  /** Per stage: its wake-ups are its own (a stage withdraws only what it asked for). */
  private readonly stageOutputs: StageOutput[];
  private readonly countWakeUp: () => void;
  private readonly stageNames: string[];
  private readonly erasesWhen: BehaviourOptions["erasesWhen"];
  private readonly emitErasure: (user: string, timeMs: number, body: ErasureRecord) => void;
  private readonly blankVars: Record<string, unknown>;
  private readonly eventFields: readonly string[] | undefined;
  private readonly drainsAtEnd: boolean;
  /** Each user's latest event time, for queries. */
  private readonly lastEventMs: SlotState<number>;
  /**
   * The pipeline's current event time as this operator knows it: the newest event time, or the
   * watermark when it went further (idleness); what a query evaluates time-dependent values at.
   */
  private nowMs = -Infinity;
  /** The last watermark: stages' boundaries are reached between it and the next. */
  private watermarkMs = -Infinity;
  readonly view: OperatorView;
  readonly rounds?: RoundParticipant;
  /** A round's model, applied when the watermark reaches it (the stages then emit through the operator's output). */
  private pendingRound?: { roundMs: number; model: RoundModel; reports: boolean };

  constructor(options: BehaviourOptions, ctx: OperatorContext) {
    const names = new Set<string>();
    for (const s of options.stages) {
      if (names.has(s.name)) throw new Error(`two behaviour stages are named "${s.name}"`);
      names.add(s.name);
    }
    // Users' records may leave memory under a memory budget: stages read them through the slots, step by step.
    this.records = new KeyedSlots(ctx.valueState<unknown[]>(USER_RECORDS_STATE, { mayLeaveMemory: true }), ctx.valueState<string[]>(SLOT_NAMES_STATE));
    const restored = options.restoredShapes;
    this.stages = options.stages.map((s) => {
      const restoredShape = restored?.[s.name];
      const isFresh = restored !== undefined && restoredShape === undefined;
      const isRelaidOut = restoredShape !== undefined && !isSameLayout(restoredShape, s.stateShape ?? {});
      return s.build(stageContext(ctx, this.records, s.name, isFresh, isRelaidOut ? restoredShape : undefined, options.isGrouped === true, options.drainsAtEnd ?? true));
    });
    this.lastEventMs = this.records.slot<number>(LAST_EVENT_SLOT);
    this.activating = this.stages.filter((stage) => stage.activate !== undefined);
    // The values of stages gone from the pipeline go with their slots (their wake-ups are not rebuilt).
    this.records.seal();
    this.stageNames = options.stages.map((s) => s.name);
    this.erasesWhen = options.erasesWhen;
    this.wakeUps = options.stages.map((s) => ctx.eventTimers(`wake-ups/${s.name}`, { isCheckpointed: false }));
    this.rebuildWakeUps();
    this.blankVars = Object.fromEntries(["user", "now", ...(options.varNames ?? [])].map((name) => [name, undefined]));
    this.eventFields = options.eventFields;
    this.drainsAtEnd = options.drainsAtEnd ?? true;
    const wanted = options.wantedOutputs && new Set(options.wantedOutputs);
    const wants = (kind: string) => wanted === undefined || wanted.has(kind);
    const emit: StageOutput["emit"] = (kind, user, timeMs, body) => {
      if (wants(kind)) this.downstream!.emit(user, timeMs, { kind, body });
    };
    const count = (counter: string, by = 1) => ctx.count(counter, by);
    this.stageOutputs = this.stages.map((logic, stage) => ({
      emit,
      wants,
      wakeAt: (user, timeMs) => {
        if (logic.pendingWake === undefined) throw new Error(`behaviour stage "${options.stages[stage].name}" asks for wake-ups but cannot say which it has pending (pendingWake): they would be lost at a restart`);
        this.wakeUps[stage].register(user, timeMs);
      },
      cancelWake: (user, timeMs) => this.wakeUps[stage].delete(user, timeMs),
      count,
    }));
    this.countWakeUp = () => ctx.count(WAKE_UP_STEPS_COUNTER, 1);
    this.emitErasure = (user, timeMs, body) => {
      emit(ERASURE_OUTPUT, user, timeMs, body);
      ctx.count(ERASURES_COUNTER, 1);
    };
    this.wakingTimers = this.wakeUps.filter((_, i) => this.stages[i].pendingWake !== undefined);
    this.nextDueMs = this.wakingTimers.map(() => Infinity);
    if (options.isGrouped === true) this.rounds = this.roundParticipant(options.stages);
    this.view = behaviourView({
      records: this.records,
      stages: this.stages.map((logic, i) => ({ name: this.stageNames[i], logic })),
      lastEventMs: this.lastEventMs,
      nowMs: () => this.nowMs,
      activate: () => this.activate(),
    });
  }

  /** The operator's part in the group's rounds: its stages that work across users, together; undefined when none does. */
  private roundParticipant(definitions: readonly StageDefinition[]): RoundParticipant | undefined {
    const merger = behaviourMerger(definitions);
    if (merger === undefined) return undefined;
    const grouped = definitions.flatMap((d, i) => (d.rounds === undefined ? [] : [{ name: d.name, logic: this.stages[i] }]));
    for (const { name, logic } of grouped) {
      if (logic.offer === undefined || logic.accept === undefined) throw new Error(`behaviour stage "${name}" works across users but cannot take part in a group's rounds (offer, accept)`);
    }
    return {
      boundariesIn: merger.boundariesIn,
      partial: (afterMs, atEnd) => Object.fromEntries(grouped.map(({ name, logic }) => [name, logic.offer!(afterMs, atEnd)])),
      accept: (roundMs, model, reports) => {
        this.pendingRound = { roundMs, model: model as RoundModel, reports };
      },
    };
  }

  /** Applies the round's model whose boundary the watermark has reached, in stage order. */
  private applyRound(watermarkMs: number): void {
    const round = this.pendingRound;
    if (round === undefined || round.roundMs !== watermarkMs) return;
    this.pendingRound = undefined;
    for (let i = 0; i < this.stages.length; i++) {
      const name = this.stageNames[i];
      if (round.model.fresh.includes(name)) this.stages[i].accept!(round.roundMs, round.model.stages[name], round.reports, this.stageOutputs[i]);
    }
  }

  /** After a restart: every user's pending wake-up of every stage, as its state says (a stage reset or gone has none). */
  private rebuildWakeUps(): void {
    const keeping = this.stages.flatMap((stage, i) => (stage.pendingWake === undefined ? [] : [i]));
    if (keeping.length === 0) return;
    // Each record in focus as it is scanned: records on disk only are not read back into memory.
    this.records.forEachRecord((user) => {
      for (const i of keeping) {
        const timeMs = this.stages[i].pendingWake!(user);
        if (timeMs !== undefined) this.wakeUps[i].register(user, timeMs);
      }
    });
  }

  /** The stages that share something with expressions, whose sharing this operator's job must own while it runs. */
  private readonly activating: StageLogic[];

  private activate(): void {
    for (let i = 0; i < this.activating.length; i++) this.activating[i].activate!();
  }

  onRecord(rec: StreamRecord<EventFields>, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    this.activate();
    if (rec.time > this.nowMs) this.nowMs = rec.time;
    if (this.erasesWhen !== undefined && this.erasesWhen(rec.value) === true) return this.erase(rec.key, rec.time);
    this.step(rec.key, rec.time, rec.value);
  }

  onWatermark(watermarkMs: number, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    this.activate();
    const afterMs = this.watermarkMs;
    this.watermarkMs = watermarkMs;
    if (watermarkMs === END_OF_TIME && !this.drainsAtEnd) {
      // Event time ended at the input's horizon: only what reports at the end acts (the stages
      // know: StageContext.drainsAtEnd).
      this.applyRound(watermarkMs);
      this.reachBoundaries(afterMs, END_OF_TIME);
      return;
    }
    this.applyRound(watermarkMs);
    if (watermarkMs !== END_OF_TIME && watermarkMs > this.nowMs) this.nowMs = watermarkMs;
    for (let i = 0; i < this.stages.length; i++) this.stages[i].onWatermark?.(watermarkMs, this.stageOutputs[i]);
    if (watermarkMs !== END_OF_TIME) this.reachBoundaries(afterMs, watermarkMs);
    this.wakeUpTo(watermarkMs);
    if (watermarkMs === END_OF_TIME) this.reachBoundaries(afterMs, END_OF_TIME);
  }

  /**
   * The stages' boundaries in (afterMs, toMs], in time order (stage order at the same time), each
   * once the wake-ups before it have run; toMs END_OF_TIME: the end, every stage's, which the caller
   * reaches after every wake-up.
   */
  private reachBoundaries(afterMs: number, toMs: number): void {
    if (toMs === END_OF_TIME) {
      for (let i = 0; i < this.stages.length; i++) this.stages[i].boundaries?.reach(END_OF_TIME, this.stageOutputs[i]);
      return;
    }
    const due: Array<[number, number]> = [];
    for (let i = 0; i < this.stages.length; i++) for (const boundaryMs of this.stages[i].boundaries?.in(afterMs, toMs) ?? []) due.push([boundaryMs, i]);
    due.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [boundaryMs, i] of due) {
      this.wakeUpTo(boundaryMs - 1);
      this.stages[i].boundaries!.reach(boundaryMs, this.stageOutputs[i]);
    }
  }

  /**
   * Steps every user with a wake-up due by `watermarkMs`, in (time, user) order, once per time
   * however many stages asked. A wake-up asked during a step that is already due comes in turn.
   */
  private wakeUpTo(watermarkMs: number): void {
    const timers = this.wakingTimers;
    const nextDueMs = this.nextDueMs;
    for (;;) {
      let timeMs = Infinity;
      for (let i = 0; i < timers.length; i++) {
        nextDueMs[i] = timers[i].nextDueMs() ?? Infinity;
        if (nextDueMs[i] < timeMs) timeMs = nextDueMs[i];
      }
      if (timeMs > watermarkMs) return;
      let users: string[] | undefined;
      for (let i = 0; i < timers.length; i++) {
        if (nextDueMs[i] !== timeMs) continue;
        const due = timers[i].takeDueAt(timeMs);
        users = users === undefined ? due : [...users, ...due];
      }
      if (users!.length > 1) users = [...new Set(users)].sort();
      for (const user of users!) {
        this.countWakeUp();
        this.step(user, timeMs, undefined);
      }
    }
  }

  /**
   * Erases `user`: 1. withdraws the stages' pending wake-ups (as their state says); 2. lets each
   * stage drop what it caches outside its state; 3. deletes the user's record, every stage's
   * values at once; 4. records the erasure (the request's time, the stages that held something).
   */
  private erase(user: string, timeMs: number): void {
    const held = new Set<string>();
    let withdrawn = 0;
    // 1.
    for (let i = 0; i < this.stages.length; i++) {
      const wakeMs = this.stages[i].pendingWake?.(user);
      if (wakeMs === undefined) continue;
      this.wakeUps[i].delete(user, wakeMs);
      withdrawn++;
      held.add(this.stageNames[i]);
    }
    // 2. and 3. Slots are named `<stage>/<value>`.
    for (let i = 0; i < this.stages.length; i++) if (this.stages[i].forgetUser?.(user) === true) held.add(this.stageNames[i]);
    for (const slot of this.records.erase(user)) held.add(slot.slice(0, slot.indexOf("/")));
    // 4.
    const stages = this.stageNames.filter((name) => held.has(name));
    const body: ErasureRecord = { output: ERASURE_OUTPUT, user_id: user, time: isoTime(timeMs), time_ms: timeMs, stages, wake_ups_withdrawn: withdrawn };
    this.emitErasure(user, timeMs, body);
  }

  private step(user: string, timeMs: number, event: EventFields | undefined): void {
    // A copy of one blank shape: every step's vars share V8's hidden class. (Reading the event's
    // fields through a prototype instead costs ~10 us a step: V8 makes each event a prototype.)
    const vars: Record<string, unknown> = { ...this.blankVars };
    if (event !== undefined) copyFields(event, vars, this.eventFields);
    vars.user = user;
    vars.now = timeMs;
    const view: UserView = { user, timeMs, event, vars, signals: [] };
    this.records.focus(user);
    if (event !== undefined && !(this.lastEventMs.get(user)! >= timeMs)) this.lastEventMs.set(user, timeMs);
    for (let i = 0; i < this.stages.length; i++) if (this.stages[i].step(view, this.stageOutputs[i]) === false) break;
    this.records.blur();
  }
}

function copyFields(event: EventFields, vars: Record<string, unknown>, fields: readonly string[] | undefined): void {
  if (fields === undefined) {
    for (const name in event) vars[name] = event[name];
    return;
  }
  for (let i = 0; i < fields.length; i++) {
    const value = event[fields[i]];
    if (value !== undefined) vars[fields[i]] = value;
  }
}
