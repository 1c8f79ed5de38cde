// Window state as the keyed window operator keeps it (one count+sum slot per key and hour), for the
// checkpoint, restore and memory benchmarks that work on a StateStore and KeyedValueState directly.
import { KeyedValueState, type KeyedStateOptions } from "../engine/keyedState.ts";
import type { StateStore } from "../engine/store.ts";
import { HOUR_MS } from "./benchUtil.ts";

// A mirror of the operator's private Slot and its codec as of commit 84b35fd; keep it in step when
// the operator's state changes shape, or these benchmarks measure something else.

/** In memory: the operator's slot (`operators/keyedWindow.ts`), with a count and a sum accumulator. */
export type Slot = { startMs: number; endMs: number; acc: unknown[]; hasFired: boolean; armedAtMs: number };
/** Stored: `[startMs, endMs, hasFired, [count, sum], armedAtMs]`, as the operator encodes it. */
export type StoredSlot = [startMs: number, endMs: number, hasFired: boolean, acc: unknown[], armedAtMs: number];

/** Named as `keyedWindow({ name: "hourly" })` names its state, so the store holds what a job's would. */
export const WINDOW_STATE_NAME = "window/hourly/windows";

/** The operator's encode/decode for count and sum (both store their accumulator as is). */
export const SLOT_CODEC: KeyedStateOptions<Slot[], StoredSlot[]> = {
  encode: (slots) => slots.map((s) => [s.startMs, s.endMs, s.hasFired, s.acc.map((a) => a), s.armedAtMs]),
  decode: (stored) =>
    stored.map(([startMs, endMs, hasFired, acc, armedAtMs]) => ({ startMs, endMs, hasFired, acc: acc.map((a) => a), armedAtMs })),
};

export const BASE_WINDOW_MS = 1_699_999_200_000; // an hour boundary

export function benchKey(i: number): string {
  return `user-${i}`;
}

/** The slots of key `i` in round `round`: one open window with a count and a sum. */
export function slotsFor(i: number, round: number): Slot[] {
  // armedAtMs is -Infinity for tumbling windows: only sessions arm a timer through it.
  return [{ startMs: BASE_WINDOW_MS, endMs: BASE_WINDOW_MS + HOUR_MS, hasFired: false, acc: [round + 1, (i % 100) + round], armedAtMs: -Infinity }];
}

/** The window state, restored from `store` as recovery builds it, and registered for checkpoints. */
export function windowState(store: StateStore): KeyedValueState<Slot[], StoredSlot[]> {
  const state = new KeyedValueState(WINDOW_STATE_NAME, SLOT_CODEC, store.restored(WINDOW_STATE_NAME));
  store.register(state);
  return state;
}

/** Sets keys [from, to) to their slots of `round`, as events arriving for them would. */
export function changeKeys(state: KeyedValueState<Slot[], StoredSlot[]>, from: number, to: number, round: number): void {
  for (let i = from; i < to; i++) state.set(benchKey(i), slotsFor(i, round));
}
