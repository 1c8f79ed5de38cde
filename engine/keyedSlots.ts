// A record per key with one slot per registered state, for an operator made of several parts that
// each keep state by key: a step looks its key up once instead of once per part, and a checkpoint
// writes one entry per changed key instead of one per part.
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
  /** How many keys hold a value in this slot. */
  readonly size: number;
};

type Slots = unknown[];

/**
 * Records of slots over one keyed value state. `focus(key)` looks a key's record up once, marking
 * it changed: until `blur()`, reads and writes of its slots need no lookup, and every value
 * mutated in place reaches the next checkpoint whether or not the part marks it.
 */
export class KeyedSlots {
  private readonly names: string[] = [];
  private readonly counts: number[] = [];
  private focusKey: string | undefined;
  private focusRecord: Slots | undefined;

  /** `records`: the state the records live in, restored from the last checkpoint. */
  constructor(private readonly records: KeyedValueState<Slots>) {}

  /** A slot for `name`; slots must be asked for in the same order on every build. */
  slot<V>(name: string): SlotState<V> {
    if (this.names.includes(name)) throw new Error(`two slots are named "${name}"`);
    const index = this.names.push(name) - 1;
    let count = 0;
    for (const [, record] of this.records.entries()) if (record[index] !== undefined) count++;
    this.counts.push(count);
    return new Slot<V>(this, index);
  }

  /** Every key with a record. */
  keys(): IterableIterator<string> {
    return this.records.keys();
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
    for (let i = 0; i < record.length; i++) if (record[i] !== undefined) this.counts[i]--;
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
    if (record[index] === undefined) this.counts[index]++;
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
    this.counts[index]--;
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
  countOf(index: number): number {
    return this.counts[index];
  }
}

class Slot<V> implements SlotState<V> {
  constructor(
    private readonly slots: KeyedSlots,
    private readonly index: number,
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

  get size(): number {
    return this.slots.countOf(this.index);
  }
}
