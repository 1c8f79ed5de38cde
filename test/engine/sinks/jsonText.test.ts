// Output encoding: what a decoder can produce is written, never fatal to a sink.
import { describe, expect, it } from "vitest";
import { unpack } from "msgpackr";
import { jsonText } from "../../../engine/sinks/jsonText.ts";

describe("jsonText", () => {
  it("writes msgpack's 64-bit integers: exact ones as numbers, others as their digits", () => {
    const event = unpack(Buffer.from([0x82, 0xa1, 0x61, 0xd3, 0, 0, 0, 0, 0, 0, 0, 7, 0xa1, 0x62, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])) as object;
    expect(() => JSON.stringify(event)).toThrow(/BigInt/);
    expect(jsonText(event)).toBe('{"a":7,"b":"18446744073709551615"}');
  });

  it("is JSON.stringify for everything else", () => {
    const value = { s: "é\n", n: 1.5, l: [null, true], o: { x: -0 } };
    expect(jsonText(value)).toBe(JSON.stringify(value));
  });
});
