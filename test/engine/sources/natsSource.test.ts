// Tests of how the JetStream source decodes hostile messages, through a private nats-server: values
// too deep or too wide and bytes that are not UTF-8 become items with a reason, and the messages
// after them are read.
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { pack } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsSource } from "../../../engine/sources/natsSource.ts";
import type { SourceBatch, SourceItem } from "../../../engine/sources/source.ts";
import { startNatsServer, type NatsServer } from "../../natsServer.ts";

let server: NatsServer;

beforeAll(async () => {
  server = await startNatsServer();
}, 30_000);

afterAll(async () => {
  await server?.stop();
});

/** Publishes `bodies` to a new stream `name` (subject `<name>.0`) and reads them all back through a bounded NatsSource. */
async function readBack(name: string, format: "json" | "msgpack", bodies: Uint8Array[]): Promise<SourceItem[]> {
  const nc = await connect({ servers: server.url });
  await (await jetstreamManager(nc)).streams.add({ name, subjects: [`${name}.>`] });
  const js = jetstream(nc);
  for (const body of bodies) await js.publish(`${name}.0`, body);
  await nc.close();
  const source = new NatsSource({ servers: server.url, stream: name, subjects: [`${name}.>`], format, bounded: true });
  await source.open(undefined);
  const items: SourceItem[] = [];
  try {
    for (;;) {
      const batch: SourceBatch = await source.nextBatch(100);
      items.push(...batch.items);
      if (batch.isDone) return items;
    }
  } finally {
    await source.close();
  }
}

const reasons = (items: SourceItem[]) => items.map((i) => (i.error === undefined ? i.value : i.error));

describe("a JSON stream", () => {
  it("turns a message nested 100,000 deep, a list of 20,000 entries and bytes not UTF-8 into reasons, and reads on", async () => {
    const text = (value: string) => Buffer.from(value);
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const notUtf8 = Buffer.concat([text('{"user_id":"al'), Buffer.from([0xe9]), text('ce"}')]);
    const items = await readBack("JSONIN", "json", [
      text('{"n":1}'),
      text(deep),
      text('{"n":2}'),
      text(JSON.stringify({ tags: Array.from({ length: 20_000 }, () => 1) })),
      notUtf8,
      text('{"n":3}'),
    ]);
    expect(reasons(items)).toEqual([
      { n: 1 },
      "nested deeper than 64 levels",
      { n: 2 },
      "a list of 20000 entries, over the limit of 10000",
      "not UTF-8: an invalid byte sequence at byte 14 of the message",
      { n: 3 },
    ]);
    expect(items[1]).toMatchObject({ raw: "[".repeat(200), origin: "JSONIN#2 (JSONIN.0)" });
  });
});

describe("a msgpack stream", () => {
  it("turns a value nested 100,000 deep (msgpackr's stack would overflow) and a string not UTF-8 into reasons, and reads on", async () => {
    const deep = Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0x01])]);
    const notUtf8 = Buffer.from(pack({ user_id: "alice" }));
    notUtf8[notUtf8.indexOf("alice") + 2] = 0xff;
    const items = await readBack("PACKIN", "msgpack", [pack({ n: 1 }), deep, pack({ n: 2 }), notUtf8, pack({ tags: Array.from({ length: 20_000 }, () => 1) }), pack({ n: 3 })]);
    expect(reasons(items)).toEqual([
      { n: 1 },
      "nested deeper than 64 levels",
      { n: 2 },
      `not UTF-8: a string with an invalid byte sequence at byte ${notUtf8.indexOf(0xff)}`,
      "a list of 20000 entries, over the limit of 10000",
      { n: 3 },
    ]);
    expect(items[1]).toMatchObject({ raw: "91".repeat(64) });
  });
});

describe("pending messages", () => {
  /** Waits (bounded) until the consumer has filled the source's buffer to `count` (where it parks). */
  async function untilBuffered(source: NatsSource, count: number): Promise<void> {
    for (let waitedMs = 0; source.bufferedMessages < count; waitedMs += 10) {
      if (waitedMs > 10_000) throw new Error(`${count} messages did not arrive in 10 s`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it("counts what the job has not read yet, buffered or on the server, exactly with one partition", async () => {
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "PENDING", subjects: ["pending.>"] });
    const js = jetstream(nc);
    for (let i = 0; i < 300; i++) await js.publish(`pending.${i % 3}`, JSON.stringify({ n: i }));
    await nc.close();
    const source = new NatsSource({ servers: server.url, stream: "PENDING", subjects: ["pending.>"], format: "json", bufferMessages: 50 });
    await source.open(undefined);
    try {
      await untilBuffered(source, 50);
      expect(source.pendingMessages()).toEqual([300]);
      const batch = await source.nextBatch(20);
      expect(batch.items).toHaveLength(20);
      expect(source.pendingMessages()).toEqual([280]);
    } finally {
      await source.close();
    }
  });

  it("shares the backlog out by partition, the buffered ones counted where they belong", async () => {
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "PENDING2", subjects: ["pending2.>"] });
    const js = jetstream(nc);
    // Partition 1 gets three messages for each one of partition 0.
    for (let i = 0; i < 400; i++) await js.publish(`pending2.${i % 4 === 0 ? 0 : 1}`, JSON.stringify({ n: i }));
    await nc.close();
    const source = new NatsSource({ servers: server.url, stream: "PENDING2", subjects: ["pending2.>"], format: "json", partitions: 2, bufferMessages: 100 });
    await source.open(undefined);
    try {
      await untilBuffered(source, 100);
      await source.nextBatch(40);
      const [p0, p1] = source.pendingMessages();
      expect(Math.abs(p0 + p1 - 360)).toBeLessThanOrEqual(1);
      expect(p1).toBeGreaterThan(2 * p0);
    } finally {
      await source.close();
    }
  });
});
