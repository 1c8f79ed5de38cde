// The durable side of state: one LMDB environment per job, a named database per registered state,
// and the checkpoint transaction that writes every change, the positions, the outputs held for
// sinks and the metadata at once. Every value is checksummed, and the file is checked before LMDB
// maps it, so damaged state is refused with a message instead of read wrongly or crashing.
import { accessSync, closeSync, constants, existsSync, fstatSync, mkdirSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { open, type Database, type RootDatabase } from "lmdb";
import { pack, Packr, unpack } from "msgpackr";
import { StateCorrupt, StateDirUnusable, StateUnreadable } from "./errors.ts";
import { MAX_STATE_DATABASES } from "./storeLimits.ts";
import { TimeSlice } from "./timeSlice.ts";
import { MemoryBudget } from "./memoryBudget.ts";

/** What a registered state hands to a checkpoint: the entries changed since the last one. */
export type StateDelta = { puts: Array<[unknown, unknown]>; deletes: unknown[] };

/** Something whose changes a checkpoint persists: keyed state, timers. */
export type Checkpointable = {
  readonly name: string;
  /** Entries a snapshot would hold now, to decide when the log is worth compacting. */
  readonly liveEntries: number;
  takeDelta(): StateDelta;
  /** Every live entry, encoded as a delta would carry it; used to compact the log. */
  snapshotAll(): Array<[unknown, unknown]>;
  /**
   * True (once) when the next checkpoint must replace the log with a snapshot whatever its size:
   * a value was erased, and the log's older entries must not keep it. Optional.
   */
  takeSnapshotRequest?(): boolean;
};

export type CheckpointMeta = {
  /**
   * What the state holds and depends on, as the job describes it (JSON; see JobOptions.shape).
   * Undefined in a checkpoint of a flusso that described its state by a fingerprint only.
   */
  shape: unknown;
  /** Names this state's life: made when the state dir is first used, kept across restarts, new after a reset. */
  runId?: string;
  /** Keyed check values of secrets the state depends on (never the secrets), by what they check. */
  keyChecks?: Record<string, string>;
  sourcePosition: unknown;
  sinkPositions: Record<string, unknown>;
  watermarks: unknown;
  counters: Record<string, number>;
  checkpointId: number;
  takenAtMs: number;
  /** Event time has reached its end: the source was read to its end and everything fired. */
  isEnded?: boolean;
};

/** Where the checkpoint metadata lives; "checkpoint" held it, unchecksummed, before layout 2. */
const META_KEY = "checkpoint/2";
const OLD_META_KEY = "checkpoint";
/**
 * Objects of one shape (a state's values) are written as msgpackr records: the keys once per chunk,
 * not once per value (~25% less time and 30% fewer bytes than plain maps). The record definitions
 * travel inside each chunk, so any unpack reads it.
 */
const chunkPackr = new Packr({ useRecords: true });
/**
 * Entries per chunk: large enough that per-entry LMDB overhead vanishes, small enough to stream on
 * restore and to pack in a few ms (a chunk is what commitInSlices packs between two yields; 2,048 of a
 * behaviour pipeline's user records took 20-40 ms).
 */
const CHUNK_ENTRIES = 256;
/** A state's log is rewritten as a snapshot once it holds this many times its live entries. */
const COMPACT_RATIO = 3;
const COMPACT_MIN_ENTRIES = 50_000;

/**
 * Where a state's log starts. `isKeyed`: the state is laid out key → value instead (a state that may
 * leave memory, see keyedDisk), so it has no log to replay or compact.
 */
type LogInfo = { baseCheckpointId: number; loggedEntries: number; isKeyed?: boolean };

/**
 * A state's entries as the keyed layout holds them on disk (key → value), for a state that keeps only
 * part of them in memory (engine/spillableState.ts). Reads see the last commit that landed; values
 * come as a delta carries them (the state's stored form).
 */
export type KeyedDisk = {
  /** Entries on disk when the state was opened: 0 when it starts empty or is laid out keyed only from the next commit. */
  readonly openedCount: number;
  /** The checkpoint whose state is being taken now (during takeDelta and snapshotAll). */
  readonly packingCheckpointId: number;
  /** The newest checkpoint whose commit has landed: what it wrote is on disk. */
  readonly durableCheckpointId: number;
  get(key: string): unknown;
  has(key: string): boolean;
  /** Every key on disk, in key order. */
  keys(): Iterable<string>;
  /** Every key on disk with its value, in key order. */
  entries(): Iterable<[string, unknown]>;
};

/** The metadata as stored: the job's, plus where each state's log starts. */
type StoredMeta = CheckpointMeta & { logs: Record<string, LogInfo> };

/**
 * What a commit wrote (`entries`, and `bytes` as encoded: state changes, held outputs, metadata) and
 * how long it held the caller (`snapshotMs`) and took to be durable (`durableMs`).
 */
export type CommitInfo = { entries: number; bytes: number; snapshotMs: number; durableMs: number };

/**
 * A sink's part of a checkpoint: the outputs it holds back until this checkpoint commits (any
 * msgpack value), and the newest checkpoint whose held outputs it has delivered, which it holds no more.
 */
export type SinkHold = { sink: string; held?: unknown; deliveredThrough: number };

/**
 * One checkpoint's write, encoded: what `commit` writes to LMDB in one transaction, and what a mirror
 * (engine/cluster/checkpointLog.ts) keeps elsewhere so that another store can apply it
 * (StateStore.apply) and hold the same checkpoint. Plain data: msgpack carries it as it is.
 */
export type Transaction = {
  checkpointId: number;
  /**
   * Each state's chunks; a compaction replaces the state's log with them. `isKeyed`: the state is laid
   * out key → value, each chunk a list of [key, checksummed value or null] written as puts and deletes
   * (a compaction replaces every entry); `clearsAll`: a compaction that changes the layout, so every
   * entry of the old one goes.
   */
  writes: Array<{ name: string; chunks: Buffer[]; isCompaction: boolean; isKeyed?: boolean; clearsAll?: boolean }>;
  /** States no one registered since forgetUnused: their entries go with this commit. */
  unused: string[];
  /** The sinks whose held outputs are kept (every other sink's go); undefined: all are kept. */
  keptSinks?: string[];
  storedMeta: Buffer;
  held: Array<{ sink: string; deliveredThrough: number; bytes?: Buffer }>;
  /**
   * A base: every state is compacted and `outbox` holds every output still held, so the transaction
   * alone is the whole checkpoint and applying it starts the store over (StateStore.requestBase).
   */
  outbox?: Array<{ sink: string; checkpointId: number; bytes: Buffer }>;
};

/**
 * Keeps each transaction elsewhere once LMDB has it; a checkpoint is durable when both have it. A
 * rejection fails the checkpoint: nothing it held is released.
 */
export type CommitMirror = (transaction: Transaction, meta: CheckpointMeta) => Promise<{ wantsBase?: boolean } | void>;

/** A commit encoded and ready to write (StateStore.pack), with what it will report. */
type PackedCommit = {
  meta: CheckpointMeta;
  transaction: Transaction;
  entries: number;
  bytes: number;
  startedAtMs: number;
  snapshotMs: number;
};

/** Held outputs of one sink in one committed checkpoint, as `SinkHold.held` gave them. */
export type HeldOutputs = { checkpointId: number; held: unknown };

/**
 * The durable store. Each state is a log of delta chunks keyed [checkpointId, chunkNo], each chunk
 * a msgpack list of [key, value] pairs (value null: deleted). Restoring replays the log from the
 * state's base; a compaction writes a full snapshot as the new base and drops the older chunks, in
 * the same transaction as the checkpoint it belongs to.
 */
export class StateStore {
  private readonly root: RootDatabase;
  private readonly databases = new Map<string, Database>();
  private readonly members: Checkpointable[] = [];
  private readonly logs = new Map<string, LogInfo>();
  private readonly meta: StoredMeta | undefined;
  /** States (names, or prefixes ending in "/") that start empty: not restored, their log replaced at the next commit. */
  private fresh: readonly string[] = [];
  /** States started empty whose log the next commit replaces. */
  private readonly toReplace = new Set<string>();
  /** Set by forgetUnused: the sinks whose held outputs the next commit keeps (every other sink's go). */
  private keptSinks: ReadonlySet<string> | undefined;
  private readonly mirror?: CommitMirror;
  /** Set by requestBase: the next commit is a base. */
  private isBaseRequested = false;
  /** States laid out key → value from the next commit on (keyedDisk). */
  private readonly keyedStates = new Set<string>();
  /** The checkpoint being packed, and the newest durable one: what keyed states judge eviction by. */
  private packingCheckpointId = 0;
  private durableCheckpointId = 0;
  /** With a memory budget: the states that may leave memory, and when they do (at each commit's cut). */
  readonly memoryBudget?: MemoryBudget;

  /**
   * `encryptionKey` (32 bytes): the state is encrypted at rest (LMDB's ChaCha8), and a dir written
   * with another key, or without one, is refused as unreadable. `readOnly`: to look at the last
   * checkpoint, beside a job that may be writing the next (LMDB's readers see committed
   * transactions only); nothing can be committed.
   */
  constructor(
    readonly dir: string,
    private readonly compactMinEntries = COMPACT_MIN_ENTRIES,
    {
      encryptionKey,
      readOnly = false,
      mirror,
      memoryBudget,
    }: {
      encryptionKey?: string;
      readOnly?: boolean;
      /** Where each commit is kept durably besides: LMDB is then a cache and is not synced to disk. */
      mirror?: CommitMirror;
      /** Keyed states that opt in keep only their recently used entries in memory (MemoryBudget). Default: everything in memory. */
      memoryBudget?: MemoryBudget;
    } = {},
  ) {
    this.mirror = mirror;
    this.memoryBudget = memoryBudget;
    try {
      if (!readOnly) mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.R_OK | (readOnly ? 0 : constants.W_OK) | constants.X_OK);
    } catch (error) {
      throw new StateDirUnusable(dir, error);
    }
    checkDataFile(dir);
    try {
      // With a mirror, LMDB is a cache: a system crash that undoes its last transactions (never its
      // consistency: no write map) leaves it behind the mirror, and it is rebuilt from there.
      this.root = open({ path: dir, maxDbs: MAX_STATE_DATABASES, compression: false, readOnly, noSync: mirror !== undefined, ...(encryptionKey === undefined ? {} : { encryptionKey }) });
    } catch (error) {
      throw openFailure(dir, encryptionKey !== undefined, error);
    }
    try {
      // A wrong key shows on the first read, as a page LMDB cannot find.
      this.meta = this.readStoredMeta();
    } catch (error) {
      if (error instanceof StateCorrupt) throw error;
      throw new StateUnreadable(dir, encryptionKey !== undefined, error);
    }
    for (const [name, info] of Object.entries(this.meta?.logs ?? {})) this.logs.set(name, info);
    this.durableCheckpointId = this.meta?.checkpointId ?? 0;
  }

  readMeta(): CheckpointMeta | undefined {
    if (this.meta === undefined) return undefined;
    const { logs, ...meta } = this.meta;
    return meta;
  }

  /** The names of the states the last checkpoint holds. */
  stateNames(): string[] {
    return [...this.logs.keys()];
  }

  /**
   * Has the states named in `states` (or under a prefix ending in "/" there) start empty, whatever
   * the checkpoint holds: nothing of them is restored, and the next commit replaces their log.
   */
  startFresh(states: readonly string[]): void {
    this.fresh = states;
  }

  /**
   * Has the next commit forget what the job no longer uses: the states no one registered (an
   * operator or a state gone from the job) and the outputs held for sinks other than `sinks`.
   * Called once every state is registered.
   */
  forgetUnused(sinks: readonly string[]): void {
    this.keptSinks = new Set(sinks);
  }

  /**
   * The log of a state since its base, oldest first: replaying it, a later pair for a key replaces
   * an earlier one and a null value deletes the key. Streamed, so a large state is never held twice.
   */
  restored(name: string): Iterable<[unknown, unknown]> {
    if (this.isFresh(name)) {
      if (this.logs.has(name)) this.toReplace.add(name);
      return [];
    }
    return this.logs.has(name) ? this.replayed(name) : [];
  }

  private isFresh(name: string): boolean {
    return this.fresh.some((f) => f === name || (f.endsWith("/") && name.startsWith(f)));
  }

  /**
   * Lays state `name` out key → value from the next commit on, for a state that keeps only part of
   * its entries in memory and reads the rest from disk as needed. Returns what to load into memory
   * now (nothing when it is laid out keyed already; its whole log when it was a log, which the next
   * commit rewrites keyed) and its entries on disk. Call before `register`.
   */
  keyedDisk(name: string): { restored: Iterable<[unknown, unknown]>; disk: KeyedDisk } {
    this.keyedStates.add(name);
    const isKeyedOnDisk = this.logs.get(name)?.isKeyed === true && !this.isFresh(name);
    const restored = isKeyedOnDisk ? [] : this.restored(name);
    const db = this.stateDatabase(name);
    const what = (key: unknown) => `state "${name}" at ${JSON.stringify(key)}`;
    const value = (key: unknown, bytes: Buffer) => this.checked(bytes, what(key));
    const store = this;
    const disk: KeyedDisk = {
      openedCount: isKeyedOnDisk ? (db.getStats() as { entryCount: number }).entryCount : 0,
      get packingCheckpointId() {
        return store.packingCheckpointId;
      },
      get durableCheckpointId() {
        return store.durableCheckpointId;
      },
      get: (key) => {
        const bytes = db.get(key) as Buffer | undefined;
        return bytes === undefined ? undefined : value(key, bytes);
      },
      has: (key) => db.doesExist(key),
      keys: () => db.getKeys() as Iterable<string>,
      *entries() {
        for (const { key, value: bytes } of db.getRange()) yield [key as string, value(key, bytes as Buffer)];
      },
    };
    return { restored, disk };
  }

  private *replayed(name: string): Iterable<[unknown, unknown]> {
    const info = this.logInfo(name);
    if (info.isKeyed === true) {
      for (const { key, value } of this.stateDatabase(name).getRange()) yield [key, this.checked(value as Buffer, `state "${name}" at ${JSON.stringify(key)}`)];
      return;
    }
    for (const { key, value } of this.stateDatabase(name).getRange({ start: [info.baseCheckpointId] })) {
      yield* this.checked(value as Buffer, `state "${name}" at ${JSON.stringify(key)}`) as Array<[unknown, unknown]>;
    }
  }

  /** The outputs `sink` held in committed checkpoints and has not reported delivered, oldest first. */
  heldOutputs(sink: string): HeldOutputs[] {
    const found: HeldOutputs[] = [];
    for (const { key, value } of this.outboxDatabase().getRange({ start: [sink], end: [sink, Number.MAX_SAFE_INTEGER] })) {
      const checkpointId = (key as [string, number])[1];
      found.push({ checkpointId, held: this.checked(value as Buffer, `outputs held for ${sink} at checkpoint ${checkpointId}`) });
    }
    return found;
  }

  /** Entries held now, over every registered state. */
  liveEntries(): number {
    let entries = 0;
    for (const member of this.members) entries += member.liveEntries;
    return entries;
  }

  register(member: Checkpointable): void {
    if (this.members.some((m) => m.name === member.name)) {
      throw new Error(`state "${member.name}" is registered twice`);
    }
    this.stateDatabase(member.name);
    this.members.push(member);
  }

  /**
   * Commits one checkpoint, all or nothing:
   * 1. now, at the caller's cut: takes every registered state's changes since the last checkpoint
   *    (or, where its log has grown well past its live entries, a full snapshot that replaces the
   *    log) and encodes them with the metadata, so later changes cannot leak into this checkpoint;
   * 2. then, without holding the caller: writes it all in ONE transaction and makes it durable.
   * Transactions land in the order of the calls. A crash before the promise resolves leaves the
   * previous checkpoint in place, which recovery then uses. `holds`: each sink's outputs held until
   * this checkpoint commits, stored with it; those it has delivered are deleted with it.
   */
  commit(meta: CheckpointMeta, holds: SinkHold[] = []): Promise<CommitInfo> {
    const packing = this.pack(meta, holds);
    let step = packing.next();
    while (!step.done) step = packing.next();
    return this.write(step.value);
  }

  /**
   * As `commit`, but packing the state in slices of about `sliceMs`, yielding the thread between them
   * (a compaction packs every entry of a state: tens of ms for 100k users). The caller must change no
   * state until this resolves; it resolves with the commit's durability, as `commit` returns it.
   */
  async commitInSlices(meta: CheckpointMeta, holds: SinkHold[], sliceMs: number): Promise<{ durable: Promise<CommitInfo> }> {
    const packing = this.pack(meta, holds);
    const slice = new TimeSlice(sliceMs);
    let step = packing.next();
    while (!step.done) {
      if (slice.isOver()) await slice.yieldThread();
      step = packing.next();
    }
    return { durable: this.write(step.value) };
  }

  /** Step 1 of a commit: takes and encodes what changed (or everything, to compact), a chunk per step. */
  private *pack(meta: CheckpointMeta, holds: SinkHold[]): Generator<void, PackedCommit> {
    const startedAtMs = performance.now();
    // 1. The previous commit has landed: entries it wrote may leave memory first, so the heap is measured before this one takes its copy.
    this.memoryBudget?.rebalance();
    this.packingCheckpointId = meta.checkpointId;
    let entries = 0;
    const isBase = this.isBaseRequested;
    this.isBaseRequested = false;
    const writes: Transaction["writes"] = [];
    for (const member of this.members) {
      const info = { ...this.logInfo(member.name) };
      const isKeyed = this.keyedStates.has(member.name);
      // A state laid out one way on disk and the other now (a memory budget set or removed) is rewritten whole.
      const isRelaidOut = this.logs.has(member.name) && (info.isKeyed === true) !== isKeyed;
      const delta = member.takeDelta();
      const changed = delta.puts.length + delta.deletes.length;
      const isStartedFresh = this.toReplace.delete(member.name);
      const isSnapshotAsked = member.takeSnapshotRequest?.() === true || isStartedFresh || isBase || isRelaidOut;
      // The keyed layout has no log to outgrow: only a reset, a base or a change of layout rewrites it.
      const isCompaction = isSnapshotAsked || (!isKeyed && info.loggedEntries + changed > Math.max(this.compactMinEntries, COMPACT_RATIO * member.liveEntries));
      const pairs: Array<[unknown, unknown]> = isCompaction
        ? member.snapshotAll()
        : [...delta.puts, ...delta.deletes.map((key): [unknown, unknown] => [key, null])];
      const chunks: Buffer[] = [];
      for (let at = 0; at < pairs.length; at += CHUNK_ENTRIES) {
        const slice = pairs.slice(at, at + CHUNK_ENTRIES);
        // Keyed: each value checksummed on its own, as it will be read back on its own.
        chunks.push(withChecksum(chunkPackr.pack(isKeyed ? slice.map(([key, v]) => [key, v === null ? null : withChecksum(pack(v))]) : slice)));
        yield;
      }
      if (isCompaction) {
        info.baseCheckpointId = meta.checkpointId;
        info.loggedEntries = 0;
      }
      if (isKeyed) info.isKeyed = true;
      else {
        delete info.isKeyed;
        info.loggedEntries += pairs.length;
      }
      entries += pairs.length;
      this.logs.set(member.name, info);
      writes.push({ name: member.name, chunks, isCompaction, ...(isKeyed ? { isKeyed } : {}), ...(isRelaidOut ? { clearsAll: true } : {}) });
    }
    // States no one registered since forgetUnused: their entries go with this commit.
    const unused = this.keptSinks === undefined ? [] : [...this.logs.keys()].filter((name) => !this.members.some((m) => m.name === name));
    for (const name of unused) this.logs.delete(name);
    const keptSinks = this.keptSinks === undefined ? undefined : [...this.keptSinks];
    this.keptSinks = undefined;
    const storedMeta = withChecksum(pack({ ...meta, logs: Object.fromEntries(this.logs) } satisfies StoredMeta));
    const held = holds.map(({ sink, held, deliveredThrough }) => ({ sink, deliveredThrough, bytes: held === undefined ? undefined : withChecksum(pack(held)) }));
    const transaction: Transaction = { checkpointId: meta.checkpointId, writes, unused, keptSinks, storedMeta, held };
    // The outputs previous checkpoints hold are in LMDB: the previous commit has landed (at most one is in flight).
    if (isBase) transaction.outbox = this.outboxEntries();
    let bytes = storedMeta.length;
    for (const { chunks } of writes) for (const chunk of chunks) bytes += chunk.length;
    for (const h of held) bytes += h.bytes?.length ?? 0;
    for (const o of transaction.outbox ?? []) bytes += o.bytes.length;
    return { meta, transaction, entries, bytes, startedAtMs, snapshotMs: performance.now() - startedAtMs };
  }

  /** Every output held in LMDB, as a base carries it. */
  private outboxEntries(): NonNullable<Transaction["outbox"]> {
    const entries: NonNullable<Transaction["outbox"]> = [];
    for (const { key, value } of this.outboxDatabase().getRange()) {
      const [sink, checkpointId] = key as [string, number];
      entries.push({ sink, checkpointId, bytes: value as Buffer });
    }
    return entries;
  }

  /**
   * Makes the next commit a base: every state compacted and every held output carried, so that
   * its transaction alone holds the whole checkpoint (a mirror then drops what came before it).
   */
  requestBase(): void {
    this.isBaseRequested = true;
  }

  /**
   * Writes a transaction another store committed (a mirror kept it), as that store wrote it. The
   * caller applies them in the order they were committed, from a base on, to an empty store no job
   * uses; the store then holds that checkpoint.
   */
  async apply(transaction: Transaction): Promise<void> {
    await this.root.transaction(() => this.writeTransaction(transaction));
  }

  /** Step 2 of a commit: one LMDB transaction, then the mirror's copy; resolves once both are durable. */
  private async write({ meta, transaction, entries, bytes, startedAtMs, snapshotMs }: PackedCommit): Promise<CommitInfo> {
    await this.root.transaction(() => this.writeTransaction(transaction));
    const mirrored = await this.mirror?.(transaction, meta);
    // Only now may what this checkpoint wrote leave memory: a crash can no longer take it back.
    this.durableCheckpointId = Math.max(this.durableCheckpointId, transaction.checkpointId);
    if (mirrored?.wantsBase) this.isBaseRequested = true;
    return { entries, bytes, snapshotMs, durableMs: performance.now() - startedAtMs };
  }

  /** A transaction's writes, inside an LMDB transaction. */
  private writeTransaction({ checkpointId, writes, unused, keptSinks, storedMeta, held, outbox: base }: Transaction): void {
    const outbox = this.outboxDatabase();
    for (const { name, chunks, isCompaction, isKeyed = false, clearsAll = false } of writes) {
      const db = this.stateDatabase(name);
      if (isCompaction) for (const key of db.getKeys(isKeyed || clearsAll ? undefined : { end: [checkpointId] })) db.remove(key);
      if (!isKeyed) chunks.forEach((chunk, n) => db.put([checkpointId, n], chunk));
      else {
        for (const chunk of chunks) {
          for (const [key, bytes] of this.checked(chunk, `a change of state "${name}" in checkpoint ${checkpointId}`) as Array<[string, Uint8Array | null]>) {
            if (bytes === null) db.remove(key);
            else db.put(key, bytes);
          }
        }
      }
    }
    for (const name of unused) {
      const db = this.stateDatabase(name);
      for (const key of db.getKeys()) db.remove(key);
    }
    for (const { sink, checkpointId: heldBy, bytes } of base ?? []) outbox.put([sink, heldBy], bytes);
    if (keptSinks !== undefined) for (const key of outbox.getKeys()) if (!keptSinks.includes((key as [string, number])[0])) outbox.remove(key);
    for (const { sink, deliveredThrough, bytes } of held) {
      for (const key of outbox.getKeys({ start: [sink], end: [sink, deliveredThrough + 1] })) outbox.remove(key);
      if (bytes !== undefined) outbox.put([sink, checkpointId], bytes);
    }
    this.binaryDatabase("__meta").put(META_KEY, storedMeta);
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  private logInfo(name: string): LogInfo {
    return this.logs.get(name) ?? { baseCheckpointId: 0, loggedEntries: 0 };
  }

  private readStoredMeta(): StoredMeta | undefined {
    const metaDb = this.binaryDatabase("__meta");
    const bytes = metaDb.get(META_KEY) as Buffer | undefined;
    if (bytes !== undefined) return this.checked(bytes, "the checkpoint metadata") as StoredMeta;
    // Written by a flusso that laid state out otherwise: refused as another pipeline's would be.
    if (metaDb.get(OLD_META_KEY) !== undefined) {
      return { shape: undefined, sourcePosition: undefined, sinkPositions: {}, watermarks: undefined, counters: {}, checkpointId: 0, takenAtMs: 0, logs: {} };
    }
    return undefined;
  }

  /** The value inside a checksummed record, or StateCorrupt naming `what` when the bytes were damaged. */
  private checked(bytes: Buffer, what: string): unknown {
    if (bytes.length < 4 || bytes.readUInt32BE(0) !== crc32(bytes.subarray(4))) {
      throw new StateCorrupt(this.dir, `${what} fails its checksum`);
    }
    try {
      return unpack(bytes.subarray(4));
    } catch (error) {
      throw new StateCorrupt(this.dir, `${what} cannot be decoded (${(error as Error).message})`);
    }
  }

  private outboxDatabase(): Database {
    return this.binaryDatabase("__outbox");
  }

  private stateDatabase(name: string): Database {
    return this.binaryDatabase(name);
  }

  /** A named database of bytes: everything is packed and checksummed before LMDB sees it. */
  private binaryDatabase(name: string): Database {
    let db = this.databases.get(name);
    if (!db) {
      db = this.root.openDB({ name, encoding: "binary" });
      this.databases.set(name, db);
    }
    return db;
  }
}

/** `bytes` behind their CRC-32 (4 bytes, big-endian). */
function withChecksum(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(bytes.length + 4);
  out.writeUInt32BE(crc32(bytes), 0);
  out.set(bytes, 4);
  return out;
}

/** LMDB's magic number, at the same place in both meta pages. */
const LMDB_MAGIC = 0xbeefc0de;
/** Offsets within an LMDB meta page (the format of lmdb-js's LMDB, data version 2). */
const META_MAGIC_AT = 0x18;
const META_PAGE_SIZE_AT = 0x30;
const META_LAST_PAGE_AT = 0x90;
const META_TXN_ID_AT = 0x98;

/**
 * Refuses a data file LMDB would map and then fault on: shorter than the pages its newest meta page
 * says are in use (a truncated copy: reading past the end of a mapped file kills the process with
 * SIGBUS), or without LMDB's meta pages at all.
 */
function checkDataFile(dir: string): void {
  for (const file of ["data.mdb", "lock.mdb"]) {
    // LMDB given a directory where its lock file should be dies with a segmentation fault.
    const path = join(dir, file);
    if (existsSync(path) && !statSync(path).isFile()) throw new StateCorrupt(dir, `${file} is not a regular file`);
  }
  const path = join(dir, "data.mdb");
  if (!existsSync(path)) return;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    throw new StateDirUnusable(dir, error);
  }
  try {
    const sizeBytes = fstatSync(fd).size;
    if (sizeBytes === 0) return; // created and never written: LMDB initialises it
    const first = Buffer.alloc(0x100);
    if (readSync(fd, first, 0, first.length, 0) < first.length || first.readUInt32LE(META_MAGIC_AT) !== LMDB_MAGIC) {
      throw new StateCorrupt(dir, "data.mdb is not an LMDB file (no meta page)");
    }
    const pageBytes = first.readUInt32LE(META_PAGE_SIZE_AT);
    if (pageBytes < 512 || pageBytes > 65536 || (pageBytes & (pageBytes - 1)) !== 0) throw new StateCorrupt(dir, `data.mdb has a page size of ${pageBytes}`);
    const second = Buffer.alloc(0x100);
    const hasSecond = readSync(fd, second, 0, second.length, pageBytes) === second.length && second.readUInt32LE(META_MAGIC_AT) === LMDB_MAGIC;
    const newest = hasSecond && second.readBigUInt64LE(META_TXN_ID_AT) > first.readBigUInt64LE(META_TXN_ID_AT) ? second : first;
    const neededBytes = (Number(newest.readBigUInt64LE(META_LAST_PAGE_AT)) + 1) * pageBytes;
    if (sizeBytes < neededBytes) {
      throw new StateCorrupt(dir, `data.mdb has ${sizeBytes} bytes but its last checkpoint uses ${neededBytes}: the file was truncated`);
    }
  } finally {
    closeSync(fd);
  }
}

/** What opening LMDB failed on: an unreadable dir is not a wrong key, and a damaged file is neither. */
function openFailure(dir: string, isEncrypted: boolean, error: unknown): Error {
  const text = String((error as Error)?.message ?? error);
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code === "EACCES" || code === "EPERM" || code === "EROFS" || /permission denied|read-only file system/i.test(text)) return new StateDirUnusable(dir, error);
  if (/MDB_CORRUPTED|MDB_INVALID|MDB_VERSION_MISMATCH|MDB_PAGE_NOTFOUND/.test(text) && !isEncrypted) return new StateCorrupt(dir, text.split("\n")[0]);
  return new StateUnreadable(dir, isEncrypted, error);
}
