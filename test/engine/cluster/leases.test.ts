// Partition leases in NATS KV: one holder at a time (compare-and-set), a lease not renewed runs out
// on the server's clock, a renewal finds out that it was lost, and every worker computes the same shares.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fairShare, PartitionLeases } from "../../../engine/cluster/leases.ts";
import { startNatsServer, type NatsServer } from "../../natsServer.ts";

let server: NatsServer;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
}, 30_000);
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("fair shares", () => {
  it("share the partitions out, the first workers by sorted id taking one more, and add up to them all", () => {
    const workers = ["a", "b", "c"];
    expect(workers.map((w) => fairShare(8, workers, w))).toEqual([3, 3, 2]);
    expect(workers.map((w) => fairShare(2, workers, w))).toEqual([1, 1, 0]);
    for (let partitions = 0; partitions < 20; partitions++) {
      for (let n = 1; n < 6; n++) {
        const ids = Array.from({ length: n }, (_, i) => `w${i}`);
        const shares = ids.map((id) => fairShare(partitions, ids, id));
        expect(shares.reduce((a, b) => a + b, 0)).toBe(partitions);
        expect(Math.max(...shares) - Math.min(...shares)).toBeLessThanOrEqual(1);
      }
    }
    expect(fairShare(8, workers, "not-a-member")).toBe(0);
  });
});

describe("partition leases", () => {
  it("go to one worker at a time and run out when not renewed; the old holder learns it lost them", async () => {
    const options = { group: "leases1", partitions: 4, leaseTtlMs: 1_000, replicas: 1 };
    const a = await PartitionLeases.open(nc, { ...options, workerId: "a" });
    const b = await PartitionLeases.open(nc, { ...options, workerId: "b" });
    await a.heartbeat();
    await b.heartbeat();
    expect(await a.workers()).toEqual(["a", "b"]);
    expect(await a.acquire(1)).toBe(true);
    expect(await b.acquire(1)).toBe(false);
    expect(await a.renew()).toEqual([]);
    expect((await b.holders()).get(1)).toBe("a");
    // a stops renewing: after the TTL (the server's clock) the lease is free and b takes it.
    const deadline = Date.now() + 10_000;
    while (!(await b.acquire(1))) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await a.renew()).toEqual([1]);
    expect(a.held).toEqual([]);
    expect(b.held).toEqual([1]);
    // A release gives it back at once; a worker that leaves is no longer counted.
    await b.release(1);
    expect(await a.acquire(1)).toBe(true);
    await b.leave();
    expect(await a.workers()).not.toContain("b");
  });

  it("record partitions read to their end, without a TTL", async () => {
    const leases = await PartitionLeases.open(nc, { group: "leases2", partitions: 2, leaseTtlMs: 1_000, replicas: 1, workerId: "a" });
    expect(await leases.doneThrough(0)).toBeUndefined();
    await leases.markDone(0, 42);
    expect(await leases.doneThrough(0)).toBe(42);
  });
});

describe("a lease given back while it is being renewed", () => {
  it("is not kept alive by the renewal: another worker can take it", async () => {
    const options = { group: "leases3", partitions: 2, leaseTtlMs: 60_000, replicas: 1 };
    const a = await PartitionLeases.open(nc, { ...options, workerId: "a" });
    const b = await PartitionLeases.open(nc, { ...options, workerId: "b" });
    for (let round = 0; round < 20; round++) {
      expect(await a.acquire(0)).toBe(true);
      // The release starts while the renewal is on its way, as the worker's two clocks may have it.
      const renewal = a.renew();
      await a.release(0);
      await renewal;
      await a.renew();
      expect(a.held).toEqual([]);
      // With a 60 s TTL, only a lease really given back can be taken now.
      expect(await b.acquire(0)).toBe(true);
      await b.release(0);
    }
  });
});
