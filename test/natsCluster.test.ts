// A three-node JetStream cluster loses the leader of a replicated stream mid-stream (SIGKILL): publishing
// goes on through the client's reconnect, and nothing written before or after the kill is lost or doubled.
// Real nats-server processes on loopback, on free ports (never 4222).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { startNatsCluster, type NatsCluster } from "./natsServer.ts";

const messagesPerPhase = 200;
// Every wait is bounded: a new stream leader is normally elected within seconds of the kill, and these limits
// only turn a cluster that never recovers into a failure instead of a hang.
const recoveryLimitMs = 30_000;

/** Calls `attempt` until it resolves, pausing 200 ms after each failure; past `limitMs` its last error is thrown. */
async function retryUntil<T>(attempt: () => Promise<T>, what: string, limitMs = recoveryLimitMs): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() >= deadline) throw new Error(`gave up after ${limitMs} ms on ${what}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** The server name (node0, node1, ...) of the stream's leader, as the cluster reports it now. */
async function streamLeader(jsm: JetStreamManager, stream: string): Promise<string> {
  const leader = (await jsm.streams.info(stream)).cluster?.leader;
  if (!leader) throw new Error(`stream ${stream} has no leader`);
  return leader;
}

describe("a three-node JetStream cluster losing a stream's leader", () => {
  let cluster: NatsCluster;
  let admin: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    cluster = await startNatsCluster(3);
    admin = await connect({ servers: cluster.urls });
    // A short request timeout so that the retries below ask the next leader soon after the kill.
    jsm = await jetstreamManager(admin, { timeout: 2_000 });
  });

  afterAll(async () => {
    await admin?.close();
    await cluster?.stop();
  });

  it("keeps every message published before and after the kill exactly once, in order, and a KV value", async () => {
    await jsm.streams.add({ name: "T", subjects: ["t.>"], num_replicas: 3 });
    const kv = await new Kvm(admin).create("settings", { replicas: 3 });
    await kv.put("mode", "before-the-kill");

    // The publisher is connected to the stream leader first, so that killing the leader also takes its
    // connection away and the publishes after the kill go through a reconnect to another node.
    const leaderBefore = await streamLeader(jsm, "T");
    const leaderIndex = Number(leaderBefore.replace(/^node/, ""));
    const publisher = await connect({
      servers: [cluster.urls[leaderIndex], ...cluster.urls.filter((_, i) => i !== leaderIndex)],
      noRandomize: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    const reconnectedTo: string[] = [];
    (async () => {
      for await (const status of publisher.status()) if (status.type === "reconnect") reconnectedTo.push(status.server);
    })();
    const js = jetstream(publisher, { timeout: 2_000 });
    // An ack lost with the killed node leaves it unknown whether the message was stored: the same Nats-Msg-Id
    // is sent again until one is acked, and the stream's duplicate window keeps a second copy out.
    const publish = (i: number) =>
      retryUntil(() => js.publish(`t.${i % 7}`, String(i), { msgID: `m-${i}` }), `the publish of m-${i}`);

    try {
      expect(publisher.info?.server_name).toBe(leaderBefore);
      for (let i = 0; i < messagesPerPhase; i++) await publish(i);

      // The leader may have moved since it was asked; the one killed is the one in charge now.
      const killed = await streamLeader(jsm, "T");
      await cluster.kill(Number(killed.replace(/^node/, "")));

      for (let i = messagesPerPhase; i < 2 * messagesPerPhase; i++) await publish(i);

      const leaderAfter = await retryUntil(() => streamLeader(jsm, "T"), "a new leader of T");
      expect(leaderAfter).not.toBe(killed);
      if (killed === leaderBefore) {
        expect(reconnectedTo.length).toBeGreaterThan(0);
        expect(publisher.info?.server_name).not.toBe(killed);
      }

      const ids = await retryUntil(() => readIds(publisher, "T"), "reading T back");
      expect(ids).toEqual(Array.from({ length: 2 * messagesPerPhase }, (_, i) => `m-${i}`));
      expect(new Set(ids).size).toBe(2 * messagesPerPhase);
      expect((await jsm.streams.info("T")).state.messages).toBe(2 * messagesPerPhase);

      const entry = await retryUntil(async () => {
        const got = await kv.get("mode");
        if (!got) throw new Error("no value for mode");
        return got;
      }, "the KV value after the kill");
      expect(entry.string()).toBe("before-the-kill");
    } finally {
      await publisher.close();
    }
  });
});

/**
 * The Nats-Msg-Id of every message in `stream`, oldest first, read with an ordered consumer up to the stream's
 * last sequence as it is now: a duplicate stored after all would show up as a message too many.
 */
async function readIds(nc: NatsConnection, stream: string): Promise<string[]> {
  const lastSeq = (await (await jetstreamManager(nc, { timeout: 2_000 })).streams.info(stream)).state.last_seq;
  const consumer = await jetstream(nc, { timeout: 2_000 }).consumers.get(stream);
  const ids: string[] = [];
  let seq = 0;
  const messages = await consumer.consume();
  // An ordered consumer waits for new messages after the last one; the bound keeps a gap from hanging the test.
  const gaveUp = setTimeout(() => messages.stop(), 10_000);
  try {
    for await (const m of messages) {
      ids.push(m.headers?.get("Nats-Msg-Id") ?? "");
      seq = m.seq;
      if (seq >= lastSeq) break;
    }
  } finally {
    clearTimeout(gaveUp);
  }
  if (seq < lastSeq) throw new Error(`read ${stream} up to sequence ${seq} of ${lastSeq}`);
  return ids;
}
