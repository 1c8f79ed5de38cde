// Journey phases: a per-user phase machine (awareness, consideration, conversion, retention,
// re-engagement) moved by events and by event-time timers, with timed windows that only signal.
import { isoTime } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";

/** What a timer or window counts from. */
export type PhaseClock = "last_event" | "entered";

export type PhaseTransition = {
  to: string;
  /** Applies only in these phases. Default: every phase. */
  from?: readonly string[];
  /** Whether the event moves the user; a condition with no value (undefined) is no. */
  when: (vars: Record<string, unknown>) => boolean;
};

export type PhaseTimer = {
  to: string;
  /** Applies only in these phases. Default: every phase but `to`. Never in `to` itself. */
  from?: readonly string[];
  /** Moves the user this long after `since`, unless an event moved them first. */
  afterMs: number;
  /** The user's last event, or their entry into the phase. */
  since: PhaseClock;
};

/** A moment in a phase to act on ("retarget 48 h after the last contact"): a signal, no phase change. */
export type PhaseWindow = {
  /** Names the signal; not a phase name. */
  name: string;
  /** The phases it applies in. Default: every phase. */
  in?: readonly string[];
  afterMs: number;
  since: PhaseClock;
};

export type PhasesOptions = {
  /** Names the stage's state. Default "phases". */
  name?: string;
  /** Every phase a user can be in. */
  phases: readonly string[];
  /** The phase a user's first event puts them in, before the transitions apply to it. */
  initial: string;
  /** Tried in order on every event; the first that applies and holds wins. */
  transitions: readonly PhaseTransition[];
  /** Default none. Must not form a cycle (checked by the reader): a silent user would loop forever. */
  timers?: readonly PhaseTimer[];
  /** Default none. */
  windows?: readonly PhaseWindow[];
  /** The view variable (string) holding the phase. Default DEFAULT_PHASE_VAR. */
  phaseVar?: string;
  /** The view variable (double, ms) holding when the phase was entered. Default DEFAULT_ENTERED_VAR. */
  enteredVar?: string;
};

export const DEFAULT_PHASE_VAR = "phase";
export const DEFAULT_ENTERED_VAR = "phase_entered_at";

/** The output kinds of a phase change, and of a phase window come due. */
export const PHASE_OUTPUT = "phase";
export const PHASE_WINDOW_OUTPUT = "phase_window";

/** The "phase" output; `previous` is null for a user's first phase. */
export type PhaseChange = { output: typeof PHASE_OUTPUT; user_id: string; time: string; time_ms: number; phase: string; previous: string | null };

/** The "phase_window" output: a window of `phase` came due. */
export type PhaseWindowDue = { output: typeof PHASE_WINDOW_OUTPUT; user_id: string; time: string; time_ms: number; phase: string; window: string };

/** A user's state: plain values, so it checkpoints as is. */
type UserPhase = {
  phase: string;
  enteredMs: number;
  /** The latest event time seen. */
  lastEventMs: number;
  /** Per window, the clock value it last fired for: a window fires once per last event / entry. */
  windowFiredForMs: Array<number | null>;
  /** When the next timer or window of the phase is due (null: none): most steps only compare with it. */
  dueMs: number | null;
  /** The one wake-up pending, at the next deadline (null: none); moved when the deadline moves. */
  wakeMs: number | null;
};

/**
 * Semantics:
 * - A user's first event puts them in `initial`, then the transitions apply to it; one "phase"
 *   output (previous null) says where they ended up.
 * - On an event, the first transition that applies in the current phase and holds wins. One to the
 *   current phase re-enters it: the entry time restarts (so do timers since entry), no output.
 * - Timers and windows fire at `since + afterMs`. A timer since the last event whose time passed
 *   before the phase was entered fires on entry; such a window does not fire (its moment to act has
 *   gone), and a window fires once per value of its clock. What fell due at or before a
 *   step fires first, earliest first (at equal times windows, then timers, in config order), so an
 *   event after a deadline sees the timer fire at its time, whether it or the wake-up comes first.
 * - A transition happens at its event's time, or at the entry of the current phase if the event
 *   is older (disorder): phase entries never go back in time.
 */
export function phases(options: PhasesOptions): StageDefinition {
  const name = options.name ?? "phases";
  // A user is in one of the phases, by name: the set of phases is the layout. Per window (by name),
  // the clock it last fired for. Transitions, timers and delays may change: a deadline already
  // pending is then kept until the user's next step.
  const shape: StateShape = {
    layout: { phases: [...options.phases].sort() },
    parts: (options.windows ?? []).map((w): [string, StateShape] => [w.name, {}]),
  };
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const users = ctx.userState<UserPhase>("users");
      const from = partsFrom(ctx.restoredShape, shape);
      if (ctx.restoredShape) relayoutAll(users, (state) => ({ ...state, windowFiredForMs: pickParts(state.windowFiredForMs, from, () => null) }));
      return new PhasesLogic(options, users);
    },
  };
}

type UserStates = { get(key: string): UserPhase | undefined; set(key: string, value: UserPhase): void };

class PhasesLogic implements StageLogic {
  private readonly initial: string;
  private readonly phaseIndex = new Map<string, number>();
  /** Per phase: the transitions, timers and windows that apply there, in config order. */
  private readonly transitionsIn: PhaseTransition[][];
  private readonly timersIn: PhaseTimer[][];
  private readonly windowsIn: number[][];
  private readonly windows: readonly PhaseWindow[];
  private readonly phaseVar: string;
  private readonly enteredVar: string;
  /** The user's phase and since when (the latest entry, re-entries included). */
  readonly view: StageView = {
    user: (user) => {
      const state = this.users.get(user);
      return state === undefined ? undefined : { phase: state.phase, since: isoTime(state.enteredMs), since_ms: state.enteredMs };
    },
    wakeCause: (user) => {
      const state = this.users.get(user);
      const due = state === undefined ? undefined : this.nextDue(state);
      if (due === undefined || due.timeMs === Infinity) return "a phase deadline that has moved";
      return due.window >= 0 ? `window "${this.windows[due.window].name}" of phase "${state!.phase}" comes due` : `timer to phase "${due.timer!.to}"`;
    },
  };

  constructor(
    options: PhasesOptions,
    private readonly users: UserStates,
  ) {
    options.phases.forEach((phase, i) => this.phaseIndex.set(phase, i));
    const applies = (phase: string, from: readonly string[] | undefined) => from === undefined || from.includes(phase);
    const timers = options.timers ?? [];
    this.windows = options.windows ?? [];
    this.transitionsIn = options.phases.map((p) => options.transitions.filter((t) => applies(p, t.from)));
    this.timersIn = options.phases.map((p) => timers.filter((t) => t.to !== p && applies(p, t.from)));
    this.windowsIn = options.phases.map((p) => this.windows.flatMap((w, i) => (applies(p, w.in) ? [i] : [])));
    this.phaseVar = options.phaseVar ?? DEFAULT_PHASE_VAR;
    this.enteredVar = options.enteredVar ?? DEFAULT_ENTERED_VAR;
    this.initial = options.initial;
  }

  step(view: UserView, out: StageOutput): void {
    let state = this.users.get(view.user);
    if (state === undefined) {
      if (view.event === undefined) return; // not a user of ours yet: no values
      state = { phase: this.initial, enteredMs: view.timeMs, lastEventMs: view.timeMs, windowFiredForMs: this.windows.map(() => null), dueMs: null, wakeMs: null };
      this.writeVars(view, state);
      this.applyEvent(view, state);
      this.change(view, out, null, state.phase, state.enteredMs);
    } else if (view.event === undefined) {
      // Ours has come if it is at or after the one we asked for: wake-ups fire in time order.
      const isOurs = state.wakeMs !== null && view.timeMs >= state.wakeMs;
      const isDue = state.dueMs !== null && state.dueMs <= view.timeMs;
      if (!isOurs && !isDue) {
        this.writeVars(view, state);
        return;
      }
      if (isOurs) state.wakeMs = null;
      // 1. What fell due at or before this step.
      if (isDue) this.fireDue(view, out, state);
    } else {
      // 1. What fell due at or before this step.
      if (state.dueMs !== null && state.dueMs <= view.timeMs) this.fireDue(view, out, state);
      // 2. The event.
      this.writeVars(view, state);
      const previous = state.phase;
      if (view.timeMs > state.lastEventMs) state.lastEventMs = view.timeMs;
      if (this.applyEvent(view, state) && state.phase !== previous) this.change(view, out, previous, state.phase, state.enteredMs);
    }
    // 3. The next deadline, and one wake-up at it: the one pending moves with it (an event puts inactivity off).
    const dueMs = this.nextDue(state).timeMs;
    state.dueMs = dueMs === Infinity ? null : dueMs;
    if (state.dueMs !== state.wakeMs) {
      if (state.wakeMs !== null) out.cancelWake(view.user, state.wakeMs);
      if (state.dueMs !== null) out.wakeAt(view.user, state.dueMs);
      state.wakeMs = state.dueMs;
    }
    this.users.set(view.user, state);
    // 4. The values later stages read.
    this.writeVars(view, state);
  }

  pendingWake(user: string): number | undefined {
    return this.users.get(user)?.wakeMs ?? undefined;
  }

  /** Applies the first transition that holds; true if one did (the phase may be the same: re-entry). */
  private applyEvent(view: UserView, state: UserPhase): boolean {
    const transitions = this.transitionsIn[this.phaseIndex.get(state.phase)!];
    for (let i = 0; i < transitions.length; i++) {
      if (!transitions[i].when(view.vars)) continue;
      state.phase = transitions[i].to;
      state.enteredMs = Math.max(view.timeMs, state.enteredMs);
      return true;
    }
    return false;
  }

  /** Fires the windows and timers due at or before the step, earliest first. */
  private fireDue(view: UserView, out: StageOutput, state: UserPhase): void {
    for (let due = this.nextDue(state); due.timeMs <= view.timeMs; due = this.nextDue(state)) {
      if (due.window >= 0) {
        const window = this.windows[due.window];
        state.windowFiredForMs[due.window] = clockMs(state, window.since);
        const body: PhaseWindowDue = { output: PHASE_WINDOW_OUTPUT, user_id: view.user, time: isoTime(due.timeMs), time_ms: due.timeMs, phase: state.phase, window: window.name };
        out.emit(PHASE_WINDOW_OUTPUT, view.user, due.timeMs, body);
        view.signals.push({ kind: "phase", name: window.name, timeMs: due.timeMs, detail: { phase: state.phase, window: window.name } });
      } else {
        const previous = state.phase;
        state.phase = due.timer!.to;
        state.enteredMs = due.timeMs;
        this.change(view, out, previous, state.phase, due.timeMs);
      }
    }
  }

  /** Reused by nextDue: one result object, not one per step. */
  private readonly due: { timeMs: number; window: number; timer: PhaseTimer | undefined } = { timeMs: Infinity, window: -1, timer: undefined };

  /** The earliest window (not yet fired for its clock) or timer of the current phase. */
  private nextDue(state: UserPhase): { timeMs: number; window: number; timer: PhaseTimer | undefined } {
    const due = this.due;
    due.timeMs = Infinity;
    due.window = -1;
    due.timer = undefined;
    const p = this.phaseIndex.get(state.phase)!;
    for (const w of this.windowsIn[p]) {
      const window = this.windows[w];
      const fromMs = clockMs(state, window.since);
      const atMs = fromMs + window.afterMs;
      // Fired already for this clock, or its moment passed before this stay began: too late to act.
      if (state.windowFiredForMs[w] === fromMs || atMs < state.enteredMs) continue;
      if (atMs < due.timeMs) {
        due.timeMs = atMs;
        due.window = w;
      }
    }
    for (const timer of this.timersIn[p]) {
      const atMs = Math.max(clockMs(state, timer.since) + timer.afterMs, state.enteredMs);
      if (atMs < due.timeMs) {
        due.timeMs = atMs;
        due.window = -1;
        due.timer = timer;
      }
    }
    return due;
  }

  private change(view: UserView, out: StageOutput, previous: string | null, phase: string, timeMs: number): void {
    const body: PhaseChange = { output: PHASE_OUTPUT, user_id: view.user, time: isoTime(timeMs), time_ms: timeMs, phase, previous };
    out.emit(PHASE_OUTPUT, view.user, timeMs, body);
    view.signals.push({ kind: "phase", name: phase, timeMs, detail: { previous } });
  }

  private writeVars(view: UserView, state: UserPhase): void {
    view.vars[this.phaseVar] = state.phase;
    view.vars[this.enteredVar] = state.enteredMs;
  }
}

function clockMs(state: UserPhase, since: PhaseClock): number {
  return since === "entered" ? state.enteredMs : state.lastEventMs;
}
