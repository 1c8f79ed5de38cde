// How much heap a job's keyed state may hold (`state: { memoryBudget }`), and when entries leave it:
// at each checkpoint's cut, the least recently used entries whose value is durable on disk.

/** A keyed state some of whose entries may leave memory (engine/spillableState.ts). */
export type Spillable = {
  /** Entries held in memory now. */
  readonly residentEntries: number;
  /** Entries read back from disk, over the state's life. */
  readonly readBacks: number;
  /** Starts a new period of use: entries used from now on count as more recent than any before. */
  nextUseTick(tick: number): void;
  /** Moves up to `count` of the least recently used entries that may leave memory to disk only; returns how many left. */
  evictLeastRecentlyUsed(count: number): number;
};

/**
 * The heap is brought back to this share of the budget when it goes over: room to grow before the
 * next cut, so that a job near its budget does not evict at every checkpoint.
 */
const TARGET_SHARE = 0.8;

/**
 * Bounds the heap the job's keyed state takes, the way Flink's RocksDB backend does: states that opt
 * in keep their durable copy key by key on disk, and an entry can leave memory once it is clean and
 * the checkpoint that wrote its value is durable; it is read back on its next use.
 *
 * When: at each checkpoint's cut, before the state is taken (the previous commit has landed, so what
 * it wrote may go, and no step is under way that could hold a value). How much: the heap is measured
 * (`process.memoryUsage().heapUsed`, a few µs once per checkpoint); when it is over the budget, the
 * least recently used entries leave, as many as the excess over TARGET_SHARE of the budget holds at
 * the heap's bytes per resident entry. Measuring the heap counts what an entry really costs (a
 * user's record of stage values is ~10 times its encoded bytes), and everything else the job holds
 * too (timers, windows, buffers): the estimate over-counts per entry, so more leave than strictly
 * needed, never fewer. Entries that left are garbage until V8's next major collection, so a heap
 * measured soon after can still read high and evict a little more: a cost in reads, not in results,
 * since an entry read back holds exactly what it held.
 */
export class MemoryBudget {
  private readonly states: Spillable[] = [];
  private tick = 0;
  /** Entries moved out of memory, over the job's life. */
  private evicted = 0;
  private counted = { evicted: 0, readBacks: 0 };

  constructor(
    /** The heap the job may use, in bytes. */
    readonly bytes: number,
    private readonly heapUsedBytes: () => number = () => process.memoryUsage().heapUsed,
  ) {}

  add(state: Spillable): void {
    this.states.push(state);
    state.nextUseTick(this.tick);
  }

  /** Entries moved out of memory and read back since the last call: for the job's counters. */
  takeCounts(): { evicted: number; readBacks: number } {
    let readBacks = 0;
    for (const state of this.states) readBacks += state.readBacks;
    const counts = { evicted: this.evicted - this.counted.evicted, readBacks: readBacks - this.counted.readBacks };
    this.counted = { evicted: this.evicted, readBacks };
    return counts;
  }

  /** At a cut: evicts what the budget asks for (see the class comment), and starts a new period of use. */
  rebalance(): void {
    this.tick++;
    for (const state of this.states) state.nextUseTick(this.tick);
    if (this.states.length === 0) return;
    const heapBytes = this.heapUsedBytes();
    if (heapBytes <= this.bytes) return;
    let residentEntries = 0;
    for (const state of this.states) residentEntries += state.residentEntries;
    if (residentEntries === 0) return;
    const share = Math.min(1, (heapBytes - TARGET_SHARE * this.bytes) / heapBytes);
    for (const state of this.states) this.evicted += state.evictLeastRecentlyUsed(Math.ceil(state.residentEntries * share));
  }
}

