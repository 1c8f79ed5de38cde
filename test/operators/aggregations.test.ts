// Window aggregates' results: sums and averages of decimals as the decimals were written, not as
// binary floating point adds them up.
import { describe, expect, it } from "vitest";
import { accumulator } from "../../operators/aggregations.ts";
import { withoutNoise } from "../../operators/outputFormat.ts";

type Ev = { x?: number };

function resultOf(kind: "sum" | "avg" | "min", values: number[]): unknown {
  const acc = accumulator<Ev>({ name: kind, kind, value: (e) => e.x });
  let slot = acc.init();
  for (const x of values) slot = acc.add(slot, { x }, 0);
  return acc.result(slot);
}

describe("a window's sum and average", () => {
  it("show a sum of decimals with the decimals its inputs carry, without binary noise", () => {
    expect(0.1 + 0.2).not.toBe(0.3);
    expect(resultOf("sum", [0.1, 0.2])).toBe(0.3);
    expect(resultOf("sum", Array.from({ length: 1000 }, () => 0.1))).toBe(100);
    expect(resultOf("sum", [2000.5, 300.1, 41.1])).toBe(2341.7);
  });

  it("average to 12 significant digits", () => {
    expect(resultOf("avg", [1, 2, 2])).toBe(1.66666666667);
    expect(resultOf("avg", [0.1, 0.2])).toBe(0.15);
  });

  it("merge sessions' sums into the same rounded result", () => {
    const acc = accumulator<Ev>({ name: "s", kind: "sum", value: (e) => e.x });
    const a = acc.add(acc.init(), { x: 0.1 }, 0);
    const b = acc.add(acc.init(), { x: 0.2 }, 0);
    expect(acc.result(acc.merge(a, b))).toBe(0.3);
  });

  it("leave integers, min and max, and values of 10^12 and more as they are", () => {
    expect(resultOf("sum", [123456789012, 1])).toBe(123456789013);
    expect(resultOf("sum", [2 ** 52, 1])).toBe(2 ** 52 + 1);
    expect(resultOf("min", [0.30000000000000004])).toBe(0.30000000000000004);
    expect(withoutNoise(1e12 + 0.5)).toBe(1e12 + 0.5);
    expect(withoutNoise(-2341.7000000000003)).toBe(-2341.7);
  });
});
