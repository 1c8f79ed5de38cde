// A partition's checkpoint log in NATS: a store rebuilt from it holds the last committed checkpoint
// (through bases, purges and pieces), half a transaction is never applied, and a worker that was
// fenced off by another's claim cannot append.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointLog, PartitionFenced, type Claim } from "../../../engine/cluster/checkpointLog.ts";
import { KeyedValueState } from "../../../engine/keyedState.ts";
import { StateStore, type CheckpointMeta, type Transaction } from "../../../engine/store.ts";
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

function meta(checkpointId: number): CheckpointMeta {
  return { shape: "s", sourcePosition: { streamSeq: checkpointId * 10 }, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 };
}

/** A store whose every commit goes to `log` too, with one keyed state. */
function mirroredStore(log: CheckpointLog, encryptionKey?: string) {
  const dir = mkdtempSync(join(tmpdir(), "flusso-log-store-"));
  let wantsBase = false;
  const store = new StateStore(dir, 1_000_000, {
    encryptionKey,
    mirror: async (transaction, m) => {
      await log.append(transaction, m);
      wantsBase = log.takeBaseDue();
      return { wantsBase };
    },
  });
  const state = new KeyedValueState<string>("op/values");
  store.register(state);
  return { store, state };
}

/** A fresh store with the claim's transactions applied, and what its state holds. */
async function rebuilt(claim: Claim, encryptionKey?: string): Promise<{ meta: CheckpointMeta | undefined; values: Map<string, unknown> }> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-log-rebuilt-"));
  const writer = new StateStore(dir, undefined, { encryptionKey });
  for (const t of claim.transactions) await writer.apply(t);
  await writer.close();
  // Opened again, as a job opens the dir the worker rebuilt.
  const store = new StateStore(dir, undefined, { encryptionKey });
  const state = new KeyedValueState<string>("op/values", {}, store.restored("op/values"));
  const values = new Map([...state.keys()].map((k) => [k as string, state.get(k)]));
  const m = store.readMeta();
  await store.close();
  return { meta: m, values };
}

let group = 0;
const options = (workerId: string, extra = {}) => ({ group: `g${group}`, partition: 3, workerId, replicas: 1, ...extra });

describe("a partition's checkpoint log", () => {
  it("rebuilds the last committed checkpoint, across a base that purged what came before it", async () => {
    group++;
    const log = await CheckpointLog.open(nc, options("a"));
    expect((await log.claim(undefined)).lastCommitSeq).toBe(0);
    const { store, state } = mirroredStore(log);
    const expected = new Map<string, string>();
    for (let id = 1; id <= 6; id++) {
      for (let k = 0; k < 50; k++) {
        const key = `k${(id * 7 + k) % 120}`;
        if ((id + k) % 5 === 0) {
          state.delete(key);
          expected.delete(key);
        } else {
          // Large values: a transaction spans several 256 KB messages.
          const value = `${id}:${k}:`.padEnd(20_000, "x");
          state.set(key, value);
          expected.set(key, value);
        }
      }
      if (id === 4) store.requestBase();
      await store.commit(meta(id));
    }
    await store.close();
    const claim = await (await CheckpointLog.open(nc, options("b"))).claim(undefined);
    expect(claim.lastCheckpointId).toBe(6);
    // From the base (checkpoint 4) on: what came before it was purged.
    expect(claim.transactions.map((t) => t.checkpointId)).toEqual([4, 5, 6]);
    const { meta: m, values } = await rebuilt(claim);
    expect(m?.checkpointId).toBe(6);
    expect(values).toEqual(expected);
  });

  it("fences off the previous holder: once another worker claims, its appends are refused", async () => {
    group++;
    const a = await CheckpointLog.open(nc, options("a"));
    await a.claim(undefined);
    const { store, state } = mirroredStore(a);
    state.set("k", "one");
    await store.commit(meta(1));
    const b = await CheckpointLog.open(nc, options("b"));
    const claim = await b.claim(undefined);
    expect(claim.lastCheckpointId).toBe(1);
    state.set("k", "two");
    await expect(store.commit(meta(2))).rejects.toBeInstanceOf(PartitionFenced);
    await store.close();
    // The new holder's view is checkpoint 1, and a later reader's too.
    const later = await (await CheckpointLog.open(nc, options("c"))).claim(undefined);
    expect(later.lastCheckpointId).toBe(1);
    expect((await rebuilt(later)).values).toEqual(new Map([["k", "one"]]));
  });

  it("never applies half a transaction: pieces without their commit record are dropped", async () => {
    group++;
    const a = await CheckpointLog.open(nc, options("a"));
    await a.claim(undefined);
    const { store, state } = mirroredStore(a);
    state.set("k", "committed");
    await store.commit(meta(1));
    await store.close();
    // A transaction cut short: its first piece only (what a crash mid-append leaves).
    const big: Transaction = { checkpointId: 2, writes: [{ name: "op/values", chunks: [Buffer.alloc(600_000, 1)], isCompaction: false }], unused: [], storedMeta: Buffer.alloc(8), held: [] };
    const cut = await CheckpointLog.open(nc, options("a"));
    (cut as unknown as { lastSeq: number }).lastSeq = (await a.claim(undefined)).lastCommitSeq + 1;
    const js = (cut as unknown as { js: { publish: Function } }).js;
    const original = js.publish.bind(js);
    let published = 0;
    js.publish = async (...args: unknown[]) => {
      if (published++ === 1) throw new Error("the process died here");
      return original(...args);
    };
    await expect(cut.append(big, meta(2))).rejects.toThrow("the process died here");
    const claim = await (await CheckpointLog.open(nc, options("b"))).claim(undefined);
    expect(claim.lastCheckpointId).toBe(1);
    expect((await rebuilt(claim)).values).toEqual(new Map([["k", "committed"]]));
  });

  it("keeps the state encrypted in NATS when the state dir is, and reads it back with the key", async () => {
    group++;
    const key = "k".repeat(32);
    const a = await CheckpointLog.open(nc, options("a", { encryptionKey: key }));
    await a.claim(undefined);
    const { store, state } = mirroredStore(a, key);
    state.set("secret-user", "a value that must not be readable in NATS");
    await store.commit(meta(1));
    await store.close();
    const claim = await (await CheckpointLog.open(nc, options("b", { encryptionKey: key }))).claim(undefined);
    expect((await rebuilt(claim, key)).values.get("secret-user")).toBe("a value that must not be readable in NATS");
    const raw = await readSubject(`flusso.g${group}.checkpoints.3`);
    expect(raw.some((text) => text.includes("must not be readable"))).toBe(false);
    await expect((await CheckpointLog.open(nc, options("c", { encryptionKey: "z".repeat(32) }))).claim(undefined)).rejects.toThrow();
  });

  it("lets one worker claim and commit to several partitions of the same stream", async () => {
    group++;
    for (const partition of [0, 1, 2]) {
      const log = await CheckpointLog.open(nc, { ...options("a"), partition });
      await log.claim(undefined);
      const { store, state } = mirroredStore(log);
      state.set("k", `p${partition}`);
      await store.commit(meta(1));
      await store.close();
    }
    for (const partition of [0, 1, 2]) {
      const claim = await (await CheckpointLog.open(nc, { ...options("b"), partition })).claim(undefined);
      expect((await rebuilt(claim)).values).toEqual(new Map([["k", `p${partition}`]]));
    }
  });

  it("tells a cache that holds the last commit from one that does not", async () => {
    group++;
    const a = await CheckpointLog.open(nc, options("a"));
    await a.claim(undefined);
    const { store, state } = mirroredStore(a);
    state.set("k", "v");
    await store.commit(meta(1));
    await store.close();
    const firstLog = await CheckpointLog.open(nc, options("b"));
    const first = await firstLog.claim(undefined);
    const cached = { commitSeq: first.lastCommitSeq, checkpointId: first.lastCheckpointId, streamCreated: firstLog.streamCreated };
    // Only claims since: the cache is current.
    const again = await (await CheckpointLog.open(nc, options("a"))).claim(cached);
    expect(again.isCacheCurrent).toBe(true);
    expect(again.transactions).toEqual([]);
    // Another checkpoint id at the same place is not (a cache written by a commit NATS refused).
    const other = await (await CheckpointLog.open(nc, options("b"))).claim({ ...cached, checkpointId: 2 });
    expect(other.isCacheCurrent).toBe(false);
    expect(other.transactions.map((t) => t.checkpointId)).toEqual([1]);
    // Nor is a cache read from another stream of the same name (deleted and made again).
    const elsewhere = await (await CheckpointLog.open(nc, options("a"))).claim({ ...cached, streamCreated: "2020-01-01T00:00:00Z" });
    expect(elsewhere.isCacheCurrent).toBe(false);
  });
});

async function readSubject(subject: string): Promise<string[]> {
  const { readStreamSince } = await import("../../../engine/nats.ts");
  const texts: string[] = [];
  await readStreamSince(nc, `flusso_g${group}_checkpoints`, { afterSeq: 0, subject }, (msg) => texts.push(Buffer.from(msg.data).toString("latin1")));
  return texts;
}
