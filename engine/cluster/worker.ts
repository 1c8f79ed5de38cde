// One worker of a group that shares a NATS source's partitions: it takes a fair share of the
// partitions' leases, runs a job per partition it holds (its own state dir, source position, sinks'
// positions and checkpoint log in NATS), gives partitions back when the group grows, takes over those
// of workers that stopped, and gives all of its own back, after a last checkpoint each, when stopped.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { SourceUnreadable, StateDirLocked } from "../errors.ts";
import type { ClusterEvent, PartitionEvent } from "../jobEvents.ts";
import type { JobView } from "../jobView.ts";
import { runJob, type JobCounters, type JobOptions, type JobResult } from "../job.ts";
import { connectNats, isTransient, lastSeqOf, retryTransient, streamInfo } from "../nats.ts";
import { lockStateDir, removeStoreFiles, type StateDirLock } from "../stateDir.ts";
import { StateStore, type Transaction } from "../store.ts";
import { CheckpointLog, PartitionFenced, type CachedCommit } from "./checkpointLog.ts";
import { fairShare, PartitionLeases } from "./leases.ts";
import { PartitionRounds, RoundLeader } from "./rounds.ts";
import type { RoundMerger } from "../rounds.ts";

export type ClusterWorkerOptions<E> = {
  servers: string[];
  group: string;
  partitions: number;
  leaseTtlMs: number;
  replicas: number;
  /** The worker's own folder is made under it (`workers/<slot>`): a partition's state dir is cached there. */
  stateDir: string;
  stateEncryptionKey?: string;
  /** Every partition's source stops at its end: the worker ends once the whole group has read to its end. */
  isBounded: boolean;
  /** The job that works on `partition`, its state in `stateDir`. */
  jobFor(partition: number, stateDir: string, signal: AbortSignal): JobOptions<E>;
  /**
   * How the jobs' work across keys is merged in the group's rounds (engine/rounds.ts); the worker
   * holding partition 0 leads them. Undefined: the jobs work on their partitions alone.
   */
  merger?: RoundMerger;
  /** The source's stream, and its subjects' prefix (`events.`): partition n is read from `events.n`. */
  source: { stream: string; subjectPrefix: string };
  signal?: AbortSignal;
  onEvent?(event: PartitionEvent): void;
  /** Told when a partition's job starts telling about itself (its view), and with undefined when this worker no longer runs it. */
  onPartitionView?(partition: number, view: JobView | undefined): void;
};

export type ClusterWorkerResult = {
  /** Every partition's job's counters in this run, added up. */
  thisRun: JobCounters;
  elapsedMs: number;
  /** True when the group's bounded source was read to its end. */
  isComplete: boolean;
};

/** A partition being worked on: its job's stop, and its end. */
type Running = { stop: AbortController; ended: Promise<JobResult | undefined>; whyStopped?: "rebalance" | "stop" };

/** A lease is renewed this many times per period: a missed renewal or two does not lose it. */
const RENEWALS_PER_TTL = 3;
/**
 * The longest between two looks for partitions to take or give back: a lease that ran out is free
 * on the server at once, but only taken over at the next look (renewals keep their own clock).
 */
const MAX_REBALANCE_EVERY_MS = 1_000;
/** How long a worker joining waits for NATS to answer (a NATS cluster may be electing leaders). */
const STARTUP_LIMIT_MS = 60_000;
/** Subjects a refused stream lists at most. */
const LISTED_SUBJECTS = 5;
/** Worker slots tried under the state dir before giving up. */
const MAX_SLOTS = 256;

export async function runClusterWorker<E>(options: ClusterWorkerOptions<E>): Promise<ClusterWorkerResult> {
  const startedAtMs = Date.now();
  const { slot, lock } = await lockSlot(options.stateDir, options.group);
  const workerId = `${hostname().replace(/[^A-Za-z0-9_-]/g, "_")}-${slot}-${process.pid}`;
  const nc = await connectNats({ servers: options.servers, client: `worker ${workerId}`, signal: options.signal, onEvent: options.onEvent });
  const worker = new Worker(options, workerId, slotDir(options.stateDir, options.group, slot), nc);
  try {
    return { ...(await worker.run()), elapsedMs: Date.now() - startedAtMs };
  } finally {
    await nc.close().catch(() => undefined);
    await lock.release();
  }
}

/** A worker's own folder: under its group, so groups sharing a state dir never read each other's caches. */
function slotDir(stateDir: string, group: string, slot: number): string {
  return join(stateDir, "groups", group, "workers", String(slot));
}

/** The first worker slot under the state dir no other process holds: a restarted worker finds its cache again. */
async function lockSlot(stateDir: string, group: string): Promise<{ slot: number; lock: StateDirLock }> {
  for (let slot = 0; slot < MAX_SLOTS; slot++) {
    try {
      return { slot, lock: await lockStateDir(slotDir(stateDir, group, slot)) };
    } catch (error) {
      if (!(error instanceof StateDirLocked)) throw error;
    }
  }
  throw new Error(`${stateDir}: all ${MAX_SLOTS} worker slots are held by running workers`);
}

class Worker<E> {
  private readonly running = new Map<number, Running>();
  private readonly totals: JobCounters = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 };
  private failure: unknown;
  private leases!: PartitionLeases;
  private jsm!: JetStreamManager;
  private wake?: () => void;

  constructor(
    private readonly options: ClusterWorkerOptions<E>,
    private readonly workerId: string,
    private readonly dir: string,
    private readonly nc: NatsConnection,
  ) {}

  private emit(event: PartitionEvent | ClusterEvent): void {
    this.options.onEvent?.(event);
  }

  /**
   * 1. every `leaseTtl / 3`, says it is alive and renews its leases, stopping the jobs of those it lost;
   * then, every `leaseTtl / 3` (1 s at most) until stopped (or, bounded, until the group is done):
   * 2. gives back what exceeds its fair share (after their last checkpoints);
   * 3. takes free partitions up to its share, restoring each from its checkpoint log.
   * On a stop, every job takes a last checkpoint and its lease is given back.
   */
  async run(): Promise<Omit<ClusterWorkerResult, "elapsedMs">> {
    const { group, partitions, leaseTtlMs, replicas, signal } = this.options;
    this.jsm = await retryTransient(() => jetstreamManager(this.nc), STARTUP_LIMIT_MS);
    await retryTransient(() => this.checkSubjectsArePartitions(), STARTUP_LIMIT_MS);
    this.leases = await retryTransient(() => PartitionLeases.open(this.nc, { group, workerId: this.workerId, partitions, leaseTtlMs, replicas }), STARTUP_LIMIT_MS);
    await retryTransient(() => this.leases.heartbeat(), STARTUP_LIMIT_MS);
    this.emit({ event: "worker-joined", group, workerId: this.workerId, workers: (await this.leases.workers()).length, partitions });
    const onStop = () => this.wake?.();
    signal?.addEventListener("abort", onStop);
    // 1. on its own clock: giving partitions back or taking them over can take longer than a lease.
    const renewing = this.renewEvery(leaseTtlMs / RENEWALS_PER_TTL);
    let isComplete = false;
    try {
      for (;;) {
        if (this.failure !== undefined) throw this.failure;
        if (signal?.aborted) break;
        try {
          if (await this.rebalance()) {
            isComplete = true;
            this.emit({ event: "group-done", group });
            break;
          }
        } catch (error) {
          // NATS out of reach or electing a leader: the jobs go on, and the next tick looks again.
          if (!isTransient(error)) throw error;
        }
        await this.sleep(Math.min(leaseTtlMs / RENEWALS_PER_TTL, MAX_REBALANCE_EVERY_MS));
      }
      await this.stopAll();
      if (this.failure !== undefined) throw this.failure;
      return { thisRun: this.totals, isComplete };
    } catch (error) {
      await this.stopAll().catch(() => undefined);
      throw error;
    } finally {
      signal?.removeEventListener("abort", onStop);
      await renewing.stop();
      await this.leases.leave();
    }
  }

  /**
   * Refuses a stream holding messages on subjects no worker reads: a worker reads partition n from
   * `<prefix>n` alone, so `<prefix>9` with 8 partitions (a publisher told of more partitions) or
   * `<prefix>x` would be left unread for ever. A single process reads them (n mod partitions); a
   * cluster cannot, without a consumer per subject it might meet.
   */
  private async checkSubjectsArePartitions(): Promise<void> {
    const { source, partitions } = this.options;
    const info = await streamInfo(this.jsm, source.stream, `${source.subjectPrefix}>`);
    const unread = Object.keys(info?.state.subjects ?? {}).filter((subject) => {
      const token = subject.slice(source.subjectPrefix.length);
      return !(/^\d+$/.test(token) && Number(token) < partitions && String(Number(token)) === token);
    });
    if (unread.length === 0) return;
    const listed = unread.slice(0, LISTED_SUBJECTS).join(", ") + (unread.length > LISTED_SUBJECTS ? `, ... (${unread.length} subjects)` : "");
    throw new SourceUnreadable(
      `nats:${source.stream}`,
      `it holds messages on ${listed}, which no worker of a cluster reads: partition n is read from ${source.subjectPrefix}n only, n from 0 to ${partitions - 1}. Publish with --partitions ${partitions}, or set source.nats.partitions to what the publisher uses`,
    );
  }

  /** Its partition's last stream sequence as of now (a bounded job ends at it). */
  private lastSeqOf(partition: number): Promise<number> {
    return lastSeqOf(this.jsm, this.options.source.stream, `${this.options.source.subjectPrefix}${partition}`);
  }

  /** Heartbeats and renewals every `intervalMs`, one at a time; a lost lease stops its partition's job. */
  private renewEvery(intervalMs: number): { stop(): Promise<void> } {
    let isStopped = false;
    let current: Promise<void> = Promise.resolve();
    const tick = async () => {
      await this.leases.heartbeat();
      for (const partition of await this.leases.renew()) this.lose(partition, "its lease ran out before it was renewed (the worker was paused or cut off)");
    };
    const timer = setInterval(() => {
      if (isStopped) return;
      current = current.then(tick).catch((error) => {
        // A renewal that cannot reach NATS is tried again next time; the lease may run out meanwhile.
        if (!isTransient(error)) this.failure ??= error;
      });
    }, intervalMs);
    return {
      stop: async () => {
        isStopped = true;
        clearInterval(timer);
        await current;
      },
    };
  }

  /** Steps 2 and 3; true when a bounded group has read every partition to its end. */
  private async rebalance(): Promise<boolean> {
    const done = this.options.isBounded ? await this.donePartitions() : new Set<number>();
    if (this.options.isBounded && done.size === this.options.partitions) return true;
    const workers = await this.leases.workers();
    const share = fairShare(this.options.partitions - done.size, workers, this.workerId);
    // 2.
    await this.giveBackBeyond(share);
    // 3.
    await this.takeUpTo(share, done, workers);
    return false;
  }

  /** Partitions a bounded run has read to their end (their subject's last message as of now). */
  private async donePartitions(): Promise<Set<number>> {
    const done = new Set<number>();
    for (let p = 0; p < this.options.partitions; p++) if (await this.isDone(p)) done.add(p);
    return done;
  }

  private async isDone(partition: number): Promise<boolean> {
    const through = await this.leases.doneThrough(partition);
    return through !== undefined && through >= (await this.lastSeqOf(partition));
  }

  private async giveBackBeyond(share: number): Promise<void> {
    const held = [...this.running.keys()].sort((a, b) => b - a);
    for (const partition of held.slice(0, Math.max(0, held.length - share))) {
      // Its job may have ended meanwhile (read to its end, lost).
      const running = this.running.get(partition);
      if (running === undefined) continue;
      running.whyStopped = "rebalance";
      running.stop.abort(new Error("rebalance"));
      await running.ended;
    }
  }

  /** Tries free partitions, starting at a place that depends on the worker, so workers joining together rarely race for the same one. */
  private async takeUpTo(share: number, done: ReadonlySet<number>, workers: readonly string[]): Promise<void> {
    if (this.running.size >= share) return;
    const holders = await this.leases.holders();
    const { partitions } = this.options;
    const offset = Math.max(0, workers.indexOf(this.workerId)) * Math.ceil(partitions / Math.max(1, workers.length));
    for (let i = 0; i < partitions && this.running.size < share; i++) {
      const partition = (offset + i) % partitions;
      if (done.has(partition) || holders.has(partition) || this.running.has(partition)) continue;
      // Read to its end since the tick began (by this worker or another)?
      if (this.options.isBounded && (await this.isDone(partition))) continue;
      if (await this.leases.acquire(partition)) this.start(partition);
    }
  }

  /** Runs the partition's job: its state from the local cache when that is current, else from its log in NATS. */
  private start(partition: number): void {
    const stop = new AbortController();
    const stateDir = join(this.dir, `p${partition}`);
    const cacheFile = join(this.dir, `p${partition}.commit.json`);
    // What the job did in this run, also when it ends without a result (lost, failed): its view's
    // counters against those it restored.
    let view: JobView | undefined;
    let restoredCounters: Readonly<JobCounters> | undefined;
    const tell = (event: PartitionEvent) => {
      if ((event.event === "restored" || event.event === "fresh-start") && view !== undefined) restoredCounters = { ...view.counters() };
      this.emit({ ...event, partition });
    };
    const countRun = () => {
      if (view === undefined || restoredCounters === undefined) return;
      for (const [name, n] of Object.entries(view.counters())) this.totals[name] = (this.totals[name] ?? 0) + n - (restoredCounters[name] ?? 0);
      restoredCounters = undefined;
    };
    const base = this.options.jobFor(partition, stateDir, stop.signal);
    const running: Running = { stop, ended: Promise.resolve(undefined) };
    // Whoever holds partition 0 leads the group's rounds, for as long as its job runs.
    const leading = partition === 0 && this.options.merger !== undefined ? new AbortController() : undefined;
    const led = leading === undefined ? Promise.resolve() : this.lead(leading.signal);
    running.ended = (async () => {
      let log: CheckpointLog | undefined;
      try {
        // A bounded job ends at its subject's last message as of its start, or later: done through at least this.
        const endSeqAtStart = await retryTransient(() => this.lastSeqOf(partition), STARTUP_LIMIT_MS);
        const logOptions = { group: this.options.group, partition, workerId: this.workerId, replicas: this.options.replicas, encryptionKey: this.options.stateEncryptionKey };
        log = await retryTransient(() => CheckpointLog.open(this.nc, logOptions), STARTUP_LIMIT_MS);
        const rounds = await this.roundsFor(partition, stop.signal);
        const result = await runJob<E>({
          ...base,
          rounds,
          signal: stop.signal,
          onEvent: tell,
          onView: (jobView) => {
            view = jobView;
            this.options.onPartitionView?.(partition, jobView);
          },
          replica: {
            prepare: async (dir) => {
              const claim = await log!.claim(await currentCache(dir, cacheFile, this.options.stateEncryptionKey));
              if (!claim.isCacheCurrent) await rebuild(dir, claim.transactions, this.options.stateEncryptionKey);
              writeCache(cacheFile, { commitSeq: claim.lastCommitSeq, checkpointId: claim.lastCheckpointId, streamCreated: log!.streamCreated });
              const restoredFrom = claim.lastCommitSeq === 0 ? "nothing" : claim.isCacheCurrent ? "cache" : "nats";
              this.emit({ event: "partition-taken", partition, restoredFrom, checkpointId: claim.lastCheckpointId, transactions: claim.transactions.length });
            },
            mirror: async (transaction, meta) => {
              const commitSeq = await log!.append(transaction, meta);
              writeCache(cacheFile, { commitSeq, checkpointId: meta.checkpointId, streamCreated: log!.streamCreated });
              const endSeq = Math.max(endSeqAtStart, (meta.sourcePosition as { streamSeq?: number } | undefined)?.streamSeq ?? 0);
              if (meta.isEnded) await retryTransient(() => this.leases.markDone(partition, endSeq), STARTUP_LIMIT_MS);
              return { wantsBase: log!.takeBaseDue() };
            },
          },
        });
        const why = result.isComplete ? "done" : (running.whyStopped ?? "stop");
        await this.leases.release(partition);
        this.emit({ event: "partition-released", partition, why });
        return result;
      } catch (error) {
        if (stop.signal.aborted && error === stop.signal.reason && !(error instanceof LeaseLost)) {
          // Stopped while still connecting: nothing ran, nothing to checkpoint.
          await this.leases.release(partition);
          this.emit({ event: "partition-released", partition, why: running.whyStopped ?? "stop" });
          return undefined;
        }
        if (error instanceof PartitionFenced || stop.signal.reason instanceof LeaseLost) {
          this.leases.forget(partition);
          this.emit({ event: "partition-lost", partition, reason: error instanceof PartitionFenced ? error.message : String(stop.signal.reason.message) });
          return undefined;
        }
        if (isTransient(error)) {
          // NATS could not answer in time (a server lost, a leader being elected): the partition goes
          // back, and this worker or another takes it up again from its last checkpoint.
          await this.leases.release(partition);
          this.emit({ event: "partition-lost", partition, reason: `NATS did not answer (${String((error as Error)?.message ?? error).split("\n")[0]}); it is taken up again from its last checkpoint` });
          return undefined;
        }
        // Any other failure is the worker's: it stops, and its partitions go to others (or to it, restarted).
        this.failure ??= error;
        this.wake?.();
        return undefined;
      } finally {
        leading?.abort();
        await led;
        countRun();
        this.options.onPartitionView?.(partition, undefined);
        if (this.running.get(partition) === running) this.running.delete(partition);
      }
    })();
    this.running.set(partition, running);
  }

  /** The partition's link to the group's rounds, when the jobs work across keys. */
  private async roundsFor(partition: number, signal: AbortSignal): Promise<PartitionRounds | undefined> {
    if (this.options.merger === undefined) return undefined;
    const { group, replicas, stateEncryptionKey } = this.options;
    return retryTransient(() => PartitionRounds.open(this.nc, { group, replicas, encryptionKey: stateEncryptionKey, partition, signal }), STARTUP_LIMIT_MS);
  }

  /** Leads the group's rounds until `signal`; a failure that is not NATS's fails the worker. */
  private async lead(signal: AbortSignal): Promise<void> {
    const { group, replicas, stateEncryptionKey, partitions, merger } = this.options;
    while (!signal.aborted) {
      try {
        await new RoundLeader(this.nc, { group, replicas, encryptionKey: stateEncryptionKey, partitions, merger: merger!, signal }).run();
      } catch (error) {
        if (!isTransient(error)) {
          this.failure ??= error;
          this.wake?.();
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  }

  private lose(partition: number, reason: string): void {
    const running = this.running.get(partition);
    running?.stop.abort(new LeaseLost(reason));
  }

  private async stopAll(): Promise<void> {
    for (const running of this.running.values()) {
      running.whyStopped = "stop";
      running.stop.abort(new Error("stop"));
    }
    await Promise.all([...this.running.values()].map((r) => r.ended));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      this.wake = done;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}

/** Why a partition's job was stopped without a last checkpoint being wanted: its lease is gone. */
class LeaseLost extends Error {}

/** The commit the local cache holds, if the state dir is at it (a commit that NATS refused leaves the dir ahead). */
async function currentCache(dir: string, cacheFile: string, encryptionKey: string | undefined): Promise<CachedCommit | undefined> {
  if (!existsSync(cacheFile) || !existsSync(join(dir, "data.mdb"))) return undefined;
  let cached: CachedCommit;
  try {
    cached = JSON.parse(readFileSync(cacheFile, "utf8")) as CachedCommit;
  } catch {
    return undefined;
  }
  let store: StateStore;
  try {
    store = new StateStore(dir, undefined, { encryptionKey, readOnly: true });
  } catch {
    // A damaged cache (a disk error, a truncated file) is only a cache: the state comes from NATS.
    return undefined;
  }
  try {
    return store.readMeta()?.checkpointId === cached.checkpointId ? cached : undefined;
  } finally {
    // Closed before the dir is rebuilt or the job opens it.
    await store.close();
  }
}

/** Empties the state dir and applies the log's transactions to it. */
async function rebuild(dir: string, transactions: readonly Transaction[], encryptionKey: string | undefined): Promise<void> {
  removeStoreFiles(dir);
  if (transactions.length === 0) return;
  const store = new StateStore(dir, undefined, { encryptionKey });
  try {
    for (const transaction of transactions) await store.apply(transaction);
  } finally {
    await store.close();
  }
}

function writeCache(cacheFile: string, commit: CachedCommit): void {
  writeFileSync(cacheFile, JSON.stringify(commit));
}
