// The behaviour operator: runs a pipeline's stages (dedup, aggregates, features, scores, phases,
// segments, triggers, ...) in order for every step of a user, an event or a wake-up, and sends
// what they produce downstream as `{ kind, body }` records routed to sinks by kind.
import type { StreamRecord } from "../engine/elements.ts";
import type { OperatorContext, OperatorDefinition, OperatorLogic, Output } from "../engine/operator.ts";
import type { TimerService } from "../engine/timers.ts";
import type { EventFields, StageDefinition, StageLogic, StageOutput, UserView } from "./stage.ts";

/** One output of a stage: its kind ("features", "trigger", ...) and the object the sinks write. */
export type BehaviourOutput = { kind: string; body: object };

export type BehaviourOptions = {
  /** Names the operator's state. */
  name: string;
  /** Run in this order; names must be unique. */
  stages: StageDefinition[];
};

export function behaviour(options: BehaviourOptions): OperatorDefinition<EventFields, BehaviourOutput> {
  return { name: `behaviour/${options.name}`, build: (ctx) => new BehaviourLogic(options, ctx) };
}

/** A context whose state names are prefixed with the stage's, so stages cannot collide. */
function stageContext(ctx: OperatorContext, stage: string): OperatorContext {
  return {
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
  /** Where stage outputs go during the current call; set on every entry from the engine. */
  private downstream: Output<BehaviourOutput> | undefined;
  private readonly stageOutput: StageOutput;

  constructor(options: BehaviourOptions, ctx: OperatorContext) {
    const names = new Set<string>();
    for (const s of options.stages) {
      if (names.has(s.name)) throw new Error(`two behaviour stages are named "${s.name}"`);
      names.add(s.name);
    }
    this.stages = options.stages.map((s) => s.build(stageContext(ctx, s.name)));
    this.wakeUps = ctx.eventTimers("wake-ups");
    this.stageOutput = {
      emit: (kind, user, timeMs, body) => this.downstream!.emit(user, timeMs, { kind, body }),
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
    // The event's fields are read through the prototype: no copy per event. Stage names are
    // checked at load time not to shadow event fields.
    const vars: Record<string, unknown> = Object.create(event ?? null);
    vars.user = user;
    vars.now = timeMs;
    const view: UserView = { user, timeMs, event, vars, signals: [] };
    for (const stage of this.stages) if (stage.step(view, this.stageOutput) === false) return;
  }
}
