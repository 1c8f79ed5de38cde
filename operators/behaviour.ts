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
  private readonly stageOutput: StageOutput;
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
    this.stageOutput = {
      emit: (kind, user, timeMs, body) => {
        if (wants(kind)) this.downstream!.emit(user, timeMs, { kind, body });
      },
      wants,
      wakeAt: (user, timeMs) => this.wakeUps.register(user, timeMs),
      count: (counter, by = 1) => ctx.count(counter, by),
    };
  }

  onRecord(rec: StreamRecord<EventFields>, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    this.step(rec.key, rec.time, rec.value);
  }

  onWatermark(watermarkMs: number, out: Output<BehaviourOutput>): void {
    this.downstream = out;
    for (const stage of this.stages) stage.onWatermark?.(watermarkMs, this.stageOutput);
    this.wakeUps.advanceTo(watermarkMs, (user, timeMs) => this.step(user, timeMs, undefined));
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
    for (const stage of this.stages) if (stage.step(view, this.stageOutput) === false) break;
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
