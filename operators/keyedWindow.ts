// Keyed event-time windows (tumbling, hopping, session) with aggregates, firing when the watermark
// passes a window's end, firing again for events within the allowed lateness, and sending events
// later than that to the "late" side output. Flink's semantics: a window [start, end) fires when the
// watermark reaches end - 1 and is purged when it reaches end - 1 + allowedLatenessMs.
import type { StreamRecord } from "../engine/elements.ts";
import type { KeyedStateOptions } from "../engine/keyedState.ts";
import type { OperatorContext, OperatorDefinition, OperatorLogic, OperatorView, Output } from "../engine/operator.ts";
import { accumulator, type Accumulator, type AggregateKind, type AggregateSpec } from "./aggregations.ts";
import { isSameLayout, partsFrom, type StateShape } from "./stateShape.ts";
import { isoTime } from "./outputFormat.ts";
import { assignWindows, sessionsMeet, type WindowAssigner } from "./windowAssigners.ts";

export type KeyedWindowOptions<E> = {
  /** Names the window in every result and in the state dir. */
  name: string;
  assigner: WindowAssigner;
  /** How long after its end a window still takes events, firing again for each. Default DEFAULT_ALLOWED_LATENESS_MS. */
  allowedLatenessMs?: number;
  aggregates: AggregateSpec<E>[];
  /**
   * The shape the restored state was written under (see windowStateShape), when it may differ from
   * this definition's: aggregates added since start empty in the windows already open, those gone
   * are dropped. Default: the state is as this definition's shape says.
   */
  restoredShape?: StateShape;
};

/** A window result: `{window, key, start, start_ms, end, end_ms, ...aggregates}` (end exclusive; ISO-8601 and epoch ms). */
export type WindowResult = { window: string; key: string; start: string; start_ms: number; end: string; end_ms: number; [aggregate: string]: unknown };

/** The fields of every window result: aggregates cannot be named so. */
export const WINDOW_RESULT_FIELDS: readonly string[] = ["window", "key", "start", "start_ms", "end", "end_ms"];

/** What the late output receives for an event no window of this definition can take any more. */
export type LateEvent = {
  window: string;
  key: string;
  /** The event's time. */
  time: string;
  time_ms: number;
  /** The watermark it came behind. */
  watermark: string;
  watermark_ms: number;
  late_by_ms: number;
  event: unknown;
};

/**
 * One window of one key as a flat array: `[startMs, endMs, hasFired (0|1), armedAtMs, ...accumulators]`.
 * Flat, so that a window is one allocation on the hot path and a checkpoint stores it as it is.
 * `armedAtMs` is for sessions: the time of the one timer pending for the window.
 */
export type Slot = unknown[];
const START = 0;
const END = 1;
const FIRED = 2;
const ARMED = 3;
const ACC = 4;

/** No lateness allowed: a window takes no event once the watermark has passed its end. */
export const DEFAULT_ALLOWED_LATENESS_MS = 0;

export const LATE = "late";

/** The output kind of window results, for sinks that pick kinds with `outputs:`. */
export const WINDOW_OUTPUT = "window";

/** The operator's name, and its state's, for a window called `name`. */
export function windowOperatorName(name: string): string {
  return `window/${name}`;
}
export const WINDOW_STATE = "windows";

export function keyedWindow<E>(options: KeyedWindowOptions<E>): OperatorDefinition<E, WindowResult> {
  return { name: windowOperatorName(options.name), build: (ctx) => new KeyedWindowLogic(options, ctx) };
}

/**
 * What a window's state depends on (see StateShape): its assigner (the windows a key holds) and, by
 * name, each aggregate's kind (the accumulator kept per window); conditions, values and the allowed
 * lateness may change.
 */
export function windowStateShape(options: { assigner: WindowAssigner; aggregates: ReadonlyArray<{ name: string; kind: AggregateKind }> }): StateShape {
  return {
    layout: { ...options.assigner },
    parts: options.aggregates.map((a): [string, StateShape] => [a.name, { layout: { kind: a.kind } }]),
  };
}

/**
 * How slots are stored: as they are, unless an accumulator (distinct) needs converting. `restored`:
 * the accumulators the stored slots were written with, when other than `accumulators`.
 */
export function slotCodec<E>(accumulators: Accumulator<E>[], restored: Accumulator<E>[] = accumulators): KeyedStateOptions<Slot[], Slot[]> {
  if (accumulators.every((a) => !a.needsCodec) && restored.every((a) => !a.needsCodec)) return {};
  const convert = (slots: Slot[], how: "encode" | "decode", by: Accumulator<E>[]) =>
    slots.map((slot) => slot.map((x, i) => (i < ACC ? x : by[i - ACC][how](x))));
  return { encode: (slots) => convert(slots, "encode", accumulators), decode: (stored) => convert(stored, "decode", restored) };
}

class KeyedWindowLogic<E> implements OperatorLogic<E, WindowResult> {
  private readonly accumulators: Accumulator<E>[];
  private readonly lateMs: number;
  private readonly isSession: boolean;
  private readonly slots;
  private readonly timers;
  private watermarkMs = -Infinity;
  /** A key's open windows, each as its result would show it now (its aggregates so far), and whether it has fired. */
  readonly view: OperatorView = {
    keyCount: () => this.slots.size,
    key: (key) => {
      const slots = this.slots.get(key);
      if (slots === undefined) return undefined;
      return { windows: slots.map((slot) => ({ ...this.result(key, slot), has_fired: slot[FIRED] === 1 })) };
    },
  };

  constructor(
    private readonly options: KeyedWindowOptions<E>,
    ctx: OperatorContext,
  ) {
    this.accumulators = options.aggregates.map(accumulator);
    this.lateMs = options.allowedLatenessMs ?? DEFAULT_ALLOWED_LATENESS_MS;
    this.isSession = options.assigner.type === "session";
    const shape = windowStateShape(options);
    const restored = options.restoredShape !== undefined && !isSameLayout(options.restoredShape, shape) ? options.restoredShape : undefined;
    // Stored slots are read with the accumulators they were written with, then laid out anew.
    const restoredAccumulators = restored?.parts?.map(([name, part]) => accumulator<E>({ name, kind: (part.layout as { kind: AggregateKind }).kind }));
    // Under a memory budget, keys' windows may leave memory and be read back, decoded by the same codec:
    // not in a run that lays restored windows out anew (their stored form is the old layout's until rewritten).
    this.slots = ctx.valueState<Slot[]>(WINDOW_STATE, { ...slotCodec(this.accumulators, restoredAccumulators), mayLeaveMemory: restored === undefined });
    if (restored !== undefined) this.relayout(partsFrom(restored, shape));
    // Every pending timer follows from a window's state, so checkpoints need not store them.
    this.timers = ctx.eventTimers(WINDOW_STATE, { isCheckpointed: false });
    // A scan: windows on disk only are not read back into memory.
    this.slots.forEach((slots, key) => {
      for (const slot of slots) this.rearm(key, slot);
    });
  }

  /** Lays every open window's accumulators out as `from` says (see partsFrom): an added one starts empty. */
  private relayout(from: Array<number | undefined>): void {
    for (const [key, slots] of [...this.slots.entries()]) {
      const next = slots.map((slot) => [...slot.slice(0, ACC), ...from.map((j, i) => (j === undefined ? this.accumulators[i].init() : slot[ACC + j]))]);
      this.slots.set(key, next);
    }
  }

  /** The timers a restored window had pending: its end until it fired, then its purge; a session's armed one. */
  private rearm(key: string, slot: Slot): void {
    if (this.isSession) {
      this.timers.register(key, slot[ARMED] as number);
      return;
    }
    const endMs = slot[END] as number;
    if (slot[FIRED] === 0) this.timers.register(key, endMs - 1);
    if (this.lateMs > 0) this.timers.register(key, endMs - 1 + this.lateMs);
  }

  onRecord(rec: StreamRecord<E>, out: Output<WindowResult>): void {
    const isTaken = this.isSession ? this.addToSession(rec, out) : this.addToAligned(rec, out);
    if (!isTaken) {
      const late: LateEvent = {
        window: this.options.name,
        key: rec.key,
        time: isoTime(rec.time),
        time_ms: rec.time,
        watermark: isoTime(this.watermarkMs),
        watermark_ms: this.watermarkMs,
        late_by_ms: this.watermarkMs - rec.time,
        event: rec.value,
      };
      out.side(LATE, late);
    }
  }

  onWatermark(watermarkMs: number, out: Output<WindowResult>): void {
    this.watermarkMs = watermarkMs;
    this.timers.advanceTo(watermarkMs, (key, timeMs) => this.onTimer(key, timeMs, out));
  }

  /** Adds the record to each window it belongs to that is not yet purged; false when none took it. */
  private addToAligned(rec: StreamRecord<E>, out: Output<WindowResult>): boolean {
    const assigner = this.options.assigner;
    if (assigner.type === "tumbling") {
      const startMs = rec.time - (((rec.time % assigner.sizeMs) + assigner.sizeMs) % assigner.sizeMs);
      return this.addToWindow(rec, startMs, startMs + assigner.sizeMs, out);
    }
    let isTaken = false;
    for (const bounds of assignWindows(assigner, rec.time)) {
      if (this.addToWindow(rec, bounds.startMs, bounds.endMs, out)) isTaken = true;
    }
    return isTaken;
  }

  /** Adds the record to one aligned window unless it is already purged; false when it is. */
  private addToWindow(rec: StreamRecord<E>, startMs: number, endMs: number, out: Output<WindowResult>): boolean {
    if (endMs - 1 + this.lateMs <= this.watermarkMs) return false;
    let slots = this.slots.getForUpdate(rec.key);
    if (slots === undefined) {
      slots = [];
      this.slots.set(rec.key, slots);
    }
    let slot: Slot | undefined;
    for (let i = 0; i < slots.length; i++) if (slots[i][START] === startMs) slot = slots[i];
    if (slot === undefined) {
      slot = this.newSlot(startMs, endMs);
      slots.push(slot);
      this.timers.register(rec.key, endMs - 1);
      if (this.lateMs > 0) this.timers.register(rec.key, endMs - 1 + this.lateMs);
    }
    this.accumulate(slot, rec);
    // A window the watermark has passed fires on every event it takes (a late firing).
    if (slot[FIRED] === 1 || endMs - 1 <= this.watermarkMs) this.fire(rec.key, slot, out);
    return true;
  }

  /**
   * Merges the record's session [t, t + gap) with every session it meets, in place: the first one
   * met absorbs the others. False when the merged session is already purged (the record is late).
   */
  private addToSession(rec: StreamRecord<E>, out: Output<WindowResult>): boolean {
    const gapMs = (this.options.assigner as { gapMs: number }).gapMs;
    const ownStartMs = rec.time;
    const ownEndMs = rec.time + gapMs;
    const slots = this.slots.get(rec.key) ?? [];
    let startMs = ownStartMs;
    let endMs = ownEndMs;
    let target: Slot | undefined;
    let absorbed: Slot[] | undefined;
    for (const slot of slots) {
      if (!sessionsMeet(slot[START] as number, slot[END] as number, ownStartMs, ownEndMs)) continue;
      if (target === undefined) target = slot;
      else (absorbed ??= []).push(slot);
      startMs = Math.min(startMs, slot[START] as number);
      endMs = Math.max(endMs, slot[END] as number);
    }
    if (this.isPurgeable(endMs)) return false;
    if (target === undefined) {
      target = this.newSlot(startMs, endMs);
      slots.push(target);
      this.slots.set(rec.key, slots);
      this.armSession(rec.key, target);
    } else if (target[START] !== startMs || target[END] !== endMs) {
      // A new, larger session: it fires at its own end, whatever its parts did. The timers of the
      // parts stay: when they fire they find nothing due and cost less than deleting them now.
      for (const s of absorbed ?? []) {
        for (let i = 0; i < this.accumulators.length; i++) target[ACC + i] = this.accumulators[i].merge(target[ACC + i], s[ACC + i]);
      }
      target[START] = startMs;
      target[END] = endMs;
      target[FIRED] = 0;
      this.slots.set(rec.key, absorbed ? slots.filter((s) => !absorbed!.includes(s)) : slots);
      this.armSession(rec.key, target);
    } else this.slots.touch(rec.key);
    this.accumulate(target, rec);
    this.fireIfDue(rec.key, target, out);
    return true;
  }

  /** Fires the key's windows due at `timeMs` and purges those past their lateness; later ones wait for their own timers. */
  private onTimer(key: string, timeMs: number, out: Output<WindowResult>): void {
    const slots = this.slots.get(key);
    if (slots === undefined) return;
    for (const slot of slots) {
      if (slot[FIRED] === 0 && (slot[END] as number) - 1 <= timeMs) this.fire(key, slot, out);
    }
    const kept = slots.filter((s) => (s[END] as number) - 1 + this.lateMs > timeMs);
    if (this.isSession) {
      for (const slot of kept) if ((slot[ARMED] as number) <= timeMs) this.armSession(key, slot);
    }
    if (kept.length === 0) this.slots.delete(key);
    else if (kept.length !== slots.length) this.slots.set(key, kept);
    else this.slots.touch(key);
  }

  /**
   * Keeps one timer pending for a session, at or before its next due time (its end, or once fired
   * its purge). Sessions grow with nearly every event; an earlier pending timer simply re-arms
   * when it fires, so growing costs no timer work.
   */
  private armSession(key: string, slot: Slot): void {
    const dueMs = (slot[END] as number) - 1 + (slot[FIRED] === 1 ? this.lateMs : 0);
    const armedAtMs = slot[ARMED] as number;
    if (armedAtMs > this.watermarkMs && armedAtMs <= dueMs) return;
    this.timers.register(key, dueMs);
    slot[ARMED] = dueMs;
  }

  private fireIfDue(key: string, slot: Slot, out: Output<WindowResult>): void {
    // A window the watermark has passed fires on every event it takes (a late firing).
    if (slot[FIRED] === 1 || (slot[END] as number) - 1 <= this.watermarkMs) this.fire(key, slot, out);
  }

  private fire(key: string, slot: Slot, out: Output<WindowResult>): void {
    slot[FIRED] = 1;
    out.emit(key, (slot[END] as number) - 1, this.result(key, slot));
  }

  /** The window's result from its aggregates so far. */
  private result(key: string, slot: Slot): WindowResult {
    const startMs = slot[START] as number;
    const endMs = slot[END] as number;
    const result: WindowResult = { window: this.options.name, key, start: isoTime(startMs), start_ms: startMs, end: isoTime(endMs), end_ms: endMs };
    for (let i = 0; i < this.accumulators.length; i++) result[this.accumulators[i].name] = this.accumulators[i].result(slot[ACC + i]);
    return result;
  }

  private isPurgeable(endMs: number): boolean {
    return endMs - 1 + this.lateMs <= this.watermarkMs;
  }

  private newSlot(startMs: number, endMs: number): Slot {
    const slot: Slot = [startMs, endMs, 0, -Infinity];
    for (const a of this.accumulators) slot.push(a.init());
    return slot;
  }

  private accumulate(slot: Slot, rec: StreamRecord<E>): void {
    const accumulators = this.accumulators;
    for (let i = 0; i < accumulators.length; i++) slot[ACC + i] = accumulators[i].add(slot[ACC + i], rec.value, rec.time);
  }
}
