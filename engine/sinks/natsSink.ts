// JetStream output, exactly once: nothing is published before the checkpoint that produced it has
// committed (what a crash takes back was never sent), and what a checkpoint held is published after
// it under ids made of the output's number, so a replay after a crash finds, by reading the stream
// back, what already arrived, however long the job was down.
import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { pack } from "msgpackr";
import { SinkLost } from "../errors.ts";
import { AckedPublisher, connectionHealth, connectNats, ensureStream, jetstreamManager, readStreamSince, streamInfo } from "../nats.ts";
import type { ConnectionEvent } from "../jobEvents.ts";
import type { HeldOutputs } from "../store.ts";
import type { Sink, SinkRecovery } from "./sink.ts";
import { jsonText } from "./jsonText.ts";
import { TimeSlice } from "../timeSlice.ts";
import { DEFAULT_DUPLICATE_WINDOW_MS } from "../natsSubjects.ts";

export type NatsSinkOptions = {
  servers: string | string[];
  /** Created when missing, with `subject`. */
  stream: string;
  subject: string;
  format: "json" | "msgpack";
  /** Part of every message id, so two pipelines writing one stream do not drop each other's outputs. */
  pipeline: string;
  /** The stream's duplicate window, which catches resends within a run. Default 2 min. */
  duplicateWindowMs?: number;
  /** Copies a NATS cluster keeps of the stream, if the sink creates it. Default 1. */
  replicas?: number;
  /** Ends a wait for a first connection (a stop asked while the server is out of reach). */
  signal?: AbortSignal;
  /** Told about its connection: connected, a server out of reach, disconnected, reconnected. */
  log?(event: ConnectionEvent): void;
};


/** What a checkpoint records of the sink. */
type NatsSinkPosition = {
  /** Outputs numbered so far: the next one is `written + 1`. */
  written: number;
  /** The stream's creation time: a stream deleted and made again is not the one written to. */
  streamCreated: string;
  /** Every output not known delivered was stored, if at all, after this stream sequence. */
  readBackAfterSeq: number;
};

/** The outputs one checkpoint holds: numbered from `firstNumber`, already encoded. */
type Held = { firstNumber: number; messages: Array<string | Uint8Array> };
/** One released checkpoint's delivery: unacked messages, the acked sequence when sending began, and whether some are still to be handed over. */
type Sending = { checkpointId: number; unacked: number; floorSeq: number; isSending: boolean };

/** Undelivered messages at most before a checkpoint waits for acks: bounds memory while the server is slow or away. */
const MAX_UNDELIVERED = 50_000;
/** The longest a release hands messages to the publisher before it lets the job's thread run (ms). */
const SEND_SLICE_MS = 4;
/** The clock is read after every 64th message of a release. */
const MESSAGES_PER_CLOCK_READ_MASK = 63;
/** Publishes failing this long, with no ack at all, make the sink look whether its stream still exists. */
const FAILING_CHECK_MS = 5_000;

export class NatsSink implements Sink {
  private nc?: NatsConnection;
  private publisher?: AckedPublisher;
  private idPrefix = "";
  private streamCreated = "";
  private written = 0;
  /** Written since the last cut, not yet held by a checkpoint. */
  private pending: Array<string | Uint8Array> = [];
  /** Held by checkpoints that have not committed yet, by checkpoint id. */
  private readonly heldBy = new Map<number, Held>();
  /** Released checkpoints not all delivered, oldest first. */
  private readonly sending: Sending[] = [];
  /** Releases publish one after another, each in slices (see sendInSlices); this is the last one's end. */
  private releasing: Promise<void> = Promise.resolve();
  /** Messages released but not yet handed to the publisher. */
  private unsent = 0;
  private deliveredCheckpoint = 0;
  private failure?: Error;
  private watching?: NodeJS.Timeout;
  private isClosed = false;
  private connecting?: string;
  private health?: () => string | undefined;
  private onDelivered?: (checkpointId: number) => void;

  constructor(private readonly options: NatsSinkOptions) {}

  /** Who holds the connection, as its events name it. */
  private get client(): string {
    return `sink ${this.options.subject}`;
  }

  get description(): string {
    return `nats:${this.options.stream}/${this.options.subject}`;
  }

  /**
   * 1. connects; a stream that is gone or was made again since the checkpoint is refused (what was
   *    delivered to it is lost, and a replay would not restore it);
   * 2. reads back the stream after the checkpoint's sequence and sends again only what it lacks of
   *    the outputs committed checkpoints held, waiting until they are delivered;
   * 3. from then on, reads back the same way after every reconnect before resending.
   */
  async recover(position: unknown, { runId, held, sinkName, onDelivered }: SinkRecovery): Promise<void> {
    this.onDelivered = onDelivered;
    const committed = position as NatsSinkPosition | undefined;
    this.written = committed?.written ?? 0;
    this.idPrefix = `${this.options.pipeline}.${runId}.${sinkName}.`;
    // 1.
    this.connecting = `connecting to NATS at ${[this.options.servers].flat().join(", ")}`;
    this.nc = await connectNats({
      servers: this.options.servers,
      client: this.client,
      signal: this.options.signal,
      onEvent: this.options.log,
    });
    this.connecting = undefined;
    this.health = connectionHealth(this.nc, this.options.servers, this.client, this.options.log);
    const jsm = await jetstreamManager(this.nc);
    const existing = await streamInfo(jsm, this.options.stream);
    if (committed !== undefined && existing === undefined) throw this.lost("was deleted since the last checkpoint");
    if (committed !== undefined && existing!.created !== committed.streamCreated) {
      throw this.lost(`was deleted and made again since the last checkpoint (created ${existing!.created}, the checkpoint wrote to one created ${committed.streamCreated})`);
    }
    const info = await ensureStream(jsm, { name: this.options.stream, subjects: [this.options.subject], duplicateWindowMs: this.options.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS, replicas: this.options.replicas });
    this.streamCreated = info.created;
    this.publisher = new AckedPublisher(this.nc);
    // 2.
    const afterSeq = committed?.readBackAfterSeq ?? 0;
    this.publisher.maxAckedSeq = afterSeq;
    if (held.length > 0) {
      const stored = await this.storedNumbers(afterSeq);
      for (const { checkpointId, held: h } of held) await this.sendInSlices(this.track(checkpointId), h as Held, (n) => !stored.has(n));
      await this.deliveredAll();
    }
    // 3.
    void this.readBackOnReconnect(this.nc);
    this.watching = setInterval(() => void this.watchFailures(), FAILING_CHECK_MS);
    this.watching.unref();
  }

  write(value: object): void {
    const data = this.options.format === "json" ? jsonText(value) : pack(value);
    this.pending.push(data);
    this.written++;
  }

  /** Nothing to make durable here: the checkpoint holds what was written. Waits only while too much is undelivered. */
  async flush(): Promise<NatsSinkPosition> {
    this.throwIfFailed();
    if (this.unsent > MAX_UNDELIVERED) await this.releasing;
    if (this.publisher!.pending > MAX_UNDELIVERED) await this.publisher!.settle(MAX_UNDELIVERED / 2);
    this.throwIfFailed();
    return { written: this.written, streamCreated: this.streamCreated, readBackAfterSeq: this.readBackAfterSeq() };
  }

  hold(checkpointId: number): Held | undefined {
    if (this.pending.length === 0) return undefined;
    const held = { firstNumber: this.written - this.pending.length + 1, messages: this.pending };
    this.pending = [];
    this.heldBy.set(checkpointId, held);
    return held;
  }

  release(checkpointId: number): void {
    const held = this.heldBy.get(checkpointId);
    if (held === undefined) return;
    this.heldBy.delete(checkpointId);
    const batch = this.track(checkpointId);
    this.unsent += held.messages.length;
    this.releasing = this.releasing
      .then(() => this.sendInSlices(batch, held, () => true))
      .catch((error: unknown) => void (this.failure ??= error as Error))
      .finally(() => (this.unsent -= held.messages.length));
  }

  unavailable(): string | undefined {
    return this.connecting ?? this.health?.();
  }

  deliveredThrough(): number {
    return this.deliveredCheckpoint;
  }

  delivered(): Promise<void> {
    return this.deliveredAll();
  }

  async close(): Promise<void> {
    this.isClosed = true;
    clearInterval(this.watching);
    this.publisher?.close();
    await this.nc?.close().catch(() => undefined);
  }

  /** Starts tracking the delivery of one checkpoint's messages, after those released before it. */
  private track(checkpointId: number): Sending {
    const batch: Sending = { checkpointId, unacked: 0, floorSeq: this.publisher!.maxAckedSeq, isSending: true };
    this.sending.push(batch);
    return batch;
  }

  private publishOne(batch: Sending, data: string | Uint8Array, n: number): void {
    batch.unacked++;
    this.publisher!.publish(this.options.subject, data, `${this.idPrefix}${n}`, () => {
      if (--batch.unacked === 0 && !batch.isSending) this.advanceDelivered();
    });
  }

  /** Every message of the batch is with the publisher: once all are acked, its checkpoint is delivered. */
  private sent(batch: Sending): void {
    batch.isSending = false;
    if (batch.unacked === 0) this.advanceDelivered();
  }

  /**
   * Hands the messages of one checkpoint that `isToSend` picks (by number) to the publisher in slices
   * of about SEND_SLICE_MS, yielding between them: a checkpoint that holds thousands of outputs (a
   * cluster run, a burst of wake-ups) would otherwise hold the job's thread, and its queries, for tens
   * of ms. Stops when the sink closes: what is left stays held in the checkpoint, and the next run
   * delivers it.
   */
  private async sendInSlices(batch: Sending, { firstNumber, messages }: Held, isToSend: (n: number) => boolean): Promise<void> {
    const slice = new TimeSlice(SEND_SLICE_MS);
    for (let i = 0; i < messages.length; i++) {
      if (this.isClosed) return;
      if (isToSend(firstNumber + i)) this.publishOne(batch, messages[i], firstNumber + i);
      if ((i & MESSAGES_PER_CLOCK_READ_MASK) === MESSAGES_PER_CLOCK_READ_MASK && slice.isOver()) await slice.yieldThread();
    }
    this.sent(batch);
  }

  /** Moves `delivered` over the oldest checkpoints whose messages are all sent and acked. */
  private advanceDelivered(): void {
    while (this.sending.length > 0 && this.sending[0].unacked === 0 && !this.sending[0].isSending) {
      this.deliveredCheckpoint = this.sending.shift()!.checkpointId;
      this.onDelivered?.(this.deliveredCheckpoint);
    }
  }

  /**
   * The stream sequence after which every message not yet known delivered was stored, if it was: a
   * message is stored after every message whose ack came before it was first sent.
   */
  private readBackAfterSeq(): number {
    return this.sending.length > 0 ? this.sending[0].floorSeq : this.publisher!.maxAckedSeq;
  }

  private async deliveredAll(): Promise<void> {
    await this.releasing;
    while (this.publisher!.pending > 0) {
      this.throwIfFailed();
      if (this.isClosed) throw new Error(`${this.description}: closed with ${this.publisher!.pending} outputs not yet delivered (they are held in the last checkpoint: the next run delivers them)`);
      await this.publisher!.settle(0);
    }
    this.throwIfFailed();
  }

  /** The numbers of this sink's outputs (of this run id) stored after `afterSeq`. */
  private async storedNumbers(afterSeq: number): Promise<Set<number>> {
    const stored = new Set<number>();
    await readStreamSince(this.nc!, this.options.stream, { afterSeq, subject: this.options.subject }, (msg: JsMsg) => {
      const id = msg.headers?.get("Nats-Msg-Id");
      if (id?.startsWith(this.idPrefix)) stored.add(Number(id.slice(this.idPrefix.length)));
    });
    return stored;
  }

  /**
   * After a reconnect, the acks of messages stored before the link went may never come, and the
   * stream's duplicate window may have passed: resending them blindly could store them twice. So
   * resending waits while the stream is read back, and what it already has is dropped first.
   */
  private async readBackOnReconnect(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type !== "reconnect" || this.publisher === undefined) continue;
      this.publisher.pause();
      try {
        const prefix = this.idPrefix;
        const stored = await this.storedNumbers(this.readBackAfterSeq());
        this.publisher.drop((id) => id.startsWith(prefix) && stored.has(Number(id.slice(prefix.length))));
      } catch (error) {
        if (String((error as Error).message).includes("stream not found")) this.failure ??= this.lost("was deleted while the job ran");
        // Otherwise the server went away again: the next reconnect reads back again.
      } finally {
        this.publisher.resume();
      }
    }
  }

  /** Publishes that have failed for a while, with the server up: is the stream still there? */
  private async watchFailures(): Promise<void> {
    const failure = this.publisher?.failure;
    if (failure === undefined || Date.now() - failure.sinceMs < FAILING_CHECK_MS || this.nc === undefined || this.nc.isClosed()) return;
    try {
      const info = await streamInfo(await jetstreamManager(this.nc), this.options.stream);
      if (info === undefined) this.failure ??= this.lost(`was deleted while the job ran (publishes fail: ${failure.reason})`);
      else if (info.created !== this.streamCreated) this.failure ??= this.lost(`was deleted and made again while the job ran (created ${info.created})`);
    } catch {
      // The server does not answer: a pause, not a loss.
    }
  }

  private lost(what: string): SinkLost {
    return new SinkLost(
      this.description,
      `the stream ${this.options.stream} ${what}; the outputs delivered to it are gone and continuing would leave a gap. ` +
        `Run with --reset to write every output again from the start`,
    );
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
