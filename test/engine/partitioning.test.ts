// Tests of partition assignment: by FNV-1a hash of a key, and by the number a subject ends with.
import { describe, expect, it } from "vitest";
import { fnv1a32, partitionOf, partitionOfSubject } from "../../engine/partitioning.ts";

describe("partitionOf", () => {
  it("hashes the key with FNV-1a 32-bit and takes it modulo the partitions", () => {
    expect(partitionOf("foobar", 2 ** 32)).toBe(0xbf9cf968); // the FNV-1a 32-bit test vector
    expect(partitionOf("a", 1000)).toBe(0xe40c292c % 1000);
  });

  it("hashes a key beyond ASCII as its UTF-8 bytes", () => {
    let hash = 0x811c9dc5;
    for (const byte of Buffer.from("caffè", "utf8")) hash = Math.imul(hash ^ byte, 0x01000193);
    expect(fnv1a32("caffè")).toBe(hash >>> 0);
    expect(fnv1a32("caffè")).not.toBe(fnv1a32("caffe"));
  });
});

describe("partitionOfSubject", () => {
  it("takes the subject's last token modulo the partitions", () => {
    expect(partitionOfSubject("events.3", 4)).toBe(3);
    expect(partitionOfSubject("events.7", 4)).toBe(3);
  });

  it("puts a subject without a numeric last token in partition 0", () => {
    expect(partitionOfSubject("events.eu", 4)).toBe(0);
    expect(partitionOfSubject("events", 4)).toBe(0);
    expect(partitionOfSubject("events.-1", 4)).toBe(0);
  });
});
