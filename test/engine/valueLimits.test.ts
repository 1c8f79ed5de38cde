// Tests of the value limits: the depth and entry bounds hold at their edges, on values nested far
// deeper than the call stack allows, and the flat events that are most input pass.
import { describe, expect, it } from "vitest";
import { MAX_COLLECTION_ENTRIES, MAX_VALUE_DEPTH, valueLimitViolation } from "../../engine/valueLimits.ts";

/** A list holding a list ... `levels` lists deep, the innermost holding `leaf`. */
function nested(levels: number, leaf: unknown = 1): unknown {
  let value = leaf;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

describe("valueLimitViolation", () => {
  it("passes scalars, bytes and flat events", () => {
    expect([1, "x", null, true, Buffer.alloc(1 << 20)].map((v) => valueLimitViolation(v))).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(valueLimitViolation({ user_id: "u1", ts: 1, tags: ["a"], props: { a: { b: 1 } } })).toBeUndefined();
  });

  it("takes 64 levels and refuses 65", () => {
    expect(MAX_VALUE_DEPTH).toBe(64);
    expect(valueLimitViolation(nested(64))).toBeUndefined();
    expect(valueLimitViolation(nested(65))).toBe("nested deeper than 64 levels");
    expect(valueLimitViolation({ a: nested(64) })).toBe("nested deeper than 64 levels");
  });

  it("refuses a value nested 100,000 deep without overflowing the call stack", () => {
    expect(valueLimitViolation(nested(100_000))).toBe("nested deeper than 64 levels");
  });

  it("takes 10,000 entries in a list or mapping and refuses more, at the top or inside", () => {
    expect(MAX_COLLECTION_ENTRIES).toBe(10_000);
    const mapping = (entries: number) => Object.fromEntries(Array.from({ length: entries }, (_, i) => [`k${i}`, i]));
    expect(valueLimitViolation(Array.from({ length: 10_000 }, () => 0))).toBeUndefined();
    expect(valueLimitViolation(Array.from({ length: 20_000 }, () => 0))).toBe("a list of 20000 entries, over the limit of 10000");
    expect(valueLimitViolation(mapping(10_001))).toBe("a mapping of 10001 entries, over the limit of 10000");
    expect(valueLimitViolation({ user_id: "u1", props: mapping(10_001) })).toBe("a mapping of 10001 entries, over the limit of 10000");
  });
});
