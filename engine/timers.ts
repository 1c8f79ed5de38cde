// Timers per key, fired in (time, key) order when their clock passes them: event time (the
// watermark) or processing time. Timers are state: every change reaches the next checkpoint, unless
// their owner rebuilds them from its own state.
import type { Checkpointable, StateDelta } from "./store.ts";

/** Min-heap of numbers: the distinct times at which some timer is due. */
class TimeHeap {
  private items: number[] = [];

  /** Replaces the contents with `values` (any order): sorted, an array is a heap. */
  rebuild(values: number[]): void {
    this.items = values.sort((a, b) => a - b);
  }

  get size(): number {
    return this.items.length;
  }

  peek(): number | undefined {
    return this.items[0];
  }

  push(value: number): void {
    const items = this.items;
    items.push(value);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= items.length) break;
        const right = left + 1;
        const child = right < items.length && items[right] < items[left] ? right : left;
        if (items[child] >= last) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

/** Times with no timer left that a heap may hold before it is rebuilt, whatever its size. */
const MIN_STALE_TIMES = 4096;

/** The keys due at one time: most times hold one key, kept bare (no Set to allocate). */
type DueKeys = string | Set<string>;

function hasKey(keys: DueKeys, key: string): boolean {
  return typeof keys === "string" ? keys === key : keys.has(key);
}

function keyCount(keys: DueKeys): number {
  return typeof keys === "string" ? 1 : keys.size;
}

function keyList(keys: DueKeys): string[] {
  return typeof keys === "string" ? [keys] : [...keys];
}

/**
 * Timers for one operator. Registering the same (key, time) twice keeps one timer. Timers at the
 * same time fire in key order, so a job restored from a checkpoint fires them exactly as an
 * uninterrupted one would. A checkpoint stores one entry per due time: the keys due then.
 */
export class TimerService implements Checkpointable {
  private readonly keysByTimeMs = new Map<number, DueKeys>();
  private readonly dueTimes = new TimeHeap();
  /** Times changed since the last checkpoint; undefined for timers no checkpoint stores. */
  private readonly changedTimes: Set<number> | undefined;
  private count = 0;

  /**
   * `restored`: the replayed log of these timers (see StateStore.restored). `isCheckpointed: false`:
   * no checkpoint stores them (their owner rebuilds them), so no change is tracked. Default true.
   */
  constructor(
    readonly name: string,
    restored: Iterable<[unknown, unknown]> = [],
    { isCheckpointed = true }: { isCheckpointed?: boolean } = {},
  ) {
    this.changedTimes = isCheckpointed ? new Set() : undefined;
    // A replayed log: the last entry for a time holds its keys, null means none.
    const latest = new Map<number, string[] | null>();
    for (const [timeMs, keys] of restored) latest.set(timeMs as number, keys as string[] | null);
    for (const [timeMs, keys] of latest) for (const key of keys ?? []) this.insert(key, timeMs);
  }

  get size(): number {
    return this.count;
  }

  get liveEntries(): number {
    return this.keysByTimeMs.size;
  }

  register(key: string, timeMs: number): void {
    if (this.insert(key, timeMs)) this.changedTimes?.add(timeMs);
  }

  delete(key: string, timeMs: number): void {
    const keys = this.keysByTimeMs.get(timeMs);
    if (keys === undefined || !hasKey(keys, key)) return;
    this.count--;
    // The time stays in the heap; `advanceTo` skips times with no keys left.
    if (typeof keys === "string") this.keysByTimeMs.delete(timeMs);
    else {
      keys.delete(key);
      if (keys.size === 0) this.keysByTimeMs.delete(timeMs);
    }
    this.changedTimes?.add(timeMs);
    // Deadlines that move with every event (the close of a window that ends after a gap, an
    // inactivity timeout) leave a time behind each time: past twice the live ones, the heap is
    // built afresh from those.
    if (this.dueTimes.size > 2 * this.keysByTimeMs.size + MIN_STALE_TIMES) this.dueTimes.rebuild([...this.keysByTimeMs.keys()]);
  }

  /**
   * Fires every timer with time <= `clockMs`, earliest first and in key order within a time.
   * A timer registered by `onFire` that is already due fires in the same call.
   */
  advanceTo(clockMs: number, onFire: (key: string, timeMs: number) => void): void {
    for (let timeMs = this.nextDueMs(); timeMs !== undefined && timeMs <= clockMs; timeMs = this.nextDueMs()) {
      const keys = this.take(timeMs);
      // Most times hold one key: fired without building a list.
      if (typeof keys === "string") onFire(keys, timeMs);
      else for (const key of [...keys].sort()) onFire(key, timeMs);
    }
  }

  /** The earliest time some timer is due at, if any. */
  nextDueMs(): number | undefined {
    // Times whose keys were all deleted stay in the heap until they come up: dropped here.
    for (let timeMs = this.dueTimes.peek(); timeMs !== undefined; timeMs = this.dueTimes.peek()) {
      if (this.keysByTimeMs.has(timeMs)) return timeMs;
      this.dueTimes.pop();
    }
    return undefined;
  }

  /** Removes the timers due at `timeMs`, which must be `nextDueMs()`, and gives their keys in order. */
  takeDueAt(timeMs: number): string[] {
    const keys = this.take(timeMs);
    return typeof keys === "string" ? [keys] : [...keys].sort();
  }

  /** Removes the timers due at `timeMs`, which must be `nextDueMs()`. */
  private take(timeMs: number): DueKeys {
    const keys = this.keysByTimeMs.get(timeMs);
    if (keys === undefined || this.dueTimes.peek() !== timeMs) throw new Error(`${this.name}: ${timeMs} is not the next due time`);
    this.dueTimes.pop();
    this.keysByTimeMs.delete(timeMs);
    this.changedTimes?.add(timeMs);
    this.count -= keyCount(keys);
    return keys;
  }

  snapshotAll(): Array<[unknown, unknown]> {
    this.changedTimes?.clear();
    return [...this.keysByTimeMs].map(([timeMs, keys]) => [timeMs, keyList(keys)]);
  }

  takeDelta(): StateDelta {
    const delta: StateDelta = { puts: [], deletes: [] };
    for (const timeMs of this.changedTimes ?? []) {
      const keys = this.keysByTimeMs.get(timeMs);
      if (keys === undefined) delta.deletes.push(timeMs);
      else delta.puts.push([timeMs, keyList(keys)]);
    }
    this.changedTimes?.clear();
    return delta;
  }

  private insert(key: string, timeMs: number): boolean {
    const keys = this.keysByTimeMs.get(timeMs);
    if (keys === undefined) {
      this.keysByTimeMs.set(timeMs, key);
      this.dueTimes.push(timeMs);
    } else if (hasKey(keys, key)) return false;
    else if (typeof keys === "string") this.keysByTimeMs.set(timeMs, new Set([keys, key]));
    else keys.add(key);
    this.count++;
    return true;
  }
}
