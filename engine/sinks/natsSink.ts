// JetStream output, exactly once: every message carries a Nats-Msg-Id computed from the pipeline and
// the output itself, so an output re-produced after a crash is dropped by the stream's duplicate
// window; acks are awaited when a checkpoint flushes, before it commits. Messages go out as core
// publishes whose acks come back to one inbox: a request per message costs five times as much.
import { createHash } from "node:crypto";
import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { pack } from "msgpackr";
import { connectNats, ensureStream, jetstreamManager } from "../nats.ts";
import type { Sink } from "./sink.ts";

export type NatsSinkOptions = {
  servers: string | string[];
  /** Created when missing, with `subject`. */
  stream: string;
  subject: string;
  format: "json" | "msgpack";
  /** Part of every message id, so two pipelines writing one stream do not drop each other's outputs. */
  pipeline: string;
  /** The stream's duplicate window: must outlast a checkpoint interval plus a restart. Default 2 min. */
  duplicateWindowMs?: number;
};

/** A message until the stream acks it: sent again (same id) when its ack fails or is overdue. */
type Outstanding = { data: string | Uint8Array; msgID: string; sentAtMs: number; hasFailed: boolean };

/** An ack later than this means the message or its ack was lost (e.g. the server went away): send again. */
const ACK_TIMEOUT_MS = 2_000;
const RETRY_TICK_MS = 250;

export class NatsSink implements Sink {
  private nc?: NatsConnection;
  private inbox = "";
  private acks?: Subscription;
  private readonly outstanding = new Map<number, Outstanding>();
  private nextId = 0;
  private published = 0;
  private onSettled?: () => void;

  constructor(private readonly options: NatsSinkOptions) {}

  get description(): string {
    return `nats:${this.options.stream}/${this.options.subject}`;
  }

  /** Nothing to undo: what is re-published after the checkpoint carries the ids it had. */
  async recover(position: unknown): Promise<void> {
    this.published = typeof position === "number" ? position : 0;
    this.nc = await connectNats({ servers: this.options.servers, name: `flusso sink ${this.options.subject}` });
    await ensureStream(await jetstreamManager(this.nc), {
      name: this.options.stream,
      subjects: [this.options.subject],
      duplicateWindowMs: this.options.duplicateWindowMs ?? 120_000,
    });
    this.inbox = createInbox();
    this.acks = this.nc.subscribe(`${this.inbox}.*`, {
      callback: (error, msg) => {
        if (error === null) this.onAck(msg);
      },
    });
  }

  write(value: object): void {
    const json = JSON.stringify(value);
    const data = this.options.format === "json" ? json : pack(value);
    const msgID = `${this.options.pipeline}-${createHash("sha1").update(json).digest("base64url")}`;
    const id = ++this.nextId;
    const message: Outstanding = { data, msgID, sentAtMs: 0, hasFailed: false };
    this.outstanding.set(id, message);
    this.send(id, message);
  }

  /**
   * Waits until the stream has acked every message (stored, or dropped as a duplicate). One whose ack
   * failed or is overdue (the server away) is sent again with the same id: the job pauses at this
   * checkpoint rather than failing, and the id makes the retry harmless.
   */
  async flush(): Promise<number> {
    while (this.outstanding.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(settled, RETRY_TICK_MS);
        this.onSettled = settled;
        function settled() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.onSettled = undefined;
      const nowMs = Date.now();
      for (const [id, message] of this.outstanding) {
        if (message.hasFailed || nowMs - message.sentAtMs >= ACK_TIMEOUT_MS) this.send(id, message);
      }
    }
    return this.published;
  }

  async close(): Promise<void> {
    this.acks?.unsubscribe();
    await this.nc?.drain().catch(() => undefined);
  }

  private send(id: number, message: Outstanding): void {
    const h = headers();
    h.set("Nats-Msg-Id", message.msgID);
    message.sentAtMs = Date.now();
    message.hasFailed = false;
    this.nc!.publish(this.options.subject, message.data, { reply: `${this.inbox}.${id}`, headers: h });
  }

  private onAck(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length + 1));
    const message = this.outstanding.get(id);
    if (message === undefined) return; // an ack of a message already acked (sent twice)
    // A status reply (no responders: JetStream not ready yet) or an API error: send it again.
    const isError = msg.headers?.hasError === true || msg.data.length === 0 || msg.string().includes('"error":');
    if (isError) {
      message.hasFailed = true;
      return;
    }
    this.outstanding.delete(id);
    this.published++;
    if (this.outstanding.size === 0) this.onSettled?.();
  }
}
