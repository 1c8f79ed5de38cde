// Keyed state: change tracking for checkpoints and event-time TTL.
import { describe, expect, it } from "vitest";
import { KeyedMapState, KeyedValueState } from "../../engine/keyedState.ts";

describe("keyed state", () => {
  it("hands a checkpoint each changed key once, and nothing when nothing changed", () => {
    const s = new KeyedValueState<number[]>("s");
    s.set("a", [1]);
    s.getForUpdate("a")!.push(2);
    s.set("b", [3]);
    s.delete("b");
    expect(s.takeDelta()).toEqual({ puts: [["a", [1, 2]]], deletes: ["b"] });
    expect(s.takeDelta()).toEqual({ puts: [], deletes: [] });
  });

  it("expires an entry when the watermark passes its last write plus the TTL", () => {
    const s = new KeyedValueState<string>("s", { ttlMs: 100 });
    s.set("a", "x", 1000);
    s.expire(1099);
    expect(s.get("a")).toBe("x");
    s.expire(1100);
    expect(s.get("a")).toBeUndefined();
    expect(s.takeDelta().deletes).toEqual(["a"]);
  });

  it("keeps a map per key and drops the key with its last field", () => {
    const m = new KeyedMapState<number>("m");
    m.set("u", "/home", 2);
    m.set("u", "/cart", 1);
    expect([...m.fields("u")]).toEqual([["/home", 2], ["/cart", 1]]);
    m.deleteField("u", "/home");
    m.deleteField("u", "/cart");
    expect(m.fields("u").size).toBe(0);
    expect(m.takeDelta().deletes).toEqual(["u"]);
  });
});
