// Who works on which partition: leases in a NATS KV bucket, taken with compare-and-set and kept by
// renewing them. The bucket's TTL is the lease period, so the server's clock, not the workers', ends
// the lease of a worker that stopped renewing (dead, paused, cut off). A lease only says who should
// work on a partition; what stops two workers from both committing is the checkpoint log's fence
// (checkpointLog.ts), so a lease that ends while its holder still runs costs time, never correctness.
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { isTransient } from "../nats.ts";

export type LeaseOptions = {
  group: string;
  workerId: string;
  /** The source's partitions: 0 .. partitions - 1. */
  partitions: number;
  leaseTtlMs: number;
  /** Copies NATS keeps of the bucket. */
  replicas: number;
};

/** A worker's share of `partitions` among `workers` (sorted ids): partitions / workers, the first ones one more. */
export function fairShare(partitions: number, workers: readonly string[], workerId: string): number {
  const rank = workers.indexOf(workerId);
  if (rank < 0 || workers.length === 0) return 0;
  const base = Math.floor(partitions / workers.length);
  return base + (rank < partitions % workers.length ? 1 : 0);
}

/** Bucket names take letters, digits, `_` and `-`: so do group names (pipelines/reader.ts NAME). */
export function leaseBucketName(group: string): string {
  return `flusso_${group}_leases`;
}

/** Where a group records which partitions a bounded run has read to their end: no TTL, unlike leases. */
export function doneBucketName(group: string): string {
  return `flusso_${group}_done`;
}

const WORKER_KEY = "worker.";
const LEASE_KEY = "lease.";

/** What a lease holds: its holder, for whoever looks (`nats kv get`). */
type LeaseValue = { worker: string };

export class PartitionLeases {
  /** Partitions held, with the KV revision of the last put: the next renewal must find it. */
  private readonly revisions = new Map<number, number>();
  /** The renewal under way, if any: a release waits for it. */
  private renewing: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly options: LeaseOptions,
    private readonly leases: KV,
    private readonly done: KV,
    private readonly jsm: JetStreamManager,
  ) {}

  /** Opens (creating when missing) the group's buckets. */
  static async open(nc: NatsConnection, options: LeaseOptions): Promise<PartitionLeases> {
    const kvm = new Kvm(nc);
    const leases = await kvm.create(leaseBucketName(options.group), { ttl: options.leaseTtlMs, history: 1, replicas: options.replicas });
    const done = await kvm.create(doneBucketName(options.group), { history: 1, replicas: options.replicas });
    return new PartitionLeases(options, leases, done, await jetstreamManager(nc));
  }

  get held(): number[] {
    return [...this.revisions.keys()].sort((a, b) => a - b);
  }

  /** Says this worker is alive: a worker that stops saying so leaves the count after the lease period. */
  async heartbeat(): Promise<void> {
    await this.leases.put(`${WORKER_KEY}${this.options.workerId}`, JSON.stringify({ atMs: Date.now() }));
  }

  /** The live workers' ids, sorted: every worker computes the same shares from them. */
  async workers(): Promise<string[]> {
    // The stream's subjects, not kv.keys(): its consumer can wait for ever on entries the TTL removes meanwhile.
    const prefix = `$KV.${leaseBucketName(this.options.group)}.${WORKER_KEY}`;
    const info = await this.jsm.streams.info(`KV_${leaseBucketName(this.options.group)}`, { subjects_filter: `${prefix}>` });
    const ids: string[] = [];
    for (const subject of Object.keys(info.state.subjects ?? {})) {
      const id = subject.slice(prefix.length);
      // A worker that left deleted its key: the marker stays until the TTL removes it.
      if ((await this.leases.get(`${WORKER_KEY}${id}`))?.operation === "PUT") ids.push(id);
    }
    return ids.sort();
  }

  /** Which partitions are leased, to whom. */
  async holders(): Promise<Map<number, string>> {
    const holders = new Map<number, string>();
    for (let partition = 0; partition < this.options.partitions; partition++) {
      const entry = await this.leases.get(`${LEASE_KEY}${partition}`);
      if (entry !== null && entry.operation === "PUT") holders.set(partition, (entry.json() as LeaseValue).worker);
    }
    return holders;
  }

  /** Takes the lease of a partition no one holds; false when someone does. */
  async acquire(partition: number): Promise<boolean> {
    try {
      const revision = await this.leases.create(`${LEASE_KEY}${partition}`, this.value());
      this.revisions.set(partition, revision);
      return true;
    } catch (error) {
      if (isWrongRevision(error)) return false;
      throw error;
    }
  }

  /**
   * Renews every held lease, each only if it is still the one this worker put: returns the partitions
   * whose lease was lost (it ran out, and maybe another worker took it).
   */
  renew(): Promise<number[]> {
    const renewing = this.renewAll();
    this.renewing = renewing.catch(() => undefined);
    return renewing;
  }

  private async renewAll(): Promise<number[]> {
    const lost: number[] = [];
    for (const [partition, revision] of [...this.revisions]) {
      // Given back since the renewal began: renewing it now would keep a lease no job uses.
      if (this.revisions.get(partition) !== revision) continue;
      try {
        const renewed = await this.leases.update(`${LEASE_KEY}${partition}`, this.value(), revision);
        if (this.revisions.get(partition) === revision) this.revisions.set(partition, renewed);
        // Released while this renewal was on its way: give back what it just extended.
        else await this.leases.delete(`${LEASE_KEY}${partition}`, { previousSeq: renewed }).catch(() => undefined);
      } catch (error) {
        if (!isWrongRevision(error)) throw error;
        this.revisions.delete(partition);
        lost.push(partition);
      }
    }
    return lost;
  }

  /**
   * Gives a lease back (after the partition's last checkpoint), if it is still this worker's. It
   * waits for a renewal under way, which would otherwise put it back.
   */
  async release(partition: number): Promise<void> {
    await this.renewing;
    const revision = this.revisions.get(partition);
    if (revision === undefined) return;
    this.revisions.delete(partition);
    await this.leases.delete(`${LEASE_KEY}${partition}`, { previousSeq: revision }).catch((error) => {
      // Someone else's now, or NATS cannot answer: either way the lease runs out on its own.
      if (!isWrongRevision(error) && !isTransient(error)) throw error;
    });
  }

  /** Drops a lease from this worker's list without telling NATS (it is known lost). */
  forget(partition: number): void {
    this.revisions.delete(partition);
  }

  /** Leaves the group: no longer counted among its workers. */
  async leave(): Promise<void> {
    await this.leases.delete(`${WORKER_KEY}${this.options.workerId}`).catch(() => undefined);
  }

  /** Records that a bounded run read `partition` to `endSeq` (its subject's last stream sequence) and fired everything. */
  async markDone(partition: number, endSeq: number): Promise<void> {
    await this.done.put(`p.${partition}`, JSON.stringify({ endSeq }));
  }

  /** The stream sequence up to which a bounded run finished `partition`; undefined if none has. */
  async doneThrough(partition: number): Promise<number | undefined> {
    const entry = await this.done.get(`p.${partition}`);
    if (entry === null || entry.operation !== "PUT") return undefined;
    return (entry.json() as { endSeq: number }).endSeq;
  }

  private value(): string {
    return JSON.stringify({ worker: this.options.workerId } satisfies LeaseValue);
  }
}

/** The server refused a compare-and-set: the key is not at the revision given (or exists, for a create). */
function isWrongRevision(error: unknown): boolean {
  return /wrong last sequence|key exists/i.test(String((error as Error)?.message ?? error));
}
