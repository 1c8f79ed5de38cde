// Runs one pipeline: pulls batches from the source, pushes them through the RxJS graph, emits
// watermarks between batches, and takes checkpoints at those consistent cuts. Recovery happens in
// `run` before the first batch: state, timers, positions and watermarks come back from the store.
import { randomBytes } from "node:crypto";
import { Subject, type Observable, type OperatorFunction } from "rxjs";
import { END_OF_TIME, watermark, type Element, type KindedOutput, type StreamRecord } from "./elements.ts";
import { StateKeyChanged, StateMismatch } from "./errors.ts";
import type { JobEvent } from "./jobEvents.ts";
import { JobHealth } from "./jobHealth.ts";
import type { CheckpointRecord, JobPhase, JobView } from "./jobView.ts";
import { LatencyRecorder } from "./latency.ts";
import { NO_STAMP, OutputCause, SinkLatency, type LatencyRecorders } from "./outputLatency.ts";
import { operate, type OperatorDefinition, type OperatorView } from "./operator.ts";
import { RoundsStopped, type RoundExchange, type RoundParticipant } from "./rounds.ts";
import { MemoryBudget } from "./memoryBudget.ts";
import { storeOperatorContext } from "./operatorContext.ts";
import type { Sink } from "./sinks/sink.ts";
import type { Source, SourceItem } from "./sources/source.ts";
import { lockStateDir, type StateDirLock } from "./stateDir.ts";
import { StateStore, type CheckpointMeta, type CommitMirror, type SinkHold } from "./store.ts";
import { WatermarkTracker, type WatermarkGenerator, type WatermarkTrackerSnapshot } from "./watermarks.ts";
import { TimeSlice } from "./timeSlice.ts";

/** An item turned into a keyed, timed record (see `record`), or the reason it cannot be. */
export type Decoded<E> = StreamRecord<E> | { readonly kind?: undefined; error: string };

/** A sink and the output kinds it takes (all when undefined). */
export type SinkRoute = { name: string; sink: Sink; kinds?: readonly string[] };

/** What a pipeline's graph is built with. */
export type GraphBuilder = {
  /** The shape the restored state was written under (see JobOptions.acceptState); undefined: nothing was restored. */
  readonly restoredShape: unknown;
  /** Builds an operator from its definition, with its state restored, as an RxJS operator. */
  operator<I, O>(definition: OperatorDefinition<I, O>): OperatorFunction<Element<I>, Element<O>>;
  /** Writes the records of `stream` to `sink`; the sink's position is part of every checkpoint. */
  sinkTo(name: string, sink: Sink, stream: Observable<Element<object>>): void;
  /**
   * Writes the body of each record of `stream` to every route that takes its kind (a route
   * without `kinds` takes all): one subscription however many sinks there are.
   */
  routeTo(stream: Observable<Element<KindedOutput>>, routes: SinkRoute[]): void;
  /** Writes a side output's values to a sink, counted under `counter`, shaped by `shape`. */
  sideTo(tag: string, sinkName: string, sink: Sink, counter: string, shape?: (value: unknown) => object): void;
};

/** How a job resumes the state of a checkpoint (see JobOptions.acceptState). */
export type Resumption = {
  /** The shape the state was written under, as the operators are told (GraphBuilder.restoredShape). */
  restoredShape: unknown;
  /** States (names, or prefixes ending in "/") that start empty whatever the checkpoint holds. */
  freshStates?: readonly string[];
};

export type JobOptions<E> = {
  /**
   * What the state holds and what its layout and meaning depend on (JSON), stored with every
   * checkpoint: what `acceptState` compares a restored checkpoint's with.
   */
  shape: unknown;
  /**
   * Decides, before anything is built, whether the last checkpoint's state can be resumed, and
   * how: throws (a StateMismatch) to refuse it. Default: resumed as is when its shape equals
   * `shape`, refused otherwise.
   */
  acceptState?(meta: CheckpointMeta): Resumption;
  source: Source;
  decode(value: unknown, partition: number): Decoded<E>;
  /**
   * The epoch-ms stamp its publisher put in an item, read from the item as the source read it
   * (before `decode`, which may drop fields the pipeline does not keep): end-to-end latency (to its
   * outputs reaching their sinks) is measured from it. Default: not measured.
   */
  stampOf?(raw: unknown): number | undefined;
  newWatermarkGenerator(): WatermarkGenerator;
  /** Processing time without events after which a partition stops holding the watermark back. 0 = never. */
  idlenessMs: number;
  /** With every partition idle, event time follows the processing-time clock (live sources). Default false. */
  advancesWhenIdle?: boolean;
  /**
   * At the end of a bounded source, `drain` (the default): event time jumps to the end of time, so
   * every window and timer fires. `stop`: event time first reaches the input's horizon (its newest
   * event plus the out-of-orderness bound) and only then the end of time, so an operator that must
   * not act on deadlines beyond the input (per-key wake-ups of a replay) can stop at the horizon
   * while windows still all fire.
   */
  atEnd?: "drain" | "stop";
  stateDir: string;
  /** 32 bytes: the state dir is encrypted at rest with it. Default: not encrypted. */
  stateEncryptionKey?: string;
  /**
   * The heap (bytes) past which keyed states that may leave memory (users' records, keys' windows) keep only their
   * recently used entries there, the rest on disk (engine/memoryBudget.ts). Default: none, all in memory.
   */
  memoryBudgetBytes?: number;
  /**
   * Keyed check values of secrets the state depends on, by what they check (e.g. a pseudonymisation
   * key): stored with every checkpoint, and a restore under another value is refused. Never the secret.
   */
  keyChecks?: Record<string, string>;
  /**
   * Where checkpoints are kept besides the state dir (a cluster's partition, engine/cluster/):
   * `prepare` makes the state dir hold the replica's last checkpoint before the store opens it (under
   * the dir's lock); `mirror` keeps each commit, which is durable only once it has.
   */
  replica?: { prepare(dir: string): Promise<void>; mirror: CommitMirror };
  /**
   * The job is one partition of a group that works across keys in rounds (engine/rounds.ts): its
   * watermark waits at each round boundary for the group's model. Used only when an operator takes
   * part (OperatorLogic.rounds). Default: none, every operator works on its partition alone.
   */
  rounds?: RoundExchange;
  /** Processing time between checkpoints. */
  checkpointIntervalMs: number;
  /** Where undecodable and invalid items go, with their reason. */
  deadLetter: Sink;
  /** The dead-letter sink's name in checkpoints (its position, its held outputs). Default "deadLetter". */
  deadLetterName?: string;
  /**
   * Reshapes the dead letter of an item that could not be read or decoded before it is written (for
   * privacy: its raw text withheld, its event minimised). Late events and events an operator failed
   * on were decoded and are not reshaped. Default: as is.
   */
  shapeRefused?(refused: DeadLetter): DeadLetter;
  build(events: Observable<Element<E>>, graph: GraphBuilder): void;
  /** Items per batch; a checkpoint can only fall between batches. Default 1000. */
  batchSize?: number;
  /**
   * The longest the job works through a batch, or packs a checkpoint's state (ms), before it lets the
   * rest of its thread run: an HTTP query, a commit finishing. It stops between two items, never inside
   * one item's step, and changes no state while a checkpoint is being packed; the batch's watermark and
   * checkpoint still come at its end, so outputs do not depend on it. Default 4.
   */
  sliceMs?: number;
  /** Start from nothing: drop the state dir's checkpoint first (under its lock, and only in a dir flusso made). */
  reset?: boolean;
  /** Called about every `progressIntervalMs` (default 500) with the counters so far. */
  onProgress?(counters: Readonly<JobCounters>): void;
  progressIntervalMs?: number;
  /** Called after each checkpoint commits, with what it wrote and how long it took. */
  onCheckpoint?(info: CheckpointInfo): void;
  /**
   * Called at the start with what the job tells about itself (engine/jobView.ts), for an HTTP server
   * or metrics; the view stays valid after the job ends (its final state).
   */
  onView?(view: JobView): void;
  /** Called once the last checkpoint of a stop or of the source's end is durable; what remains is delivering held outputs and closing. */
  onFinalCheckpoint?(checkpointId: number): void;
  /** Asks the job to stop at the next cut, after a last checkpoint. */
  signal?: AbortSignal;
  /** Told what happens as it happens (engine/jobEvents.ts): start, restore, slow checkpoints, falling behind, the end. */
  onEvent?(event: JobEvent): void;
  nowMs?: () => number;
};

/**
 * One checkpoint, begun at `startedAtMs` (the job's clock, epoch ms): `waitMs` waiting for the
 * previous one's write, `flushMs` making the outputs durable and `snapshotMs` taking and encoding the
 * state held the job; the LMDB write then runs beside it and was durable after `durableMs`, and
 * `totalMs` after the checkpoint began.
 */
export type CheckpointInfo = {
  checkpointId: number;
  entries: number;
  bytes: number;
  startedAtMs: number;
  waitMs: number;
  flushMs: number;
  snapshotMs: number;
  durableMs: number;
  totalMs: number;
};

/** Counters of a job with a memory budget: entries moved out of memory to disk only, and entries read back from there. */
export const STATE_EVICTIONS_COUNTER = "state_evictions";
export const STATE_READ_BACKS_COUNTER = "state_read_backs";

export type JobCounters = {
  /** Items read from the source, good or bad. */
  read: number;
  outputs: number;
  late: number;
  deadLettered: number;
  checkpoints: number;
  [counter: string]: number;
};

/** Whether two JSON values are equal, whatever the order of their objects' keys. */
function isDeepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object" || Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => isDeepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** An error's message, its first line only (a log line, not a report). */
function firstLineOf(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0];
}

/** The sum of a source's backlog per partition, where it knows it. */
function sumOf(counts: readonly number[] | undefined): number | undefined {
  return counts?.reduce((a, b) => a + b, 0);
}

/** The largest epoch ms a Date holds (100,000,000 days either side of 1970). */
const MAX_DATE_MS = 8.64e15;

/** JobOptions.sliceMs by default: a query waits about this long for the job at most, outside watermarks and checkpoints. */
const DEFAULT_SLICE_MS = 4;
/** The job reads the clock after every 16th item of a batch. */
const ITEMS_PER_CLOCK_READ_MASK = 15;

/** The output kind dead letters are counted under (JobView.outputsByKind). */
export const DEAD_LETTER_KIND = "dead_letter";

/** The dead-letter reason of an event an operator failed on: the job goes on without it. */
export const OPERATOR_FAILURE_REASON = "an operator failed on this event";

export type JobResult = {
  /** Since the job first started, across restarts. */
  counters: JobCounters;
  /** In this run only (after a restore: since the checkpoint). */
  thisRun: JobCounters;
  elapsedMs: number;
  /** True when the source was exhausted; false when stopped by the signal. */
  isComplete: boolean;
  restoredFromCheckpoint: number | undefined;
  /**
   * When this run's first event had gone through every operator (wall clock, epoch ms): with the
   * process's start, the time to the first event. Undefined when nothing was read.
   */
  firstEventAtMs?: number;
};

type SinkEntry = { name: string; sink: Sink; latency: SinkLatency };

/** What the dead-letter output receives: the reason first, then where the item came from and what it held. */
export type DeadLetter = { reason: string; origin?: string; partition?: number; [field: string]: unknown };

export async function runJob<E>(options: JobOptions<E>): Promise<JobResult> {
  return new Job(options).run();
}

class Job<E> {
  private readonly nowMs: () => number;
  private lock?: StateDirLock;
  private store!: StateStore;
  private readonly sinks: SinkEntry[] = [];
  private readonly sides = new Map<string, Subject<unknown>>();
  private readonly processingTime$ = new Subject<number>();
  private readonly events$ = new Subject<Element<E>>();
  private readonly tracker: WatermarkTracker;
  private counters: JobCounters = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 };
  /** See JobResult.firstEventAtMs. */
  private firstEventAtMs?: number;
  private failure: unknown;
  private checkpointId = 0;
  private runId = "";
  /** The commit still being written, if any: at most one is in flight. */
  private pendingCommit: Promise<void> = Promise.resolve();
  private phase: JobPhase = "starting";
  private lastCheckpoint?: CheckpointRecord;
  private readonly outputsByKind: Record<string, number> = {};
  private readonly operatorViews: Array<{ name: string; view?: OperatorView }> = [];
  /** What outputs written now are charged to, for their latency. */
  private readonly cause = new OutputCause();
  private readonly latency: LatencyRecorders;
  private readonly checkpointListeners: Array<(checkpoint: CheckpointRecord) => void> = [];
  private deadLetterEntry!: SinkEntry;
  private readonly health: JobHealth;
  /** The operator taking part in the group's rounds, if any (at most one). */
  private participant?: RoundParticipant;
  /** The last watermark sent into the graph. */
  private deliveredMs = -Infinity;

  constructor(private readonly options: JobOptions<E>) {
    this.nowMs = options.nowMs ?? Date.now;
    this.tracker = new WatermarkTracker({
      partitions: options.source.partitions,
      newGenerator: options.newWatermarkGenerator,
      idlenessMs: options.idlenessMs,
      advancesWhenIdle: options.advancesWhenIdle,
      nowMs: this.nowMs,
    });
    this.latency = { output: new LatencyRecorder(), endToEnd: options.stampOf && new LatencyRecorder() };
    this.health = new JobHealth((event) => this.emit(event), options.checkpointIntervalMs);
  }

  private emit(event: JobEvent): void {
    this.options.onEvent?.(event);
  }

  /**
   * 1. locks the state dir (resetting it if asked), reads the last checkpoint and refuses one of
   *    another pipeline (acceptState) or written under other keys;
   * 2. builds the graph, which restores every operator's state and timers (those the checkpoint
   *    has of operators no longer in the graph go with the next checkpoint);
   * 3. puts sinks back at their committed positions (holding sinks deliver what they held) and the
   *    source after its recorded position;
   * 4. runs batches until the source ends or a stop is asked, checkpointing at cuts;
   * 5. ends a bounded source with the final watermark and a last checkpoint.
   */
  async run(): Promise<JobResult> {
    const startedAtMs = this.nowMs();
    this.options.onView?.(this.view());
    try {
      // 1.
      this.phase = "restoring";
      this.lock = await lockStateDir(this.options.stateDir, { reset: this.options.reset });
      await this.options.replica?.prepare(this.options.stateDir);
      const { memoryBudgetBytes } = this.options;
      this.store = new StateStore(this.options.stateDir, undefined, {
        encryptionKey: this.options.stateEncryptionKey,
        mirror: this.options.replica?.mirror,
        memoryBudget: memoryBudgetBytes === undefined ? undefined : new MemoryBudget(memoryBudgetBytes),
      });
      const meta = this.store.readMeta();
      const resumption = meta && this.accept(meta);
      for (const [what, check] of Object.entries(this.options.keyChecks ?? {})) {
        const stored = meta?.keyChecks?.[what];
        if (stored !== undefined && stored !== check) throw new StateKeyChanged(this.options.stateDir, what);
      }
      this.runId = meta?.runId ?? randomBytes(6).toString("base64url");
      this.store.startFresh(resumption?.freshStates ?? []);
      // 2.
      this.deadLetterEntry = this.addSink(this.options.deadLetterName ?? "deadLetter", this.options.deadLetter);
      this.options.build(this.events$, this.graphBuilder(resumption?.restoredShape));
      // What the job no longer has (a window or a sink removed) goes with the next checkpoint.
      this.store.forgetUnused(this.sinks.map(({ name }) => name));
      const { source, stateDir } = this.options;
      this.emit({ event: "started", source: source.description, partitions: source.partitions, sinks: this.sinks.map(({ name }) => name), stateDir });
      // 3.
      for (const { name, sink, latency } of this.sinks) {
        const onDelivered = (checkpointId: number) => latency.delivered(checkpointId, this.nowMs());
        await sink.recover(meta?.sinkPositions[name], { sinkName: name, runId: this.runId, held: this.store.heldOutputs(name), onDelivered });
      }
      if (meta) {
        this.tracker.restore(meta.watermarks as WatermarkTrackerSnapshot);
        this.counters = { ...this.counters, ...meta.counters };
        this.checkpointId = meta.checkpointId;
      }
      this.emit(meta ? { event: "restored", checkpointId: meta.checkpointId, watermarkMs: this.tracker.watermarkMs } : { event: "fresh-start", wasReset: this.options.reset === true });
      await this.options.source.open(meta?.sourcePosition);
      const before = { ...this.counters };
      // 4. and 5.
      this.phase = "running";
      const isComplete = await this.loop();
      this.phase = isComplete ? "ended" : "stopped";
      const thisRun = { ...this.counters };
      for (const name of Object.keys(thisRun)) thisRun[name] -= before[name] ?? 0;
      return {
        counters: { ...this.counters },
        thisRun,
        elapsedMs: this.nowMs() - startedAtMs,
        isComplete,
        restoredFromCheckpoint: meta?.checkpointId,
        firstEventAtMs: this.firstEventAtMs,
      };
    } catch (error) {
      this.phase = "failed";
      this.failure ??= error;
      throw error;
    } finally {
      await this.close();
    }
  }

  /** How the checkpoint's state is resumed, or StateMismatch: acceptState's decision, or equal shapes. */
  private accept(meta: CheckpointMeta): Resumption {
    if (this.options.acceptState) return this.options.acceptState(meta);
    if (!isDeepEqual(meta.shape, this.options.shape)) {
      throw new StateMismatch(this.options.stateDir, [meta.shape === undefined ? "it was written by an older flusso, which recorded no state shape" : "it was written by a job of another shape"]);
    }
    return { restoredShape: meta.shape };
  }

  private async loop(): Promise<boolean> {
    const { source, batchSize = 1000, checkpointIntervalMs, signal } = this.options;
    const progressIntervalMs = this.options.progressIntervalMs ?? 500;
    let lastCheckpointAtMs = this.nowMs();
    let lastProgressAtMs = lastCheckpointAtMs;
    if (this.tracker.watermarkMs === END_OF_TIME) {
      // Restored after the end: nothing to read, but what this run changed (stages reset or gone, a new shape) is kept.
      await this.checkpoint(true);
      return true;
    }
    // What the restored watermark fires is charged to the start.
    this.cause.arrived(this.nowMs());
    // Operators judge lateness by the watermark: a restored job must start from the one it had.
    this.deliver(this.tracker.watermarkMs);
    for (;;) {
      const batch = await source.nextBatch(batchSize);
      const nowMs = this.nowMs();
      this.cause.arrived(nowMs);
      try {
        await this.pushAll(batch.items, nowMs);
        for (const p of batch.finishedPartitions ?? []) this.tracker.finish(p);
        if (batch.isDone && this.options.atEnd === "stop") {
          const horizonMs = this.tracker.reachHorizon();
          if (horizonMs !== undefined) await this.advanceTo(horizonMs);
        }
        // (Polled after each event in a group's rounds: what moved since is still to be sent.)
        const watermarkMs = batch.isDone ? this.tracker.end() : (this.tracker.poll() ?? this.tracker.watermarkMs);
        await this.advanceTo(watermarkMs);
      } catch (error) {
        if (!(error instanceof RoundsStopped)) throw error;
        // Stopped mid-round: the state is between two boundaries, which no checkpoint may hold. The
        // last checkpoint stands, and whoever resumes the partition goes on from it.
        this.emit({ event: "stopped-in-round", checkpointId: this.checkpointId });
        return false;
      }
      this.processingTime$.next(nowMs);
      this.throwIfFailed();
      if (batch.isDone) {
        this.emit({ event: "input-ended", read: this.counters.read });
        await this.checkpoint(true);
        return true;
      }
      if (signal?.aborted) {
        this.emit({ event: "stopping", checkpointId: this.checkpointId + 1 });
        await this.checkpoint(true);
        return false;
      }
      if (nowMs - lastCheckpointAtMs >= checkpointIntervalMs) {
        await this.checkpoint();
        lastCheckpointAtMs = this.nowMs();
      }
      if (this.options.onProgress && nowMs - lastProgressAtMs >= progressIntervalMs) {
        this.options.onProgress(this.counters);
        lastProgressAtMs = nowMs;
      }
      this.health.onBatch(nowMs, batch.items.length < batchSize, this.tracker.watermarkMs, () => sumOf(source.pendingMessages?.()));
      // Lets signal handlers and timers run even when the source never waits.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * In a group's rounds, event time reaches a round's boundary (and its first watermark) right after
   * the event that moved the watermark there, not at the end of the batch: where a batch ends
   * depends on how messages arrived, and the models an event sees must not.
   */
  private async reachRoundsDue(): Promise<void> {
    const watermarkMs = this.tracker.poll();
    if (watermarkMs === undefined) return;
    // The first watermark too: the rounds a partition takes part in start from it.
    if (this.deliveredMs === -Infinity || this.participant!.boundariesIn(this.deliveredMs, watermarkMs).length > 0) await this.advanceTo(watermarkMs);
  }

  /** Sends a watermark into the graph, unless it is not past the last one sent. */
  private deliver(watermarkMs: number): void {
    if (!(watermarkMs > this.deliveredMs)) return;
    this.deliveredMs = watermarkMs;
    this.events$.next(watermark(watermarkMs));
  }

  /**
   * Moves event time to `watermarkMs`. In a group's rounds (engine/rounds.ts): the partition's first
   * watermark is announced; one that crosses round boundaries first fires what falls due before the
   * first of them, offers the partial as the state then stands, and then, boundary by boundary, fires
   * what falls due before it, applies the group's model and reaches it; the end of the input offers
   * the final partial and applies the rounds the group still makes, the end last.
   */
  private async advanceTo(watermarkMs: number): Promise<void> {
    const rounds = this.options.rounds;
    const participant = this.participant;
    if (rounds === undefined || participant === undefined || !(watermarkMs > this.deliveredMs)) return this.deliver(watermarkMs);
    const afterMs = this.deliveredMs;
    if (watermarkMs === END_OF_TIME) {
      const models = await rounds.end(afterMs, participant.partial(afterMs, true), (from, to) => participant.boundariesIn(from, to));
      for (const { roundMs, model } of models) this.reachRound(roundMs, model);
      return;
    }
    if (afterMs === -Infinity) {
      await rounds.start(watermarkMs);
      return this.deliver(watermarkMs);
    }
    const boundaries = participant.boundariesIn(afterMs, watermarkMs);
    if (boundaries.length > 0) {
      this.deliver(boundaries[0] - 1);
      await rounds.offer(afterMs, watermarkMs, participant.partial(afterMs, false));
      for (const roundMs of boundaries) this.reachRound(roundMs, await rounds.model(roundMs));
    }
    this.deliver(watermarkMs);
  }

  /** Fires what falls due before the round, applies its model, and reaches it. */
  private reachRound(roundMs: number, model: unknown): void {
    if (roundMs !== END_OF_TIME) this.deliver(roundMs - 1);
    this.participant!.accept(roundMs, model, this.options.rounds!.reports);
    this.deliver(roundMs);
    this.throwIfFailed();
  }

  /**
   * Pushes a batch's items in slices of about `sliceMs` of work, yielding between slices, so whoever
   * shares the job's thread (the HTTP server) waits for a slice, not a batch.
   */
  private async pushAll(items: readonly SourceItem[], nowMs: number): Promise<void> {
    const slice = new TimeSlice(this.options.sliceMs ?? DEFAULT_SLICE_MS);
    const isInRounds = this.options.rounds !== undefined && this.participant !== undefined;
    for (let i = 0; i < items.length; i++) {
      this.push(items[i], nowMs);
      this.firstEventAtMs ??= Date.now();
      if (isInRounds) await this.reachRoundsDue();
      // The clock is read every few items: reading it per item would cost more than the yields save.
      if ((i & ITEMS_PER_CLOCK_READ_MASK) === ITEMS_PER_CLOCK_READ_MASK && i < items.length - 1 && slice.isOver()) await slice.yieldThread();
    }
  }

  private push(item: SourceItem, nowMs: number): void {
    this.counters.read++;
    if (item.error !== undefined) {
      this.deadLetterRefused({ reason: item.error, origin: item.origin, partition: item.partition, raw: item.raw });
      return;
    }
    const decoded = this.options.decode(item.value, item.partition);
    if (decoded.kind !== "record") {
      const origin = item.at === undefined ? undefined : this.options.source.originOf?.(item.partition, item.at);
      this.deadLetterRefused({ reason: decoded.error, origin, partition: item.partition, event: item.value });
      return;
    }
    this.tracker.onEvent(item.partition, decoded.time, nowMs);
    if (this.options.stampOf !== undefined) this.cause.stampMs = this.options.stampOf(item.value) ?? NO_STAMP;
    this.events$.next(decoded);
  }

  private deadLetterRefused(entry: DeadLetter): void {
    this.cause.stampMs = NO_STAMP;
    this.deadLetter(this.options.shapeRefused ? this.options.shapeRefused(entry) : entry);
  }

  /** A dead letter is written whatever it holds: one the sink cannot encode keeps its reason and origin. */
  private deadLetter(entry: DeadLetter): void {
    this.counters.deadLettered++;
    this.outputsByKind[DEAD_LETTER_KIND] = (this.outputsByKind[DEAD_LETTER_KIND] ?? 0) + 1;
    try {
      this.options.deadLetter.write(entry);
    } catch (error) {
      const { reason, origin, partition } = entry;
      this.options.deadLetter.write({ reason, origin, partition, raw: `(withheld: it cannot be encoded: ${(error as Error).message})` });
    }
    this.deadLetterEntry.latency.wrote();
  }

  /** An event an operator threw on is dead-lettered, and the job goes on with the next one. */
  private onRecordFailure(operator: string, rec: StreamRecord<unknown>, error: unknown): void {
    const message = String((error as Error)?.message ?? error).split("\n")[0].slice(0, 500);
    // Times as every output shows them: ISO-8601, with the epoch ms beside (a time no date can hold has none).
    const iso = Math.abs(rec.time) <= MAX_DATE_MS ? new Date(rec.time).toISOString() : null;
    this.deadLetter({ reason: `${OPERATOR_FAILURE_REASON}: ${operator}: ${message}`, key: rec.key, time: iso, time_ms: rec.time, event: rec.value });
  }

  /**
   * A checkpoint at a cut (every operator is done with every record it was given):
   * 1. the previous checkpoint's write has landed (at most one in flight);
   * 2. sinks make their output durable and say their positions;
   * 3. state changes, timers, positions, watermarks and counters are taken now and committed in
   *    one transaction that is written while the job goes on. `isFinal` waits for it.
   * Outputs written after the cut are ahead of the checkpoint: a crash before it lands recovers
   * from the previous one and truncates them back, so nothing is lost or duplicated either way.
   */
  private async checkpoint(isFinal = false): Promise<void> {
    const startedAtMs = performance.now();
    const startedAtClockMs = this.nowMs();
    // 1.
    await this.pendingCommit;
    const waitMs = performance.now() - startedAtMs;
    // 2.
    const sinkPositions: Record<string, unknown> = {};
    try {
      for (const { name, sink } of this.sinks) sinkPositions[name] = await sink.flush();
    } catch (error) {
      this.emit({ event: "checkpoint-failed", checkpointId: this.checkpointId + 1, error: firstLineOf(error) });
      throw error;
    }
    const flushMs = performance.now() - startedAtMs;
    // 3.
    this.counters.checkpoints++;
    const checkpointId = ++this.checkpointId;
    const holds: SinkHold[] = [];
    const holding = this.sinks.filter(({ sink }) => sink.hold !== undefined);
    for (const { name, sink } of holding) holds.push({ sink: name, held: sink.hold!(checkpointId), deliveredThrough: sink.deliveredThrough!() });
    const cutMs = this.nowMs();
    for (const { sink, latency } of this.sinks) {
      if (sink.hold === undefined) latency.reached(cutMs);
      else latency.hold(checkpointId);
    }
    const meta: CheckpointMeta = {
      shape: this.options.shape,
      runId: this.runId,
      keyChecks: this.options.keyChecks,
      sourcePosition: this.options.source.position(),
      sinkPositions,
      watermarks: this.tracker.snapshot(),
      counters: { ...this.counters },
      checkpointId,
      takenAtMs: this.nowMs(),
      ...(this.tracker.watermarkMs === END_OF_TIME ? { isEnded: true } : {}),
    };
    // The job changes no state until the state is packed; the HTTP server may answer between slices.
    const { durable } = await this.store.commitInSlices(meta, holds, this.options.sliceMs ?? DEFAULT_SLICE_MS);
    if (this.store.memoryBudget !== undefined) this.countMemory(this.store.memoryBudget);
    this.pendingCommit = durable.then((info) => {
      const totalMs = performance.now() - startedAtMs;
      this.health.onCheckpoint(checkpointId, totalMs, this.nowMs());
      // Only now may a holding sink send what this checkpoint covers: a crash can no longer take it back.
      for (const { sink } of holding) sink.release!(checkpointId);
      const checkpoint = { checkpointId, entries: info.entries, bytes: info.bytes, startedAtMs: startedAtClockMs, waitMs, flushMs, snapshotMs: info.snapshotMs, durableMs: info.durableMs, totalMs };
      this.lastCheckpoint = { ...checkpoint, committedAtMs: this.nowMs() };
      for (const listener of this.checkpointListeners) listener(this.lastCheckpoint);
      this.options.onCheckpoint?.(checkpoint);
    }, (error: unknown) => {
      this.emit({ event: "checkpoint-failed", checkpointId, error: firstLineOf(error) });
      // The job fails at the end of its batch, whether or not it awaits this commit by then.
      this.failure ??= error;
      throw error;
    });
    // Handled where it is awaited (the next checkpoint, the close) or through `failure`: never an unhandled rejection.
    this.pendingCommit.catch(() => undefined);
    if (isFinal) {
      await this.pendingCommit;
      this.options.onFinalCheckpoint?.(checkpointId);
      for (const { sink } of holding) await sink.delivered!();
    }
  }

  /** What the memory budget did since the last checkpoint: records moved to disk only, and read back. */
  private countMemory(budget: MemoryBudget): void {
    const { evicted, readBacks } = budget.takeCounts();
    this.counters[STATE_EVICTIONS_COUNTER] = (this.counters[STATE_EVICTIONS_COUNTER] ?? 0) + evicted;
    this.counters[STATE_READ_BACKS_COUNTER] = (this.counters[STATE_READ_BACKS_COUNTER] ?? 0) + readBacks;
  }

  private graphBuilder(restoredShape: unknown): GraphBuilder {
    return {
      restoredShape,
      operator: (definition) => {
        const count = (counter: string, by: number) => (this.counters[counter] = (this.counters[counter] ?? 0) + by);
        const logic = definition.build(storeOperatorContext(this.store, definition.name, (tag, value) => this.side(tag).next(value), count));
        this.operatorViews.push({ name: definition.name, view: logic.view });
        if (logic.rounds !== undefined) {
          if (this.options.rounds === undefined) throw new Error(`operator ${definition.name} works across a group's partitions, but this job is not one of a group's (no rounds)`);
          if (this.participant !== undefined) throw new Error(`two operators take part in the group's rounds (${definition.name} and another): one may`);
          this.participant = logic.rounds;
        }
        return operate(logic, (tag, value) => this.side(tag).next(value), this.processingTime$, (rec, error) => this.onRecordFailure(definition.name, rec, error));
      },
      sinkTo: (name, sink, stream) => {
        const entry = this.addSink(name, sink);
        stream.subscribe({
          next: (element) => {
            if (element.kind !== "record") return;
            this.counters.outputs++;
            this.outputsByKind[name] = (this.outputsByKind[name] ?? 0) + 1;
            this.write(entry, element.value);
          },
          error: (error) => (this.failure ??= error),
        });
      },
      routeTo: (stream, routes) => {
        const entries = routes.map(({ name, sink }) => this.addSink(name, sink));
        const sinksByKind = new Map<string, SinkEntry[]>();
        const sinksOf = (kind: string) => {
          let sinks = sinksByKind.get(kind);
          if (sinks === undefined) {
            sinks = entries.filter((_, i) => routes[i].kinds === undefined || routes[i].kinds!.includes(kind));
            sinksByKind.set(kind, sinks);
          }
          return sinks;
        };
        stream.subscribe({
          next: (element) => {
            if (element.kind !== "record") return;
            const sinks = sinksOf(element.value.kind);
            this.counters.outputs += sinks.length;
            this.outputsByKind[element.value.kind] = (this.outputsByKind[element.value.kind] ?? 0) + sinks.length;
            for (let i = 0; i < sinks.length; i++) this.write(sinks[i], element.value.body);
          },
          error: (error) => (this.failure ??= error),
        });
      },
      sideTo: (tag, sinkName, sink, counter, shape = (value) => value as object) => {
        const entry = this.sinks.find((s) => s.name === sinkName) ?? this.addSink(sinkName, sink);
        this.side(tag).subscribe((value) => {
          this.counters[counter] = (this.counters[counter] ?? 0) + 1;
          this.outputsByKind[tag] = (this.outputsByKind[tag] ?? 0) + 1;
          this.write(entry, shape(value));
        });
      },
    };
  }

  /**
   * Writes one output. A sink that throws (an output it cannot encode) fails the job at the end of
   * the batch, with its error, rather than inside RxJS, where it would be lost.
   */
  private write({ sink, latency }: SinkEntry, value: object): void {
    try {
      sink.write(value);
      latency.wrote();
    } catch (error) {
      this.failure ??= error;
    }
  }

  /** What the job tells about itself; every method reads the job as it stands between two batches. */
  private view(): JobView {
    return {
      status: () => ({ phase: this.phase, notReady: this.notReady() }),
      counters: () => ({ ...this.counters }),
      outputsByKind: () => ({ ...this.outputsByKind }),
      watermarks: () => ({ watermarkMs: this.tracker.watermarkMs, partitions: this.tracker.partitionsNow() }),
      lastCheckpoint: () => this.lastCheckpoint,
      stateEntries: () => this.store?.liveEntries() ?? 0,
      operators: () => this.operatorViews,
      source: () => ({ description: this.options.source.description, partitions: this.options.source.partitions, pendingMessages: this.options.source.pendingMessages?.(), progress: this.options.source.progress?.() }),
      latency: () => this.latency,
      onCheckpoint: (listener) => void this.checkpointListeners.push(listener),
    };
  }

  /** Why the job cannot serve current results now, if it cannot. */
  private notReady(): string | undefined {
    switch (this.phase) {
      case "starting":
      case "restoring":
        return "restoring the state of the last checkpoint";
      case "failed":
        return `the job failed: ${String((this.failure as Error)?.message ?? this.failure).split("\n")[0]}`;
      default: {
        const source = this.options.source.unavailable?.();
        if (source !== undefined) return `source ${this.options.source.description}: ${source}`;
        for (const { name, sink } of this.sinks) {
          const reason = sink.unavailable?.();
          if (reason !== undefined) return `sink ${name}: ${reason}`;
        }
        return undefined;
      }
    }
  }

  private side(tag: string): Subject<unknown> {
    let subject = this.sides.get(tag);
    if (!subject) {
      subject = new Subject();
      this.sides.set(tag, subject);
    }
    return subject;
  }

  private addSink(name: string, sink: Sink): SinkEntry {
    if (this.sinks.some((s) => s.name === name)) throw new Error(`two sinks are named "${name}"`);
    const entry = { name, sink, latency: new SinkLatency(this.cause, this.latency) };
    this.sinks.push(entry);
    return entry;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async close(): Promise<void> {
    await this.pendingCommit.catch(() => undefined);
    this.events$.complete();
    await this.options.source.close().catch(() => undefined);
    for (const { sink } of this.sinks) await sink.close().catch(() => undefined);
    await this.store?.close();
    await this.lock?.release();
  }
}
