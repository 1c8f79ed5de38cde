// Tests of the event schema's parts: ISO times with real time-zone offsets only, and reasons that
// quote no value when privacy asks.
import { describe, expect, it } from "vitest";
import { eventDecoder, parseIsoTimeMs, type EventSchema } from "../../pipelines/schema.ts";

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

const SCHEMA: EventSchema = {
  user_id: { type: "string", required: true, unit: "ms" },
  ts: { type: "timestamp", required: true, unit: "ms" },
  price: { type: "number", required: false, unit: "ms" },
  page: { type: "string", required: false, unit: "ms" },
};

describe("eventDecoder's reasons", () => {
  const bad = [
    { user_id: "u1", ts: "bob@x.com" },
    { user_id: "u1", ts: 1e20 },
    { user_id: "u1", ts: AT_UTC, price: "bob@x.com" },
  ];

  it("quote the value that failed by default", () => {
    const decode = eventDecoder(SCHEMA, "user_id", "ts");
    expect(bad.map((e) => (decode(e) as { error: string }).error)).toEqual([
      'field "ts": expected a timestamp (epoch ms or ISO-8601), got "bob@x.com"',
      'field "ts": timestamp 100000000000000000000 is outside 1990-01-01..2100-01-01',
      'field "price": expected a number, got string "bob@x.com"',
    ]);
  });

  it("name the field and the expected type only with quotesValues: false", () => {
    const decode = eventDecoder(SCHEMA, "user_id", "ts", { quotesValues: false });
    expect(bad.map((e) => (decode(e) as { error: string }).error)).toEqual([
      'field "ts": expected a timestamp (epoch ms or ISO-8601), got a string that is no timestamp',
      'field "ts": timestamp is outside 1990-01-01..2100-01-01',
      'field "price": expected a number, got string',
    ]);
  });
});

describe("a numeric timestamp outside 1990..2100", () => {
  // 2017-11-25T00:00:00Z in epoch seconds, as the Taobao data has it.
  const SECONDS = 1511568000;
  const schemaOf = (unit: "ms" | "s"): EventSchema => ({ user_id: SCHEMA.user_id, ts: { type: "timestamp", required: true, unit } });

  it("says when it would be inside as epoch seconds, naming `unit: s`", () => {
    const decode = eventDecoder(schemaOf("ms"), "user_id", "ts");
    expect((decode({ user_id: "u1", ts: SECONDS }) as { error: string }).error).toBe(
      'field "ts": timestamp 1511568000 is outside 1990-01-01..2100-01-01; as epoch seconds it would be inside (2017-11-25T00:00:00.000Z): declare the field with `unit: s`',
    );
    expect((decode({ user_id: "u1", ts: String(SECONDS) }) as { error: string }).error).toMatch(/; as epoch seconds it would be inside .*`unit: s`$/);
  });

  it("says when it would be inside as epoch milliseconds under `unit: s`", () => {
    const decode = eventDecoder(schemaOf("s"), "user_id", "ts");
    expect((decode({ user_id: "u1", ts: SECONDS * 1000 }) as { error: string }).error).toBe(
      'field "ts": timestamp 1511568000000 is outside 1990-01-01..2100-01-01; as epoch milliseconds it would be inside (2017-11-25T00:00:00.000Z): declare the field without `unit: s`',
    );
  });

  it("gives the hint without the value or its date when quotesValues is false", () => {
    const decode = eventDecoder(schemaOf("ms"), "user_id", "ts", { quotesValues: false });
    expect((decode({ user_id: "u1", ts: SECONDS }) as { error: string }).error).toBe(
      'field "ts": timestamp is outside 1990-01-01..2100-01-01; as epoch seconds it would be inside: declare the field with `unit: s`',
    );
  });

  it("gives no hint when neither unit would put it inside", () => {
    const decode = eventDecoder(schemaOf("ms"), "user_id", "ts");
    expect((decode({ user_id: "u1", ts: -5 }) as { error: string }).error).toBe('field "ts": timestamp -5 is outside 1990-01-01..2100-01-01');
  });
});
