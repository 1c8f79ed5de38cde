// The behaviour operator: runs a pipeline's stages (dedup, aggregates, features, scores, phases,
// segments, triggers, ...) in order for every step of a user, an event or a wake-up, and sends
// what they produce downstream as `{ kind, body }` records routed to sinks by kind.
import type { StreamRecord } from "../engine/elements.ts";
import type { OperatorContext, OperatorDefinition, OperatorLogic, Output } from "../engine/operator.ts";
import { KeyedSlots } from "../engine/keyedSlots.ts";
import type { TimerService } from "../engine/timers.ts";
import type { EventFields, StageContext, StageDefinition, StageLogic, StageOutput, UserView } from "./stage.ts";

/** One output of a stage: its kind ("features", "trigger", ...) and the object the sinks write. */
export type BehaviourOutput = { kind: string; body: object };

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
};

export function behaviour(options: BehaviourOptions): OperatorDefinition<EventFields, BehaviourOutput> {
  return { name: `behaviour/${options.name}`, build: (ctx) => new BehaviourLogic(options, ctx) };
}

/** A context whose state names are prefixed with the stage's, so stages cannot collide. */
function stageContext(ctx: OperatorContext, records: KeyedSlots, stage: string): StageContext {
  return {
    userState: (name) => records.slot(`${stage}/${name}`),
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
  private readonly wakeUps: TimerService;
  /** Every stage's per-user values, one record per user. */
  private readonly records: KeyedSlots;
  /** Where stage outputs go during the current call; set on every entry from the engine. */
  private downstream: Output<BehaviourOutput> | undefined;
  /** Per stage: its wake-ups are its own (a stage withdraws only what it asked for). */
  private readonly stageOutputs: StageOutput[];
  private readonly blankVars: Record<string, unknown>;
  private readonly eventFields: readonly string[] | undefined;

  constructor(options: BehaviourOptions, ctx: OperatorContext) {
    const names = new Set<string>();
    for (const s of options.stages) {
      if (names.has(s.name)) throw new Error(`two behaviour stages are named "${s.name}"`);
      names.add(s.name);
    }
    this.records = new KeyedSlots(ctx.valueState<unknown[]>("users"));
    this.stages = options.stages.map((s) => s.build(stageContext(ctx, this.records, s.name)));
    this.wakeUps = ctx.eventTimers("wake-ups");
    this.blankVars = Object.fromEntries(["user", "now", ...(options.varNames ?? [])].map((name) => [name, undefined]));
    this.eventFields = options.eventFields;
    const wanted = options.wantedOutputs && new Set(options.wantedOutputs);
    const wants = (kind: string) => wanted === undefined || wanted.has(kind);
    const emit: StageOutput["emit"] = (kind, user, timeMs, body) => {
      if (wants(kind)) this.downstream!.emit(user, timeMs, { kind, body });
    };
    const count = (counter: string, by = 1) => ctx.count(counter, by);
    this.stageOutputs = this.stages.map((_, stage) => ({
      emit,
      wants,
      wakeAt: (user, timeMs) => this.wakeUps.register(wakeUpKey(user, stage), timeMs),
      cancelWake: (user, timeMs) => this.wakeUps.delete(wakeUpKey(user, stage), timeMs),
      count,
    }));
  }

  onRecord(rec: StreamRecord<EventFields>, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    this.step(rec.key, rec.time, rec.value);
  }

  onWatermark(watermarkMs: number, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    for (let i = 0; i < this.stages.length; i++) this.stages[i].onWatermark?.(watermarkMs, this.stageOutputs[i]);
    this.wakeUps.advanceTo(watermarkMs, (user, timeMs) => this.step(user, timeMs, undefined), userOfWakeUp);
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
    for (let i = 0; i < this.stages.length; i++) if (this.stages[i].step(view, this.stageOutputs[i]) === false) break;
    this.records.blur();
  }
}

/**
 * A wake-up's timer key: the user, then the stage that asked. Keys of one user sort together, so
 * stages due at one time wake the user once. (A user id holding NUL and digits could sort between
 * another's keys and be woken twice at a time: harmless, as any wake-up a stage did not ask for.)
 */
function wakeUpKey(user: string, stage: number): string {
  return `${user}\u0000${stage}`;
}

function userOfWakeUp(key: string): string {
  return key.slice(0, key.lastIndexOf("\u0000"));
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
