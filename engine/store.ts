// The durable side of state: one LMDB environment per job, a named database per registered state,
// and the checkpoint transaction that writes every change, the positions and the metadata at once.
import { mkdirSync } from "node:fs";
import { open, type Database, type RootDatabase } from "lmdb";
import { Packr, unpack } from "msgpackr";
import { StateUnreadable } from "./errors.ts";

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
  fingerprint: string;
  sourcePosition: unknown;
  sinkPositions: Record<string, unknown>;
  watermarks: unknown;
  counters: Record<string, number>;
  checkpointId: number;
  takenAtMs: number;
};

const META_KEY = "checkpoint";
/**
 * Objects of one shape (a state's values) are written as msgpackr records: the keys once per chunk,
 * not once per value (~25% less time and 30% fewer bytes than plain maps). The record definitions
 * travel inside each chunk, so any unpack reads it.
 */
const chunkPackr = new Packr({ useRecords: true });
/** Entries per chunk: large enough that per-entry LMDB overhead vanishes, small enough to stream on restore. */
const CHUNK_ENTRIES = 2048;
/** A state's log is rewritten as a snapshot once it holds this many times its live entries. */
const COMPACT_RATIO = 3;
const COMPACT_MIN_ENTRIES = 50_000;

type LogInfo = { baseCheckpointId: number; loggedEntries: number };

/** What a commit wrote and how long it held the caller (`snapshotMs`) and took to be durable (`durableMs`). */
export type CommitInfo = { entries: number; snapshotMs: number; durableMs: number };

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

  /**
   * `encryptionKey` (32 bytes): the state is encrypted at rest (LMDB's ChaCha8), and a dir written
   * with another key, or without one, is refused as unreadable.
   */
  constructor(
    readonly dir: string,
    private readonly compactMinEntries = COMPACT_MIN_ENTRIES,
    { encryptionKey }: { encryptionKey?: string } = {},
  ) {
    mkdirSync(dir, { recursive: true });
    try {
      this.root = open({ path: dir, maxDbs: 512, compression: false, ...(encryptionKey === undefined ? {} : { encryptionKey }) });
      // A wrong key shows on the first read, as a page LMDB cannot find.
      this.readMeta();
    } catch (error) {
      throw new StateUnreadable(dir, encryptionKey !== undefined, error);
    }
  }

  readMeta(): CheckpointMeta | undefined {
    return this.database("__meta").get(META_KEY) as CheckpointMeta | undefined;
  }

  /**
   * The log of a state since its base, oldest first: replaying it, a later pair for a key replaces
   * an earlier one and a null value deletes the key. Streamed, so a large state is never held twice.
   */
  *restored(name: string): Iterable<[unknown, unknown]> {
    const info = this.logInfo(name);
    for (const { value } of this.stateDatabase(name).getRange({ start: [info.baseCheckpointId] })) {
      yield* unpack(value as Buffer) as Array<[unknown, unknown]>;
    }
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
   * previous checkpoint in place, which recovery then uses.
   */
  commit(meta: CheckpointMeta): Promise<CommitInfo> {
    const startedAtMs = performance.now();
    // 1.
    let entries = 0;
    const writes = this.members.map((member) => {
      const info = { ...this.logInfo(member.name) };
      const delta = member.takeDelta();
      const changed = delta.puts.length + delta.deletes.length;
      const isSnapshotAsked = member.takeSnapshotRequest?.() === true;
      const isCompaction = isSnapshotAsked || info.loggedEntries + changed > Math.max(this.compactMinEntries, COMPACT_RATIO * member.liveEntries);
      const pairs: Array<[unknown, unknown]> = isCompaction
        ? member.snapshotAll()
        : [...delta.puts, ...delta.deletes.map((key): [unknown, unknown] => [key, null])];
      const chunks: Buffer[] = [];
      for (let at = 0; at < pairs.length; at += CHUNK_ENTRIES) chunks.push(chunkPackr.pack(pairs.slice(at, at + CHUNK_ENTRIES)));
      if (isCompaction) {
        info.baseCheckpointId = meta.checkpointId;
        info.loggedEntries = 0;
      }
      info.loggedEntries += pairs.length;
      entries += pairs.length;
      this.logs.set(member.name, info);
      return { db: this.stateDatabase(member.name), name: member.name, info, chunks, isCompaction };
    });
    const metaCopy = structuredClone(meta);
    const snapshotMs = performance.now() - startedAtMs;
    // 2.
    const written = this.root.transaction(() => {
      for (const { db, name, info, chunks, isCompaction } of writes) {
        if (isCompaction) for (const key of db.getKeys({ end: [meta.checkpointId] })) db.remove(key);
        chunks.forEach((chunk, n) => db.put([meta.checkpointId, n], chunk));
        this.database("__logs").put(name, info);
      }
      this.database("__meta").put(META_KEY, metaCopy);
    });
    return written.then(() => ({ entries, snapshotMs, durableMs: performance.now() - startedAtMs }));
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  private logInfo(name: string): LogInfo {
    let info = this.logs.get(name);
    if (!info) {
      info = (this.database("__logs").get(name) as LogInfo | undefined) ?? { baseCheckpointId: 0, loggedEntries: 0 };
      this.logs.set(name, info);
    }
    return info;
  }

  private stateDatabase(name: string): Database {
    let db = this.databases.get(name);
    if (!db) {
      // Chunks are packed at the cut, so LMDB stores them as bytes.
      db = this.root.openDB({ name, encoding: "binary" });
      this.databases.set(name, db);
    }
    return db;
  }

  private database(name: string): Database {
    let db = this.databases.get(name);
    if (!db) {
      db = this.root.openDB({ name });
      this.databases.set(name, db);
    }
    return db;
  }
}
