// The LMDB store: what a checkpoint commits is exactly what a restore sees, compaction included.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { KeyedValueState } from "../../engine/keyedState.ts";
import { StateStore, type CheckpointMeta } from "../../engine/store.ts";
import { TimerService } from "../../engine/timers.ts";

function meta(checkpointId: number): CheckpointMeta {
  return { fingerprint: "f", sourcePosition: checkpointId * 10, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 };
}

describe("state store", () => {
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
