// Keyed state under a memory budget: entries leave memory only once clean and durable, come back
// with the values they had, and every read, change, delete and scan sees the same state as if all
// were in memory; the keyed layout on disk restores, erases and mirrors as the log did.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KeyedValueState } from "../../engine/keyedState.ts";
import { MemoryBudget } from "../../engine/memoryBudget.ts";
import { SpillableValueState } from "../../engine/spillableState.ts";
import { StateStore, type CheckpointMeta, type CommitMirror, type Transaction } from "../../engine/store.ts";

type Rec = { n: number; tags: string[] };
const NAME = "op/users";
/** A heap reading far over any budget: every entry that may leave memory does, at the next cut. */
const OVER = 1e15;

function meta(checkpointId: number): CheckpointMeta {
  return { shape: "f", sourcePosition: checkpointId, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 };
}

/** A store with a budget of 1000 bytes whose heap reading is `heap.bytes`, and one state that may leave memory. */
function openSpilling(dir: string, heap: { bytes: number }, mirror?: CommitMirror) {
  const budget = new MemoryBudget(1000, () => heap.bytes);
  const store = new StateStore(dir, undefined, { memoryBudget: budget, mirror });
  const { restored, disk } = store.keyedDisk(NAME);
  // Stored as [n, tags] (a codec, as operators use): read back through decode.
  const state = new SpillableValueState<Rec, [number, string[]]>(NAME, { encode: (r) => [r.n, r.tags], decode: ([n, tags]) => ({ n, tags }) }, restored, disk);
  store.register(state);
  budget.add(state);
  return { store, state, budget };
}

/** What a restart without a budget restores (every entry in memory). */
async function restoredWithoutBudget(dir: string): Promise<Map<string, Rec>> {
  const store = new StateStore(dir);
  const state = new KeyedValueState<Rec, [number, string[]]>(NAME, { decode: ([n, tags]) => ({ n, tags }) }, store.restored(NAME));
  const all = new Map(state.entries());
  await store.close();
  return all;
}

function fill(state: SpillableValueState<Rec, [number, string[]]>, keys: string[]): void {
  keys.forEach((key, i) => state.set(key, { n: i, tags: [key] }));
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "flusso-spill-"));
}

describe("keyed state under a memory budget", () => {
  it("moves clean, durable entries out of memory at the next cut and reads them back with their values", async () => {
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(tempDir(), heap);
    fill(state, ["a", "b", "c"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    expect(state.residentEntries).toBe(0);
    expect(state.size).toBe(3);
    expect(state.get("b")).toEqual({ n: 1, tags: ["b"] });
    expect(state.readBacks).toBe(1);
    expect(state.residentEntries).toBe(1);
    expect(state.get("b")).toEqual({ n: 1, tags: ["b"] });
    expect(state.readBacks).toBe(1);
    await store.close();
  });

  it("keeps everything in memory while the heap is within the budget", async () => {
    const { store, state } = openSpilling(tempDir(), { bytes: 999 });
    fill(state, ["a", "b"]);
    await store.commit(meta(1));
    await store.commit(meta(2));
    expect(state.residentEntries).toBe(2);
    await store.close();
  });

  it("sends a value read back and changed to the next checkpoint", async () => {
    const dir = tempDir();
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(dir, heap);
    fill(state, ["a", "b"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    state.getForUpdate("a")!.n = 41;
    state.set("b", { n: 42, tags: [] });
    await store.commit(meta(3));
    await store.commit(meta(4));
    expect(state.residentEntries).toBe(0);
    expect(state.get("a")!.n).toBe(41);
    await store.close();
    expect(await restoredWithoutBudget(dir)).toEqual(new Map([["a", { n: 41, tags: ["a"] }], ["b", { n: 42, tags: [] }]]));
  });

  it("deletes a key that is on disk only, and the restart does not find it", async () => {
    const dir = tempDir();
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(dir, heap);
    fill(state, ["a", "b", "c"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    state.delete("b");
    expect(state.size).toBe(2);
    expect(state.get("b")).toBeUndefined();
    expect([...state.keys()].sort()).toEqual(["a", "c"]);
    // Until the delete is durable the disk still holds b: it stays hidden while the commit is in flight.
    const landing = store.commit(meta(3));
    expect(state.get("b")).toBeUndefined();
    expect(state.size).toBe(2);
    await landing;
    expect(state.get("b")).toBeUndefined();
    await store.close();
    expect([...(await restoredWithoutBudget(dir)).keys()].sort()).toEqual(["a", "c"]);
  });

  it("scans every key, memory over disk, deleted keys left out, without reading them back", async () => {
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(tempDir(), heap);
    fill(state, ["a", "b", "c", "d"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    state.getForUpdate("a")!.n = 100;
    state.delete("c");
    state.set("e", { n: 5, tags: [] });
    const expected = [["a", 100], ["b", 1], ["d", 3], ["e", 5]];
    expect([...state.entries()].map(([k, v]) => [k, v.n]).sort()).toEqual(expected);
    const visited: Array<[string, number]> = [];
    state.forEach((v, k) => visited.push([k, v.n]));
    expect(visited.sort()).toEqual(expected);
    expect([...state.keys()].sort()).toEqual(["a", "b", "d", "e"]);
    expect(state.size).toBe(4);
    // a was read back by getForUpdate; b and d stayed on disk.
    expect(state.readBacks).toBe(1);
    expect(state.residentEntries).toBe(2);
    await store.close();
  });

  it("keeps size exact through sets, deletes and read-backs of keys on disk", async () => {
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(tempDir(), heap);
    fill(state, ["a", "b", "c"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    state.set("a", { n: 9, tags: [] }); // replaces a key on disk only
    expect(state.size).toBe(3);
    state.touch("b");
    expect(state.size).toBe(3);
    state.delete("c");
    state.delete("c");
    state.delete("zz");
    expect(state.size).toBe(2);
    state.set("c", { n: 7, tags: [] });
    expect(state.size).toBe(3);
    await store.commit(meta(3));
    await store.commit(meta(4));
    expect(state.size).toBe(3);
    expect(state.residentEntries).toBe(0);
    expect([...state.entries()].map(([k, v]) => [k, v.n]).sort()).toEqual([["a", 9], ["b", 1], ["c", 7]]);
    await store.close();
  });

  it("restarts from a checkpoint with nothing loaded up front, every key still there", async () => {
    const dir = tempDir();
    const first = openSpilling(dir, { bytes: 0 });
    fill(first.state, ["a", "b", "c"]);
    await first.store.commit(meta(1));
    await first.store.close();
    const heap = { bytes: OVER };
    const { store, state } = openSpilling(dir, heap);
    expect(state.residentEntries).toBe(0);
    expect(state.size).toBe(3);
    expect([...state.keys()].sort()).toEqual(["a", "b", "c"]);
    expect(state.get("c")).toEqual({ n: 2, tags: ["c"] });
    state.delete("a");
    await store.commit(meta(2));
    await store.close();
    expect([...(await restoredWithoutBudget(dir)).keys()].sort()).toEqual(["b", "c"]);
  });

  it("removes an erased key's only durable copy with the delete itself", async () => {
    const dir = tempDir();
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(dir, heap);
    fill(state, ["a", "b"]);
    await store.commit(meta(1));
    state.delete("a");
    state.requestSnapshot(); // what an erasure asks: no rewrite is needed in the keyed layout
    const info = await store.commit(meta(2));
    expect(info.entries).toBe(1);
    expect(store.keyedDisk(NAME).disk.has("a")).toBe(false);
    expect(store.keyedDisk(NAME).disk.has("b")).toBe(true);
    await store.close();
  });

  it("never moves out an entry whose checkpoint is still in flight", async () => {
    // The mirror holds each commit until released: LMDB has it, but it is not durable yet.
    const releases: Array<() => void> = [];
    const mirror: CommitMirror = () => new Promise<void>((resolve) => releases.push(resolve));
    const heap = { bytes: OVER };
    const { store, state } = openSpilling(tempDir(), heap, mirror);
    fill(state, ["a", "b"]);
    const first = store.commit(meta(1));
    await new Promise((resolve) => setTimeout(resolve, 50)); // LMDB's write lands; the mirror still holds it
    expect(releases).toHaveLength(1);
    state.getForUpdate("b")!.n = 10;
    const second = store.commit(meta(2)); // a cut: a and b were taken by checkpoint 1, not durable
    expect(state.residentEntries).toBe(2);
    releases[0]();
    await first;
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The next cut: a is durable (checkpoint 1); b's value went with checkpoint 2, still held.
    const third = store.commit(meta(3));
    expect([...state.entries()].map(([k]) => k).sort()).toEqual(["a", "b"]);
    expect(state.residentEntries).toBe(1);
    expect(state.get("b")!.n).toBe(10);
    releases[1]();
    await second;
    await new Promise((resolve) => setTimeout(resolve, 50));
    releases[2]();
    await third;
    await store.close();
  });

  it("moves out the least recently used entries first", async () => {
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(tempDir(), heap);
    fill(state, ["a", "b", "c", "d"]);
    await store.commit(meta(1));
    state.get("c");
    state.get("d");
    // Budget 1000, heap 1600: the excess over 80% is half the heap, so half the entries leave.
    heap.bytes = 1600;
    await store.commit(meta(2));
    expect(state.residentEntries).toBe(2);
    expect(state.readBacks).toBe(0);
    state.get("c");
    state.get("d");
    expect(state.readBacks).toBe(0);
    state.get("a");
    expect(state.readBacks).toBe(1);
    await store.close();
  });

  it("lays a log out key by key when a budget is set, and back when it is removed", async () => {
    const dir = tempDir();
    const plain = new StateStore(dir);
    const logged = new KeyedValueState<[number, string[]]>(NAME, {}, plain.restored(NAME));
    plain.register(logged);
    logged.set("a", [1, ["a"]]);
    logged.set("b", [2, ["b"]]);
    await plain.commit(meta(1));
    await plain.close();
    const heap = { bytes: OVER };
    const { store, state } = openSpilling(dir, heap);
    expect(state.residentEntries).toBe(2); // the log is loaded whole, once
    await store.commit(meta(2)); // rewritten keyed; nothing may leave before that has landed
    expect(state.residentEntries).toBe(2);
    await store.commit(meta(3));
    expect(state.residentEntries).toBe(0);
    expect(state.get("b")).toEqual({ n: 2, tags: ["b"] });
    state.set("c", { n: 3, tags: [] });
    await store.commit(meta(4));
    await store.close();
    expect(await restoredWithoutBudget(dir)).toEqual(new Map([["a", { n: 1, tags: ["a"] }], ["b", { n: 2, tags: ["b"] }], ["c", { n: 3, tags: [] }]]));
    // A run without the budget rewrites it as a log; a later one with the budget reads that back.
    const again = new StateStore(dir);
    const back = new KeyedValueState<[number, string[]]>(NAME, {}, again.restored(NAME));
    again.register(back);
    back.delete("a");
    await again.commit(meta(5));
    await again.close();
    expect([...(await restoredWithoutBudget(dir)).keys()].sort()).toEqual(["b", "c"]);
  });

  it("mirrors its commits so that another store applying them holds the same state, a base included", async () => {
    const transactions: Transaction[] = [];
    const heap = { bytes: 0 };
    const { store, state } = openSpilling(tempDir(), heap, async (t) => void transactions.push(t));
    fill(state, ["a", "b", "c"]);
    await store.commit(meta(1));
    heap.bytes = OVER;
    await store.commit(meta(2));
    state.delete("a");
    state.set("d", { n: 9, tags: [] });
    await store.commit(meta(3));
    // A base carries every entry, those on disk only included.
    store.requestBase();
    await store.commit(meta(4));
    expect(state.residentEntries).toBeLessThan(3);
    await store.close();
    const expected = new Map([["b", { n: 1, tags: ["b"] }], ["c", { n: 2, tags: ["c"] }], ["d", { n: 9, tags: [] }]]);
    const fromStart = tempDir();
    const replica = new StateStore(fromStart);
    for (const t of transactions) await replica.apply(t);
    await replica.close();
    expect(await restoredWithoutBudget(fromStart)).toEqual(expected);
    const fromBase = tempDir();
    const based = new StateStore(fromBase);
    await based.apply(transactions[3]);
    await based.close();
    expect(await restoredWithoutBudget(fromBase)).toEqual(expected);
  });
});
