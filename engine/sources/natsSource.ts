// JetStream source: an ordered consumer started right after the stream sequence a checkpoint
// recorded, so correctness never rests on the server's ack state. Subjects are partitions
// (`events.3` is partition 3), each with its own watermark. A bounded queue between the consumer
// and the job is the backpressure: the consumer waits while the job is behind.
import { DeliverPolicy, jetstream, type ConsumerMessages, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SourcePositionInvalid } from "../errors.ts";
import { connectionHealth, connectNats, ensureStream, jetstreamManager, lastSeqOf, streamInfo } from "../nats.ts";
import { partitionOfSubject } from "../partitioning.ts";
import { decodeJsonBytes, textPreview } from "./decoding.ts";
import { decodeMsgpackMessage } from "./msgpack.ts";
import type { ConnectionEvent } from "../jobEvents.ts";
import type { Source, SourceBatch, SourceItem, SourceProgress } from "./source.ts";
import { NATS_SOURCE_DEFAULTS } from "../natsSubjects.ts";

export type NatsSourceOptions = {
  servers: string | string[];
  /** Created when missing, with `subjects`. */
  stream: string;
  /** The stream's subjects; a single one is also the consumer's filter, e.g. "events.>". */
  subjects: string[];
  format: "json" | "msgpack";
  /** Subject `<prefix>.<n>` is partition n mod `partitions`. Default 1. */
  partitions?: number;
  /**
   * Reads only this partition: the subject `<prefix>.<partition>` of the one subject `<prefix>.>`,
   * as one partition of its own (a cluster's worker runs a job per partition it holds). Default: all.
   */
  partition?: number;
  /** Stop at the stream's last sequence as of start-up (backfills, replays, tests). Default false. */
  bounded?: boolean;
  /** Messages held between the consumer and the job at most. Default 10,000. */
  bufferMessages?: number;
  /** How long an empty batch waits for messages, so the job can still checkpoint and tick. Default 100 ms. */
  pollMs?: number;
  /** Copies a NATS cluster keeps of the stream, if the source creates it. Default 1. */
  replicas?: number;
  /** Ends a wait for a first connection (a stop asked while the server is out of reach). */
  signal?: AbortSignal;
  /** Told about its connection: connected, a server out of reach, disconnected, reconnected. */
  log?(event: ConnectionEvent): void;
};


/**
 * The last stream sequence handed to the job, and the stream's creation time: a stream deleted and
 * made again under the same name is another stream, whose sequences mean nothing to the checkpoint.
 */
type NatsPosition = { streamSeq: number; streamCreated?: string };

/** How long closing waits for the consumer to stop before it lets go of it. */
const CLOSE_TIMEOUT_MS = 2_000;

const RAW_PREVIEW = 200;
/** The longest a batch waits to be whole while the server holds a backlog (see fillFromBacklog). */
const BACKLOG_FILL_WAIT_MS = 2_000;
/** How long a consumer may deliver nothing, with messages waiting on the server, before it is replaced. */
const STALL_CHECK_MS = 5_000;

export class NatsSource implements Source {
  private nc?: NatsConnection;
  private messages?: ConsumerMessages;
  private readonly queue: JsMsg[] = [];
  /** The newest message the consumer delivered: JetStream tells with it how many more wait on the server. */
  private newest?: JsMsg;
  private lastSeq = 0;
  private endSeq = Infinity;
  /** The sequence before the stream's first message at start-up: progress counts from there, as a file's from its start. */
  private beforeFirstSeq = 0;
  private onArrival?: () => void;
  private onSpace?: () => void;
  private pumpError: unknown;
  private generation = 0;
  private filter?: string;
  private streamCreated?: string;
  private connecting?: string;
  private health?: () => string | undefined;
  /** Messages the consumers delivered so far: the stall watch sees whether it moved. */
  private delivered = 0;
  private stallTimer?: NodeJS.Timeout;

  constructor(private readonly options: NatsSourceOptions) {}

  get description(): string {
    return `nats:${this.options.stream}`;
  }

  get partitions(): number {
    return this.options.partition === undefined ? (this.options.partitions ?? NATS_SOURCE_DEFAULTS.partitions) : 1;
  }

  /** The subject of the one partition read, when only one is. */
  private get partitionSubject(): string | undefined {
    const { partition, subjects } = this.options;
    if (partition === undefined) return undefined;
    if (subjects.length !== 1 || !subjects[0].endsWith(".>")) throw new Error(`${this.description}: reading one partition needs one subject of the form "<prefix>.>", got ${subjects.join(", ")}`);
    return `${subjects[0].slice(0, -2)}.${partition}`;
  }

  /**
   * 1. connects, and creates the stream if it is missing;
   * 2. refuses a stream that is not the one the checkpoint read (made again since), or that no longer
   *    holds the messages after the checkpoint (removed by its limits before the job read them);
   * 3. for a bounded source, notes where the stream ends now;
   * 4. starts an ordered consumer at the sequence after the checkpoint's, and the pump.
   */
  async open(position: unknown): Promise<void> {
    const committed = position as NatsPosition | undefined;
    this.lastSeq = committed?.streamSeq ?? 0;
    // 1.
    this.connecting = `connecting to NATS at ${[this.options.servers].flat().join(", ")}`;
    const client = `source ${this.options.stream}`;
    this.nc = await connectNats({ servers: this.options.servers, client, signal: this.options.signal, onEvent: this.options.log });
    this.connecting = undefined;
    this.health = connectionHealth(this.nc, this.options.servers, client, this.options.log);
    const jsm = await jetstreamManager(this.nc);
    if (committed !== undefined && (await streamInfo(jsm, this.options.stream)) === undefined) {
      throw new SourcePositionInvalid(this.description, `the stream was deleted since the last checkpoint, which read it up to sequence ${committed.streamSeq}; run with --reset to start over`);
    }
    const info = await ensureStream(jsm, { name: this.options.stream, subjects: this.options.subjects, replicas: this.options.replicas });
    // 2.
    this.streamCreated = info.created;
    this.checkSameStream(committed, info.created, info.state.first_seq, info.state.last_seq);
    // 3.
    const partitionSubject = this.partitionSubject;
    if (this.options.bounded) this.endSeq = partitionSubject === undefined ? info.state.last_seq : await lastSeqOf(jsm, this.options.stream, partitionSubject);
    this.beforeFirstSeq = info.state.first_seq - 1;
    if (this.lastSeq >= this.endSeq) return;
    // 4. A filter only where the stream holds more than the pipeline reads: nats-server 2.9 takes
    // ~1 ms per message to start a wildcard-filtered consumer in mid-stream (27 s for 30k).
    const streamSubjects = info.config.subjects ?? [];
    const isFilterNeeded = streamSubjects.some((subject) => !this.options.subjects.includes(subject));
    if (isFilterNeeded && this.options.subjects.length > 1) {
      throw new Error(`${this.description}: the stream also holds ${streamSubjects.join(", ")}; reading several of its subjects needs nats-server 2.10`);
    }
    this.filter = partitionSubject ?? (isFilterNeeded ? this.options.subjects[0] : undefined);
    await this.startConsumer();
    void this.restartOnReconnect(this.nc);
    this.watchForStalls(jsm);
  }

  /**
   * A consumer can stall without the connection noticing: in a NATS cluster, the server holding it
   * may go while this connection's server stays. Every STALL_CHECK_MS without a message, with the
   * buffer empty, the source looks whether the stream holds messages after the last it took, and if
   * so starts a new consumer from there.
   */
  private watchForStalls(jsm: JetStreamManager): void {
    let deliveredAtCheck = this.delivered;
    let isChecking = false;
    this.stallTimer = setInterval(() => {
      const isQuiet = this.delivered === deliveredAtCheck && this.queue.length === 0;
      deliveredAtCheck = this.delivered;
      if (!isQuiet || isChecking || this.lastSeq >= this.endSeq) return;
      isChecking = true;
      this.lastSeqNow(jsm)
        .then((lastSeq) => (lastSeq > this.lastSeq ? this.startConsumer() : undefined))
        .catch(() => undefined) // NATS out of reach: the next check tries again
        .finally(() => (isChecking = false));
    }, STALL_CHECK_MS);
    this.stallTimer.unref();
  }

  /** The newest sequence of what this source reads. */
  private async lastSeqNow(jsm: JetStreamManager): Promise<number> {
    if (this.filter !== undefined) return lastSeqOf(jsm, this.options.stream, this.filter);
    return (await jsm.streams.info(this.options.stream)).state.last_seq;
  }

  private checkSameStream(committed: NatsPosition | undefined, created: string, firstSeq: number, lastSeq: number): void {
    if (committed === undefined) return;
    const restart = "run with --reset to read the stream from its start";
    if (committed.streamCreated !== undefined && committed.streamCreated !== created) {
      throw new SourcePositionInvalid(
        this.description,
        `the stream was deleted and made again since the last checkpoint (it was created ${created}, the checkpoint read one created ${committed.streamCreated}): its sequence ${committed.streamSeq} means nothing in the new one; ${restart}`,
      );
    }
    if (lastSeq < committed.streamSeq) {
      throw new SourcePositionInvalid(this.description, `the checkpoint read up to sequence ${committed.streamSeq} but the stream ends at ${lastSeq}: it was purged or replaced; ${restart}`);
    }
    if (firstSeq > committed.streamSeq + 1) {
      throw new SourcePositionInvalid(
        this.description,
        `messages ${committed.streamSeq + 1}..${firstSeq - 1} were removed from the stream (its limits or a purge) before the job read them; ` +
          `${restart}, or raise the stream's limits so the job can keep up`,
      );
    }
  }

  /** A consumer reading from right after the last sequence handed to the job. */
  private async startConsumer(): Promise<void> {
    const generation = ++this.generation;
    // A pump parked on a full buffer belongs to the consumer being replaced: release it, so that
    // it sees it is stale and ends, instead of waiting for ever.
    this.onSpace?.();
    this.onSpace = undefined;
    await this.messages?.close().catch(() => undefined);
    this.queue.length = 0;
    const consumer = await jetstream(this.nc!).consumers.get(this.options.stream, {
      ...(this.filter !== undefined ? { filter_subjects: this.filter } : {}),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.lastSeq + 1,
    });
    if (generation !== this.generation) return;
    this.messages = await consumer.consume({ max_messages: Math.min(1000, this.bufferSize) });
    void this.pump(this.messages, generation);
  }

  /**
   * After the server comes back, the old consumer may be gone with it (a restart) or stalled: a new
   * one starts after the last sequence the job took, and what was queued is read again.
   */
  private async restartOnReconnect(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type !== "reconnect") continue;
      await this.startConsumer().catch((error) => {
        this.pumpError = error;
        this.onArrival?.();
      });
    }
  }

  async nextBatch(maxItems: number): Promise<SourceBatch> {
    if (this.pumpError !== undefined) throw this.pumpError;
    if (this.lastSeq >= this.endSeq) return { items: [], isDone: true };
    if (this.queue.length === 0) await this.arrivalOrTimeout();
    await this.fillFromBacklog(maxItems);
    const items: SourceItem[] = [];
    while (items.length < maxItems && this.queue.length > 0 && this.lastSeq < this.endSeq) {
      const msg = this.queue.shift()!;
      const seq = msg.seq;
      // An ordered consumer that was reset may deliver again what was already taken.
      if (seq <= this.lastSeq) continue;
      this.lastSeq = seq;
      items.push(this.decode(msg));
    }
    this.onSpace?.();
    return { items, isDone: this.lastSeq >= this.endSeq };
  }

  /**
   * While the server holds more than the buffer (a backlog: a restart, a takeover, a bounded read),
   * waits until a whole batch is there: the job's watermarks come at batch ends, and outputs that
   * depend on where a watermark falls among events (a cluster run, a timer before an event) must
   * not depend on how fast messages arrived, or a replay after a crash, or a partition read by
   * another worker, would differ from the first run. A live tail is cut where arrivals stop, as it
   * must be; the wait is bounded, so a slow server costs time, not progress.
   */
  private async fillFromBacklog(maxItems: number): Promise<void> {
    const target = Math.min(maxItems, this.bufferSize);
    const deadlineMs = Date.now() + BACKLOG_FILL_WAIT_MS;
    while (this.queue.length < target && this.isBacklogged() && this.pumpError === undefined && Date.now() < deadlineMs) await this.arrivalOrTimeout();
  }

  /** The server holds messages after the newest delivered one, before the end of a bounded read. */
  private isBacklogged(): boolean {
    const newest = this.newest;
    return newest !== undefined && newest.info.pending > 0 && newest.seq < this.endSeq;
  }

  /** Messages received and not yet handed to the job: at most `bufferMessages` plus one pull. */
  get bufferedMessages(): number {
    return this.queue.length;
  }

  unavailable(): string | undefined {
    return this.connecting ?? this.health?.();
  }

  /**
   * Messages not yet handed to the job, by partition: those in the buffer, counted exactly, and
   * those still on the server after the newest delivered one. JetStream counts the latter for the
   * consumer as a whole, so with several partitions they are shared out by the buffer's partition
   * mix (evenly when it is empty): an estimate, exact with one partition. Costs a pass over the
   * buffer, when asked, and nothing per message.
   */
  pendingMessages(): number[] {
    const buffered = new Array<number>(this.partitions).fill(0);
    for (const msg of this.queue) if (msg.seq > this.lastSeq) buffered[partitionOfSubject(msg.subject, this.partitions)]++;
    const newest = this.newest;
    const onServer = newest === undefined || this.lastSeq >= this.endSeq ? 0 : Math.max(0, Math.min(newest.info.pending, this.endSeq - newest.seq));
    const inBuffer = buffered.reduce((sum, n) => sum + n, 0);
    return buffered.map((n) => n + Math.round(inBuffer === 0 ? onServer / this.partitions : (onServer * n) / inBuffer));
  }

  /** A bounded stream: messages read of those it held at start-up, across restarts (as a file's bytes). */
  progress(): SourceProgress | undefined {
    if (!Number.isFinite(this.endSeq)) return undefined;
    return { done: Math.max(0, this.lastSeq - this.beforeFirstSeq), total: Math.max(0, this.endSeq - this.beforeFirstSeq) };
  }

  position(): NatsPosition {
    return { streamSeq: this.lastSeq, streamCreated: this.streamCreated };
  }

  originOf(_partition: number, at: number): string {
    return `${this.options.stream}#${at}`;
  }

  /**
   * Stops the consumer and the connection. A pump parked on a full buffer (a job that was behind)
   * is released first: the consumer's close waits for its iterator, which the parked pump holds.
   */
  async close(): Promise<void> {
    clearInterval(this.stallTimer);
    this.generation++;
    this.onSpace?.();
    this.onSpace = undefined;
    const closed = this.messages?.close().catch(() => undefined);
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())]);
    await this.nc?.close().catch(() => undefined);
  }

  private get bufferSize(): number {
    return this.options.bufferMessages ?? NATS_SOURCE_DEFAULTS.bufferMessages;
  }

  private async pump(messages: ConsumerMessages, generation: number): Promise<void> {
    try {
      for await (const msg of messages) {
        if (generation !== this.generation) break;
        this.queue.push(msg);
        this.delivered++;
        this.newest = msg;
        this.onArrival?.();
        if (this.queue.length >= this.bufferSize) await new Promise<void>((resolve) => (this.onSpace = resolve));
      }
    } catch (error) {
      if (generation !== this.generation) return; // a replaced consumer's end is no failure
      this.pumpError = error;
      this.onArrival?.();
    }
  }

  private arrivalOrTimeout(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.options.pollMs ?? NATS_SOURCE_DEFAULTS.pollMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.onArrival = done;
    });
  }

  /** A message's value: UTF-8 JSON or msgpack, within the value limits (decoding.ts, msgpack.ts). */
  private decode(msg: JsMsg): SourceItem {
    const partition = partitionOfSubject(msg.subject, this.partitions);
    const origin = `${this.options.stream}#${msg.seq} (${msg.subject})`;
    const decoded = this.options.format === "json" ? decodeJsonBytes(msg.data, "message") : decodeMsgpackMessage(msg.data);
    if ("value" in decoded) return { partition, value: decoded.value, at: msg.seq };
    return { partition, error: decoded.error, raw: decoded.raw ?? textPreview(msg.string()), origin };
  }
}
