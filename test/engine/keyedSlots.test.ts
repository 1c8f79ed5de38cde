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
