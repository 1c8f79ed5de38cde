// The contract of a behaviour stage: one per-user capability (dedup, rolling aggregates, scores,
// phases, segments, triggers, ...) that the behaviour operator runs in order for every step of a user.
import type { SlotState } from "../engine/keyedSlots.ts";
import type { OperatorContext } from "../engine/operator.ts";
import type { StateShape } from "./stateShape.ts";

/** An event as decoded from the source: field name to value. */
export type EventFields = Readonly<Record<string, unknown>>;

/**
 * Something a stage noticed in this step that later stages (triggers) may react to:
 * `{ kind: "segment_enter", name: "vip" }`, `{ kind: "sequence", name: "cart_abandoned" }`.
 */
export type Signal = {
  kind: "segment_enter" | "segment_exit" | "sequence" | "alert" | "phase" | "conversion" | "exposure";
  /** The segment, sequence, score or phase it is about. */
  name: string;
  /** Event time the signal belongs to (the matching event, or the timer that fired it). */
  timeMs: number;
  /** What drove it: matched events, score summary, previous phase... */
  detail?: Record<string, unknown>;
};

/**
 * One step of one user: an event arrived (`event` set), or a timer woke the user (`event`
 * undefined). Stages run in their configured order on the same view.
 */
export type UserView = {
  readonly user: string;
  /** Event time of this step: the event's time, or the time of the timer that fired. */
  readonly timeMs: number;
  readonly event: EventFields | undefined;
  /**
   * The user's values as CEL variables: the event's fields (copied), `user`,
   * `now`, and whatever earlier stages wrote under their configured names.
   */
  readonly vars: Record<string, unknown>;
  /** Signals raised by earlier stages in this step. */
  readonly signals: Signal[];
};

/** What a stage produces besides the values it writes into the view. */
export type StageOutput = {
  /** An output record of `kind` ("features", "trigger", ...), for the sinks that take that kind. */
  emit(kind: string, user: string, timeMs: number, value: object): void;
  /** Whether some sink takes outputs of `kind`: a stage may skip building what nobody reads. */
  wants(kind: string): boolean;
  /**
   * Wakes `user` when the watermark reaches `timeMs`: every stage then runs a step with no event
   * at that time (once, however many stages asked for that time). A stage keeps the one it has
   * pending in its state (see pendingWake), from which wake-ups are rebuilt at a restart; it must
   * treat one it did not ask for as harmless.
   */
  wakeAt(user: string, timeMs: number): void;
  /**
   * Withdraws this stage's wake-up of `user` at `timeMs` (its deadline moved or went away), so the
   * user is not stepped for nothing; no-op if it has fired or was never asked for. Other stages'
   * wake-ups at the same time stand.
   */
  cancelWake(user: string, timeMs: number): void;
  /** Adds to a named counter reported in the job summary (e.g. "duplicates"). */
  count(counter: string, by?: number): void;
};

export type StageLogic = {
  /**
   * Runs one step for the user. First do what fell due at or before `view.timeMs` (deadlines kept
   * in the stage's state), then apply the event if there is one, then write the stage's values
   * into `view.vars`. Return false to drop the event: later stages do not see it (dedup).
   */
  step(view: UserView, out: StageOutput): boolean | void;
  /** Event time has reached `watermarkMs`: work across users (cluster re-runs). Runs before wake-ups. */
  onWatermark?(watermarkMs: number, out: StageOutput): void;
  /**
   * Work across users at boundaries of event time that must see what fell due before them (a report
   * counting the windows closed by then): `reach` runs at each boundary in order, once every wake-up
   * before it has run, and at the end (END_OF_TIME) once every wake-up has.
   */
  readonly boundaries?: { in(afterMs: number, toMs: number): number[]; reach(boundaryMs: number, out: StageOutput): void };
  /**
   * The wake-up this stage has pending for `user`, as its state records it (undefined: none).
   * Required of a stage that asks for wake-ups: they are not checkpointed apart, but rebuilt from
   * this when the stage is built from a checkpoint.
   */
  pendingWake?(user: string): number | undefined;
  /**
   * The user is being erased: drop what the stage keeps of the user outside its user state (an
   * in-memory index). The user state itself is deleted by the operator. True if something was dropped.
   */
  forgetUser?(user: string): boolean;
  /** What the stage shows of its users to queries. Optional. */
  readonly view?: StageView;
  /**
   * Called before the operator works or answers a query: what the stage shares with other stages'
   * expressions (quantile()) is made this instance's. Several jobs of one pipeline (a cluster
   * worker's partitions) share the compiled expressions in one process, and take turns on its thread.
   */
  activate?(): void;
  /**
   * In a group's rounds (see StageDefinition.rounds), this partition's partial for the rounds after
   * `afterMs` (atEnd: for all of them to the group's end), as its state stands now. Changes nothing.
   */
  offer?(afterMs: number, atEnd: boolean): unknown;
  /**
   * The group's model of round `roundMs` (END_OF_TIME: the end), as the watermark reaches it:
   * `reports` says this partition writes what belongs to the whole group (one partition does).
   */
  accept?(roundMs: number, model: unknown, reports: boolean, out: StageOutput): void;
};

/**
 * How a stage that works across users (k-means, quantiles) does so in a group of partitions
 * (engine/rounds.ts): at its round boundaries each partition offers a partial, and `merge` makes one
 * model for the group from all of them, in partition order. Known from config alone: the group's
 * leader merges with it. Pure: the same partials make the same model.
 */
export type StageRounds = {
  boundariesIn(afterMs: number, toMs: number): number[];
  /** `partials[p]` undefined: partition p had not started by then. `previous`: this stage's model of its round before. */
  merge(roundMs: number, previous: unknown, partials: ReadonlyArray<unknown>): unknown;
};

/**
 * What a stage shows of its state to queries (see OperatorView): read between batches, as JSON with
 * the names and formats of the stage's outputs. Reading changes nothing.
 */
export type StageView = {
  /**
   * The user's values now, evaluated at `nowMs` (the pipeline's current event time) where they
   * depend on time (decayed scores, rolling lookbacks); undefined when the stage holds none.
   */
  user(user: string, nowMs: number): Record<string, unknown> | undefined;
  /** Why the stage's pending wake-up of `user` was asked for ("the session closes"). */
  wakeCause?(user: string): string;
  /** Views over every user (segment counts, ...), by name: see OperatorView.views. */
  views?: Readonly<Record<string, (params: Readonly<Record<string, string>>) => unknown>>;
};

/** What a stage is built with: the operator's context, and state kept in each user's one record. */
export type StageContext = OperatorContext & {
  /**
   * A value per user, kept in the user's record with the other stages' values: a step looks the
   * record up once for every stage, and whatever a step changes reaches the next checkpoint (no
   * need to mark it). Use `valueState` for values not keyed by user (a model, cohorts).
   */
  userState<V>(name: string): SlotState<V>;
  /**
   * The shape the restored state was written under (see StageDefinition.stateShape); undefined when
   * it is this stage's own, or the stage starts empty (new, or reset). Parts added, removed or
   * reordered since (the restart has refused any other change) are laid out anew as the stage builds.
   */
  restoredShape?: StateShape;
  /**
   * The job is one partition of a group: a stage with `rounds` works across the group's users
   * (offer and accept) instead of its partition's alone. Default false.
   */
  isGrouped?: boolean;
  /**
   * Whether the end of a bounded input wakes every user and runs what is due at the end (see
   * BehaviourOptions.drainsAtEnd); false: event time ended at the input's horizon, and only what
   * reports at the end does so. Default true.
   */
  drainsAtEnd?: boolean;
};

/** What config describes; `build` makes the running stage, its state restored from the context. */
export type StageDefinition = {
  /** Unique in the pipeline; names the stage's state. */
  readonly name: string;
  /**
   * What the layout and meaning of the stage's state depend on, and nothing else: stored with every
   * checkpoint and compared at a restart, where an edit that leaves it alone keeps the state and one
   * that changes it is refused (see StateShape). Messages, templates, thresholds and conditions
   * change only outputs: no part of it. Default {}: nothing configurable shapes the state.
   */
  readonly stateShape?: StateShape;
  /** How it works across a group's partitions, if it works across users. */
  readonly rounds?: StageRounds;
  build(ctx: StageContext): StageLogic;
};
