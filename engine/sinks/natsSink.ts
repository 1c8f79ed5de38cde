// JetStream output, exactly once: every message carries a Nats-Msg-Id computed from the pipeline and
// the output itself, so an output re-produced after a crash is dropped by the stream's duplicate
// window; acks are awaited when a checkpoint flushes, before it commits.
import { createHash } from "node:crypto";
import { jetstream, type JetStreamClient, type PubAck } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
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

type Pending = { data: string | Uint8Array; msgID: string; ack: Promise<PubAck> };

const RETRY_MS = 500;

export class NatsSink implements Sink {
  private nc?: NatsConnection;
  private js?: JetStreamClient;
  private pending: Pending[] = [];
  private published = 0;

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
    this.js = jetstream(this.nc);
  }

  write(value: object): void {
    const json = JSON.stringify(value);
    const data = this.options.format === "json" ? json : pack(value);
    const msgID = `${this.options.pipeline}-${createHash("sha1").update(json).digest("base64url")}`;
    const ack = this.publish(data, msgID);
    ack.catch(() => undefined); // retried in flush
    this.pending.push({ data, msgID, ack });
  }

  /**
   * Waits for every publish to be acked (stored, or dropped as a duplicate). One that failed (the
   * server away, a timeout) is published again with the same id until it is acked: the job pauses
   * at this checkpoint rather than failing, and the id makes the retry harmless.
   */
  async flush(): Promise<number> {
    let waiting = this.pending;
    this.pending = [];
    while (waiting.length > 0) {
      const results = await Promise.allSettled(waiting.map((m) => m.ack));
      const failed = waiting.filter((_, i) => results[i].status === "rejected");
      this.published += waiting.length - failed.length;
      if (failed.length === 0) break;
      // All that failed together (the server went away) go out again together.
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      for (const message of failed) {
        message.ack = this.publish(message.data, message.msgID);
        message.ack.catch(() => undefined);
      }
      waiting = failed;
    }
    return this.published;
  }

  private publish(data: string | Uint8Array, msgID: string): Promise<PubAck> {
    return this.js!.publish(this.options.subject, data, { msgID, timeout: 5_000 });
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.pending.map((p) => p.ack));
    await this.nc?.drain().catch(() => undefined);
  }
}
