// The LMDB store: what a checkpoint commits is exactly what a restore sees, compaction included;
// damaged state is refused with the reason, never read wrongly.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import fc from "fast-check";
import { open } from "lmdb";
import { describe, expect, it } from "vitest";
import { KeyedValueState } from "../../engine/keyedState.ts";
import { StateCorrupt, StateDirUnusable } from "../../engine/errors.ts";
import { StateStore, type CheckpointMeta } from "../../engine/store.ts";
import { TimerService } from "../../engine/timers.ts";

const PROJECT_ROOT = resolve(import.meta.dirname, "../..");

function meta(checkpointId: number): CheckpointMeta {
  return { shape: "f", sourcePosition: checkpointId * 10, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 };
}

describe("state store", () => {
  it("packs in slices with commitInSlices, letting the thread run between them, and restores what commit would", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-store-slices-"));
    const store = new StateStore(dir, 20);
    const state = new KeyedValueState<number[]>("op/values");
    store.register(state);
    const expected = new Map<string, number[]>();
    for (let i = 0; i < 20_000; i++) {
      state.set(`k${i}`, [i, i * 2]);
      expected.set(`k${i}`, [i, i * 2]);
    }
    // With a 0 ms slice, the packing yields after every chunk: an immediate queued now runs before it ends.
    let ranBetweenSlices = false;
    setImmediate(() => (ranBetweenSlices = true));
    const { durable } = await store.commitInSlices(meta(1), [], 0);
    expect(ranBetweenSlices).toBe(true);
    expect((await durable).entries).toBe(20_000);
    await store.close();
    const reopened = new StateStore(dir, 20);
    const restored = new KeyedValueState<number[]>("op/values", {}, reopened.restored("op/values"));
    expect(new Map([...restored.keys()].map((k) => [k, restored.get(k)]))).toEqual(expected);
    await reopened.close();
  });

  it("restores the state of the last checkpoint after random writes, deletes and compactions", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.tuple(fc.integer({ min: 0, max: 30 }), fc.option(fc.integer(), { nil: undefined })), { maxLength: 40 }), {
          minLength: 1,
          maxLength: 12,
        }),
        async (checkpoints) => {
          const dir = mkdtempSync(join(tmpdir(), "flusso-store-"));
          const store = new StateStore(dir, 20); // compacts as soon as the log passes 20 entries
          const state = new KeyedValueState<number>("op/values");
          store.register(state);
          const expected = new Map<string, number>();
          for (const [i, ops] of checkpoints.entries()) {
            for (const [k, v] of ops) {
              if (v === undefined) {
                state.delete(`k${k}`);
                expected.delete(`k${k}`);
              } else {
                state.set(`k${k}`, v);
                expected.set(`k${k}`, v);
              }
            }
            await store.commit(meta(i + 1));
          }
          // Changes after the last checkpoint are not part of it.
          state.set("uncommitted", 1);
          await store.close();
          const reopened = new StateStore(dir, 20);
          const restored = new KeyedValueState<number>("op/values", {}, reopened.restored("op/values"));
          expect(new Map([...restored.keys()].map((k) => [k, restored.get(k)]))).toEqual(expected);
          expect(reopened.readMeta()?.checkpointId).toBe(checkpoints.length);
          await reopened.close();
        },
      ),
      { numRuns: 40, seed: 11 },
    );
  });

  it("restores timers, which then fire in time and key order", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-timers-"));
    const store = new StateStore(dir);
    const timers = new TimerService("op/timers");
    store.register(timers);
    timers.register("b", 20);
    timers.register("a", 20);
    timers.register("c", 10);
    timers.register("gone", 15);
    timers.delete("gone", 15);
    await store.commit(meta(1));
    await store.close();
    const reopened = new StateStore(dir);
    const restored = new TimerService("op/timers", reopened.restored("op/timers"));
    const fired: Array<[string, number]> = [];
    restored.advanceTo(19, (key, timeMs) => fired.push([key, timeMs]));
    expect(fired).toEqual([["c", 10]]);
    restored.advanceTo(100, (key, timeMs) => fired.push([key, timeMs]));
    expect(fired).toEqual([["c", 10], ["a", 20], ["b", 20]]);
    await reopened.close();
  });

  it("takes the checkpoint at the call: changes made while it is written belong to the next one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-cut-"));
    const store = new StateStore(dir);
    const state = new KeyedValueState<number[]>("op/v");
    store.register(state);
    state.set("x", [1]);
    const written = store.commit(meta(1));
    state.getForUpdate("x")!.push(2); // the job goes on while the commit is written
    await written;
    await store.close();
    const reopened = new StateStore(dir);
    expect(new KeyedValueState<number[]>("op/v", {}, reopened.restored("op/v")).get("x")).toEqual([1]);
    await reopened.close();
  });

  it("a checkpoint whose state cannot be encoded writes nothing: the previous one stays", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-atomic-"));
    const store = new StateStore(dir);
    const state = new KeyedValueState<number>("op/v");
    store.register(state);
    state.set("x", 1);
    await store.commit(meta(1));
    state.set("x", 2);
    const poison = new KeyedValueState<unknown>("op/poison");
    store.register(poison);
    poison.set("p", 10n ** 30n); // too large for msgpack, after op/v's change was taken
    expect(() => store.commit(meta(2))).toThrow();
    await store.close();
    const reopened = new StateStore(dir);
    expect(reopened.readMeta()?.checkpointId).toBe(1);
    expect(new KeyedValueState<number>("op/v", {}, reopened.restored("op/v")).get("x")).toBe(1);
    await reopened.close();
  });
});

describe("damaged state", () => {
  /** A store with one committed checkpoint holding `value` under key "k", closed. */
  async function committed(value: unknown): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), "flusso-damaged-"));
    const store = new StateStore(dir);
    const state = new KeyedValueState<unknown>("op/v");
    store.register(state);
    state.set("k", value);
    await store.commit(meta(1));
    await store.close();
    return dir;
  }

  /** Flips one bit of the first occurrence of `marker` in the data file. */
  function flipBitIn(dir: string, marker: string): void {
    const path = join(dir, "data.mdb");
    const bytes = readFileSync(path);
    const at = bytes.indexOf(Buffer.from(marker));
    expect(at, `${marker} is in the data file`).toBeGreaterThan(0);
    bytes[at + 2] ^= 0x04;
    writeFileSync(path, bytes);
  }

  it("refuses a truncated data file before mapping it (reading past its end would kill the process)", async () => {
    const dir = await committed("x".repeat(50_000));
    const path = join(dir, "data.mdb");
    truncateSync(path, statSync(path).size - 4096);
    expect(() => new StateStore(dir)).toThrow(StateCorrupt);
    expect(() => new StateStore(dir)).toThrow(/data\.mdb has \d+ bytes but its last checkpoint uses \d+: the file was truncated/);
  });

  it("refuses a state chunk with a flipped bit instead of restoring a wrong value", async () => {
    const dir = await committed({ cluster: "fedele-marker", atMs: 1718928000000 });
    flipBitIn(dir, "fedele-marker");
    const store = new StateStore(dir);
    expect(() => [...store.restored("op/v")]).toThrow(StateCorrupt);
    expect(() => [...store.restored("op/v")]).toThrow(/state "op\/v" at \[1,0\] fails its checksum/);
    await store.close();
  });

  it("refuses checkpoint metadata with a flipped bit", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-damaged-"));
    const store = new StateStore(dir);
    await store.commit({ ...meta(1), shape: "fingerprint-marker" });
    await store.close();
    flipBitIn(dir, "fingerprint-marker");
    expect(() => new StateStore(dir)).toThrow(/the checkpoint metadata fails its checksum/);
  });

  it("reports a state dir this user may not write as such, not as a wrong encryption key", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-readonly-"));
    await new StateStore(dir).close();
    const open = `import(${JSON.stringify(join(PROJECT_ROOT, "engine/store.ts"))}).then((m) => { try { new m.StateStore(${JSON.stringify(dir)}); console.log("opened"); } catch (e) { console.log(String(e)); } })`;
    // Root may write anywhere: the check runs as nobody, who may not write a dir root made.
    let output: string;
    if (process.getuid?.() === 0) {
      output = spawnSync(process.execPath, ["--import", "tsx", "-e", open], { cwd: PROJECT_ROOT, uid: 65534, gid: 65534, encoding: "utf8" }).stdout;
    } else {
      chmodSync(dir, 0o555);
      output = spawnSync(process.execPath, ["--import", "tsx", "-e", open], { cwd: PROJECT_ROOT, encoding: "utf8" }).stdout;
    }
    expect(output).toMatch(/^StateDirUnusable: .* cannot be used: EACCES: permission denied/);
  });

  it("refuses a lock or data file that is not a regular file (LMDB would crash on it)", () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-damaged-"));
    mkdirSync(join(dir, "lock.mdb"));
    expect(() => new StateStore(dir)).toThrow(/lock\.mdb is not a regular file/);
  });

  it("reports a state dir that cannot be made as such, not as a wrong encryption key", () => {
    const parent = mkdtempSync(join(tmpdir(), "flusso-damaged-"));
    writeFileSync(join(parent, "a-file"), "");
    expect(() => new StateStore(join(parent, "a-file", "state"))).toThrow(StateDirUnusable);
    expect(() => new StateStore(join(parent, "a-file", "state"))).toThrow(/cannot be used: ENOTDIR/);
  });

  it("keeps a sink's held outputs with the checkpoint, and drops those it reports delivered", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-held-"));
    const store = new StateStore(dir);
    await store.commit(meta(1), [{ sink: "sinks[0]", held: ["a", "b"], deliveredThrough: 0 }]);
    await store.commit(meta(2), [{ sink: "sinks[0]", held: ["c"], deliveredThrough: 0 }, { sink: "deadLetter", held: ["d"], deliveredThrough: 0 }]);
    await store.commit(meta(3), [{ sink: "sinks[0]", deliveredThrough: 1 }]);
    await store.close();
    const reopened = new StateStore(dir);
    expect(reopened.heldOutputs("sinks[0]")).toEqual([{ checkpointId: 2, held: ["c"] }]);
    expect(reopened.heldOutputs("deadLetter")).toEqual([{ checkpointId: 2, held: ["d"] }]);
    await reopened.close();
  });

  it("starts the states asked fresh empty, and forgets with the next commit the states and held outputs no one uses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-fresh-"));
    const first = new StateStore(dir);
    const [kept, reset, gone] = ["op/kept", "op/stage/reset", "gone/values"].map((name) => new KeyedValueState<number>(name));
    for (const state of [kept, reset, gone]) {
      state.set("k", 1);
      first.register(state);
    }
    await first.commit(meta(1), [{ sink: "file:a", held: ["a"], deliveredThrough: 0 }, { sink: "nats:B/b", held: ["b"], deliveredThrough: 0 }]);
    await first.close();

    const second = new StateStore(dir);
    second.startFresh(["op/stage/"]);
    const restoredKept = new KeyedValueState<number>("op/kept", {}, second.restored("op/kept"));
    const restoredReset = new KeyedValueState<number>("op/stage/reset", {}, second.restored("op/stage/reset"));
    expect([restoredKept.get("k"), restoredReset.get("k")]).toEqual([1, undefined]);
    restoredReset.set("k2", 2);
    second.register(restoredKept);
    second.register(restoredReset);
    second.forgetUnused(["file:a"]);
    await second.commit(meta(2), []);
    await second.close();

    const third = new StateStore(dir);
    expect(third.stateNames().sort()).toEqual(["op/kept", "op/stage/reset"]);
    // Its old entries were replaced, not added to: only what the new life wrote.
    expect([...third.restored("op/stage/reset")]).toEqual([["k2", 2]]);
    expect([...third.restored("gone/values")]).toEqual([]);
    expect(third.heldOutputs("file:a")).toEqual([{ checkpointId: 1, held: ["a"] }]);
    expect(third.heldOutputs("nats:B/b")).toEqual([]);
    await third.close();
    // Gone from the file, not only from the checkpoint's list.
    const raw = open({ path: dir, maxDbs: 8 });
    expect([raw.openDB({ name: "gone/values", encoding: "binary" }).getKeysCount(), raw.openDB({ name: "op/stage/reset", encoding: "binary" }).getKeysCount()]).toEqual([0, 1]);
    await raw.close();
  });
});
