// Bad input does not stop a job: every good event is counted, every bad line or value goes to the
// dead-letter output exactly once with the reason it was refused, and blank lines are skipped.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { pack } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobResult } from "../../engine/job.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { eventSchemaYaml, FILE_OUTPUTS, hourlyWindow, OUTPUT_FILES, windowPipelineYaml, type SchemaFields } from "../fixtures/pipelines.ts";
import { readJsonLines, removeTempDirs, runCli, tempDir } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20);
const HOUR_MS = 3_600_000;

/** A good event as the test knows it, whatever shape it is written in. */
type Good = { user: string; timeMs: number; type: string; price?: number };

type DeadLetter = { reason: string; origin?: string; partition: number; raw?: string; event?: unknown };

type Run = { result: JobResult; results: Record<string, unknown>[]; deadLetters: DeadLetter[]; late: unknown[] };

/** `fields`: more schema fields. */
function pipelineYaml(source: string, fields: SchemaFields = {}): string {
  return windowPipelineYaml({
    name: "bad-input",
    source: `{ file: ${source} }`,
    schema: eventSchemaYaml({ time: "ts", fields: { price: "{ type: number }", ...fields } }),
    watermark: "{ maxOutOfOrderness: 0s }",
    state: "{ dir: state }",
    windows: [
      hourlyWindow({
        purchases: `{ count: 'event_type == "purchase"' }`,
        revenue: `{ sum: price, where: 'event_type == "purchase"' }`,
      }),
    ],
    ...FILE_OUTPUTS,
  });
}

/** Runs the pipeline of `source` in `dir` from scratch and reads back all three outputs. */
async function runIn(dir: string, source: string, fields: SchemaFields = {}): Promise<Run> {
  const file = join(dir, "pipeline.yaml");
  writeFileSync(file, pipelineYaml(source, fields));
  const result = await runPipeline(loadPipeline(file, {}), { reset: true });
  return {
    result,
    results: readJsonLines(join(dir, OUTPUT_FILES.results)),
    deadLetters: readJsonLines<DeadLetter>(join(dir, OUTPUT_FILES.deadLetter)),
    late: readJsonLines(join(dir, OUTPUT_FILES.late)),
  };
}

/** An hourly window's bounds as results show them: ISO-8601 and epoch ms. */
function windowBounds(startMs: number): Record<string, unknown> {
  const iso = (ms: number) => new Date(ms).toISOString();
  return { start: iso(startMs), start_ms: startMs, end: iso(startMs + HOUR_MS), end_ms: startMs + HOUR_MS };
}

/** The hourly results the pipeline must give for `goods`, counted by hand. */
function recount(goods: Good[]): Record<string, unknown>[] {
  const windows = new Map<string, Record<string, unknown> & { events: number; purchases: number; revenue: number }>();
  for (const g of goods) {
    const start = Math.floor(g.timeMs / HOUR_MS) * HOUR_MS;
    const id = `${g.user}@${start}`;
    let w = windows.get(id);
    if (!w) {
      w = { window: "hourly", key: g.user, ...windowBounds(start), events: 0, purchases: 0, revenue: 0 };
      windows.set(id, w);
    }
    w.events++;
    if (g.type === "purchase") {
      w.purchases++;
      if (g.price !== undefined) w.revenue += g.price;
    }
  }
  return sortResults([...windows.values()]);
}

function sortResults(results: Record<string, unknown>[]): Record<string, unknown>[] {
  const id = (r: Record<string, unknown>) => `${r.key}@${String(r.start_ms).padStart(16, "0")}`;
  return [...results].sort((a, b) => (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0));
}

/** Good events over three hours for six users, in time order, with purchases every fourth event. */
function goodEvents(count: number): Good[] {
  return Array.from({ length: count }, (_, i) => {
    const type = ["view", "view", "cart", "purchase"][i % 4];
    return { user: `u${i % 6}`, timeMs: T0 + i * 37_000, type, price: type === "purchase" ? (i % 13) + 0.25 : undefined };
  });
}

/** A good event as a JSON line, written in one of the shapes the schema accepts. */
function jsonLine(g: Good, i: number): string {
  const event: Record<string, unknown> = { user_id: g.user, ts: g.timeMs, event_type: g.type, price: g.price, session: `s${i % 4}` };
  if (i % 5 === 1) event.ts = new Date(g.timeMs).toISOString(); // an ISO-8601 time
  if (i % 7 === 2 && g.price !== undefined) event.price = String(g.price); // a number as a string
  return JSON.stringify(event);
}

const event = (fields: Record<string, unknown>) => JSON.stringify({ user_id: "u1", ts: T0 + 60_000, event_type: "view", ...fields });
const LONG_LINE = event({ pad: "x".repeat(3000) });

type BadCase = { name: string; line: string; reason: string | RegExp };

const BAD_LINES: BadCase[] = [
  { name: "a malformed JSON line", line: '{"user_id": "u1", "ts": ', reason: /^not JSON: / },
  { name: "a JSON array", line: "[1,2,3]", reason: "expected an object event, got a list" },
  { name: "a JSON number", line: "42", reason: "expected an object event, got number" },
  { name: "a JSON string", line: '"view"', reason: "expected an object event, got string" },
  { name: "JSON null", line: "null", reason: "expected an object event, got null" },
  { name: "an event without its key", line: JSON.stringify({ ts: T0, event_type: "view" }), reason: 'missing required field "user_id"' },
  { name: "an event without its time", line: JSON.stringify({ user_id: "u2", event_type: "view" }), reason: 'missing required field "ts"' },
  { name: "an event with a null required field", line: event({ event_type: null }), reason: 'missing required field "event_type"' },
  { name: "a string where a number belongs", line: event({ price: "abc" }), reason: 'field "price": expected a number, got string "abc"' },
  { name: "a boolean where a number belongs", line: event({ price: true }), reason: 'field "price": expected a number, got boolean true' },
  { name: "an object where a string belongs", line: event({ event_type: { name: "view" } }), reason: 'field "event_type": expected a string, got object' },
  { name: "a list where a string belongs", line: event({ user_id: ["u1"] }), reason: 'field "user_id": expected a string, got a list' },
  { name: "a negative timestamp", line: event({ ts: -5 }), reason: 'field "ts": timestamp -5 is outside 1990-01-01..2100-01-01' },
  {
    name: "a timestamp in the year 3000",
    line: event({ ts: "3000-01-01T00:00:00Z" }),
    reason: 'field "ts": timestamp "3000-01-01T00:00:00Z" is outside 1990-01-01..2100-01-01',
  },
  { name: "a timestamp of 1e20", line: event({ ts: 1e20 }), reason: /^field "ts": timestamp 1(e\+?20|0{20}) is outside 1990-01-01\.\.2100-01-01$/ },
  { name: "a timestamp that is no date", line: event({ ts: "garbage" }), reason: 'field "ts": expected a timestamp (epoch ms or ISO-8601), got "garbage"' },
  { name: "a boolean timestamp", line: event({ ts: true }), reason: 'field "ts": expected a timestamp, got boolean' },
  ...["+99:99", "+24:00", "-00:75"].map((offset) => ({
    name: `a time-zone offset of ${offset}`,
    line: event({ ts: `2024-05-20T10:00:00${offset}` }),
    reason: `field "ts": expected a timestamp (epoch ms or ISO-8601), got "2024-05-20T10:00:00${offset}"`,
  })),
  { name: "a line over maxLineBytes", line: LONG_LINE, reason: `line of ${Buffer.byteLength(LONG_LINE)} bytes is over the limit` },
];

const NOT_JSON = Symbol("not JSON");

/** The dead-letter entries of the line at `lineNo`: by its origin, or (decoded but refused) by its value. */
function entriesOf(run: Run, file: string, lineNo: number, line: string): DeadLetter[] {
  let value: unknown = NOT_JSON;
  try {
    value = JSON.parse(line);
  } catch {
    // a line that is not JSON is found by its origin only
  }
  return run.deadLetters.filter((e) => e.origin === `${file}:${lineNo}` || (e.origin === undefined && isDeepStrictEqual(e.event, value)));
}

describe("a JSON-lines file with bad lines among good ones", () => {
  const goods = goodEvents(300);
  let file: string;
  let run: Run;
  const lineNoOf = new Map<BadCase, number>();

  beforeAll(async () => {
    const dir = tempDir();
    file = join(dir, "events.jsonl");
    const lines: string[] = [];
    goods.forEach((g, i) => {
      // CRLF after every third good line; a bad line after every tenth, blank lines here and there.
      lines.push(jsonLine(g, i) + (i % 3 === 0 ? "\r\n" : "\n"));
      const bad = i % 10 === 5 ? BAD_LINES[(i - 5) / 10] : undefined;
      if (bad) {
        lines.push(bad.line + "\n");
        lineNoOf.set(bad, lines.length);
      }
      if (i % 40 === 7) lines.push("\n", "   \n", "\r\n");
    });
    expect(lineNoOf.size).toBe(BAD_LINES.length);
    writeFileSync(file, lines.join(""));
    run = await runIn(dir, `{ path: events.jsonl, format: jsonl, maxLineBytes: 2048 }`);
  });

  it("completes the job", () => {
    expect(run.result.isComplete).toBe(true);
  });

  it("counts every good event in the window results, as a recount does", () => {
    const expected = recount(goods);
    expect(new Set(expected.map((r) => r.start_ms)).size).toBe(4); // the events span four hours
    expect(sortResults(run.results)).toEqual(expected);
  });

  it.each(BAD_LINES)("dead-letters $name once, saying why", (bad) => {
    const entries = entriesOf(run, file, lineNoOf.get(bad)!, bad.line);
    expect(entries).toHaveLength(1);
    if (typeof bad.reason === "string") expect(entries[0].reason).toBe(bad.reason);
    else expect(entries[0].reason).toMatch(bad.reason);
  });

  it("skips blank lines without reading or dead-lettering them", () => {
    expect(run.deadLetters).toHaveLength(BAD_LINES.length);
    expect(run.result.counters.read).toBe(goods.length + BAD_LINES.length);
  });

  it("counts each dead-lettered line in deadLettered, and nothing as late", () => {
    expect(run.result.counters.deadLettered).toBe(BAD_LINES.length);
    expect(run.result.counters.late).toBe(0);
    expect(run.late).toEqual([]);
  });

  it("keeps the line number and a short preview of an over-long line, not the line", () => {
    const [entry] = entriesOf(run, file, lineNoOf.get(BAD_LINES.at(-1)!)!, LONG_LINE);
    expect(entry.origin).toBe(`${file}:${lineNoOf.get(BAD_LINES.at(-1)!)}`);
    expect(LONG_LINE.startsWith(entry.raw!)).toBe(true);
    expect(entry.raw!.length).toBeLessThanOrEqual(200);
  });

  it("names the file and line of every dead letter, those that fail the schema included", () => {
    const expected = [...lineNoOf.values()].map((lineNo) => `${file}:${lineNo}`).sort();
    expect(run.deadLetters.map((e) => e.origin).sort()).toEqual(expected);
  });

  it("keeps the text of a malformed line and where it was", () => {
    const bad = BAD_LINES[0];
    const [entry] = entriesOf(run, file, lineNoOf.get(bad)!, bad.line);
    expect(entry).toMatchObject({ origin: `${file}:${lineNoOf.get(bad)}`, raw: bad.line, partition: 0 });
  });
});

describe("timestamps that only look like dates", () => {
  it.each(["garbage 12", "n/a 1"])("dead-letters a ts of %j rather than reading a date into it", async (ts) => {
    const dir = tempDir();
    writeFileSync(join(dir, "events.jsonl"), [event({ ts: T0 }), event({ ts })].join("\n") + "\n");
    const run = await runIn(dir, `{ path: events.jsonl, format: jsonl }`);
    expect(run.deadLetters.map((e) => e.reason)).toEqual([`field "ts": expected a timestamp (epoch ms or ISO-8601), got ${JSON.stringify(ts)}`]);
    expect(run.results).toEqual([{ window: "hourly", key: "u1", ...windowBounds(T0), events: 1, purchases: 0, revenue: 0 }]);
  });
});

describe("a 5 MB line with the default limit of 1 MiB", () => {
  const HUGE_LINE = event({ pad: "y".repeat(5 * 1024 * 1024) });
  const goods = goodEvents(6);
  let file: string;
  let run: Run;

  beforeAll(async () => {
    const dir = tempDir();
    file = join(dir, "events.jsonl");
    const lines = goods.map(jsonLine);
    lines.splice(3, 0, HUGE_LINE);
    writeFileSync(file, lines.join("\n") + "\n");
    run = await runIn(dir, `{ path: events.jsonl, format: jsonl }`);
  });

  it("dead-letters the line once, by its line number, and reads on", () => {
    expect(run.result.isComplete).toBe(true);
    expect(sortResults(run.results)).toEqual(recount(goods));
    expect(run.deadLetters).toHaveLength(1);
    expect(run.deadLetters[0].origin).toBe(`${file}:4`);
    expect(run.deadLetters[0].reason).toMatch(/^line of \d+ bytes is over the limit$/);
    expect(run.deadLetters[0].raw!.length).toBeLessThanOrEqual(200);
  });

  it("reports the line's own length, without its line break, as for a shorter over-long line", () => {
    expect(run.deadLetters[0].reason).toBe(`line of ${Buffer.byteLength(HUGE_LINE)} bytes is over the limit`);
  });
});

describe("a CSV file with bad rows", () => {
  const goods = goodEvents(60);
  const csvTime = (ms: number) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  const BAD_ROWS = [
    { row: `${csvTime(T0)},view,1.5`, reason: "bad CSV: 3 fields, the header has 4" },
    { row: `${csvTime(T0)},view,1.5,u1,extra`, reason: "bad CSV: 5 fields, the header has 4" },
    { row: `${csvTime(T0)},"view,1.5,u1`, reason: "bad CSV: unterminated quoted field" },
  ];
  let file: string;
  let run: Run;
  const lineNos: number[] = [];

  beforeAll(async () => {
    const dir = tempDir();
    file = join(dir, "events.csv");
    // The key is the last column, so a carriage return left on it would make another key.
    const lines = ["ts,event_type,price,user_id"];
    goods.forEach((g, i) => {
      const type = g.type === "cart" ? '"cart, from a list"' : g.type;
      lines.push(`${csvTime(g.timeMs)},${type},${g.price ?? ""},${g.user}`);
      if (i % 20 === 10) {
        lines.push(BAD_ROWS[(i - 10) / 20].row);
        lineNos.push(lines.length);
      }
    });
    writeFileSync(file, lines.join("\r\n") + "\r\n");
    run = await runIn(dir, `{ path: events.csv, format: csv }`);
  });

  it("counts every good row, quoted fields and CRLF line ends included", () => {
    expect(run.result.isComplete).toBe(true);
    expect(sortResults(run.results)).toEqual(recount(goods.map((g) => (g.type === "cart" ? { ...g, type: "cart, from a list" } : g))));
  });

  it("dead-letters each bad row once, by its line number, saying why", () => {
    expect(run.deadLetters.map((e) => ({ reason: e.reason, origin: e.origin, raw: e.raw }))).toEqual(
      BAD_ROWS.map((bad, i) => ({ reason: bad.reason, origin: `${file}:${lineNos[i]}`, raw: bad.row })),
    );
    expect(run.result.counters.deadLettered).toBe(BAD_ROWS.length);
  });
});

describe("a msgpack file", () => {
  const goods = goodEvents(10);
  const packed = goods.map((g) => pack({ user_id: g.user, ts: g.timeMs, event_type: g.type, ...(g.price === undefined ? {} : { price: g.price }) }));

  describe("with a truncated tail", () => {
    let file: string;
    let run: Run;
    const goodBytes = packed.reduce((n, b) => n + b.length, 0);

    beforeAll(async () => {
      const dir = tempDir();
      file = join(dir, "events.msgpack");
      const tail = pack({ user_id: "u9", ts: T0, event_type: "purchase", price: 99 }).subarray(0, 12);
      writeFileSync(file, Buffer.concat([...packed, tail]));
      run = await runIn(dir, `{ path: events.msgpack, format: msgpack }`);
    });

    it("processes every whole value before the tail", () => {
      expect(run.result.isComplete).toBe(true);
      expect(sortResults(run.results)).toEqual(recount(goods));
    });

    it("dead-letters the tail once, at its byte offset", () => {
      expect(run.deadLetters).toHaveLength(1);
      expect(run.deadLetters[0].reason).toMatch(new RegExp(`^undecodable msgpack at bytes ${goodBytes}\\.\\.${goodBytes + 12} \\(12 bytes\\): `));
      expect(run.deadLetters[0].origin).toBe(`${file}@${goodBytes}`);
      expect(run.result.counters.deadLettered).toBe(1);
    });
  });

  describe("with a value that is no event, a corrupt byte and a number in the middle", () => {
    let run: Run;
    const listAt = packed.slice(0, 5).reduce((n, b) => n + b.length, 0);
    const corruptAt = listAt + pack([1, 2]).length;

    beforeAll(async () => {
      const dir = tempDir();
      // 0xC1 is the one byte msgpack never uses; a lone number in a file of events is a damaged byte.
      writeFileSync(join(dir, "events.msgpack"), Buffer.concat([...packed.slice(0, 5), pack([1, 2]), Buffer.from([0xc1]), pack(42), ...packed.slice(5)]));
      run = await runIn(dir, `{ path: events.msgpack, format: msgpack }`);
    });

    it("reads every good value around them", () => {
      expect(sortResults(run.results)).toEqual(recount(goods));
      expect(run.result.counters.deadLettered).toBe(2);
    });

    it("dead-letters the value that is no object as such, by its byte offset", () => {
      const [entry] = run.deadLetters.filter((e) => isDeepStrictEqual(e.event, [1, 2]));
      expect(entry.reason).toBe("expected an object event, got a list");
      expect(entry.origin).toMatch(new RegExp(`events\\.msgpack@${listAt}$`));
    });

    it("dead-letters the 0xC1 byte and the number after it as one run of undecodable msgpack, with its bytes", () => {
      const reasons = run.deadLetters.map((e) => e.reason);
      expect(reasons).toContainEqual(`undecodable msgpack at bytes ${corruptAt}..${corruptAt + 2} (2 bytes): 0xc1, a byte msgpack never uses`);
    });
  });

  describe("with a value nested 100,000 deep", () => {
    let run: Run;

    beforeAll(async () => {
      const dir = tempDir();
      const deep = Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0x01])]);
      writeFileSync(join(dir, "events.msgpack"), Buffer.concat([...packed.slice(0, 5), deep, ...packed.slice(5)]));
      run = await runIn(dir, `{ path: events.msgpack, format: msgpack }`);
    });

    it("dead-letters it with a short preview and processes every event after it", () => {
      expect(run.result.isComplete).toBe(true);
      expect(sortResults(run.results)).toEqual(recount(goods));
      expect(run.deadLetters.map((e) => [e.reason, e.raw])).toEqual([["nested deeper than 64 levels", "91".repeat(64)]]);
    });
  });
});

describe("values too deep or too wide in JSON lines", () => {
  const goods = goodEvents(40);
  const T = goods[10].timeMs;
  /** JSON text of a mapping nested `levels` deep (JSON.stringify itself overflows the stack on it). */
  const nested = (levels: number) => `${'{"next":'.repeat(levels)}1${"}".repeat(levels)}`;
  const BAD: Array<{ name: string; line: string; reason: string }> = [
    { name: "a line nested 100,000 deep", line: `${"[".repeat(100_000)}${"]".repeat(100_000)}`, reason: "nested deeper than 64 levels" },
    {
      name: "an event whose declared object field is nested 5,000 deep",
      line: `{"user_id":"u1","ts":${T},"event_type":"view","props":${nested(5000)}}`,
      reason: "nested deeper than 64 levels",
    },
    {
      name: "an event whose declared list field holds 20,000 entries",
      line: JSON.stringify({ user_id: "u1", ts: T, event_type: "view", tags: Array.from({ length: 20_000 }, (_, i) => i) }),
      reason: "a list of 20000 entries, over the limit of 10000",
    },
  ];
  let run: Run;

  beforeAll(async () => {
    const dir = tempDir();
    const lines = goods.map(jsonLine);
    lines.splice(20, 0, ...BAD.map((b) => b.line));
    writeFileSync(join(dir, "events.jsonl"), lines.join("\n") + "\n");
    run = await runIn(dir, `{ path: events.jsonl, format: jsonl }`, { props: "{ type: object }", tags: "{ type: list }" });
  });

  it("completes the job and counts every good event after them", () => {
    expect(run.result.isComplete).toBe(true);
    expect(sortResults(run.results)).toEqual(recount(goods));
  });

  it.each(BAD.map((b, i) => ({ ...b, lineNo: 21 + i })))("dead-letters $name by its line, with a preview of at most 200 characters", ({ line, reason, lineNo }) => {
    const entries = run.deadLetters.filter((e) => e.origin?.endsWith(`events.jsonl:${lineNo}`));
    expect(entries.map((e) => [e.reason, e.raw])).toEqual([[reason, line.slice(0, 200)]]);
  });
});

describe("bytes that are not text in JSON lines", () => {
  it("reads a file that starts with a byte-order mark from its first line", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "events.jsonl"), `\uFEFF${goodEvents(3).map(jsonLine).join("\n")}\n`);
    const run = await runIn(dir, `{ path: events.jsonl, format: jsonl }`);
    expect(run.deadLetters).toEqual([]);
    expect(sortResults(run.results)).toEqual(recount(goodEvents(3)));
  });

  it("dead-letters lines whose bytes are not UTF-8 rather than merging two users into one U+FFFD key", async () => {
    const dir = tempDir();
    const user = (bytes: number[]) => Buffer.concat([Buffer.from('{"user_id":"al'), Buffer.from(bytes), Buffer.from(`ce","ts":${T0},"event_type":"view"}\n`)]);
    writeFileSync(join(dir, "events.jsonl"), Buffer.concat([user([0xe9]), user([0xff]), user([0xc3, 0xa9])]));
    const run = await runIn(dir, `{ path: events.jsonl, format: jsonl }`);
    expect(run.results).toEqual([{ window: "hourly", key: "aléce", ...windowBounds(T0), events: 1, purchases: 0, revenue: 0 }]);
    expect(run.deadLetters.map((e) => [e.origin?.replace(/.*\//, ""), e.reason])).toEqual([
      ["events.jsonl:1", "not UTF-8: an invalid byte sequence at byte 14 of the line"],
      ["events.jsonl:2", "not UTF-8: an invalid byte sequence at byte 14 of the line"],
    ]);
  });
});

describe("the CLI over bad input", () => {
  it("finishes with exit code 0 and counts the dead-lettered lines in its summary", () => {
    const dir = tempDir();
    const lines = goodEvents(3).map(jsonLine);
    lines.splice(1, 0, "{not json", "[]");
    writeFileSync(join(dir, "events.jsonl"), lines.join("\n") + "\n");
    writeFileSync(join(dir, "pipeline.yaml"), pipelineYaml(`{ path: events.jsonl, format: jsonl }`));
    const cli = runCli(["run", join(dir, "pipeline.yaml"), "--reset", "--log", "text"]);
    expect(cli.stderr).toMatch(/\ndone: 5 events in [\d.]+ s \(\d+ events\/s\), 3 outputs, 0 late, 2 dead-lettered\n$/);
    expect(cli.status).toBe(0);
    expect(readJsonLines<DeadLetter>(join(dir, OUTPUT_FILES.deadLetter)).map((e) => e.reason)).toEqual([
      expect.stringMatching(/^not JSON: /),
      "expected an object event, got a list",
    ]);
  });
});
