// `flusso publish`: a real publisher for JetStream. Reads a JSONL, CSV or msgpack file, or the
// built-in generator, sends each event to `<subject>.<partition>` (partition = hash of its key, as
// the generator assigns users), paces to a target rate and reports the rate it achieved.
import { randomUUID } from "node:crypto";
import { extname, resolve } from "node:path";
import { pack } from "msgpackr";
import { AckedPublisher, connectionHealth, connectNats, ensureStream, jetstreamManager } from "../engine/nats.ts";
import { partitionOf } from "../engine/partitioning.ts";
import { FileSource } from "../engine/sources/fileSource.ts";
import type { Source } from "../engine/sources/source.ts";
import { GeneratorSource } from "../simulator/generatorSource.ts";
import type { LogEvent } from "./jobLog.ts";

export type PublishOptions = {
  /** A .jsonl, .csv or .msgpack file, or "generator". */
  input: string;
  servers: string;
  stream: string;
  /** Messages go to `<subject>.<partition>`. */
  subject: string;
  partitions: number;
  /** Events per second; 0 = as fast as the server acks. */
  rate: number;
  format: "json" | "msgpack";
  /** The field whose hash picks the partition. */
  key: string;
  /** CSV without a header: its column names. */
  columns?: string[];
  /** Generator: how many events and which seed. */
  events?: number;
  seed?: number;
  /** Generator: events per second of event time (GeneratorOptions.eventsPerSecond). */
  pace?: number;
  /** Adds the publish time (epoch ms) to every event under this field, for latency measurements. */
  stamp?: string;
  /** Publishes not yet acked at most: the backpressure on the publisher. */
  maxInFlight?: number;
};

export type PublishResult = { published: number; elapsedMs: number; ratePerSecond: number; unreadable: number };

function inputSource(options: PublishOptions): Source {
  if (options.input === "generator") return new GeneratorSource({ events: options.events, seed: options.seed, partitions: options.partitions, eventsPerSecond: options.pace });
  const path = resolve(options.input);
  const ext = extname(path).toLowerCase();
  const format = ext === ".csv" ? "csv" : ext === ".msgpack" || ext === ".mp" ? "msgpack" : "jsonl";
  return new FileSource({ paths: [path], format, columns: options.columns });
}

/** `onEvent` hears the connection (connected, retrying with the address, disconnected) and, every second, the progress. */
export async function publish(options: PublishOptions, onEvent: (event: LogEvent) => void = () => undefined): Promise<PublishResult> {
  const source = inputSource(options);
  await source.open(undefined);
  const servers = options.servers.split(",");
  const nc = await connectNats({ servers, client: "publish", onEvent });
  connectionHealth(nc, servers, "publish", onEvent);
  const maxInFlight = options.maxInFlight ?? 5_000;
  let publisher: AckedPublisher | undefined;
  let published = 0;
  let unreadable = 0;
  const startedAtMs = performance.now();
  let lastReportMs = startedAtMs;
  try {
    await ensureStream(await jetstreamManager(nc), { name: options.stream, subjects: [`${options.subject}.>`] });
    publisher = new AckedPublisher(nc);
    const runId = randomUUID();
    for (;;) {
      const batch = await source.nextBatch(500);
      for (const item of batch.items) {
        if (item.error !== undefined) {
          unreadable++;
          continue;
        }
        const event = item.value as Record<string, unknown>;
        if (options.stamp) event[options.stamp] = Date.now();
        const partition = partitionOf(String(event[options.key] ?? ""), options.partitions);
        const data = options.format === "json" ? JSON.stringify(event) : pack(event);
        // An id per message, so a resend after a late ack is dropped by the stream, not stored twice.
        publisher.publish(`${options.subject}.${partition}`, data, `${runId}-${published}`);
        published++;
        if (publisher.pending >= maxInFlight) await publisher.settle(maxInFlight / 2);
        if (options.rate > 0) {
          // Pace: never ahead of the schedule that `rate` sets from the start.
          const aheadMs = (published / options.rate) * 1000 - (performance.now() - startedAtMs);
          if (aheadMs > 1) await new Promise((r) => setTimeout(r, aheadMs));
        }
      }
      const nowMs = performance.now();
      if (nowMs - lastReportMs >= 1000) {
        const progress = source.progress?.();
        onEvent({ event: "publish-progress", published, eventsPerSecond: Math.round((published * 1000) / (nowMs - startedAtMs)), ...progress });
        lastReportMs = nowMs;
      }
      if (batch.isDone) break;
    }
    await publisher.settle();
  } finally {
    publisher?.close();
    // Closed on failure too: a failed publisher must exit, not wait on an open connection.
    await source.close();
    await nc.drain().catch(() => nc.close());
  }
  const elapsedMs = performance.now() - startedAtMs;
  return { published, elapsedMs, ratePerSecond: (published * 1000) / elapsedMs, unreadable };
}
