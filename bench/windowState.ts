// Window state as the keyed window operator keeps it (one count+sum slot per key and hour), for the
// checkpoint, restore and memory benchmarks that work on a StateStore and KeyedValueState directly.
import { KeyedValueState, type KeyedStateOptions } from "../engine/keyedState.ts";
import type { StateStore } from "../engine/store.ts";
import { accumulator } from "../operators/aggregations.ts";
import { slotCodec, type Slot } from "../operators/keyedWindow.ts";
import { HOUR_MS } from "./benchUtil.ts";

/** The operator's own slot shape and codec, for count and sum (both stored as they are). */
export type { Slot } from "../operators/keyedWindow.ts";
export type StoredSlot = Slot;

/** Named as `keyedWindow({ name: "hourly" })` names its state, so the store holds what a job's would. */
export const WINDOW_STATE_NAME = "window/hourly/windows";

export const SLOT_CODEC: KeyedStateOptions<Slot[], Slot[]> = slotCodec([
  accumulator({ name: "count", kind: "count" }),
  accumulator({ name: "sum", kind: "sum", value: () => 0 }),
]);

export const BASE_WINDOW_MS = 1_699_999_200_000; // an hour boundary

export function benchKey(i: number): string {
  return `user-${i}`;
}

/** The slots of key `i` in round `round`: one open window with a count and a sum. */
export function slotsFor(i: number, round: number): Slot[] {
  // armedAtMs is -Infinity for tumbling windows: only sessions arm a timer through it.
  return [[BASE_WINDOW_MS, BASE_WINDOW_MS + HOUR_MS, 0, -Infinity, round + 1, (i % 100) + round]];
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
