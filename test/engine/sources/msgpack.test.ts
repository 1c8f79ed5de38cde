// Tests of the msgpack walk: it finds the end msgpackr finds for every value msgpackr's `pack` writes,
// and refuses, before msgpackr sees them, values too deep or too wide, bad UTF-8 and impossible lengths.
import { pack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { decodeMsgpackMessage, MsgpackScanner } from "../../../engine/sources/msgpack.ts";
import { mulberry32 } from "../../harness.ts";

/** A seeded value of the kinds events hold, nested up to `depth` more levels. */
function randomValue(rnd: () => number, depth: number): unknown {
  const pick = Math.floor(rnd() * (depth > 0 ? 12 : 9));
  switch (pick) {
    case 0:
      return Math.floor(rnd() * 200) - 100;
    case 1:
      return Math.floor(rnd() * 2 ** 52);
    case 2:
      return rnd() * 1e6 - 5e5;
    case 3:
      return rnd() < 0.5;
    case 4:
      return null;
    case 5:
      return randomString(rnd, Math.floor(rnd() * 40));
    case 6:
      return randomString(rnd, 30 + Math.floor(rnd() * 300)); // str8 and str16, msgpackr's native string path
    case 7:
      return Buffer.from(Array.from({ length: Math.floor(rnd() * 300) }, () => Math.floor(rnd() * 256)));
    case 8:
      return new Date(Date.UTC(2024, 0, 1) + Math.floor(rnd() * 1e10));
    case 9:
    case 10:
      return Object.fromEntries(Array.from({ length: Math.floor(rnd() * 20) }, (_, i) => [`${randomString(rnd, 1 + Math.floor(rnd() * 12))}${i}`, randomValue(rnd, depth - 1)]));
    default:
      return Array.from({ length: Math.floor(rnd() * 20) }, () => randomValue(rnd, depth - 1));
  }
}

const ALPHABET = ["a", "b", "z", "0", " ", "_", "é", "ß", "中", "文", "😀", "€"];

function randomString(rnd: () => number, length: number): string {
  return Array.from({ length }, () => ALPHABET[Math.floor(rnd() * ALPHABET.length)]).join("");
}

/** Walks the value at `at` of `bytes` (the whole input) and says how it ended. */
function scan(bytes: Uint8Array, at = 0): { step: string; endAt: number; violation?: string; malformation: string } {
  const scanner = new MsgpackScanner(bytes.length);
  scanner.begin(at);
  const step = scanner.scan(bytes, 0);
  return { step, endAt: scanner.at, violation: scanner.violation, malformation: scanner.malformation };
}

describe("the msgpack walk", () => {
  it("ends every value msgpackr packs where msgpackr ends it, and refuses none (1,000 seeded values)", () => {
    const rnd = mulberry32(7);
    for (let n = 0; n < 1000; n++) {
      const value = randomValue(rnd, 3);
      const bytes = pack(value);
      expect(scan(bytes)).toEqual({ step: "whole", endAt: bytes.length, violation: undefined, malformation: "" });
      expect(decodeMsgpackMessage(bytes)).toEqual({ value });
    }
  });

  it("walks concatenated values one at a time, from one byte to the next value", () => {
    const values = [{ a: 1 }, [1, "x"], "text", 42, { nested: { list: [1, 2, { deep: true }] } }];
    const bytes = Buffer.concat(values.map((v) => pack(v)));
    const ends: number[] = [];
    for (let at = 0; at < bytes.length; ) {
      at = scan(bytes, at).endAt;
      ends.push(at);
    }
    let offset = 0;
    expect(ends).toEqual(values.map((v) => (offset += pack(v).length)));
  });

  it("stops for want of bytes when given the input in pieces, and goes on where it stopped", () => {
    const value = { user_id: "u1", page: "p".repeat(300), tags: ["a", "b"], at: 1716163200000 };
    const bytes = pack(value);
    const scanner = new MsgpackScanner(bytes.length);
    scanner.begin(0);
    let givenBytes = 5;
    let shorts = 0;
    while (scanner.scan(bytes.subarray(0, givenBytes), 0) === "short") {
      shorts++;
      expect(scanner.needAt).toBeGreaterThan(givenBytes);
      givenBytes = scanner.needAt;
    }
    expect(shorts).toBeGreaterThan(1);
    expect(scanner.at).toBe(bytes.length);
  });

  it("refuses a list nested 100,000 deep (which overflows msgpackr's stack) without decoding it", () => {
    const bytes = Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0x01])]);
    expect(scan(bytes)).toMatchObject({ step: "whole", endAt: bytes.length, violation: "nested deeper than 64 levels" });
    expect(decodeMsgpackMessage(bytes)).toMatchObject({ error: "nested deeper than 64 levels" });
  });

  it("takes 64 levels and refuses 65", () => {
    const nested = (levels: number) => Buffer.concat([Buffer.alloc(levels, 0x91), Buffer.from([0x90])]); // the innermost list is empty
    expect(scan(nested(63)).violation).toBeUndefined(); // 63 lists of one and an empty one: 64 levels
    expect(scan(nested(64)).violation).toBe("nested deeper than 64 levels");
  });

  it("refuses a list of 20,000 entries and a mapping of 10,001, naming the count", () => {
    expect(decodeMsgpackMessage(pack(Array.from({ length: 20_000 }, (_, i) => i % 100)))).toMatchObject({ error: "a list of 20000 entries, over the limit of 10000" });
    const wide = Object.fromEntries(Array.from({ length: 10_001 }, (_, i) => [`k${i}`, 1]));
    expect(decodeMsgpackMessage(pack(wide))).toMatchObject({ error: "a mapping of 10001 entries, over the limit of 10000" });
  });

  it("refuses a string or a key that is not UTF-8, which msgpackr would decode to U+FFFD", () => {
    const bytes = pack({ user_id: "alice", page: "/" });
    const badValue = Buffer.from(bytes);
    badValue[badValue.indexOf("alice") + 1] = 0xff;
    expect(decodeMsgpackMessage(badValue)).toMatchObject({ error: `not UTF-8: a string with an invalid byte sequence at byte ${bytes.indexOf("alice") + 1}` });
    const badKey = Buffer.from(bytes);
    badKey[badKey.indexOf("user_id") + 4] = 0xc3; // a lead byte followed by "_", no continuation
    expect(decodeMsgpackMessage(badKey)).toMatchObject({ error: expect.stringMatching(/^not UTF-8: /) });
    // A long string goes through msgpackr's native decoder: checked all the same.
    const long = pack({ page: `${"é".repeat(100)}x` });
    long[long.length - 1] = 0x80;
    expect(decodeMsgpackMessage(long)).toMatchObject({ error: expect.stringMatching(/^not UTF-8: /) });
    expect(decodeMsgpackMessage(pack({ name: "Zoë 中文 😀" }))).toEqual({ value: { name: "Zoë 中文 😀" } });
  });

  it("calls a length or a count the input cannot hold malformed, without allocating it", () => {
    const header = (bytes: number[]) => Buffer.concat([Buffer.from(bytes), Buffer.alloc(100)]);
    expect(scan(header([0xdd, 0xff, 0xff, 0xff, 0xff]))).toMatchObject({ step: "malformed", malformation: "a list of 4294967295 entries cannot fit in the 100 bytes left" });
    expect(scan(header([0xdf, 0x7f, 0xff, 0xff, 0xff]))).toMatchObject({ step: "malformed", malformation: "a mapping of 2147483647 entries cannot fit in the 100 bytes left" });
    expect(scan(header([0xdb, 0x7f, 0xff, 0xff, 0xff]))).toMatchObject({ step: "malformed", malformation: "a string of 2147483647 bytes runs past the end of the input" });
    expect(scan(header([0xc6, 0x7f, 0xff, 0xff, 0xff]))).toMatchObject({ step: "malformed", malformation: "bytes of 2147483647 bytes runs past the end of the input" });
    expect(scan(Buffer.from([0xc1]))).toMatchObject({ step: "malformed", malformation: "0xc1, a byte msgpack never uses" });
    expect(decodeMsgpackMessage(Buffer.concat([pack({ a: 1 }), Buffer.from([1])]))).toMatchObject({ error: "not msgpack: 1 byte after the value" });
  });

  it("refuses extensions that read past their own bytes (a msgpackr Set) and keeps the timestamp", () => {
    expect(decodeMsgpackMessage(Buffer.from([0xd4, 0x73, 0x00]))).toMatchObject({ error: "msgpack extension type 115 is not supported" });
    const at = new Date(Date.UTC(2024, 4, 20, 10));
    expect(decodeMsgpackMessage(pack({ at }))).toEqual({ value: { at } });
  });
});
