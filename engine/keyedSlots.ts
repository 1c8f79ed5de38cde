// A record per key with one slot per registered state, for an operator made of several parts that
// each keep state by key: a step looks its key up once instead of once per part, and a checkpoint
// writes one entry per changed key instead of one per part. Slots are named, and the names are
// stored with the records: parts added, removed or reset between runs leave the others' values be.
import type { KeyedValueState } from "./keyedState.ts";

/** One part's values, a slot in every key's record: the subset of KeyedValueState the parts use. */
export type SlotState<V> = {
  get(key: string): V | undefined;
  /** Reads the value to mutate it in place, marking the key's record changed. */
  getForUpdate(key: string): V | undefined;
  set(key: string, value: V): void;
  /** Marks a value mutated in place as changed. */
  touch(key: string): void;
  delete(key: string): void;
  /** The keys whose record holds a value in this slot. */
  keys(): IterableIterator<string>;
  /** The keys whose record holds a value in this slot, with the value. */
  entries(): IterableIterator<[string, V]>;
  /** Calls `visit` with every key whose record holds a value in this slot: a scan of many keys, faster than `entries`. */
  forEach(visit: (value: V, key: string) => void): void;
  /** How many keys hold a value in this slot. */
  readonly size: number;
};

type Slots = unknown[];

/** The one key of the names state: the slot names, in the order records lay the slots out. */
export const SLOT_NAMES_KEY = "names";

/**
 * Records of slots over one keyed value state. `focus(key)` looks a key's record up once, marking
 * it changed: until `blur()`, reads and writes of its slots need no lookup, and every value
 * mutated in place reaches the next checkpoint whether or not the part marks it.
 *
 * With a `names` state, the slot names are stored with the records and a restart finds each slot's
 * values by name: slots are asked for (`slot`), then `seal` drops the values of restored slots no
 * part asked for. Without one, slots are found by position: they must be asked for in the same
 * order on every build.
 */
export class KeyedSlots {
  /** Slot names by position in the records: the restored ones first, then those new in this build. */
  private names: string[];
  private readonly storedNames: readonly string[] | undefined;
  private readonly handed = new Map<string, Slot<unknown>>();
  /** Per position, the keys holding a value; counted at `seal` (until then, on demand). */
  private counts: number[] | undefined;
  private focusKey: string | undefined;
  private focusRecord: Slots | undefined;

  /**
   * `records`: the state the records live in, restored from the last checkpoint; `names`: where
   * their slot names are kept (restored too), so that a build with other parts finds them by name.
   */
  constructor(
    private readonly records: KeyedValueState<Slots>,
    private readonly namesState?: KeyedValueState<string[]>,
  ) {
    this.storedNames = namesState?.get(SLOT_NAMES_KEY);
    this.names = [...(this.storedNames ?? [])];
  }

  /**
   * A slot for `name`: the restored values of the slot of that name (unless `isFresh`: it starts
   * empty whatever the records hold), or a new, empty one.
   */
  slot<V>(name: string, { isFresh = false }: { isFresh?: boolean } = {}): SlotState<V> {
    if (this.handed.has(name)) throw new Error(`two slots are named "${name}"`);
    let index = this.names.indexOf(name);
    if (index < 0) index = this.names.push(name) - 1;
    else if (isFresh) this.clear([index]);
    const slot = new Slot<V>(this, index);
    this.handed.set(name, slot as Slot<unknown>);
    return slot;
  }

  /**
   * Once every slot has been asked for: drops the values of the restored slots none asked for (a
   * part gone), closes the gaps they leave in the records, and stores the names with the next
   * checkpoint if they changed. Returns the names of the slots dropped.
   */
  seal(): string[] {
    const dropped = this.names.filter((name) => !this.handed.has(name));
    if (dropped.length > 0) {
      const kept = this.names.filter((name) => this.handed.has(name));
      const from = kept.map((name) => this.names.indexOf(name));
      for (const [key, record] of [...this.records.entries()]) {
        const next = from.map((i) => record[i]);
        if (next.every((value) => value === undefined)) this.records.delete(key);
        else this.records.set(key, next);
      }
      // No older checkpoint entry may keep a dropped value.
      this.records.requestSnapshot();
      kept.forEach((name, i) => (this.handed.get(name)!.index = i));
      this.names = kept;
    }
    if (this.namesState !== undefined && !sameNames(this.storedNames, this.names)) this.namesState.set(SLOT_NAMES_KEY, [...this.names]);
    this.counts = this.names.map(() => 0);
    for (const [, record] of this.records.entries()) for (let i = 0; i < record.length; i++) if (record[i] !== undefined) this.counts[i]++;
    return dropped;
  }

  /** The slot names, in the order records lay them out (before `seal`: the restored ones, then the new). */
  slotNames(): readonly string[] {
    return this.names;
  }

  /** `key`'s values by slot name (slots without one left out); undefined when it has no record. */
  valuesOf(key: string): Record<string, unknown> | undefined {
    const record = this.records.get(key);
    if (record === undefined) return undefined;
    return Object.fromEntries(this.names.flatMap((name, i) => (record[i] === undefined ? [] : [[name, record[i]]])));
  }

  /** Whether `key` has a record (a value in some slot). */
  has(key: string): boolean {
    return (key === this.focusKey ? this.focusRecord : this.records.get(key)) !== undefined;
  }

  /** How many keys have a record. */
  get size(): number {
    return this.records.size;
  }

  /** Every key with a record. */
  keys(): IterableIterator<string> {
    return this.records.keys();
  }

  /**
   * Calls `visit` with every key that has a record, that record in focus for reading (a scan: a
   * record on disk only under a memory budget stays there). `visit` must not change the record.
   */
  forEachRecord(visit: (key: string) => void): void {
    this.records.forEach((record, key) => {
      this.focusKey = key;
      this.focusRecord = record;
      visit(key);
    });
    this.blur();
  }

  /** Looks `key` up for the steps that follow, marking its record changed if it has one. */
  focus(key: string): void {
    this.focusKey = key;
    this.focusRecord = this.records.getForUpdate(key);
  }

  /**
   * Ends the focus. A checkpoint may come before the next focus: a record changed after it (by
   * work on other keys between steps) must be marked again, as any record not in focus is.
   */
  blur(): void {
    this.focusKey = undefined;
    this.focusRecord = undefined;
  }

  /**
   * Deletes `key`'s record, every slot's value at once, and has the next checkpoint rewrite the
   * state whole so that no older checkpoint entry keeps it; gives the names of the slots that held one.
   */
  erase(key: string): string[] {
    const record = key === this.focusKey ? this.focusRecord : this.records.get(key);
    if (record === undefined) return [];
    const held = this.names.filter((_, i) => record[i] !== undefined);
    if (this.counts !== undefined) for (let i = 0; i < record.length; i++) if (record[i] !== undefined) this.counts[i]--;
    this.records.delete(key);
    this.records.requestSnapshot();
    if (key === this.focusKey) this.focusRecord = undefined;
    return held;
  }

  /** @internal */
  read(key: string, index: number): unknown {
    const record = key === this.focusKey ? this.focusRecord : this.records.get(key);
    return record?.[index];
  }

  /** @internal */
  readForUpdate(key: string, index: number): unknown {
    const record = key === this.focusKey ? this.focusRecord : this.records.getForUpdate(key);
    return record?.[index];
  }

  /** @internal */
  write(key: string, index: number, value: unknown): void {
    let record = key === this.focusKey ? this.focusRecord : this.records.getForUpdate(key);
    if (record === undefined) {
      record = new Array<unknown>(this.names.length).fill(undefined);
      this.records.set(key, record);
      if (key === this.focusKey) this.focusRecord = record;
    }
    if (record[index] === undefined && this.counts !== undefined) this.counts[index]++;
    record[index] = value;
  }

  /** @internal */
  touch(key: string): void {
    if (key !== this.focusKey) this.records.touch(key);
  }

  /** @internal */
  remove(key: string, index: number): void {
    const record = key === this.focusKey ? this.focusRecord : this.records.get(key);
    if (record === undefined || record[index] === undefined) return;
    record[index] = undefined;
    if (this.counts !== undefined) this.counts[index]--;
    if (record.some((value) => value !== undefined)) return this.records.touch(key);
    this.records.delete(key);
    if (key === this.focusKey) this.focusRecord = undefined;
  }

  /** @internal */
  *keysOf(index: number): IterableIterator<string> {
    for (const [key, record] of this.records.entries()) if (record[index] !== undefined) yield key;
  }

  /** @internal */
  *entriesOf(index: number): IterableIterator<[string, unknown]> {
    for (const [key, record] of this.records.entries()) if (record[index] !== undefined) yield [key, record[index]];
  }

  /** @internal */
  forEachOf(index: number, visit: (value: unknown, key: string) => void): void {
    this.records.forEach((record, key) => {
      if (record[index] !== undefined) visit(record[index], key);
    });
  }

  /** @internal */
  countOf(index: number): number {
    if (this.counts !== undefined) return this.counts[index];
    let count = 0;
    for (const [, record] of this.records.entries()) if (record[index] !== undefined) count++;
    return count;
  }

  /** Empties the slots at `indices` in every record; a record left with nothing is deleted. */
  private clear(indices: number[]): void {
    for (const [key, record] of [...this.records.entries()]) {
      if (!indices.some((i) => record[i] !== undefined)) continue;
      const next = record.map((value, i) => (indices.includes(i) ? undefined : value));
      if (next.every((value) => value === undefined)) this.records.delete(key);
      else this.records.set(key, next);
    }
    this.records.requestSnapshot();
  }
}

function sameNames(a: readonly string[] | undefined, b: readonly string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((name, i) => name === b[i]);
}

class Slot<V> implements SlotState<V> {
  constructor(
    private readonly slots: KeyedSlots,
    /** @internal Moved by `seal` when dropped slots close their gaps. */
    public index: number,
  ) {}

  get(key: string): V | undefined {
    return this.slots.read(key, this.index) as V | undefined;
  }

  getForUpdate(key: string): V | undefined {
    return this.slots.readForUpdate(key, this.index) as V | undefined;
  }

  set(key: string, value: V): void {
    this.slots.write(key, this.index, value);
  }

  touch(key: string): void {
    this.slots.touch(key);
  }

  delete(key: string): void {
    this.slots.remove(key, this.index);
  }

  keys(): IterableIterator<string> {
    return this.slots.keysOf(this.index);
  }

  entries(): IterableIterator<[string, V]> {
    return this.slots.entriesOf(this.index) as IterableIterator<[string, V]>;
  }

  forEach(visit: (value: V, key: string) => void): void {
    this.slots.forEachOf(this.index, visit as (value: unknown, key: string) => void);
  }

  get size(): number {
    return this.slots.countOf(this.index);
  }
}
