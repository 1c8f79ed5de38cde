// Tests of the seeded PRNGs: their sequences are pinned, since generated events, k-means++ seeds and test data depend on them.
import { describe, expect, it } from "vitest";
import { Sfc32, mulberry32 } from "../../engine/random.ts";

describe("mulberry32", () => {
  it("draws the same sequence for seed 42 as it always has", () => {
    const random = mulberry32(42);
    expect([random(), random(), random()]).toEqual([0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  });
});

describe("Sfc32", () => {
  it("draws the same sequence for seed 42 as it always has", () => {
    const random = new Sfc32(42);
    expect([random.next(), random.next(), random.next()]).toEqual([0.8907801888417453, 0.4310670436825603, 0.3220651443116367]);
  });

  it("draws integers below n from the same sequence", () => {
    const random = new Sfc32(42);
    expect(Array.from({ length: 10 }, () => random.below(10))).toEqual([8, 4, 3, 2, 6, 9, 2, 4, 4, 1]);
  });
});
