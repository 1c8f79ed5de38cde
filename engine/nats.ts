// Shared NATS plumbing for the JetStream source, sink and publisher: connecting (saying so while a
// server cannot be reached), making sure a stream exists, publishing with acks to one inbox, and
// reading a stream's messages back.
import { connect, createInbox, headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager, type JsMsg, type StoredMsg, type StreamInfo } from "@nats-io/jetstream";
import type { ConnectionEvent } from "./jobEvents.ts";
import { ACK_TIMEOUT_MS, isSubjectWithin } from "./natsSubjects.ts";

export type NatsConnectionOptions = {
  /** One URL or several, e.g. "nats://127.0.0.1:4222". */
  servers: string | string[];
  /** Who connects, e.g. "source EVENTS": named in events, and as "flusso <client>" in the server's connection list. */
  client: string;
  /** Gives up waiting for a first connection (a stop asked while the server is out of reach). */
  signal?: AbortSignal;
  /** Told when it connects, and about every 5 s that no server can be reached yet and why. */
  onEvent?(event: ConnectionEvent): void;
};

/** How often a job waiting for its first connection says so. */
const WAITING_NOTICE_MS = 5_000;
const FIRST_CONNECT_RETRY_MS = 500;

/**
 * Connects, retrying until a server answers, and then keeps reconnecting for ever: a server that goes
 * away pauses the job, never ends it. While no server can be reached at start it says so every few
 * seconds; `signal` ends the wait with an AbortError.
 */
export async function connectNats(options: NatsConnectionOptions): Promise<NatsConnection> {
  const address = addressOf(options.servers);
  let lastNoticeMs = -Infinity;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const nc = await connect({
        servers: options.servers,
        name: `flusso ${options.client}`,
        maxReconnectAttempts: -1,
        // Without this every publish builds two errors with stack traces, whether or not it fails:
        // measured at 28% of the engine's CPU with a NATS sink.
        noAsyncTraces: true,
        reconnectTimeWait: 250,
        timeout: 2_000,
        // A link that goes silent (a network cut drops packets, no reset) is found by unanswered pings:
        // after maxPingOut of them. The client's default, 2 min apart, would stall the job for minutes.
        pingInterval: pingIntervalMs(),
        maxPingOut: 2,
      });
      options.onEvent?.({ event: "connected", client: options.client, address });
      return nc;
    } catch (error) {
      const nowMs = Date.now();
      if (nowMs - lastNoticeMs >= WAITING_NOTICE_MS) {
        options.onEvent?.({ event: "retrying", client: options.client, address, reason: firstLine(error), retryMs: FIRST_CONNECT_RETRY_MS });
        lastNoticeMs = nowMs;
      }
      await abortableDelay(FIRST_CONNECT_RETRY_MS, options.signal);
    }
  }
}

function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Whether a JetStream request failed for a while only: no server answered in time, or the stream's
 * servers are electing a leader (a NATS cluster that lost a node answers "jetstream is not enabled"
 * or "no responders" for some seconds). Worth trying again; anything else is not.
 */
export function isTransient(error: unknown): boolean {
  return /timeout|no responders|not enabled|503|disconnect|connection closed|no leader|leader.*(lost|changed)|insufficient resources/i.test(String((error as Error)?.message ?? error));
}

/**
 * Calls `attempt` until it succeeds or fails other than transiently (`isRetried`, by default
 * isTransient), for `limitMs` at most.
 */
export async function retryTransient<T>(attempt: () => Promise<T>, limitMs: number, { waitMs = 250, isRetried = isTransient }: { waitMs?: number; isRetried?: (error: unknown) => boolean } = {}): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (!isRetried(error) || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
}

/** The servers of a connection as messages name them: "nats://a:4222, nats://b:4222". */
export function addressOf(servers: string | string[]): string {
  return Array.isArray(servers) ? servers.join(", ") : servers;
}

/**
 * Follows a connection's status: why it cannot be used now (the server out of reach, reconnecting),
 * or undefined while it is connected. `onEvent` hears each change (`client`: who holds the connection).
 */
export function connectionHealth(nc: NatsConnection, servers: string | string[], client: string, onEvent?: (event: ConnectionEvent) => void): () => string | undefined {
  const address = addressOf(servers);
  let reason: string | undefined;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") {
        reason = `NATS at ${address} is out of reach; reconnecting`;
        onEvent?.({ event: "disconnected", client, address });
      } else if (status.type === "reconnect") {
        if (reason !== undefined) onEvent?.({ event: "reconnected", client, address });
        reason = undefined;
      }
    }
  })().catch(() => undefined);
  return () => (nc.isClosed() ? `the connection to NATS at ${address} is closed` : reason);
}

/** FLUSSO_NATS_PING_INTERVAL_MS when set (a positive whole number), else 5 s. */
function pingIntervalMs(): number {
  const fromEnv = Number(process.env.FLUSSO_NATS_PING_INTERVAL_MS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 5_000;
}

export type StreamSpec = { name: string; subjects: string[]; duplicateWindowMs?: number; /** Copies a NATS cluster keeps (when it creates the stream). Default 1. */ replicas?: number };

/**
 * The stream, created when missing; an existing one is used as it is, with its subjects widened if
 * needed. Returns its info (its creation time tells a recreated stream from the one a checkpoint saw).
 * Several sinks (a cluster worker's partitions, other workers) may widen one stream at once, and an
 * update names the whole subject list: within the process they take turns, and each checks
 * afterwards that its subjects stayed, trying again if another's update replaced them.
 */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamInfo> {
  const previous = streamTurns.get(spec.name) ?? Promise.resolve();
  const turn = previous.then(() => ensureStreamNow(jsm, spec));
  streamTurns.set(spec.name, turn.catch(() => undefined));
  return turn;
}

/** The last ensureStream of each stream name in this process: the next one waits for it. */
const streamTurns = new Map<string, Promise<unknown>>();
/** Attempts at widening a stream that others widen at the same time. */
const ENSURE_ATTEMPTS = 5;

async function ensureStreamNow(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamInfo> {
  const duplicateWindowNs = spec.duplicateWindowMs === undefined ? undefined : spec.duplicateWindowMs * 1_000_000;
  for (let attempt = 1; ; attempt++) {
    const info = await streamInfo(jsm, spec.name);
    try {
      if (info === undefined) {
        return await jsm.streams.add({
          name: spec.name,
          subjects: spec.subjects,
          ...(duplicateWindowNs ? { duplicate_window: duplicateWindowNs } : {}),
          ...(spec.replicas !== undefined && spec.replicas > 1 ? { num_replicas: spec.replicas } : {}),
        });
      }
      // A subject the stream already takes through a wildcard must not be added: the server refuses overlaps.
      const missing = spec.subjects.filter((s) => !(info.config.subjects ?? []).some((taken) => isSubjectWithin(s, taken)));
      const isWindowShort = duplicateWindowNs !== undefined && (info.config.duplicate_window ?? 0) < duplicateWindowNs;
      if (missing.length === 0 && !isWindowShort) return info;
      await jsm.streams.update(spec.name, {
        subjects: [...(info.config.subjects ?? []), ...missing],
        ...(isWindowShort ? { duplicate_window: duplicateWindowNs } : {}),
      });
    } catch (error) {
      // Another process made or changed the stream between the look and the change: look again.
      if (attempt >= ENSURE_ATTEMPTS || !/already in use|stream name|wrong last|not found/i.test(String((error as Error)?.message))) throw error;
    }
    if (attempt >= ENSURE_ATTEMPTS) throw new Error(`stream ${spec.name}: its subjects kept changing while ${spec.subjects.join(", ")} was added`);
  }
}

/** The stream's info, with its subjects matching `subjectsFilter` and their counts when one is given; undefined when there is no such stream. */
export async function streamInfo(jsm: JetStreamManager, name: string, subjectsFilter?: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name, subjectsFilter === undefined ? undefined : { subjects_filter: subjectsFilter });
  } catch (error) {
    if (String((error as Error).message).includes("stream not found")) return undefined;
    throw error;
  }
}

export { jetstreamManager };

/**
 * Calls `onMessage` for every message of `stream` after sequence `afterSeq` that is there now (those
 * published while it reads are left out), oldest first; with `subject`, only that subject's.
 */
export async function readStreamSince(
  nc: NatsConnection,
  stream: string,
  { afterSeq, subject }: { afterSeq: number; subject?: string },
  onMessage: (msg: JsMsg) => void,
): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  // A filter only where the stream holds other subjects: nats-server 2.9 starts a filtered consumer
  // in mid-stream slowly. Where one is needed, the subject's own last message is where reading ends.
  const isFilterNeeded = subject !== undefined && (info.config.subjects ?? []).some((s) => s !== subject);
  const lastSeq = isFilterNeeded ? await lastSeqOf(jsm, stream, subject) : info.state.last_seq;
  if (lastSeq <= afterSeq || info.state.messages === 0) return;
  const consumer = await jetstream(nc).consumers.get(stream, {
    ...(isFilterNeeded ? { filter_subjects: subject } : {}),
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(afterSeq + 1, info.state.first_seq),
  });
  // Fetched in batches until the subject's last message as of now: `last_seq` may name a message since
  // deleted, so the consumer's own count of what is left (`pending`) also ends the read, and so does
  // a fetch that finds nothing.
  for (;;) {
    const batch = await consumer.fetch({ max_messages: 1000, expires: READ_BACK_WAIT_MS });
    let received = 0;
    for await (const msg of batch) {
      received++;
      if (msg.seq > lastSeq) return;
      onMessage(msg);
      if (msg.seq >= lastSeq || msg.info.pending === 0) return;
    }
    if (received === 0) return;
  }
}

/** How long a read-back waits for a batch before it takes the stream to hold nothing more. */
const READ_BACK_WAIT_MS = 1_000;

/** The sequence of the newest message on `subject`, or 0 when it has none. */
export async function lastSeqOf(jsm: JetStreamManager, stream: string, subject: string): Promise<number> {
  return (await lastMessageOf(jsm, stream, subject))?.seq ?? 0;
}

/** The newest message on `subject`, or undefined when it has none. */
export async function lastMessageOf(jsm: JetStreamManager, stream: string, subject: string): Promise<StoredMsg | undefined> {
  try {
    return (await jsm.streams.getMessage(stream, { last_by_subj: subject })) ?? undefined;
  } catch (error) {
    if (/no message found|not found/i.test(String((error as Error).message))) return undefined;
    throw error;
  }
}

/** A message until the stream acks it: sent again (same id) when its ack fails or is overdue. */
type Outstanding = {
  subject: string;
  data: string | Uint8Array;
  msgID?: string;
  sentAtMs: number;
  hasFailed: boolean;
  onAcked?: (seq: number) => void;
};

const RETRY_TICK_MS = 250;

/**
 * Publishes to JetStream with core publishes whose acks come back to one inbox: a request per message
 * costs five times as much. Every message is kept until acked and sent again, with its Nats-Msg-Id,
 * when its ack fails or is overdue, so a server that goes away pauses the publisher instead of failing
 * it. Resending can be paused (while a caller finds out what the stream already has).
 */
export class AckedPublisher {
  private readonly inbox = createInbox();
  private readonly acks: Subscription;
  private readonly outstanding = new Map<number, Outstanding>();
  private readonly retryTimer: NodeJS.Timeout;
  private nextId = 0;
  private isPaused = false;
  private isClosed = false;
  private waiters: Array<() => void> = [];
  /** Messages acked so far (stored, or dropped by the stream as duplicates). */
  acked = 0;
  /** The highest stream sequence an ack has named: every message sent after that ack is stored after it. */
  maxAckedSeq = 0;
  /** Why the oldest failing message failed, and since when (ms); undefined while none fails. */
  failure?: { reason: string; sinceMs: number };

  constructor(private readonly nc: NatsConnection) {
    this.acks = nc.subscribe(`${this.inbox}.*`, {
      callback: (error, msg) => {
        if (error === null) this.onAck(msg);
      },
    });
    this.retryTimer = setInterval(() => this.resendOverdue(), RETRY_TICK_MS);
    this.retryTimer.unref();
  }

  get pending(): number {
    return this.outstanding.size;
  }

  publish(subject: string, data: string | Uint8Array, msgID?: string, onAcked?: (seq: number) => void): void {
    const id = ++this.nextId;
    const message: Outstanding = { subject, data, msgID, sentAtMs: 0, hasFailed: false, onAcked };
    this.outstanding.set(id, message);
    if (this.isPaused) return;
    this.send(id, message);
  }

  /** Stops resending (and sending) until `resume`; `drop` then forgets messages the stream turned out to have. */
  pause(): void {
    this.isPaused = true;
  }

  /** Forgets the outstanding messages `isStored` says the stream has, as if acked (no sequence known). */
  drop(isStored: (msgID: string) => boolean): void {
    for (const [id, message] of this.outstanding) {
      if (message.msgID !== undefined && isStored(message.msgID)) this.acknowledge(id, message, 0);
    }
  }

  resume(): void {
    this.isPaused = false;
    this.resendOverdue(true);
  }

  /** Waits until at most `maxPending` messages are unacked (resending runs on its own timer), or the publisher is closed. */
  async settle(maxPending = 0): Promise<void> {
    while (this.outstanding.size > maxPending && !this.isClosed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(progressed, RETRY_TICK_MS);
        this.waiters.push(progressed);
        function progressed() {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  }

  /** Stops resending and wakes every waiting `settle`, which then returns whatever is still unacked. */
  close(): void {
    this.isClosed = true;
    clearInterval(this.retryTimer);
    this.acks.unsubscribe();
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Sends again what failed or is overdue; `all`: everything outstanding (after a pause). */
  private resendOverdue(all = false): void {
    if (this.isPaused || this.nc.isClosed()) return;
    const nowMs = Date.now();
    for (const [id, message] of this.outstanding) {
      if (all || message.hasFailed || nowMs - message.sentAtMs >= ACK_TIMEOUT_MS) this.send(id, message);
    }
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
    // A status reply (no responders: no stream takes the subject, or JetStream is not ready) or an
    // API error: send it again, and remember why for whoever watches the publisher.
    const text = msg.data.length === 0 ? "" : msg.string();
    if (msg.headers?.hasError === true || msg.data.length === 0 || text.includes('"error":')) {
      message.hasFailed = true;
      const reason = msg.headers?.hasError === true ? `${msg.headers.code} ${msg.headers.description}` : text.slice(0, 200) || "an empty reply";
      this.failure ??= { reason, sinceMs: Date.now() };
      return;
    }
    const seq = Number(/"seq":(\d+)/.exec(text)?.[1] ?? 0);
    this.acknowledge(id, message, seq);
  }

  private acknowledge(id: number, message: Outstanding, seq: number): void {
    this.outstanding.delete(id);
    this.acked++;
    this.failure = undefined;
    if (seq > this.maxAckedSeq) this.maxAckedSeq = seq;
    message.onAcked?.(seq);
    // Wake waiting settle() calls at every 1,000th ack and when all are in, not on every ack.
    if (this.outstanding.size === 0 || this.acked % 1000 === 0) for (const wake of this.waiters.splice(0)) wake();
  }
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0];
}
