// Shared NATS plumbing for the JetStream source, sink and publisher: connecting with endless
// reconnects, making sure a stream exists, and publishing with acks to one inbox.
import { connect, createInbox, headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";

export type NatsConnectionOptions = {
  /** One URL or several, e.g. "nats://127.0.0.1:4222". */
  servers: string | string[];
  /** Shown in the server's connection list. */
  name: string;
};

/** Connects and keeps reconnecting for ever: a server that goes away pauses the job, never ends it. */
export function connectNats(options: NatsConnectionOptions): Promise<NatsConnection> {
  return connect({
    servers: options.servers,
    name: options.name,
    maxReconnectAttempts: -1,
    // Without this every publish builds two errors with stack traces, whether or not it fails:
    // measured at 28% of the engine's CPU with a NATS sink.
    noAsyncTraces: true,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    // A link that goes silent (a network cut drops packets, no reset) is found by unanswered pings:
    // after maxPingOut of them. The client's default, 2 min apart, would stall the job for minutes.
    pingInterval: pingIntervalMs(),
    maxPingOut: 2,
  });
}

/** FLUSSO_NATS_PING_INTERVAL_MS when set (a positive whole number), else 5 s. */
function pingIntervalMs(): number {
  const fromEnv = Number(process.env.FLUSSO_NATS_PING_INTERVAL_MS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 5_000;
}

export type StreamSpec = { name: string; subjects: string[]; duplicateWindowMs?: number };

/** The stream, created when missing; an existing one is used as it is, with its subjects widened if needed. */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<void> {
  const duplicateWindowNs = spec.duplicateWindowMs === undefined ? undefined : spec.duplicateWindowMs * 1_000_000;
  try {
    const info = await jsm.streams.info(spec.name);
    const missing = spec.subjects.filter((s) => !info.config.subjects?.includes(s));
    const isWindowShort = duplicateWindowNs !== undefined && (info.config.duplicate_window ?? 0) < duplicateWindowNs;
    if (missing.length > 0 || isWindowShort) {
      await jsm.streams.update(spec.name, {
        subjects: [...(info.config.subjects ?? []), ...missing],
        ...(isWindowShort ? { duplicate_window: duplicateWindowNs } : {}),
      });
    }
  } catch (error) {
    if (!String((error as Error).message).includes("stream not found")) throw error;
    await jsm.streams.add({ name: spec.name, subjects: spec.subjects, ...(duplicateWindowNs ? { duplicate_window: duplicateWindowNs } : {}) });
  }
}

export { jetstreamManager };

/** A message until the stream acks it: sent again (same id) when its ack fails or is overdue. */
type Outstanding = { subject: string; data: string | Uint8Array; msgID?: string; sentAtMs: number; hasFailed: boolean };

/** An ack later than this means the message or its ack was lost (e.g. the server went away): send again. */
const ACK_TIMEOUT_MS = 2_000;
const RETRY_TICK_MS = 250;

/**
 * Publishes to JetStream with core publishes whose acks come back to one inbox: a request per message
 * costs five times as much. Every message is kept until acked and sent again, with its Nats-Msg-Id,
 * when its ack fails or is overdue, so a server that goes away pauses the publisher instead of failing it.
 */
export class AckedPublisher {
  private readonly inbox = createInbox();
  private readonly acks: Subscription;
  private readonly outstanding = new Map<number, Outstanding>();
  private nextId = 0;
  private onProgress?: () => void;
  /** Messages acked so far (stored, or dropped by the stream as duplicates). */
  acked = 0;

  constructor(private readonly nc: NatsConnection) {
    this.acks = nc.subscribe(`${this.inbox}.*`, {
      callback: (error, msg) => {
        if (error === null) this.onAck(msg);
      },
    });
  }

  get pending(): number {
    return this.outstanding.size;
  }

  publish(subject: string, data: string | Uint8Array, msgID?: string): void {
    const id = ++this.nextId;
    const message: Outstanding = { subject, data, msgID, sentAtMs: 0, hasFailed: false };
    this.outstanding.set(id, message);
    this.send(id, message);
  }

  /** Waits until at most `maxPending` messages are unacked, sending again those whose ack failed or is overdue. */
  async settle(maxPending = 0): Promise<void> {
    while (this.outstanding.size > maxPending) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(progressed, RETRY_TICK_MS);
        this.onProgress = progressed;
        function progressed() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.onProgress = undefined;
      const nowMs = Date.now();
      for (const [id, message] of this.outstanding) {
        if (message.hasFailed || nowMs - message.sentAtMs >= ACK_TIMEOUT_MS) this.send(id, message);
      }
    }
  }

  close(): void {
    this.acks.unsubscribe();
  }

  private send(id: number, message: Outstanding): void {
    const options: { reply: string; headers?: MsgHdrs } = { reply: `${this.inbox}.${id}` };
    if (message.msgID !== undefined) {
      options.headers = headers();
      options.headers.set("Nats-Msg-Id", message.msgID);
    }
    message.sentAtMs = Date.now();
    message.hasFailed = false;
    this.nc.publish(message.subject, message.data, options);
  }

  private onAck(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length + 1));
    const message = this.outstanding.get(id);
    if (message === undefined) return; // the ack of a message already acked (it was sent twice)
    // A status reply (no responders: JetStream not ready yet) or an API error: send it again.
    if (msg.headers?.hasError === true || msg.data.length === 0 || msg.string().includes('"error":')) {
      message.hasFailed = true;
      return;
    }
    this.outstanding.delete(id);
    this.acked++;
    // Wake a waiting settle() at every 1,000th ack and when all are in, not on every ack.
    if (this.outstanding.size === 0 || this.acked % 1000 === 0) this.onProgress?.();
  }
}
