import { describe, expect, it } from "vitest";
import { isSameLayout, partsFrom, pickParts, shapeChanges, type StateShape } from "../../operators/stateShape.ts";

const aggregates = (...parts: Array<[string, object]>): StateShape => ({ parts: parts.map(([name, layout]) => [name, { layout }]) });

describe("shapeChanges", () => {
  it("names each part whose layout changed, with durations in their unit", () => {
    const old = aggregates(["views_7d", { kind: "count", overMs: 604_800_000, resolutionMs: 21_600_000 }], ["spend", { kind: "sum", overMs: 86_400_000, resolutionMs: 3_600_000 }]);
    const now = aggregates(["views_7d", { kind: "count", overMs: 604_800_000, resolutionMs: 3_600_000 }], ["spend", { kind: "avg", overMs: 90_000, resolutionMs: 3_750 }]);
    expect(shapeChanges(old, now)).toEqual(["views_7d: resolution 6h -> 1h", 'spend: kind "sum" -> "avg", over 1d -> 90s, resolution 1h -> 3750ms']);
  });

  it("keeps parts added, removed, renamed or moved", () => {
    const old = aggregates(["a", { kind: "count" }], ["b", { kind: "sum" }]);
    expect(shapeChanges(old, aggregates(["c", { kind: "max" }], ["b", { kind: "sum" }]))).toEqual([]);
  });

  it("names a whole layout that changed, and a change deep in the parts by its path", () => {
    expect(shapeChanges({ layout: { fields: ["page"] } }, { layout: { fields: ["page", "event_type"] } })).toEqual(['fields ["page"] -> ["page","event_type"]']);
    const steps = (...s: string[]): StateShape => ({ parts: [["cart_abandoned", { parts: [["cart", { layout: { steps: s } }]] }]] });
    expect(shapeChanges(steps("a", "b"), steps("a", "c"))).toEqual(['cart_abandoned.cart: steps ["a","b"] -> ["a","c"]']);
    expect(shapeChanges({ layout: 1 }, { layout: 2 })).toEqual(["1 -> 2"]);
  });

  it("does not see key order as a change", () => {
    expect(shapeChanges({ layout: { a: 1, b: 2 } }, { layout: { b: 2, a: 1 } })).toEqual([]);
  });
});

describe("laying parts out anew", () => {
  const named = (...names: string[]): StateShape => ({ parts: names.map((n) => [n, {}]) });

  it("maps every part to its old place, new ones to none", () => {
    expect(partsFrom(named("a", "b", "c"), named("c", "x", "a"))).toEqual([2, undefined, 0]);
    expect(pickParts([10, 20, 30], partsFrom(named("a", "b", "c"), named("c", "x", "a")), () => 0)).toEqual([30, 0, 10]);
    expect(partsFrom(undefined, named("a"))).toEqual([undefined]);
  });

  it("tells a layout that needs no work from one that does, to any depth", () => {
    expect(isSameLayout(named("a", "b"), named("a", "b"))).toBe(true);
    expect(isSameLayout(named("a", "b"), named("b", "a"))).toBe(false);
    expect(isSameLayout({ parts: [["s", named("x")]] }, { parts: [["s", named("x", "y")]] })).toBe(false);
    expect(isSameLayout({ layout: 1 }, { layout: 2 })).toBe(true);
  });
});
