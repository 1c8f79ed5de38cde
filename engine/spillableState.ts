// Keyed value state whose entries may leave memory under a memory budget (engine/memoryBudget.ts):
// its durable copy is laid out key → value on disk (StateStore.keyedDisk), and an entry not in
// memory is read back from there on its next use. Operators see the same KeyedValueState.
import { KeyedValueState, type Entry, type KeyedStateOptions } from "./keyedState.ts";
import type { Spillable } from "./memoryBudget.ts";
import type { KeyedDisk, StateDelta } from "./store.ts";

/**
 * An entry in memory. `usedAt`: the period of use (MemoryBudget's tick) it was last read or written
 * in, for least-recently-used eviction; `takenBy`: the checkpoint that took its current value
 * (Infinity while no checkpoint has, 0 when read back from disk): it may leave memory only once
 * that checkpoint is durable.
 */
type ResidentEntry<V> = Entry<V> & { usedAt: number; takenBy: number };

/**
 * A KeyedValueState that keeps its recently used entries in memory and the rest on disk only. The
 * key space is the union of the entries in memory (they override the disk) and those on disk,
 * minus the keys deleted since the checkpoint whose commit has landed (tombstones, until it has).
 * Scans (keys, entries, forEach) go through memory and then the disk, leaving what they read from
 * disk where it is: a value a scan gives from disk is a copy, so change it through getForUpdate.
 * No TTL: an entry on disk could not expire unread.
 */
export class SpillableValueState<V, S = V> extends KeyedValueState<V, S> implements Spillable {
  private readonly resident = this.entryByKey as Map<string, ResidentEntry<V>>;
  /** Keys on disk and nowhere in memory: what `size` adds to the entries in memory. */
  private coldCount: number;
  /** Keys deleted whose delete is not yet durable (the disk still has them), with the checkpoint that takes it (Infinity: none yet). */
  private readonly tombstones = new Map<string, number>();
  private useTick = 0;
  /** Entries read back from disk, over the state's life. */
  readBacks = 0;

  constructor(
    name: string,
    options: KeyedStateOptions<V, S>,
    restored: Iterable<[unknown, unknown]>,
    private readonly disk: KeyedDisk,
  ) {
    super(name, options);
    if (this.ttlMs !== Infinity) throw new Error(`state "${name}" has a TTL and cannot leave memory`);
    // A log being laid out keyed is loaded whole: its entries may leave once that commit has landed.
    for (const [key, stored] of restored) {
      if (stored === null) this.resident.delete(key as string);
      else this.resident.set(key as string, { value: this.decode(stored as S), expiresAtMs: Infinity, isDirty: false, usedAt: 0, takenBy: Infinity });
    }
    this.coldCount = disk.openedCount;
  }

  override get size(): number {
    return this.resident.size + this.coldCount;
  }

  override get liveEntries(): number {
    return this.size;
  }

  get residentEntries(): number {
    return this.resident.size;
  }

  override get(key: string): V | undefined {
    return this.used(key)?.value;
  }

  override getForUpdate(key: string): V | undefined {
    const entry = this.used(key);
    if (entry === undefined) return undefined;
    this.markDirty(key, entry);
    return entry.value;
  }

  override set(key: string, value: V): void {
    let entry = this.resident.get(key);
    if (entry === undefined) {
      // A key on disk only is replaced, not read: it is no longer cold.
      if (this.coldCount > 0 && !this.tombstones.has(key) && this.disk.has(key)) this.coldCount--;
      this.tombstones.delete(key);
      entry = { value, expiresAtMs: Infinity, isDirty: false, usedAt: this.useTick, takenBy: Infinity };
      this.resident.set(key, entry);
    } else {
      entry.value = value;
      entry.usedAt = this.useTick;
    }
    this.markDirty(key, entry);
  }

  override touch(key: string): void {
    const entry = this.used(key);
    if (entry !== undefined) this.markDirty(key, entry);
  }

  override delete(key: string): void {
    if (!this.resident.delete(key)) {
      if (this.coldCount === 0 || this.tombstones.has(key) || !this.disk.has(key)) return;
      this.coldCount--;
    }
    // The disk may hold the key (or will, from a checkpoint in flight) until this delete is durable.
    this.tombstones.set(key, Infinity);
    this.changed.push(key);
  }

  override *keys(): IterableIterator<string> {
    yield* this.resident.keys();
    if (this.coldCount === 0) return;
    for (const key of this.disk.keys()) if (this.isCold(key)) yield key;
  }

  override *entries(): IterableIterator<[string, V]> {
    for (const [key, entry] of this.resident) yield [key, entry.value];
    if (this.coldCount === 0) return;
    for (const [key, stored] of this.disk.entries()) if (this.isCold(key)) yield [key, this.decode(stored as S)];
  }

  override forEach(visit: (value: V, key: string) => void): void {
    for (const [key, entry] of this.resident) visit(entry.value, key);
    if (this.coldCount === 0) return;
    for (const [key, stored] of this.disk.entries()) if (this.isCold(key)) visit(this.decode(stored as S), key);
  }

  /** The keyed layout needs no rewrite to forget: a delete removes the key's only copy on disk. */
  override requestSnapshot(): void {}

  override takeDelta(): StateDelta {
    const takenBy = this.disk.packingCheckpointId;
    const delta: StateDelta = { puts: [], deletes: [] };
    const deleted = new Set<string>();
    for (const key of this.changed) {
      const entry = this.resident.get(key);
      if (entry === undefined) {
        if (deleted.has(key)) continue;
        deleted.add(key);
        delta.deletes.push(key);
        if (this.tombstones.has(key)) this.tombstones.set(key, takenBy);
      } else if (entry.isDirty) {
        entry.isDirty = false;
        entry.takenBy = takenBy;
        delta.puts.push([key, this.stored(entry)]);
      }
    }
    this.changed = [];
    this.forgetDurableTombstones();
    return delta;
  }

  /** Every entry, from memory and disk: a compaction rewrites them all, so all are taken by this checkpoint. */
  override snapshotAll(): Array<[unknown, unknown]> {
    this.takeDelta();
    const takenBy = this.disk.packingCheckpointId;
    const all: Array<[unknown, unknown]> = [];
    for (const [key, entry] of this.resident) {
      entry.takenBy = takenBy;
      all.push([key, this.stored(entry)]);
    }
    for (const key of this.tombstones.keys()) this.tombstones.set(key, takenBy);
    if (this.coldCount > 0) for (const [key, stored] of this.disk.entries()) if (this.isCold(key)) all.push([key, stored]);
    return all;
  }

  nextUseTick(tick: number): void {
    this.useTick = tick;
  }

  evictLeastRecentlyUsed(count: number): number {
    if (count <= 0) return 0;
    const durableId = this.disk.durableCheckpointId;
    // Evictable entries per period of last use, to find the oldest `count` without sorting them.
    const countByTick = new Map<number, number>();
    for (const entry of this.resident.values()) {
      if (!entry.isDirty && entry.takenBy <= durableId) countByTick.set(entry.usedAt, (countByTick.get(entry.usedAt) ?? 0) + 1);
    }
    let left = count;
    let lastWholeTick = -Infinity;
    let partTick = Infinity;
    let partCount = 0;
    for (const tick of [...countByTick.keys()].sort((a, b) => a - b)) {
      const n = countByTick.get(tick)!;
      if (n > left) {
        partTick = tick;
        partCount = left;
        break;
      }
      left -= n;
      lastWholeTick = tick;
    }
    let evicted = 0;
    for (const [key, entry] of this.resident) {
      if (entry.isDirty || entry.takenBy > durableId) continue;
      if (entry.usedAt <= lastWholeTick || (entry.usedAt === partTick && partCount-- > 0)) {
        this.resident.delete(key);
        evicted++;
      }
    }
    this.coldCount += evicted;
    return evicted;
  }

  /** The entry of `key`, read back from disk when it is there only; marked used now. */
  private used(key: string): ResidentEntry<V> | undefined {
    let entry = this.resident.get(key);
    if (entry === undefined) {
      if (this.coldCount === 0 || this.tombstones.has(key)) return undefined;
      const stored = this.disk.get(key);
      if (stored === undefined) return undefined;
      this.coldCount--;
      this.readBacks++;
      entry = { value: this.decode(stored as S), expiresAtMs: Infinity, isDirty: false, usedAt: this.useTick, takenBy: 0 };
      this.resident.set(key, entry);
      return entry;
    }
    entry.usedAt = this.useTick;
    return entry;
  }

  /** A key on disk whose value is there only: not in memory, not deleted. */
  private isCold(key: string): boolean {
    return !this.resident.has(key) && !this.tombstones.has(key);
  }

  /** Tombstones whose delete has landed: the disk no longer has their key. */
  private forgetDurableTombstones(): void {
    const durableId = this.disk.durableCheckpointId;
    for (const [key, takenBy] of this.tombstones) if (takenBy <= durableId) this.tombstones.delete(key);
  }
}
