// The durable side of state: one LMDB environment per job, a named database per registered state,
// and the checkpoint transaction that writes every change, the positions and the metadata at once.
import { mkdirSync } from "node:fs";
import { open, type Database, type RootDatabase } from "lmdb";

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
/** Entries per chunk: large enough that per-entry LMDB overhead vanishes, small enough to stream on restore. */
const CHUNK_ENTRIES = 2048;
/** A state's log is rewritten as a snapshot once it holds this many times its live entries. */
const COMPACT_RATIO = 3;
const COMPACT_MIN_ENTRIES = 50_000;

type LogInfo = { baseCheckpointId: number; loggedEntries: number };

/**
 * The durable store. Each state is a log of delta chunks keyed [checkpointId, chunkNo], each chunk
 * a list of [key, value] pairs (value null: deleted). Restoring replays the log from the state's
 * base; a compaction writes a full snapshot as the new base and drops the older chunks, in the
 * same transaction as the checkpoint it belongs to.
 */
export class StateStore {
  private readonly root: RootDatabase;
  private readonly databases = new Map<string, Database>();
  private readonly members: Checkpointable[] = [];

  constructor(
    readonly dir: string,
    private readonly compactMinEntries = COMPACT_MIN_ENTRIES,
  ) {
    mkdirSync(dir, { recursive: true });
    // Plain msgpack without shared record structures: chunks are arrays of pairs.
    this.root = open({ path: dir, maxDbs: 512, compression: false, useRecords: false } as never);
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
    for (const { value } of this.database(name).getRange({ start: [info.baseCheckpointId] })) {
      yield* value as Array<[unknown, unknown]>;
    }
  }

  register(member: Checkpointable): void {
    if (this.members.some((m) => m.name === member.name)) {
      throw new Error(`state "${member.name}" is registered twice`);
    }
    this.database(member.name);
    this.members.push(member);
  }

  /**
   * Commits one checkpoint, all or nothing:
   * 1. takes every registered state's changes since the last checkpoint, or, where its log has
   *    grown well past its live entries, a full snapshot that replaces the log;
   * 2. writes them in chunks, with the metadata (positions, watermarks, counters), in ONE transaction.
   * Returns how many state entries were written.
   */
  commit(meta: CheckpointMeta): number {
    // 1.
    const writes = this.members.map((member) => {
      const info = this.logInfo(member.name);
      const delta = member.takeDelta();
      const changed = delta.puts.length + delta.deletes.length;
      const isCompaction = info.loggedEntries + changed > Math.max(this.compactMinEntries, COMPACT_RATIO * member.liveEntries);
      const pairs: Array<[unknown, unknown]> = isCompaction
        ? member.snapshotAll()
        : [...delta.puts, ...delta.deletes.map((key): [unknown, unknown] => [key, null])];
      return { member, info, pairs, isCompaction };
    });
    let written = 0;
    // 2.
    this.root.transactionSync(() => {
      for (const { member, info, pairs, isCompaction } of writes) {
        const db = this.database(member.name);
        if (isCompaction) {
          for (const key of db.getKeys({ end: [meta.checkpointId] })) db.remove(key);
          info.baseCheckpointId = meta.checkpointId;
          info.loggedEntries = 0;
        }
        for (let at = 0, chunk = 0; at < pairs.length; at += CHUNK_ENTRIES, chunk++) {
          db.put([meta.checkpointId, chunk], pairs.slice(at, at + CHUNK_ENTRIES));
        }
        info.loggedEntries += pairs.length;
        written += pairs.length;
        this.database("__logs").put(member.name, info);
      }
      this.database("__meta").put(META_KEY, meta);
    });
    return written;
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  private logInfo(name: string): LogInfo {
    return (this.database("__logs").get(name) as LogInfo | undefined) ?? { baseCheckpointId: 0, loggedEntries: 0 };
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
