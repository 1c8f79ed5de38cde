// The durable side of state: one LMDB environment per job, a named database per registered state,
// and the checkpoint transaction that writes every change, the positions and the metadata at once.
import { mkdirSync } from "node:fs";
import { open, type Database, type RootDatabase } from "lmdb";

/** What a registered state hands to a checkpoint: the entries changed since the last one. */
export type StateDelta = { puts: Array<[unknown, unknown]>; deletes: unknown[] };

/** Something whose changes a checkpoint persists: keyed state, timers. */
export type Checkpointable = {
  readonly name: string;
  takeDelta(): StateDelta;
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

export class StateStore {
  private readonly root: RootDatabase;
  private readonly databases = new Map<string, Database>();
  private readonly members: Checkpointable[] = [];

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    // maxDbs bounds the named databases; a pipeline registers a handful per operator.
    // Plain msgpack without shared record structures: state values are arrays, and structures cost
    // more to maintain than they save here.
    this.root = open({ path: dir, maxDbs: 512, compression: false, useRecords: false } as never);
  }

  readMeta(): CheckpointMeta | undefined {
    return this.database("__meta").get(META_KEY) as CheckpointMeta | undefined;
  }

  /** Entries of a state as of the last checkpoint, in key order. */
  *restored(name: string): Iterable<[unknown, unknown]> {
    for (const { key, value } of this.database(name).getRange()) yield [key, value];
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
   * 1. takes every registered state's changes since the last checkpoint;
   * 2. writes them and the metadata (positions, watermarks, counters) in ONE transaction.
   * Returns how many entries were written.
   */
  commit(meta: CheckpointMeta): number {
    // 1.
    const deltas = this.members.map((m) => [this.database(m.name), m.takeDelta()] as const);
    let written = 0;
    // 2.
    this.root.transactionSync(() => {
      for (const [db, delta] of deltas) {
        for (const [key, value] of delta.puts) db.put(key as never, value);
        for (const key of delta.deletes) db.remove(key as never);
        written += delta.puts.length + delta.deletes.length;
      }
      this.database("__meta").put(META_KEY, meta);
    });
    return written;
  }

  /** Drops everything: the next run starts from nothing. */
  clear(): void {
    this.root.transactionSync(() => {
      for (const db of this.databases.values()) db.clearSync();
    });
  }

  async close(): Promise<void> {
    await this.root.close();
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
