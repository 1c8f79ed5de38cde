// The reading side of the NATS latency benchmark: latencies summarised with a t-digest, a tap that
// hands every message of a stream to a callback (an ordered consumer, as natsSource reads), and the
// drain race between that ordered consumer and durable pull consumers.
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import tdigestPkg from "tdigest";

const { TDigest } = tdigestPkg;

export type LatencySummary = { count: number; p50Ms: number; p99Ms: number; p999Ms: number; maxMs: number };

/** p50, p99 and p99.9 from a t-digest (delta 0.01), the max exactly. */
export function summarizeLatencies(valuesMs: ArrayLike<number>): LatencySummary {
  if (valuesMs.length === 0) return { count: 0, p50Ms: NaN, p99Ms: NaN, p999Ms: NaN, maxMs: NaN };
  const digest = new TDigest();
  let maxMs = -Infinity;
  for (let i = 0; i < valuesMs.length; i++) {
    digest.push(valuesMs[i]);
    if (valuesMs[i] > maxMs) maxMs = valuesMs[i];
  }
  digest.compress();
  const [p50Ms, p99Ms, p999Ms] = digest.percentile([0.5, 0.99, 0.999]);
  return { count: valuesMs.length, p50Ms, p99Ms, p999Ms, maxMs };
}

/** Least-squares slope of `y` over `x`, per unit of `x` (0 for fewer than two points). */
export function slope(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = Math.min(x.length, y.length);
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < n; i++) {
    sx += x[i];
    sy += y[i];
  }
  const mx = sx / n;
  const my = sy / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

export type StreamTap = { stop(): Promise<void> };

/**
 * Hands every message of `stream`, from its first, to `onMessage` with the time it arrived (epoch
 * ms, the clock `--stamp` uses). An ordered consumer pulling up to 1,000 at a time: what natsSource does.
 */
export async function tapStream(nc: NatsConnection, stream: string, onMessage: (msg: JsMsg, receivedAtMs: number) => void): Promise<StreamTap> {
  const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume({ max_messages: 1000 });
  const done = (async () => {
    for await (const msg of messages) onMessage(msg, Date.now());
  })();
  return {
    async stop() {
      await messages.close().catch(() => undefined);
      await done.catch(() => undefined);
    },
  };
}

export type DrainResult = { consumer: string; messages: number; elapsedMs: number; messagesPerSecond: number };

function drainResult(consumer: string, messages: number, startedAtMs: number): DrainResult {
  const elapsedMs = performance.now() - startedAtMs;
  return { consumer, messages, elapsedMs, messagesPerSecond: (messages * 1000) / elapsedMs };
}

/** Reads `expected` messages of `stream` from its start with an ordered consumer (`consume`, 1,000 in flight), as natsSource does. */
export async function drainOrdered(nc: NatsConnection, stream: string, expected: number): Promise<DrainResult> {
  const startedAtMs = performance.now();
  const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume({ max_messages: 1000 });
  let count = 0;
  for await (const _msg of messages) {
    if (++count >= expected) break;
  }
  const result = drainResult("ordered, consume (max_messages 1000)", count, startedAtMs);
  await messages.close().catch(() => undefined);
  return result;
}

/**
 * Reads `expected` messages of `stream` with a durable pull consumer (created first, inside the
 * timing, deleted after): `fetch` in batches of `batch` messages one after the other, or `consume`
 * (the client keeps pulls outstanding). No acks: like the source, positions would live in checkpoints.
 */
export async function drainDurable(nc: NatsConnection, stream: string, expected: number, how: "fetch" | "consume", batch = 1000): Promise<DrainResult> {
  const jsm = await jetstreamManager(nc);
  const name = `drain-${how}-${batch}`;
  const startedAtMs = performance.now();
  await jsm.consumers.add(stream, { durable_name: name, ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All });
  const consumer = await jetstream(nc).consumers.get(stream, name);
  let count = 0;
  if (how === "fetch") {
    while (count < expected) {
      const messages = await consumer.fetch({ max_messages: Math.min(batch, expected - count), expires: 2000 });
      for await (const _msg of messages) count++;
    }
  } else {
    const messages = await consumer.consume({ max_messages: batch });
    for await (const _msg of messages) {
      if (++count >= expected) break;
    }
    await messages.close().catch(() => undefined);
  }
  const result = drainResult(`durable pull, ${how} (batches of ${batch}, no acks)`, count, startedAtMs);
  await jsm.consumers.delete(stream, name).catch(() => undefined);
  return result;
}
