import { describe, expect, it } from "vitest";
import { KeyedSlots } from "../../engine/keyedSlots.ts";
import { KeyedValueState } from "../../engine/keyedState.ts";

function setup() {
  const records = new KeyedValueState<unknown[]>("users");
  const slots = new KeyedSlots(records);
  return { records, a: slots.slot<number[]>("a"), b: slots.slot<string>("b"), slots };
}

describe("KeyedSlots", () => {
  it("keeps each part's value of a key in one record, one entry per key in a checkpoint", () => {
    const { records, a, b } = setup();
    a.set("u1", [1]);
    b.set("u1", "x");
    b.set("u2", "y");
    expect(records.takeDelta().puts).toEqual([
      ["u1", [[1], "x"]],
      ["u2", [undefined, "y"]],
    ]);
    expect([a.size, b.size]).toEqual([1, 2]);
    expect([...b.entries()]).toEqual([["u1", "x"], ["u2", "y"]]);
    expect([...a.keys()]).toEqual(["u1"]);
  });

  it("scans every record in focus, reading each through the scan alone and marking none changed", () => {
    const { records, a, b, slots } = setup();
    a.set("u1", [1]);
    b.set("u2", "y");
    records.takeDelta();
    // Lookups during the scan would go through the state: count them.
    let lookups = 0;
    const get = records.get.bind(records);
    records.get = (key) => (lookups++, get(key));
    const seen: Array<[string, number[] | undefined, string | undefined]> = [];
    slots.forEachRecord((key) => seen.push([key, a.get(key), b.get(key)]));
    expect(seen).toEqual([["u1", [1], undefined], ["u2", undefined, "y"]]);
    expect(lookups).toBe(0);
    expect(records.takeDelta().puts).toEqual([]);
    // The focus ends with the scan.
    expect(a.get("u2")).toBeUndefined();
    expect(lookups).toBe(1);
  });

  it("marks a focused record changed, so a value mutated in place reaches the checkpoint unmarked", () => {
    const { records, a, slots } = setup();
    a.set("u1", [1]);
    records.takeDelta();
    slots.focus("u1");
    a.get("u1")!.push(2);
    slots.blur();
    expect(records.takeDelta().puts).toEqual([["u1", [[1, 2], undefined]]]);
  });

  it("outside a focus, marks a record changed only through getForUpdate, set or touch", () => {
    const { records, a } = setup();
    a.set("u1", [1]);
    records.takeDelta();
    a.get("u1")!.push(2);
    expect(records.takeDelta().puts).toEqual([]);
    a.getForUpdate("u1")!.push(3);
    expect(records.takeDelta().puts).toEqual([["u1", [[1, 2, 3], undefined]]]);
  });

  it("drops a key's record when its last value is deleted, also the focused one", () => {
    const { records, a, b, slots } = setup();
    a.set("u1", [1]);
    b.set("u1", "x");
    records.takeDelta();
    slots.focus("u1");
    a.delete("u1");
    expect(records.get("u1")).toEqual([undefined, "x"]);
    b.delete("u1");
    expect(records.get("u1")).toBeUndefined();
    expect(b.get("u1")).toBeUndefined();
    b.set("u1", "again");
    slots.blur();
    expect(records.get("u1")).toEqual([undefined, "again"]);
    expect([a.size, b.size]).toEqual([0, 1]);
  });

  it("counts a restored state's values per slot", () => {
    const restored = new KeyedValueState<unknown[]>("users", {}, [["u1", [[1], undefined]], ["u2", [[2], "y"]]]);
    const slots = new KeyedSlots(restored);
    expect([slots.slot("a").size, slots.slot("b").size]).toEqual([2, 1]);
    expect(() => slots.slot("a")).toThrow(/two slots are named "a"/);
  });
});

describe("KeyedSlots with their names stored", () => {
  /** A first build with slots `a` and `b`, two users, and what a checkpoint of it restores. */
  function restoredAfterFirstBuild() {
    const records = new KeyedValueState<unknown[]>("users");
    const names = new KeyedValueState<string[]>("slot-names");
    const slots = new KeyedSlots(records, names);
    const [a, b] = [slots.slot<number>("a"), slots.slot<string>("b")];
    slots.seal();
    a.set("u1", 1);
    b.set("u1", "x");
    b.set("u2", "y");
    const restore = () => {
      const restoredRecords = new KeyedValueState<unknown[]>("users", {}, records.snapshotAll());
      const restoredNames = new KeyedValueState<string[]>("slot-names", {}, names.snapshotAll());
      return { records: restoredRecords, names: restoredNames, slots: new KeyedSlots(restoredRecords, restoredNames) };
    };
    return restore();
  }

  it("finds each slot's values by name when slots are added before it", () => {
    const { slots, names } = restoredAfterFirstBuild();
    const added = slots.slot<number>("new");
    const b = slots.slot<string>("b");
    const a = slots.slot<number>("a");
    expect(slots.seal()).toEqual([]);
    expect([a.get("u1"), b.get("u1"), b.get("u2"), added.get("u1")]).toEqual([1, "x", "y", undefined]);
    expect([a.size, b.size, added.size]).toEqual([1, 2, 0]);
    // Added at the end of the records, which stay as they were.
    expect(names.get("names")).toEqual(["a", "b", "new"]);
  });

  it("drops the values of a slot no part asks for, and the records left empty, from the next checkpoint on", () => {
    const { slots, records, names } = restoredAfterFirstBuild();
    const a = slots.slot<number>("a");
    expect(slots.seal()).toEqual(["b"]);
    expect(a.get("u1")).toBe(1);
    expect(records.get("u1")).toEqual([1]);
    expect(records.get("u2")).toBeUndefined();
    expect(names.get("names")).toEqual(["a"]);
    expect(records.takeSnapshotRequest()).toBe(true);
    expect(slots.valuesOf("u1")).toEqual({ a: 1 });
  });

  it("empties a slot asked for fresh, keeping the others", () => {
    const { slots, records } = restoredAfterFirstBuild();
    const b = slots.slot<string>("b", { isFresh: true });
    const a = slots.slot<number>("a");
    slots.seal();
    expect([a.get("u1"), b.get("u1"), b.get("u2"), b.size]).toEqual([1, undefined, undefined, 0]);
    expect(records.get("u2")).toBeUndefined();
    expect(records.takeSnapshotRequest()).toBe(true);
  });
});
