// Benchmark 5, run as a child with --expose-gc: heap bytes per key of 1,000,000 keys of window state
// in a KeyedValueState, and per key of the event-time timers the window operator keeps beside it.
// Usage: node --expose-gc --import tsx bench/memoryPerKey.ts [keys]   (prints one JSON object)
import { KeyedValueState } from "../engine/keyedState.ts";
import { TimerService } from "../engine/timers.ts";
import { gcIfExposed, HOUR_MS } from "./benchUtil.ts";
import { BASE_WINDOW_MS, benchKey, changeKeys, SLOT_CODEC, WINDOW_STATE_NAME, type Slot, type StoredSlot } from "./windowState.ts";

const keys = Number(process.argv[2] ?? 1_000_000);
const hasGc = gcIfExposed();
const heapBeforeBytes = process.memoryUsage().heapUsed;

// 1. The window state: one open window per key, held as the operator holds it, after a checkpoint
// took its changes (so the list of changed keys is empty again).
const state = new KeyedValueState<Slot[], StoredSlot[]>(WINDOW_STATE_NAME, SLOT_CODEC);
changeKeys(state, 0, keys, 0);
state.takeDelta();
gcIfExposed();
const heapWithStateBytes = process.memoryUsage().heapUsed;

// 2. The timer of each key's window (due at the window's end - 1), which the operator registers too.
const timers = new TimerService("window/hourly/event-timers/windows");
for (const key of state.keys()) timers.register(key, BASE_WINDOW_MS + HOUR_MS - 1);
timers.takeDelta();
gcIfExposed();
const heapWithTimersBytes = process.memoryUsage().heapUsed;

if (state.size !== keys || timers.size !== keys || state.get(benchKey(keys - 1)) === undefined) {
  throw new Error(`expected ${keys} keys, got ${state.size} in state and ${timers.size} timers`);
}
process.stdout.write(
  JSON.stringify({
    keys,
    hasGc,
    heapBeforeBytes,
    heapWithStateBytes,
    heapWithTimersBytes,
    stateBytesPerKey: (heapWithStateBytes - heapBeforeBytes) / keys,
    timerBytesPerKey: (heapWithTimersBytes - heapWithStateBytes) / keys,
  }) + "\n",
);
