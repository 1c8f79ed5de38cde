// The NATS sink's promise, at its own level: nothing leaves before its checkpoint commits, and what
// committed checkpoints held is sent again after a restart only where the stream lacks it, found by
// reading the stream back, not by trusting its duplicate window.
import { connect, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsSink } from "../../../engine/sinks/natsSink.ts";
import { readStream, startNatsServer, type NatsServer } from "../../natsServer.ts";

let server: NatsServer;
beforeAll(async () => {
  server = await startNatsServer();
}, 30_000);
afterAll(() => server?.stop());

/** A sink whose stream forgets message ids after 100 ms: only reading back can avoid duplicates. */
const sinkOn = (stream: string) =>
  new NatsSink({ servers: server.url, stream, subject: `${stream.toLowerCase()}.out`, format: "json", pipeline: "p", duplicateWindowMs: 100 });

describe("NATS sink", () => {
  it("sends nothing until the checkpoint holding it commits, then sends it", async () => {
    const sink = sinkOn("HOLDS");
    await sink.recover(undefined, { sinkName: "sinks[0]", runId: "r1", held: [] });
    sink.write({ n: 1 });
    sink.write({ n: 2 });
    await sink.flush();
    const held = sink.hold(1);
    expect(held).toEqual({ firstNumber: 1, messages: ['{"n":1}', '{"n":2}'] });
    await new Promise((r) => setTimeout(r, 200));
    expect(await readStream(server.url, "HOLDS")).toEqual([]);
    sink.release(1);
    await sink.delivered();
    expect(await readStream(server.url, "HOLDS")).toEqual(['{"n":1}', '{"n":2}']);
    expect(sink.deliveredThrough()).toBe(1);
    await sink.close();
  });

  it("after a restart, sends again only the held outputs the stream lacks, long after its duplicate window", async () => {
    const sink = sinkOn("READBACK");
    await sink.recover(undefined, { sinkName: "sinks[0]", runId: "r1", held: [] });
    const position = await sink.flush();
    await sink.close();
    // Before the crash, outputs 1 and 3 of the checkpoint reached the stream; 2, 4 and 5 did not.
    const nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    for (const n of [1, 3]) {
      const h = headers();
      h.set("Nats-Msg-Id", `p.r1.sinks[0].${n}`);
      await js.publish("readback.out", JSON.stringify({ n }), { headers: h });
    }
    await new Promise((r) => setTimeout(r, 300)); // the stream has forgotten their ids
    const restarted = sinkOn("READBACK");
    const messages = [1, 2, 3, 4, 5].map((n) => JSON.stringify({ n }));
    await restarted.recover(position, { sinkName: "sinks[0]", runId: "r1", held: [{ checkpointId: 7, held: { firstNumber: 1, messages } }] });
    expect((await readStream(server.url, "READBACK")).sort()).toEqual(messages);
    expect(restarted.deliveredThrough()).toBe(7);
    await restarted.close();
    // Another run id (after a reset) shares nothing with this one: all of its outputs are new.
    const reset = sinkOn("READBACK");
    await reset.recover(undefined, { sinkName: "sinks[0]", runId: "r2", held: [] });
    reset.write({ n: 1 });
    await reset.flush();
    reset.hold(1);
    reset.release(1);
    await reset.delivered();
    expect(await readStream(server.url, "READBACK")).toHaveLength(6);
    await reset.close();
    await nc.close();
  });

  it("refuses to resume on an output stream deleted since the checkpoint", async () => {
    const sink = sinkOn("DROPPED");
    await sink.recover(undefined, { sinkName: "sinks[0]", runId: "r1", held: [] });
    const position = await sink.flush();
    await sink.close();
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.delete("DROPPED");
    await nc.close();
    await expect(sinkOn("DROPPED").recover(position, { sinkName: "sinks[0]", runId: "r1", held: [] })).rejects.toThrow(/the stream DROPPED was deleted since the last checkpoint/);
  });
});
