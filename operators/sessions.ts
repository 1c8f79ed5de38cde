// User sessions: a user's events with less than `gapMs` between consecutive ones form a session;
// the stage writes the current session's figures into the view and emits each session when the
// watermark passes its last event + gap.
import { isoTime, withoutNoise } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";

export type SessionsOptions = {
  /** Names the stage's state. Default "sessions". */
  name?: string;
  /** Inactivity that ends a session: events this far apart or more are in different sessions. Default DEFAULT_GAP_MS. */
  gapMs?: number;
  /** Emit a "session" output when a session closes. Default true. */
  emitSessions?: boolean;
};

/** The inactivity that ends a session when nothing is said: 30 minutes, the web analytics convention. */
export const DEFAULT_GAP_MS = 1_800_000;

/** The values the stage writes into the view, for the expressions of later stages. */
export const SESSION_VARS = {
  /** bool: this event started a new session (false on wake-ups); an aggregate counting it counts visits. */
  isNew: "session_is_new",
  /** double: events in the current session so far, this one included. */
  pages: "session_pages",
  /** double: seconds from the session's first event to its last so far. */
  elapsedSec: "session_elapsed_sec",
  /** double: mean seconds between consecutive events of the session (0 with one event). */
  avgGapSec: "session_avg_gap_sec",
  /** double: longest seconds between consecutive events of the session (0 with one event). */
  maxGapSec: "session_max_gap_sec",
} as const;

/** Counter of events too late to join a session: theirs would have closed already. */
export const LATE_SESSION_EVENTS_COUNTER = "late_session_events";

/** The output kind of a closed session. */
export const SESSION_OUTPUT = "session";

/** The "session" output, emitted at the close (last event + gap). */
export type SessionRecord = {
  output: typeof SESSION_OUTPUT;
  user_id: string;
  /** The session's end: its last event's time. */
  time: string;
  time_ms: number;
  /** Its first event's time. */
  start: string;
  start_ms: number;
  /** Its last event's time, as `time`. */
  end: string;
  end_ms: number;
  pages: number;
  duration_sec: number;
  avg_gap_sec: number;
  max_gap_sec: number;
};

export function sessions(options: SessionsOptions = {}): StageDefinition {
  const name = options.name ?? "sessions";
  const gapMs = options.gapMs ?? DEFAULT_GAP_MS;
  // Open sessions are at least a gap apart, and each waits for its close at its last event + gap.
  return { name, stateShape: { layout: { gapMs } }, build: (ctx) => new SessionsLogic(gapMs, options.emitSessions ?? true, ctx.userState<number[]>("open")) };
}

type OpenState = {
  get(key: string): number[] | undefined;
  getForUpdate(key: string): number[] | undefined;
  set(key: string, value: number[]): void;
  delete(key: string): void;
};

/**
 * Per user, one flat array: the pending wake-up then the open sessions, ordered by start and at
 * least a gap apart: `[armedMs, start, last, pages, maxGapMs, start, last, ...]`. Usually one
 * session; a second opens when an event comes a gap after the last before the watermark has closed
 * the first. `armedMs` (-1: none) is the one wake-up pending, at the first session's close: an event
 * that moves the close moves it (withdrawn and asked again), so a session costs one wake-up.
 */
const ARMED = 0;
const HEAD = 1;
const START = 0;
const LAST = 1;
const PAGES = 2;
const MAX_GAP = 3;
const STRIDE = 4;
const NONE = -1;

class SessionsLogic implements StageLogic {
  /**
   * The watermark seen last, to tell an event whose session would already have closed. After a
   * restart the engine replays the last watermark first, which sets it again.
   */
  private watermarkMs = -Infinity;
  /** The user's open sessions (as the "session" output will show them) and when each closes. */
  readonly view: StageView = {
    user: (user) => {
      const state = this.open.get(user);
      if (state === undefined) return undefined;
      const open: Array<Record<string, unknown>> = [];
      for (let at = HEAD; at < state.length; at += STRIDE) {
        const startMs = state[at + START];
        const endMs = state[at + LAST];
        const closesMs = endMs + this.gapMs;
        open.push({ start: isoTime(startMs), start_ms: startMs, end: isoTime(endMs), end_ms: endMs, pages: state[at + PAGES], closes: isoTime(closesMs), closes_ms: closesMs });
      }
      return { open };
    },
    wakeCause: () => "the session closes: a gap without events",
  };

  constructor(
    private readonly gapMs: number,
    private readonly emitSessions: boolean,
    private readonly open: OpenState,
  ) {}

  onWatermark(watermarkMs: number): void {
    this.watermarkMs = watermarkMs;
  }

  step(view: UserView, out: StageOutput): void {
    if (view.event === undefined) this.wakeUp(view, out);
    else this.addEvent(view, out);
  }

  pendingWake(user: string): number | undefined {
    const state = this.open.get(user);
    return state === undefined || state[ARMED] === NONE ? undefined : state[ARMED];
  }

  /**
   * An event joins the session it comes within a gap of (extending it, or merging the two it
   * bridges), or opens a new one; one whose session would have closed by the watermark joins none.
   */
  private addEvent(view: UserView, out: StageOutput): void {
    const timeMs = view.timeMs;
    let state = this.open.getForUpdate(view.user);
    if (state === undefined) {
      if (this.isTooLate(timeMs, out)) return writeNone(view.vars);
      state = [NONE, timeMs, timeMs, 1, 0];
      this.open.set(view.user, state);
      this.arm(view.user, state, out);
      return writeSession(view.vars, state, HEAD, true);
    }
    const at = this.sessionBefore(state, timeMs);
    const meetsEarlier = at >= HEAD && timeMs < state[at + LAST] + this.gapMs;
    const later = at + STRIDE;
    const meetsLater = later < state.length && timeMs > state[later + START] - this.gapMs;
    // Joining or merging moves a close later: the wake-up moves with the first session's.
    if (meetsEarlier && meetsLater) {
      mergeAround(state, at, timeMs);
      this.arm(view.user, state, out);
      return writeSession(view.vars, state, at, false);
    }
    if (meetsEarlier || meetsLater) {
      const session = meetsEarlier ? at : later;
      extend(state, session, timeMs);
      this.arm(view.user, state, out);
      return writeSession(view.vars, state, session, false);
    }
    if (this.isTooLate(timeMs, out)) return writeNone(view.vars);
    state.splice(later, 0, timeMs, timeMs, 1, 0);
    this.arm(view.user, state, out);
    writeSession(view.vars, state, later, true);
  }

  /** Closes the sessions whose last event + gap has come, then describes the latest still open. */
  private wakeUp(view: UserView, out: StageOutput): void {
    const state = this.open.get(view.user);
    if (state === undefined) return writeNone(view.vars);
    const timeMs = view.timeMs;
    // Timers fire in time order: a wake-up at or after the armed time means it has fired.
    const isArmedSpent = state[ARMED] !== NONE && state[ARMED] <= timeMs;
    let closed = 0;
    while (HEAD + closed * STRIDE < state.length && state[HEAD + closed * STRIDE + LAST] + this.gapMs <= timeMs) {
      if (this.emitSessions) emitSession(view.user, state, HEAD + closed * STRIDE, timeMs, out);
      closed++;
    }
    if (closed === 0 && !isArmedSpent) return writeSession(view.vars, state, state.length - STRIDE, false);
    const changed = this.open.getForUpdate(view.user)!;
    changed.splice(HEAD, closed * STRIDE);
    if (isArmedSpent) changed[ARMED] = NONE;
    if (changed.length === HEAD) {
      if (changed[ARMED] !== NONE) out.cancelWake(view.user, changed[ARMED]);
      this.open.delete(view.user);
      return writeNone(view.vars);
    }
    this.arm(view.user, changed, out);
    writeSession(view.vars, changed, changed.length - STRIDE, false);
  }

  /** Index of the last session starting at or before `timeMs`, or HEAD - STRIDE if none does. */
  private sessionBefore(state: number[], timeMs: number): number {
    let at = state.length - STRIDE;
    while (at >= HEAD && state[at + START] > timeMs) at -= STRIDE;
    return at;
  }

  /** Late past its session's close: a session already emitted cannot take it, so none does. */
  private isTooLate(timeMs: number, out: StageOutput): boolean {
    if (timeMs + this.gapMs > this.watermarkMs) return false;
    out.count(LATE_SESSION_EVENTS_COUNTER, 1);
    return true;
  }

  /** Keeps one wake-up, at the earliest close (the first session's), moving the pending one if it differs. */
  private arm(user: string, state: number[], out: StageOutput): void {
    const closeMs = state[HEAD + LAST] + this.gapMs;
    if (state[ARMED] === closeMs) return;
    if (state[ARMED] !== NONE) out.cancelWake(user, state[ARMED]);
    state[ARMED] = closeMs;
    out.wakeAt(user, closeMs);
  }

}

/** No session to describe: not a new one, and no figures. */
function writeNone(vars: Record<string, unknown>): void {
  vars[SESSION_VARS.isNew] = false;
  vars[SESSION_VARS.pages] = undefined;
  vars[SESSION_VARS.elapsedSec] = undefined;
  vars[SESSION_VARS.avgGapSec] = undefined;
  vars[SESSION_VARS.maxGapSec] = undefined;
}

/**
 * Adds an event to the session at `at`. The longest gap is exact for events before the start or
 * after the last; one landing inside splits a gap we no longer know, so the longest stays as it
 * was (an upper bound). The mean gap is always exact: (last - start) / (pages - 1).
 */
function extend(state: number[], at: number, timeMs: number): void {
  if (timeMs > state[at + LAST]) {
    state[at + MAX_GAP] = Math.max(state[at + MAX_GAP], timeMs - state[at + LAST]);
    state[at + LAST] = timeMs;
  } else if (timeMs < state[at + START]) {
    state[at + MAX_GAP] = Math.max(state[at + MAX_GAP], state[at + START] - timeMs);
    state[at + START] = timeMs;
  }
  state[at + PAGES] += 1;
}

/** An event bridging the sessions at `at` and the next: one session of both and the event. */
function mergeAround(state: number[], at: number, timeMs: number): void {
  const next = at + STRIDE;
  state[at + MAX_GAP] = Math.max(state[at + MAX_GAP], state[next + MAX_GAP], timeMs - state[at + LAST], state[next + START] - timeMs);
  state[at + LAST] = state[next + LAST];
  state[at + PAGES] += state[next + PAGES] + 1;
  state.splice(next, STRIDE);
}

function avgGapSec(state: number[], at: number): number {
  const pages = state[at + PAGES];
  return pages < 2 ? 0 : (state[at + LAST] - state[at + START]) / (pages - 1) / 1000;
}

function writeSession(vars: Record<string, unknown>, state: number[], at: number, isNew: boolean): void {
  vars[SESSION_VARS.isNew] = isNew;
  vars[SESSION_VARS.pages] = state[at + PAGES];
  vars[SESSION_VARS.elapsedSec] = (state[at + LAST] - state[at + START]) / 1000;
  vars[SESSION_VARS.avgGapSec] = avgGapSec(state, at);
  vars[SESSION_VARS.maxGapSec] = state[at + MAX_GAP] / 1000;
}

function emitSession(user: string, state: number[], at: number, closeMs: number, out: StageOutput): void {
  const startMs = state[at + START];
  const endMs = state[at + LAST];
  const body: SessionRecord = {
    output: SESSION_OUTPUT,
    user_id: user,
    time: isoTime(endMs),
    time_ms: endMs,
    start: isoTime(startMs),
    start_ms: startMs,
    end: isoTime(endMs),
    end_ms: endMs,
    pages: state[at + PAGES],
    duration_sec: (endMs - startMs) / 1000,
    avg_gap_sec: withoutNoise(avgGapSec(state, at)),
    max_gap_sec: state[at + MAX_GAP] / 1000,
  };
  out.emit(SESSION_OUTPUT, user, closeMs, body);
}
