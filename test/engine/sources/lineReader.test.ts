// The line reader's positions, which a restored file source resumes from: every line's number and
// the byte offset after it, across the 1 MiB boundary between two reads, with CRLF, blank lines, a
// last line without a newline, a byte-order mark and lines over the limit. (fileSource.test.ts
// covers what the source makes of lines: UTF-8 checks, BOM only at the start, dead letters.)
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LineReader, type Line, type LinePosition } from "../../../engine/sources/lineReader.ts";
import { mulberry32 } from "../../harness.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

/** The reader's read size: a line that starts before it and ends after it is split over two reads. */
const READ_BYTES = 1 << 20;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

function writeTemp(content: string | Buffer): string {
  const path = join(tempDir(), "events.jsonl");
  writeFileSync(path, content);
  return path;
}

type Read = { line: Line; next: LinePosition };

/** Every line of `path` from `from`, each with the reader's position after it. */
function readAll(path: string, { from = { offsetBytes: 0, lineNo: 0 }, maxLineBytes = 4 << 20 }: { from?: LinePosition; maxLineBytes?: number } = {}): Read[] {
  const reader = new LineReader(path, from, maxLineBytes);
  const reads: Read[] = [];
  try {
    for (let line = reader.readLine(); line !== undefined; line = reader.readLine()) reads.push({ line, next: reader.next });
    expect(reader.readLine()).toBeUndefined(); // and stays at the end
    return reads;
  } finally {
    reader.close();
  }
}

/** What `lines` (each with its line break) read as: its text (without CR) and the offset after it. */
function expectedReads(lines: string[], firstOffsetBytes = 0): Read[] {
  let offsetBytes = firstOffsetBytes;
  return lines.map((l, i) => {
    offsetBytes += Buffer.byteLength(l);
    return { line: { text: l.replace(/\r?\n$/, ""), lineNo: i + 1 }, next: { offsetBytes, lineNo: i + 1 } };
  });
}

/** The indexes of the reads whose line (its line break included) starts in one read and ends in the next. */
function straddlingLines(reads: Read[]): number[] {
  const startOf = (i: number) => (i === 0 ? 0 : reads[i - 1].next.offsetBytes);
  return reads.flatMap((r, i) => (Math.floor(startOf(i) / READ_BYTES) < Math.floor((r.next.offsetBytes - 1) / READ_BYTES) ? [i] : []));
}

describe("LineReader positions", () => {
  it("numbers every line and gives the offset after it: CRLF, blank lines and a last line without a newline", () => {
    const lines = ["a\r\n", "\n", "bb\n", "\r\n", "  \n", "ccc"];
    expect(readAll(writeTemp(lines.join("")))).toEqual(expectedReads(lines));
  });

  it("reads lines split over two reads whole, at their offsets", () => {
    const rnd = mulberry32(41);
    const lines: string[] = [];
    for (let bytes = 0; bytes < 2.5 * READ_BYTES; bytes += Buffer.byteLength(lines.at(-1)!)) {
      lines.push(`${JSON.stringify({ n: lines.length, pad: "p".repeat(Math.floor(rnd() * 5000)) })}${rnd() < 0.3 ? "\r\n" : "\n"}`);
    }
    const reads = readAll(writeTemp(lines.join("")));
    expect(reads).toEqual(expectedReads(lines));
    expect(straddlingLines(reads)).toHaveLength(2); // at 1 MiB and 2 MiB
  });

  it.each([
    ["é", 1],
    ["€", 1],
    ["€", 2],
    ["😀", 1],
    ["😀", 2],
    ["😀", 3],
  ])("decodes %s whole when its first %i byte(s) end one read and the rest start the next", (char, bytesInFirstRead) => {
    const first = "{}\n";
    const split = `${"x".repeat(READ_BYTES - first.length - bytesInFirstRead)}${char}y\r\n`;
    const lines = [first, split, `${char}\n`];
    const content = Buffer.from(lines.join(""));
    expect(content.subarray(READ_BYTES - bytesInFirstRead, READ_BYTES - bytesInFirstRead + Buffer.byteLength(char)).toString()).toBe(char);
    expect(readAll(writeTemp(content))).toEqual(expectedReads(lines));
  });

  it("resumes from any position it gave and reads exactly the rest, with the same numbers", () => {
    const rnd = mulberry32(7);
    const kinds = [
      () => `${JSON.stringify({ user_id: `u${Math.floor(rnd() * 50)}`, page: "é😀".repeat(Math.floor(rnd() * 1500)) })}\n`,
      () => `${JSON.stringify({ n: rnd() })}\r\n`,
      () => "\n",
      () => `${"l".repeat(5000)}\n`, // over the limit below
    ];
    const lines = Array.from({ length: 1200 }, () => kinds[Math.floor(rnd() * kinds.length)]());
    const content = Buffer.concat([BOM, Buffer.from(lines.join("") + "tail")]);
    expect(content.length).toBeGreaterThan(2 * READ_BYTES);
    const path = writeTemp(content);
    const whole = readAll(path, { maxLineBytes: 4096 });
    expect(whole).toHaveLength(1201);
    expect(whole.filter((r) => r.line.problem !== undefined).length).toBeGreaterThan(200);
    // From every 37th line, and from either side of the lines split over two reads.
    const straddling = straddlingLines(whole);
    expect(straddling).toHaveLength(2);
    const froms = [...whole.keys()].filter((k) => k % 37 === 0 || straddling.some((s) => Math.abs(s - k) <= 1));
    for (const k of froms) expect(readAll(path, { from: whole[k].next, maxLineBytes: 4096 })).toEqual(whole.slice(k + 1));
  });
});

describe("LineReader and a byte-order mark", () => {
  it("leaves a BOM at byte 0 out of the first line's text, and counts its bytes in the offset", () => {
    const path = writeTemp(Buffer.concat([BOM, Buffer.from("a\nb\n")]));
    expect(readAll(path)).toEqual(expectedReads(["a\n", "b\n"], BOM.length));
  });

  it("reads a first line that is only a BOM as blank", () => {
    const path = writeTemp(Buffer.concat([BOM, Buffer.from("\r\nb")]));
    expect(readAll(path)).toEqual(expectedReads(["\r\n", "b"], BOM.length));
  });
});

describe("LineReader and lines over the limit", () => {
  const MAX = 1024;

  it("takes a line of exactly maxLineBytes and refuses one a byte longer, with its length and a preview", () => {
    const atLimit = "a".repeat(MAX);
    const over = `b${"c".repeat(MAX)}`;
    const reads = readAll(writeTemp(`${atLimit}\n${over}\nnext\n`), { maxLineBytes: MAX });
    expect(reads.map((r) => r.line)).toEqual([
      { text: atLimit, lineNo: 1 },
      { problem: `line of ${MAX + 1} bytes is over the limit`, preview: over.slice(0, 200), lineNo: 2 },
      { text: "next", lineNo: 3 },
    ]);
    expect(reads[1].next).toEqual({ offsetBytes: 2 * MAX + 3, lineNo: 2 });
  });

  it("skips a line of 8 MiB without holding it, reports its length and start, and reads the next line", () => {
    const long = `${"0123456789".repeat(30)}${"z".repeat((8 << 20) - 300)}`;
    const path = writeTemp(`first\n${long}\nnext\n`);
    const reader = new LineReader(path, { offsetBytes: 0, lineNo: 0 }, MAX);
    try {
      expect(reader.readLine()).toEqual({ text: "first", lineNo: 1 });
      expect(reader.readLine()).toEqual({ problem: `line of ${8 << 20} bytes is over the limit`, preview: long.slice(0, 200), lineNo: 2 });
      expect(reader.next).toEqual({ offsetBytes: 6 + (8 << 20) + 1, lineNo: 2 });
      // What it holds is a read or two, not the line.
      expect((reader as unknown as { buffer: Buffer }).buffer.length).toBeLessThan(2 * READ_BYTES);
      expect(reader.readLine()).toEqual({ text: "next", lineNo: 3 });
      expect(reader.readLine()).toBeUndefined();
    } finally {
      reader.close();
    }
  });

  it("refuses an over-long last line without a newline, and ends", () => {
    const long = "y".repeat(3 << 20);
    const reads = readAll(writeTemp(`first\n${long}`), { maxLineBytes: MAX });
    expect(reads).toEqual([
      { line: { text: "first", lineNo: 1 }, next: { offsetBytes: 6, lineNo: 1 } },
      { line: { problem: `line of ${3 << 20} bytes is over the limit`, preview: "y".repeat(200), lineNo: 2 }, next: { offsetBytes: 6 + (3 << 20), lineNo: 2 } },
    ]);
  });
});
