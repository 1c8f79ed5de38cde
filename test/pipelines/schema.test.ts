// Tests of the event schema's parts: ISO times with real time-zone offsets only.
import { describe, expect, it } from "vitest";
import { parseIsoTimeMs } from "../../pipelines/schema.ts";

const AT_UTC = Date.UTC(2024, 4, 20, 10, 0, 0);
const MINUTE_MS = 60_000;

describe("parseIsoTimeMs", () => {
  it.each([
    ["Z", 0],
    ["+00:00", 0],
    ["+02:00", 120],
    ["+0530", 330],
    ["+05:45", 345],
    ["-03:30", -210],
    ["-12:00", -720],
    ["+14:00", 840],
    ["-14:00", -840],
  ])("reads the offset %s", (offset, offsetMinutes) => {
    expect(parseIsoTimeMs(`2024-05-20T10:00:00${offset}`)).toBe(AT_UTC - offsetMinutes * MINUTE_MS);
  });

  it.each(["+99:99", "+24:00", "-00:75", "+14:01", "+15:00", "-14:30", "+0060", "-2400"])("refuses the offset %s, which no time zone has", (offset) => {
    expect(parseIsoTimeMs(`2024-05-20T10:00:00${offset}`)).toBeNaN();
  });
});
