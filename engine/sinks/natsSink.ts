// JetStream output, exactly once: every message carries a Nats-Msg-Id computed from the pipeline and
// the output itself, so an output re-produced after a crash is dropped by the stream's duplicate
// window; acks are awaited when a checkpoint flushes, before it commits.
import { createHash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { pack } from "msgpackr";
import { AckedPublisher, connectNats, ensureStream, jetstreamManager } from "../nats.ts";
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

export class NatsSink implements Sink {
  private nc?: NatsConnection;
  private publisher?: AckedPublisher;
  private committed = 0;

  constructor(private readonly options: NatsSinkOptions) {}

  get description(): string {
    return `nats:${this.options.stream}/${this.options.subject}`;
  }

  /** Nothing to undo: what is re-published after the checkpoint carries the ids it had. */
  async recover(position: unknown): Promise<void> {
    this.committed = typeof position === "number" ? position : 0;
    this.nc = await connectNats({ servers: this.options.servers, name: `flusso sink ${this.options.subject}` });
    await ensureStream(await jetstreamManager(this.nc), {
      name: this.options.stream,
      subjects: [this.options.subject],
      duplicateWindowMs: this.options.duplicateWindowMs ?? 120_000,
    });
    this.publisher = new AckedPublisher(this.nc);
  }

  write(value: object): void {
    const json = JSON.stringify(value);
    const data = this.options.format === "json" ? json : pack(value);
    const msgID = `${this.options.pipeline}-${createHash("sha1").update(json).digest("base64url")}`;
    this.publisher!.publish(this.options.subject, data, msgID);
  }

  /**
   * Waits until the stream has acked every message (stored, or dropped as a duplicate). The job pauses
   * here while the server is away rather than failing; resent messages keep their ids.
   */
  async flush(): Promise<number> {
    await this.publisher!.settle();
    return this.committed + this.publisher!.acked;
  }

  async close(): Promise<void> {
    this.publisher?.close();
    await this.nc?.drain().catch(() => undefined);
  }
}
