// Tests of the file source over hostile input: damaged msgpack loses nothing but the damage (one
// dead letter per run of unreadable bytes, with its byte range) and resumes where an uninterrupted
// read would; values too deep, too wide or not UTF-8 are dead-lettered, and reading goes on.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pack } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileSource, type FileFormat } from "../../../engine/sources/fileSource.ts";
import type { SourceItem } from "../../../engine/sources/source.ts";
import { mulberry32 } from "../../harness.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20);

type Ev = { user_id: string; ts: number; event_type: string; price: number; page: string };

function events(count: number, seed: number): Ev[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: count }, (_, i) => ({
    user_id: `u${Math.floor(rnd() * 500)}`,
    ts: T0 + i * 1000 + Math.floor(rnd() * 1000),
    event_type: ["view", "cart", "purchase"][Math.floor(rnd() * 3)],
    price: Math.round(rnd() * 10_000) / 100,
    page: `/products/${Math.floor(rnd() * 1e6)}?ref=${"x".repeat(Math.floor(rnd() * 40))}`,
  }));
}

function writeTemp(name: string, content: string | Buffer): string {
  const path = join(tempDir(), name);
  writeFileSync(path, content);
  return path;
}

type Read = { items: SourceItem[]; positionsAfterBatch: unknown[] };

/** Every item of `path` from `position`, in batches of `batchSize`, with the position after each batch. */
async function readAll(path: string, format: FileFormat, options: { batchSize?: number; position?: unknown; maxLineBytes?: number } = {}): Promise<Read> {
  const source = new FileSource({ paths: [path], format, maxLineBytes: options.maxLineBytes });
  await source.open(options.position);
  const items: SourceItem[] = [];
  const positionsAfterBatch: unknown[] = [];
  try {
    for (;;) {
      const batch = source.nextBatch(options.batchSize ?? 100);
      items.push(...batch.items);
      positionsAfterBatch.push(source.position());
      if (batch.isDone) return { items, positionsAfterBatch };
    }
  } finally {
    await source.close();
  }
}

const valuesOf = (items: SourceItem[]) => items.filter((i) => i.error === undefined).map((i) => i.value);
const errorsOf = (items: SourceItem[]) => items.filter((i) => i.error !== undefined) as Array<Extract<SourceItem, { error: string }>>;

/** The byte offset of each value in the concatenation of `packed`. */
function offsetsOf(packed: Buffer[]): number[] {
  let offset = 0;
  return packed.map((b) => (offset += b.length) - b.length);
}

describe("a msgpack file with one length prefix that claims more than the file holds", () => {
  const evs = events(2000, 11);
  const packed = evs.map((e) => pack(e));
  const offsets = offsetsOf(packed);
  /** Event 1000 with its event_type string header made a str32 of 2 GiB. */
  function withHugeString(e: Buffer): Buffer {
    const at = e.indexOf(Buffer.from("event_type")) + "event_type".length;
    expect(e[at] & 0xe0).toBe(0xa0); // a fixstr header
    return Buffer.concat([e.subarray(0, at), Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff]), e.subarray(at + 1)]);
  }
  /** Event 1000 whose mapping header says 2^31 entries. */
  function withHugeMapping(e: Buffer): Buffer {
    return Buffer.concat([Buffer.from([0xdf, 0x7f, 0xff, 0xff, 0xff]), e.subarray(e[0] === 0xde ? 3 : 1)]);
  }

  it.each([
    ["a str32", withHugeString, /: a string of 2147483647 bytes runs past the end of the input, at byte \d+$/],
    ["a map32", withHugeMapping, /: a mapping of 2147483647 entries cannot fit in the \d+ bytes left$/],
  ])("reads the other 1,999 events and dead-letters the damaged one once, as bytes from..to (%s)", async (_name, damage, why) => {
    const bad = damage(packed[1000]);
    const path = writeTemp("events.msgpack", Buffer.concat([...packed.slice(0, 1000), bad, ...packed.slice(1001)]));
    const { items } = await readAll(path, "msgpack");
    expect(valuesOf(items)).toEqual([...evs.slice(0, 1000), ...evs.slice(1001)]);
    const errors = errorsOf(items);
    expect(errors).toHaveLength(1);
    const [from, to] = [offsets[1000], offsets[1000] + bad.length];
    expect(errors[0].error).toMatch(new RegExp(`^undecodable msgpack at bytes ${from}\\.\\.${to} \\(${bad.length} bytes\\)${why.source}`));
    expect(errors[0].origin).toBe(`${path}@${from}`);
    expect(errors[0].raw).toBe(bad.subarray(0, 64).toString("hex"));
  });
});

describe("a msgpack file with a corrupt byte, a run of garbage, a huge array32 count and a truncated tail", () => {
  const evs = events(600, 12);
  const packed = evs.map((e) => pack(e));
  const rnd = mulberry32(5);
  // Most random bytes decode as something (a zero is a number): none of it may be taken for values.
  const garbage = Buffer.from(Array.from({ length: 3000 }, () => Math.floor(rnd() * 256)));
  const zeros = Buffer.alloc(4096);
  const hugeArray = Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02]);
  const tail = packed[0].subarray(0, 12);
  const parts = [...packed.slice(0, 100), Buffer.from([0xc1]), ...packed.slice(100, 300), hugeArray, ...packed.slice(300, 400), zeros, ...packed.slice(400, 450), garbage];
  const bytesBefore = (n: number) => parts.slice(0, n).reduce((sum, b) => sum + b.length, 0);
  const file = Buffer.concat([...parts, ...packed.slice(450), tail]);
  let path: string;
  let read: Read;

  it("reads every event and dead-letters each damage once, the truncated tail included", async () => {
    path = writeTemp("events.msgpack", file);
    read = await readAll(path, "msgpack", { batchSize: 7 });
    expect(valuesOf(read.items)).toEqual(evs);
    const run = (n: number, why: string) => `undecodable msgpack at bytes ${bytesBefore(n)}..${bytesBefore(n + 1)} (${parts[n].length === 1 ? "1 byte" : `${parts[n].length} bytes`}): ${why}`;
    expect(errorsOf(read.items).map((e) => e.error)).toEqual([
      run(100, "0xc1, a byte msgpack never uses"),
      run(301, `a list of 4294967295 entries cannot fit in the ${file.length - bytesBefore(301) - 5} bytes left`),
      run(402, "byte 0x00 starts no list or mapping"),
      expect.stringMatching(new RegExp(`^undecodable msgpack at bytes ${bytesBefore(453)}\\.\\.${bytesBefore(454)} \\(3000 bytes\\): `)),
      `undecodable msgpack at bytes ${file.length - 12}..${file.length} (12 bytes): a mapping of 5 entries cannot fit in the 9 bytes left`,
    ]);
  });

  it("reads, restored at any batch's position, exactly what the uninterrupted read gave after it", async () => {
    const itemsAfterBatch: number[] = [];
    let count = 0;
    for (let b = 0; b < read.positionsAfterBatch.length; b++) itemsAfterBatch.push((count = Math.min(read.items.length, count + 7)));
    for (let b = 0; b < read.positionsAfterBatch.length; b += 9) {
      const restored = await readAll(path, "msgpack", { position: read.positionsAfterBatch[b], batchSize: 50 });
      expect(restored.items).toEqual(read.items.slice(itemsAfterBatch[b]));
    }
  });
});

describe("msgpack values over the limits", () => {
  const evs = events(20, 13);
  const packed = evs.map((e) => pack(e));

  it("dead-letters a value nested 100,000 deep, a list of 20,000 entries and a string not UTF-8, and reads on", async () => {
    const deep = Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0x01])]);
    const wide = pack({ ...evs[0], tags: Array.from({ length: 20_000 }, (_, i) => i % 100) });
    const notUtf8 = Buffer.from(packed[0]);
    notUtf8[notUtf8.indexOf(evs[0].user_id)] = 0xff;
    const path = writeTemp("events.msgpack", Buffer.concat([packed[0], deep, packed[1], wide, packed[2], notUtf8, ...packed.slice(3)]));
    const { items } = await readAll(path, "msgpack");
    expect(valuesOf(items)).toEqual(evs);
    const errors = errorsOf(items);
    expect(errors.map((e) => e.error)).toEqual([
      "nested deeper than 64 levels",
      "a list of 20000 entries, over the limit of 10000",
      expect.stringMatching(/^not UTF-8: a string with an invalid byte sequence at byte \d+$/),
    ]);
    expect(errors.map((e) => e.raw.length)).toEqual([128, 128, 128]); // 64 bytes as hex at most
    expect(errors[0].origin).toBe(`${path}@${packed[0].length}`);
  });

  it("dead-letters a value longer than maxLineBytes, naming its bytes, and reads the next", async () => {
    const big = pack({ ...evs[0], page: "p".repeat(3 << 20) }); // longer than a read chunk
    const path = writeTemp("events.msgpack", Buffer.concat([packed[0], big, ...packed.slice(1)]));
    const { items } = await readAll(path, "msgpack", { maxLineBytes: 4096 });
    expect(valuesOf(items)).toEqual(evs);
    const [error] = errorsOf(items);
    expect(error.error).toBe(`msgpack value of ${big.length} bytes (bytes ${packed[0].length}..${packed[0].length + big.length}) is over the limit of 4096`);
    expect(error.raw).toBe(big.subarray(0, 64).toString("hex"));
  });

  it("dead-letters a value the walk takes but msgpackr cannot decode, and decodes the values beside it", async () => {
    // {"t": a typed array of type code 99}: an extension the walk knows the size of, msgpackr no such type.
    const odd = Buffer.from([0x81, 0xa1, 0x74, 0xd4, 0x74, 0x63]);
    const path = writeTemp("events.msgpack", Buffer.concat([...packed.slice(0, 10), odd, ...packed.slice(10)]));
    const { items } = await readAll(path, "msgpack");
    expect(valuesOf(items)).toEqual(evs);
    const at = packed.slice(0, 10).reduce((n, b) => n + b.length, 0);
    expect(errorsOf(items)).toEqual([
      { partition: 0, error: `undecodable msgpack at bytes ${at}..${at + odd.length}: Could not find typed array for code 99`, raw: odd.toString("hex"), origin: `${path}@${at}` },
    ]);
  });

  it("names a value by its byte offset, so a schema's dead letter says where it was", async () => {
    const path = writeTemp("events.msgpack", Buffer.concat(packed.slice(0, 3)));
    const source = new FileSource({ paths: [path], format: "msgpack" });
    await source.open(undefined);
    const { items } = source.nextBatch(10);
    await source.close();
    expect(items.map((i) => (i.error === undefined ? source.originOf(0, i.at!) : i.origin))).toEqual(offsetsOf(packed.slice(0, 3)).map((o) => `${path}@${o}`));
  });
});

describe("JSON lines and CSV", () => {
  const line = (e: Partial<Ev> & Record<string, unknown>) => JSON.stringify({ user_id: "u1", ts: T0, event_type: "view", ...e });

  it("skips a UTF-8 byte-order mark at the start of the file, and only there", async () => {
    const bom = "\uFEFF";
    const path = writeTemp("events.jsonl", `${bom}${line({ ts: T0 })}\n${bom}${line({ ts: T0 + 1 })}\n${line({ ts: T0 + 2 })}\n`);
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items).map((v) => (v as Ev).ts)).toEqual([T0, T0 + 2]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:2`, expect.stringMatching(/^not JSON: /)]]);
  });

  it("resumes after the first line of a file that starts with a byte-order mark", async () => {
    const path = writeTemp("events.jsonl", `\uFEFF${line({ ts: T0 })}\n${line({ ts: T0 + 1 })}\n`);
    const first = await readAll(path, "jsonl", { batchSize: 1 });
    const restored = await readAll(path, "jsonl", { position: first.positionsAfterBatch[0] });
    expect(valuesOf(restored.items).map((v) => (v as Ev).ts)).toEqual([T0 + 1]);
  });

  it("dead-letters a line that is not UTF-8 (which would decode to U+FFFD), saying where, and reads valid multi-byte lines", async () => {
    const good = (user: string) => Buffer.from(`${line({ user_id: user })}\n`);
    const bad = Buffer.concat([Buffer.from('{"user_id":"al'), Buffer.from([0xe9]), Buffer.from(`ce","ts":${T0},"event_type":"view"}\n`)]);
    const path = writeTemp("events.jsonl", Buffer.concat([good("zoë"), bad, good("中文"), good("😀"), good("u2")]));
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items).map((v) => (v as Ev).user_id)).toEqual(["zoë", "中文", "😀", "u2"]);
    expect(errorsOf(items)).toEqual([
      { partition: 0, error: "not UTF-8: an invalid byte sequence at byte 14 of the line", raw: bad.toString("utf8").trimEnd(), origin: `${path}:2` },
    ]);
  });

  it("checks lines whose multi-byte characters straddle two reads, and finds bad bytes in the second", async () => {
    // Lines of "é" (2 bytes) with odd lengths, so one falls across the 1 MiB boundary of a read.
    const good = Buffer.from(`${line({ page: "é".repeat(1000) })}\n`);
    const lines = Array.from({ length: Math.ceil((1.5 * (1 << 20)) / good.length) }, () => good);
    const bad = Buffer.concat([Buffer.from('{"page":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]);
    const path = writeTemp("events.jsonl", Buffer.concat([...lines, bad, good]));
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items)).toHaveLength(lines.length + 1);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:${lines.length + 1}`, "not UTF-8: an invalid byte sequence at byte 9 of the line"]]);
  });

  it("dead-letters a CSV row that is not UTF-8", async () => {
    const path = writeTemp("events.csv", Buffer.concat([Buffer.from("user_id,ts\nu1,1\nu"), Buffer.from([0xff]), Buffer.from(",2\nu3,3\n")]));
    const { items } = await readAll(path, "csv");
    expect(valuesOf(items)).toEqual([{ user_id: "u1", ts: "1" }, { user_id: "u3", ts: "3" }]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:3`, "not UTF-8: an invalid byte sequence at byte 1 of the line"]]);
  });

  it("dead-letters a JSON line nested 100,000 deep and a list of 20,000 entries with a short preview, and reads on", async () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const wide = line({ tags: Array.from({ length: 20_000 }, () => 1) });
    const path = writeTemp("events.jsonl", [line({ ts: T0 }), deep, line({ ts: T0 + 1 }), wide, line({ ts: T0 + 2 })].join("\n") + "\n");
    const { items } = await readAll(path, "jsonl", { maxLineBytes: 1 << 20 });
    expect(valuesOf(items).map((v) => (v as Ev).ts)).toEqual([T0, T0 + 1, T0 + 2]);
    expect(errorsOf(items)).toEqual([
      { partition: 0, error: "nested deeper than 64 levels", raw: "[".repeat(200), origin: `${path}:2` },
      { partition: 0, error: "a list of 20000 entries, over the limit of 10000", raw: wide.slice(0, 200), origin: `${path}:4` },
    ]);
  });

  it("quotes no input in the reason of a line that is not JSON", async () => {
    const path = writeTemp("events.jsonl", "bob@example.com\n");
    const [item] = (await readAll(path, "jsonl")).items;
    expect(item).toMatchObject({ error: "not JSON: Unexpected token (not valid JSON)", raw: "bob@example.com" });
  });
});

describe("CSV rows with quoted fields that span lines", () => {
  const HEADER = "user_id,ts,note\r\n";

  it("reads a field with line breaks, delimiters and quotes inside its quotes, named by the line it starts on", async () => {
    const path = writeTemp("crm.csv", `${HEADER}u1,1,plain\r\nu2,2,"Called back.\r\nSays ""call Monday"", then\nwrites, twice"\r\nu3,3,"one line"\r\n`);
    const source = new FileSource({ paths: [path], format: "csv" });
    await source.open(undefined);
    const { items } = source.nextBatch(10);
    await source.close();
    expect(valuesOf(items)).toEqual([
      { user_id: "u1", ts: "1", note: "plain" },
      { user_id: "u2", ts: "2", note: 'Called back.\r\nSays "call Monday", then\nwrites, twice' },
      { user_id: "u3", ts: "3", note: "one line" },
    ]);
    expect(items.map((i) => (i.error === undefined ? source.originOf(0, i.at!) : i.origin))).toEqual([`${path}:2`, `${path}:3`, `${path}:6`]);
  });

  it("refuses only the line of a quote that never closes, and reads the rows below it", async () => {
    const path = writeTemp("crm.csv", `${HEADER}u1,1,"never closed\r\nu2,2,fine\r\nu3,3,"quoted, fine"\r\nu4,4,"to the end\r\n`);
    const { items } = await readAll(path, "csv");
    expect(valuesOf(items)).toEqual([
      { user_id: "u2", ts: "2", note: "fine" },
      { user_id: "u3", ts: "3", note: "quoted, fine" },
    ]);
    expect(errorsOf(items).map((e) => [e.origin, e.error, e.raw])).toEqual([
      [`${path}:2`, "bad CSV: unterminated quoted field", 'u1,1,"never closed'],
      [`${path}:5`, "bad CSV: unterminated quoted field", 'u4,4,"to the end'],
    ]);
  });

  it("refuses a quote inside an unquoted field or text after a closing quote, as RFC 4180 does, naming it", async () => {
    const path = writeTemp("crm.csv", `${HEADER}u1,1,5" screen\nu2,2,"quoted" then more\nu3,3,"5"" screen"\n`);
    const { items } = await readAll(path, "csv");
    expect(valuesOf(items)).toEqual([{ user_id: "u3", ts: "3", note: '5" screen' }]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([
      [`${path}:2`, "bad CSV: a quote inside an unquoted field"],
      [`${path}:3`, "bad CSV: a closing quote followed by more than a delimiter or the line's end"],
    ]);
  });

  it("refuses a row longer than maxLineBytes, a line or a quoted field over several, and reads on", async () => {
    const long = "x".repeat(3000);
    const path = writeTemp("crm.csv", `${HEADER}u1,1,${long}\nu2,2,"${"y\n".repeat(1500)}"\nu3,3,ok\n`);
    const { items } = await readAll(path, "csv", { maxLineBytes: 1024 });
    expect(valuesOf(items)).toEqual([{ user_id: "u3", ts: "3", note: "ok" }]);
    const errors = errorsOf(items);
    expect(errors[0]).toMatchObject({ origin: `${path}:2`, error: `line of ${3005} bytes is over the limit` });
    expect(errors[0].raw.length).toBeLessThanOrEqual(200);
    // The long quoted field: its first line is taken for an unclosed quote, the others for rows of one field.
    expect(errors[1]).toMatchObject({ origin: `${path}:3`, error: "bad CSV: unterminated quoted field", raw: 'u2,2,"y' });
    expect(errors.slice(2).every((e) => e.error === "bad CSV: 1 fields, the header has 3" || e.error === "bad CSV: unterminated quoted field")).toBe(true);
  });

  it("refuses a row spanning lines that is not UTF-8, saying where in the row", async () => {
    const path = writeTemp("crm.csv", Buffer.concat([Buffer.from(`${HEADER}u1,1,"a\nb`), Buffer.from([0xff]), Buffer.from(`"\nu2,2,c\n`)]));
    const { items } = await readAll(path, "csv");
    expect(valuesOf(items)).toEqual([{ user_id: "u2", ts: "2", note: "c" }]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:2`, "not UTF-8: an invalid byte sequence at byte 9 of the row"]]);
  });

  it("skips a byte-order mark before the header, and resumes after the header's first row", async () => {
    const path = writeTemp("crm.csv", `\uFEFF${HEADER}u1,1,"a\nb"\nu2,2,c\n`);
    const first = await readAll(path, "csv", { batchSize: 1 });
    expect(valuesOf(first.items)).toEqual([
      { user_id: "u1", ts: "1", note: "a\nb" },
      { user_id: "u2", ts: "2", note: "c" },
    ]);
    const restored = await readAll(path, "csv", { position: first.positionsAfterBatch[0] });
    expect(valuesOf(restored.items)).toEqual([{ user_id: "u2", ts: "2", note: "c" }]);
    expect(first.positionsAfterBatch[0]).toEqual({ partitions: [{ offsetBytes: Buffer.byteLength(`\uFEFF${HEADER}u1,1,"a\nb"\n`), lineNo: 3 }], turn: 0 });
  });

  describe("a CRM export of 3,000 rows: quoted notes over several lines, CRLF and LF, blank lines, stray quotes", () => {
    const rnd = mulberry32(23);
    const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
    const rows: string[] = [];
    const expected: Array<Record<string, string> | string> = [];
    for (let i = 0; i < 3000; i++) {
      const eol = pick(["\n", "\r\n"]);
      const kind = rnd();
      if (kind < 0.02) {
        rows.push(eol); // a blank line: skipped
      } else if (kind < 0.04) {
        rows.push(`u${i},${i},"stray quote${eol}`);
        expected.push("bad CSV: unterminated quoted field");
      } else if (kind < 0.06) {
        rows.push(`u${i},${i},${eol}`); // an empty field: an absent value
        expected.push({ user_id: `u${i}`, ts: String(i) });
      } else {
        // Notes start with text: a quoted field that starts with a line break would close a stray
        // quote above it into a row of the right length, which no reader can tell from a real one.
        const note = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => pick(["call back", 'said "no"', "a, b", "é 中"])).join(pick(["\n", "\r\n", " "]));
        const isQuoted = /[",\n]/.test(note) || rnd() < 0.3;
        rows.push(`u${i},${i},${isQuoted ? `"${note.replaceAll('"', '""')}"` : note}${eol}`);
        expected.push({ user_id: `u${i}`, ts: String(i), note });
      }
    }
    let path: string;
    let read: Read;

    beforeAll(async () => {
      path = writeTemp("crm.csv", HEADER + rows.join(""));
      read = await readAll(path, "csv", { batchSize: 7 });
    });

    it("reads every row as written, and refuses each stray quote's line alone", () => {
      expect(read.items.map((i) => (i.error === undefined ? i.value : i.error))).toEqual(expected);
    });

    it("reads, restored at any batch's position, exactly what the uninterrupted read gave after it", async () => {
      for (let b = 0; b < read.positionsAfterBatch.length; b += 5) {
        const restored = await readAll(path, "csv", { position: read.positionsAfterBatch[b], batchSize: 50 });
        expect(restored.items).toEqual(read.items.slice(Math.min(read.items.length, (b + 1) * 7)));
      }
    });

    it("names each row by the line it starts on", () => {
      const lines = (HEADER + rows.join("")).split("\n");
      for (const item of read.items.slice(0, 500)) {
        if (item.error !== undefined) continue;
        const v = item.value as Record<string, string>;
        expect(lines[item.at! - 1].startsWith(`${v.user_id},${v.ts},`)).toBe(true);
      }
    });
  });
});
