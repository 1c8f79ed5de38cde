// Keyed state held in memory, with the changes since the last checkpoint tracked per key, and an
// optional event-time TTL. The StateStore persists it; operators only see get/set/delete.
import type { Checkpointable, StateDelta } from "./store.ts";

export type KeyedStateOptions<V, S> = {
  /** Entries not written for this long in event time read as absent and are dropped. Default: no TTL. */
  ttlMs?: number;
  /** Turns a value into what is stored (e.g. Sets into arrays). Default: stored as is. */
  encode?: (value: V) => S;
  decode?: (stored: S) => V;
  /**
   * The state may keep only its recently used entries in memory, the rest on disk, when the job has
   * a memory budget (engine/spillableState.ts). For states without a TTL whose values no one holds
   * on to between steps (they are read through get/getForUpdate each time). Default: false.
   */
  mayLeaveMemory?: boolean;
};

export type Entry<V> = { value: V; expiresAtMs: number; isDirty: boolean };

/**
 * One value per key. Values may be mutated in place: `getForUpdate` reads a value and marks it
 * changed with a single lookup (the hot path), `touch` marks it afterwards. With a TTL, expiry is
 * measured against the watermark the operator passes to `expire`.
 */
export class KeyedValueState<V, S = V> implements Checkpointable {
  protected readonly entryByKey = new Map<string, Entry<V>>();
  /** Keys changed since the last checkpoint; a flag on the entry keeps most repeats out. */
  protected changed: string[] = [];
  protected readonly ttlMs: number;
  private readonly hasTtl: boolean;
  protected readonly encode: (value: V) => S;
  protected readonly decode: (stored: S) => V;
  private nowMs = -Infinity;
  private isSnapshotAsked = false;

  /** `restored`: the replayed log of this state (see StateStore.restored). */
  constructor(
    readonly name: string,
    options: KeyedStateOptions<V, S> = {},
    restored: Iterable<[unknown, unknown]> = [],
  ) {
    this.ttlMs = options.ttlMs ?? Infinity;
    this.hasTtl = this.ttlMs !== Infinity;
    this.encode = options.encode ?? ((v: V) => v as unknown as S);
    const decode = (this.decode = options.decode ?? ((s: S) => s as unknown as V));
    // A replayed log: later pairs replace earlier ones, null deletes. Without a TTL a value is
    // stored bare; with one, as [value, expiresAtMs].
    const hasTtl = this.ttlMs !== Infinity;
    for (const [key, stored] of restored) {
      if (stored === null) {
        this.entryByKey.delete(key as string);
        continue;
      }
      const [v, x] = hasTtl ? (stored as [S, number]) : [stored as S, Infinity];
      this.entryByKey.set(key as string, { value: decode(v), expiresAtMs: x, isDirty: false });
    }
  }

  get size(): number {
    return this.entryByKey.size;
  }

  get liveEntries(): number {
    return this.entryByKey.size;
  }

  get(key: string): V | undefined {
    return this.liveEntry(key)?.value;
  }

  /** Reads the value to mutate it in place, marking it changed. */
  getForUpdate(key: string): V | undefined {
    const entry = this.liveEntry(key);
    if (entry === undefined) return undefined;
    this.markDirty(key, entry);
    return entry.value;
  }

  /** The entry of `key` unless absent or past its TTL (then dropped). */
  private liveEntry(key: string): Entry<V> | undefined {
    const entry = this.entryByKey.get(key);
    // Without a TTL, never look at expiresAtMs: a boxed number, one more memory access per event.
    if (entry === undefined || !this.hasTtl || entry.expiresAtMs > this.nowMs) return entry;
    this.delete(key);
    return undefined;
  }

  /** Stores `value` for `key`; `timeMs` is the event time of the write, from which a TTL counts. */
  set(key: string, value: V, timeMs = this.nowMs): void {
    const expiresAtMs = this.hasTtl ? timeMs + this.ttlMs : Infinity;
    let entry = this.entryByKey.get(key);
    if (entry) {
      entry.value = value;
      if (this.hasTtl) entry.expiresAtMs = expiresAtMs;
    } else {
      entry = { value, expiresAtMs, isDirty: false };
      this.entryByKey.set(key, entry);
    }
    this.markDirty(key, entry);
  }

  /** Marks a value mutated in place as changed. */
  touch(key: string): void {
    const entry = this.entryByKey.get(key);
    if (entry) this.markDirty(key, entry);
  }

  delete(key: string): void {
    if (this.entryByKey.delete(key)) this.changed.push(key);
  }

  keys(): IterableIterator<string> {
    return this.entryByKey.keys();
  }

  /** Every key with its value, those past their TTL left out. */
  *entries(): IterableIterator<[string, V]> {
    for (const [key, entry] of this.entryByKey) if (!this.hasTtl || entry.expiresAtMs > this.nowMs) yield [key, entry.value];
  }

  /** Calls `visit` with every key and value, those past their TTL left out: a scan without an iterator's cost per entry. */
  forEach(visit: (value: V, key: string) => void): void {
    for (const [key, entry] of this.entryByKey) if (!this.hasTtl || entry.expiresAtMs > this.nowMs) visit(entry.value, key);
  }

  /** Moves the TTL clock to `watermarkMs` (event time), so entries past their TTL read as absent. */
  expire(watermarkMs: number): void {
    this.nowMs = watermarkMs;
  }

  /** Has the next checkpoint replace this state's log with a snapshot, so no older entry keeps an erased value. */
  requestSnapshot(): void {
    this.isSnapshotAsked = true;
  }

  takeSnapshotRequest(): boolean {
    const isAsked = this.isSnapshotAsked;
    this.isSnapshotAsked = false;
    return isAsked;
  }

  snapshotAll(): Array<[unknown, unknown]> {
    this.takeDelta(); // expires what is due and clears the change list the snapshot supersedes
    const all: Array<[unknown, unknown]> = [];
    for (const [key, entry] of this.entryByKey) all.push([key, this.stored(entry)]);
    return all;
  }

  takeDelta(): StateDelta {
    const delta: StateDelta = { puts: [], deletes: [] };
    if (this.ttlMs !== Infinity) {
      for (const [key, entry] of this.entryByKey) if (entry.expiresAtMs <= this.nowMs) this.delete(key);
    }
    const deleted = new Set<string>();
    for (const key of this.changed) {
      const entry = this.entryByKey.get(key);
      if (entry === undefined) {
        if (!deleted.has(key)) delta.deletes.push(key);
        deleted.add(key);
      } else if (entry.isDirty) {
        // The flag, not a Set, keeps a key listed twice (deleted, then set again) to one put.
        entry.isDirty = false;
        delta.puts.push([key, this.stored(entry)]);
      }
    }
    this.changed = [];
    return delta;
  }

  protected stored(entry: Entry<V>): unknown {
    const v = this.encode(entry.value);
    return this.ttlMs === Infinity ? v : [v, entry.expiresAtMs];
  }

  protected markDirty(key: string, entry: Entry<V>): void {
    if (entry.isDirty) return;
    entry.isDirty = true;
    this.changed.push(key);
  }
}

/** A map of values per key (e.g. a count per item within each key), stored as one entry per key. */
export class KeyedMapState<V> implements Checkpointable {
  private readonly inner: KeyedValueState<Map<string, V>, Array<[string, V]>>;

  constructor(name: string, options: { ttlMs?: number } = {}, restored: Iterable<[unknown, unknown]> = []) {
    this.inner = new KeyedValueState(
      name,
      { ttlMs: options.ttlMs, encode: (m) => [...m], decode: (a) => new Map(a) },
      restored,
    );
  }

  get name(): string {
    return this.inner.name;
  }

  get(key: string, field: string): V | undefined {
    return this.inner.get(key)?.get(field);
  }

  fields(key: string): ReadonlyMap<string, V> {
    return this.inner.get(key) ?? new Map();
  }

  set(key: string, field: string, value: V, timeMs?: number): void {
    const map = this.inner.get(key) ?? new Map<string, V>();
    map.set(field, value);
    this.inner.set(key, map, timeMs);
  }

  deleteField(key: string, field: string): void {
    const map = this.inner.get(key);
    if (!map?.delete(field)) return;
    if (map.size === 0) this.inner.delete(key);
    else this.inner.touch(key);
  }

  delete(key: string): void {
    this.inner.delete(key);
  }

  expire(watermarkMs: number): void {
    this.inner.expire(watermarkMs);
  }

  get liveEntries(): number {
    return this.inner.liveEntries;
  }

  takeDelta(): StateDelta {
    return this.inner.takeDelta();
  }

  snapshotAll(): Array<[unknown, unknown]> {
    return this.inner.snapshotAll();
  }
}
