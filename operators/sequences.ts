// Sequences, a small CEP per user: named patterns of steps ("cart, then no purchase within 2 h",
// "pricing page, then a demo request within 7 d"); a completed pattern is an output and a signal.
import { isoTime } from "./outputFormat.ts";
import { EVENT_TYPE_FIELD, PAGE_FIELD } from "./eventFields.ts";
import type { EventFields, StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partsFrom, relayoutAll, type StateShape } from "./stateShape.ts";

export type SequenceStep = {
  /** Names the step in the output's `matched` list. */
  name: string;
  /** Whether the event is this step; a condition with no value (undefined) is no. */
  matches: (vars: Record<string, unknown>) => boolean;
  /** The step must come less than this long after the step before it. Default: no limit. Not on the first step. */
  withinMs?: number;
  /**
   * The pattern completes when no matching event comes within `withinMs`; a matching event
   * cancels it. Last step only, and it needs `withinMs`. Default false.
   */
  isAbsent?: boolean;
};

export type SequenceSpec = {
  /** Names the pattern in outputs and signals. */
  name: string;
  /** At least two. */
  steps: SequenceStep[];
  /** A view variable holding the time (ms) of the user's latest completed match. Default: none. */
  matchedAtVar?: string;
};

export type SequencesOptions = {
  /** Names the stage's state. Default "sequences". */
  name?: string;
  sequences: SequenceSpec[];
};

/** One matched step as kept: which step, when (ms), and what the event was (its EVENT_TYPE_FIELD and PAGE_FIELD). */
export type MatchedStep = { step: string; time: number; event_type: unknown; page: unknown };

/** One matched step as the output shows it: its time as ISO-8601 and epoch ms. */
export type ReportedStep = { step: string; time: string; time_ms: number; event_type: unknown; page: unknown };

/** The output kind of a completed sequence. */
export const SEQUENCE_OUTPUT = "sequence";

/** The "sequence" output. For an absence, `time` is the deadline that passed. */
export type SequenceMatch = { output: typeof SEQUENCE_OUTPUT; user_id: string; time: string; time_ms: number; sequence: string; matched: ReportedStep[] };

/** A partial match: the steps matched so far, and until when the next one may come. */
type Run = {
  matched: MatchedStep[];
  /** Time of the last matched step: the next step must not be older. */
  lastMs: number;
  /** The next step must come before this; null: no limit. */
  deadlineMs: number | null;
};

/** A user's state: plain values, so it checkpoints as is. */
type UserSequences = {
  /** Partial matches by slot; a slot is (sequence, step it waits for). At most one per slot: the newest. */
  runs: Array<Run | null>;
  /** Per sequence, the time of the latest completed match; kept only for sequences with `matchedAtVar`. */
  matchedAtMs: Array<number | null>;
  /** The one wake-up pending, at the next deadline (null: none); moved when the deadline moves. */
  wakeMs: number | null;
};

/**
 * Match semantics, per user and sequence:
 * - Each slot (waiting for step k) holds at most one partial match: an event that matches step 0
 *   starts one, replacing the one waiting for step 1 (a second cart restarts the 2 h from it); a
 *   match that advances to a slot replaces what waits there. The newest wins, so a burst of carts
 *   gives one abandoned cart, timed from the last.
 * - An event is tried against the slots from the last step back to step 0, so it can advance or
 *   complete one match and also start the next (`A then A` matches every consecutive pair).
 * - `withinMs` is half-open: a step at exactly previous + withinMs is too late. An absence fires at
 *   that deadline, before any event at or after it is applied, whether the event or the wake-up
 *   comes first; an event older than a match's last step does not advance or cancel it.
 */
export function sequences(options: SequencesOptions): StageDefinition {
  const name = options.name ?? "sequences";
  const shape = stateShape(options.sequences);
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const users = ctx.userState<UserSequences>("users");
      if (ctx.restoredShape) relayoutAll(users, relayout(ctx.restoredShape, shape));
      return new SequencesLogic(options.sequences, users);
    },
  };
}

/**
 * The state's shape: per sequence (by name), its steps, since a partial match is kept by the step
 * it waits for; the steps' conditions and time limits may change.
 */
function stateShape(specs: SequenceSpec[]): StateShape {
  return {
    parts: specs.map((spec): [string, StateShape] => [spec.name, { layout: { steps: spec.steps.map((step) => (step.isAbsent ? `${step.name} (absent)` : step.name)) } }]),
  };
}

/** A user's matches restored under other sequences, laid out by sequence name; undefined when none is left. */
function relayout(old: StateShape, now: StateShape): (state: UserSequences) => UserSequences | undefined {
  const from = partsFrom(old, now);
  /** Per sequence, its first slot and how many (one per step after the first). */
  const slotsOf = (shape: StateShape) => {
    let first = 0;
    return (shape.parts ?? []).map(([, part]) => {
      const count = (part.layout as { steps: string[] }).steps.length - 1;
      first += count;
      return [first - count, count] as const;
    });
  };
  const oldSlots = slotsOf(old);
  const newSlots = slotsOf(now);
  return (state) => {
    const runs: Array<Run | null> = [];
    from.forEach((j, i) => {
      for (let k = 0; k < newSlots[i][1]; k++) runs.push(j === undefined ? null : state.runs[oldSlots[j][0] + k]);
    });
    const matchedAtMs = from.map((j) => (j === undefined ? null : state.matchedAtMs[j]));
    if (runs.every((run) => run === null) && matchedAtMs.every((t) => t === null)) return undefined;
    return { runs, matchedAtMs, wakeMs: state.wakeMs };
  };
}

type UserStates = {
  get(key: string): UserSequences | undefined;
  set(key: string, value: UserSequences): void;
  delete(key: string): void;
};

class SequencesLogic implements StageLogic {
  /** First slot of each sequence: its slots wait for steps 1..n-1. */
  private readonly firstSlot: number[] = [];
  /** Per slot: its sequence and the step it waits for. */
  private readonly slotSequence: number[] = [];
  private readonly slotStep: number[] = [];
  private readonly slotCount: number;
  private readonly hasVars: boolean;
  /** Set by applyEvent: whether the event changed the state (a flag, not a result object per step). */
  private isEventChange = false;
  /** Per sequence: its partial matches (the steps matched, the one awaited and until when), and its latest match where kept. */
  readonly view: StageView = {
    user: (user) => {
      const state = this.users.get(user);
      if (state === undefined) return undefined;
      const shown: Record<string, { waiting: unknown[]; last_match?: string | null; last_match_ms?: number | null }> = {};
      this.specs.forEach((spec, s) => {
        shown[spec.name] = { waiting: [] };
        if (spec.matchedAtVar !== undefined) {
          const ms = state.matchedAtMs[s] ?? null;
          shown[spec.name].last_match = ms === null ? null : isoTime(ms);
          shown[spec.name].last_match_ms = ms;
        }
      });
      state.runs.forEach((run, slot) => {
        if (run === null) return;
        const spec = this.specs[this.slotSequence[slot]];
        shown[spec.name].waiting.push({
          step: spec.steps[this.slotStep[slot]].name,
          deadline: run.deadlineMs === null ? null : isoTime(run.deadlineMs),
          deadline_ms: run.deadlineMs,
          matched: run.matched.map((m) => ({ step: m.step, time: isoTime(m.time), time_ms: m.time, event_type: m.event_type, page: m.page })),
        });
      });
      return shown;
    },
    wakeCause: () => "a sequence step's time limit runs out",
  };

  constructor(
    private readonly specs: SequenceSpec[],
    private readonly users: UserStates,
  ) {
    for (let s = 0; s < specs.length; s++) {
      this.firstSlot.push(this.slotSequence.length);
      for (let k = 1; k < specs[s].steps.length; k++) {
        this.slotSequence.push(s);
        this.slotStep.push(k);
      }
    }
    this.slotCount = this.slotSequence.length;
    this.hasVars = specs.some((spec) => spec.matchedAtVar !== undefined);
  }

  step(view: UserView, out: StageOutput): void {
    let state = this.users.get(view.user);
    let isChanged = false;
    if (state !== undefined) {
      // Our wake-up has come (timers fire in time order, so any wake-up at or after it is ours too).
      if (view.event === undefined && state.wakeMs !== null && view.timeMs >= state.wakeMs) {
        state.wakeMs = null;
        isChanged = true;
      }
      // 1. What fell due at or before this step, in deadline order.
      if (this.fireDue(view, out, state)) isChanged = true;
    }
    // 2. The event.
    if (view.event !== undefined) {
      state = this.applyEvent(view, out, state);
      if (this.isEventChange) isChanged = true;
    }
    if (state === undefined) {
      if (this.hasVars) this.writeVars(view, undefined);
      return;
    }
    // 3. One wake-up, at the earliest deadline: the one pending moves with it (a purchase withdraws the cart's).
    if (isChanged) {
      const nextMs = this.earliestDeadline(state);
      if (nextMs !== state.wakeMs) {
        if (state.wakeMs !== null) out.cancelWake(view.user, state.wakeMs);
        if (nextMs !== null) out.wakeAt(view.user, nextMs);
        state.wakeMs = nextMs;
      }
      if (this.isEmpty(state)) this.users.delete(view.user);
      else this.users.set(view.user, state);
    }
    // 4. The values later stages read.
    if (this.hasVars) this.writeVars(view, state);
  }

  pendingWake(user: string): number | undefined {
    return this.users.get(user)?.wakeMs ?? undefined;
  }

  /** Fires absences and drops expired matches with a deadline at or before the step; true if any. */
  private fireDue(view: UserView, out: StageOutput, state: UserSequences): boolean {
    const runs = state.runs;
    let isAny = false;
    for (;;) {
      let due = -1;
      let dueMs = Infinity;
      for (let i = 0; i < this.slotCount; i++) {
        const deadlineMs = runs[i]?.deadlineMs;
        // Ties go to the first slot: sequences in config order.
        if (deadlineMs != null && deadlineMs <= view.timeMs && deadlineMs < dueMs) {
          due = i;
          dueMs = deadlineMs;
        }
      }
      if (due < 0) return isAny;
      const run = runs[due]!;
      runs[due] = null;
      isAny = true;
      const spec = this.specs[this.slotSequence[due]];
      if (spec.steps[this.slotStep[due]].isAbsent) this.complete(view, out, state, this.slotSequence[due], run.matched, dueMs);
    }
  }

  /** Tries the event on every slot, last step first; returns the state (created if a match starts). */
  private applyEvent(view: UserView, out: StageOutput, state: UserSequences | undefined): UserSequences | undefined {
    this.isEventChange = false;
    const timeMs = view.timeMs;
    const vars = view.vars;
    for (let s = 0; s < this.specs.length; s++) {
      const steps = this.specs[s].steps;
      const first = this.firstSlot[s];
      if (state !== undefined) {
        for (let k = steps.length - 1; k >= 1; k--) {
          const slot = first + k - 1;
          const run = state.runs[slot];
          if (run === null || timeMs < run.lastMs || !steps[k].matches(vars)) continue;
          state.runs[slot] = null;
          this.isEventChange = true;
          if (steps[k].isAbsent) continue; // the awaited absence did not happen
          run.matched.push(matchedStep(steps[k].name, timeMs, view.event!));
          if (k === steps.length - 1) this.complete(view, out, state, s, run.matched, timeMs);
          else place(state.runs, slot + 1, run, timeMs, steps[k + 1].withinMs);
        }
      }
      if (!steps[0].matches(vars)) continue;
      if (state === undefined) state = this.emptyState();
      const run: Run = { matched: [matchedStep(steps[0].name, timeMs, view.event!)], lastMs: timeMs, deadlineMs: null };
      if (place(state.runs, first, run, timeMs, steps[1].withinMs)) this.isEventChange = true;
    }
    return state;
  }

  private complete(view: UserView, out: StageOutput, state: UserSequences, s: number, matched: MatchedStep[], timeMs: number): void {
    const spec = this.specs[s];
    if (spec.matchedAtVar !== undefined) state.matchedAtMs[s] = timeMs;
    const reported = matched.map((m): ReportedStep => ({ step: m.step, time: isoTime(m.time), time_ms: m.time, event_type: m.event_type, page: m.page }));
    const body: SequenceMatch = { output: SEQUENCE_OUTPUT, user_id: view.user, time: isoTime(timeMs), time_ms: timeMs, sequence: spec.name, matched: reported };
    out.emit(SEQUENCE_OUTPUT, view.user, timeMs, body);
    view.signals.push({ kind: "sequence", name: spec.name, timeMs, detail: { matched } });
  }

  private earliestDeadline(state: UserSequences): number | null {
    let earliest: number | null = null;
    for (const run of state.runs) {
      if (run !== null && run.deadlineMs !== null && (earliest === null || run.deadlineMs < earliest)) earliest = run.deadlineMs;
    }
    return earliest;
  }

  /** Nothing worth keeping: no partial match and no completed-match time a variable reads. */
  private isEmpty(state: UserSequences): boolean {
    for (const run of state.runs) if (run !== null) return false;
    for (const t of state.matchedAtMs) if (t !== null) return false;
    return true;
  }

  private emptyState(): UserSequences {
    return { runs: new Array<Run | null>(this.slotCount).fill(null), matchedAtMs: this.specs.map(() => null), wakeMs: null };
  }

  private writeVars(view: UserView, state: UserSequences | undefined): void {
    for (let s = 0; s < this.specs.length; s++) {
      const name = this.specs[s].matchedAtVar;
      if (name !== undefined) view.vars[name] = state?.matchedAtMs[s] ?? undefined;
    }
  }
}

/**
 * Puts `run` (its last step at `timeMs`) in `slot` unless a newer match waits there; its deadline
 * is `withinMs` of the step it now waits for. True if placed.
 */
function place(runs: Array<Run | null>, slot: number, run: Run, timeMs: number, withinMs: number | undefined): boolean {
  const waiting = runs[slot];
  if (waiting !== null && waiting.lastMs > timeMs) return false;
  run.lastMs = timeMs;
  run.deadlineMs = withinMs === undefined ? null : timeMs + withinMs;
  runs[slot] = run;
  return true;
}

function matchedStep(step: string, timeMs: number, event: EventFields): MatchedStep {
  return { step, time: timeMs, event_type: event[EVENT_TYPE_FIELD] ?? null, page: event[PAGE_FIELD] ?? null };
}
