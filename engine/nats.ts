// Shared NATS plumbing for the JetStream source and sink: connecting with endless reconnects, and
// making sure a stream exists with the subjects and duplicate window a pipeline needs.
import { connect, type NatsConnection } from "@nats-io/transport-node";
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
  });
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
