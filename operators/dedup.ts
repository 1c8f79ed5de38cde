// Dedup: drops an event identical to one of the same user kept less than `withinMs` before or
// after it (same values of the chosen fields), and counts it as a duplicate.
import { EVENT_TYPE_FIELD, PAGE_FIELD } from "./eventFields.ts";
import { isoTime } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";

export type DedupOptions = {
  /** Names the stage's state. Default "dedup". */
  name?: string;
  /**
   * Two identical events closer than this in event time are one: the later one seen is dropped.
   * Measured against the last kept identical event, as an absolute difference so disorder works.
   * Default DEFAULT_WITHIN_MS.
   */
  withinMs?: number;
  /** The event fields that make two events identical (the user always does). Default DEFAULT_DEDUP_FIELDS. */
  fields?: readonly string[];
};

/** How close identical events are duplicates when nothing is said: retries and replays come seconds apart. */
export const DEFAULT_WITHIN_MS = 60_000;

/** The fields that make two events identical when none are given: the event's type and page. */
export const DEFAULT_DEDUP_FIELDS: readonly string[] = [EVENT_TYPE_FIELD, PAGE_FIELD];

/** Counter of the dropped events, reported in the job summary. */
export const DUPLICATES_COUNTER = "duplicates";

export function dedup(options: DedupOptions = {}): StageDefinition {
  const name = options.name ?? "dedup";
  const fields = options.fields ?? DEFAULT_DEDUP_FIELDS;
  // Signatures are laid out by the fields compared; how long they are kept may change.
  return { name, stateShape: { layout: { fields } }, build: (ctx) => new DedupLogic(fields, options.withinMs ?? DEFAULT_WITHIN_MS, ctx.userState<unknown[]>("kept")) };
}

type KeptState = {
  get(key: string): unknown[] | undefined;
  getForUpdate(key: string): unknown[] | undefined;
  set(key: string, value: unknown[]): void;
  touch(key: string): void;
  delete(key: string): void;
};

/**
 * Per user, one flat array of the signatures kept within the last `withinMs`: for each, the
 * field values then the time of the last kept event with them, `[v1, ..., vF, keptMs, ...]`.
 * Flat, so a step allocates nothing; short, because signatures older than `withinMs` relative
 * to the step are forgotten on every step of the user (events and wake-ups of other stages).
 */
class DedupLogic implements StageLogic {
  /** Entries per signature: the field values and the kept time. */
  private readonly stride: number;
  /** The current event's field values, read once per event (scratch, not state). */
  private readonly values: unknown[];
  /** The signatures the user's next event is compared with: those kept within `withinMs` of `nowMs`. */
  readonly view: StageView = {
    user: (user, nowMs) => {
      const kept = this.kept.get(user);
      if (kept === undefined) return undefined;
      const signatures: Array<Record<string, unknown>> = [];
      for (let at = 0; at < kept.length; at += this.stride) {
        const keptMs = kept[at + this.fields.length] as number;
        if (keptMs + this.withinMs <= nowMs) continue;
        const fields = Object.fromEntries(this.fields.map((field, i) => [field, kept[at + i]]));
        signatures.push({ fields, time: isoTime(keptMs), time_ms: keptMs });
      }
      return { signatures };
    },
  };

  constructor(
    private readonly fields: readonly string[],
    private readonly withinMs: number,
    private readonly kept: KeptState,
  ) {
    this.stride = fields.length + 1;
    this.values = new Array(fields.length).fill(null);
  }

  step(view: UserView, out: StageOutput): boolean {
    const event = view.event;
    if (event === undefined) {
      this.forgetOnWakeUp(view.user, view.timeMs);
      return true;
    }
    const timeMs = view.timeMs;
    // An absent field reads as null: one value for "absent", whatever an encoding makes of undefined.
    for (let j = 0; j < this.fields.length; j++) this.values[j] = event[this.fields[j]] ?? null;
    const entries = this.kept.getForUpdate(view.user);
    if (entries === undefined) {
      this.kept.set(view.user, this.append(timeMs, []));
      return true;
    }
    this.forget(entries, timeMs);
    const at = this.find(entries);
    if (at < 0) {
      this.append(timeMs, entries);
      return true;
    }
    // Still remembered, so kept less than `withinMs` before the event, or (disorder) after it.
    const keptAtMs = entries[at + this.fields.length] as number;
    if (Math.abs(timeMs - keptAtMs) < this.withinMs) {
      out.count(DUPLICATES_COUNTER, 1);
      return false;
    }
    // A late event at least `withinMs` before the kept one: kept, and the later time stays the one to measure from.
    return true;
  }

  /** Drops, compacting in place, the signatures kept at or before `timeMs - withinMs`. */
  private forget(entries: unknown[], timeMs: number): void {
    const { stride } = this;
    const timeAt = this.fields.length;
    const forgetAtOrBeforeMs = timeMs - this.withinMs;
    let write = 0;
    for (let read = 0; read < entries.length; read += stride) {
      if ((entries[read + timeAt] as number) <= forgetAtOrBeforeMs) continue;
      if (write !== read) for (let j = 0; j < stride; j++) entries[write + j] = entries[read + j];
      write += stride;
    }
    entries.length = write;
  }

  /** Index of the signature equal to the event's, or -1. */
  private find(entries: unknown[]): number {
    const values = this.values;
    next: for (let at = 0; at < entries.length; at += this.stride) {
      for (let j = 0; j < values.length; j++) if (entries[at + j] !== values[j]) continue next;
      return at;
    }
    return -1;
  }

  /** Appends the event's signature to `entries`. */
  private append(timeMs: number, entries: unknown[]): unknown[] {
    for (let j = 0; j < this.values.length; j++) entries.push(this.values[j]);
    entries.push(timeMs);
    return entries;
  }

  /** A wake-up (asked for by another stage) is a chance to free an idle user's signatures. */
  private forgetOnWakeUp(user: string, timeMs: number): void {
    const entries = this.kept.get(user);
    if (entries === undefined) return;
    const lengthBefore = entries.length;
    this.forget(entries, timeMs);
    if (entries.length === 0) this.kept.delete(user);
    else if (entries.length !== lengthBefore) this.kept.touch(user);
  }
}
