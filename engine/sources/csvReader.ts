// Reads a CSV file record by record with csv-parse (RFC 4180: quoted fields may hold delimiters, quotes
// and line breaks), knowing the byte offset and line number after every record, so a source resumes
// exactly after the last record a checkpoint covered, a row with a line break inside quotes included.
// Like the line reader, it skips a byte-order mark at the start, refuses records that are not UTF-8
// and does not hold a record longer than its limit.
import { closeSync, openSync } from "node:fs";
import { Parser } from "csv-parse";
import { RAW_PREVIEW_CHARS, utf8Problem } from "./decoding.ts";
import { readNextChunk } from "./fileChunks.ts";
import type { LinePosition } from "./lineReader.ts";

/** Bytes handed to the parser at a time: how far a record may run past its limit before it is stopped. */
const FEED_BYTES = 1 << 16;
const NEWLINE = 10;
const CARRIAGE_RETURN = 13;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** A record's fields, or why it has none. `lineNo`: the line it starts on. */
export type CsvRecord =
  | { readonly fields: string[]; readonly lineNo: number; readonly problem?: undefined }
  | { readonly problem: string; readonly raw: string; readonly lineNo: number };

/**
 * csv-parse's core, as its stream and its sync entry points drive it: `parse` takes the next bytes
 * (undefined with `isEnd` at the end) and calls `push` for each whole record, after which `info.bytes`
 * is where that record ends (its line break included), counted from the parser's first byte.
 */
type CsvParserCore = {
  parse(bytes: Buffer | undefined, isEnd: boolean, push: (record: string[]) => void, close: () => void): Error | undefined;
  info: { bytes: number };
};

/**
 * A parse that could not finish a record: csv-parse's error code, or TOO_LONG for a record past the
 * limit; `atLineNo`, the line it failed on (csv-parse's count, which also takes a lone CR for a line break).
 */
type Failure = { code: string; atLineNo: number };

/** Why a one-line row cannot be read, by csv-parse's error code. */
const ONE_LINE_REASONS: Record<string, string> = {
  INVALID_OPENING_QUOTE: "a quote inside an unquoted field",
  CSV_INVALID_CLOSING_QUOTE: "a closing quote followed by more than a delimiter or the line's end",
  CSV_QUOTE_NOT_CLOSED: "unterminated quoted field",
};

export class CsvReader {
  private fd: number;
  /** The file's bytes [bufferStart, readOffsetBytes). */
  private buffer: Buffer = Buffer.alloc(0);
  private bufferStart: number;
  private readOffsetBytes: number;
  private isEof = false;
  /** Bytes before this offset are known to be UTF-8 (checked a chunk at a time, as the line reader does). */
  private utf8CheckedBefore: number;
  private parser!: CsvParserCore;
  /** The file offset of the parser's first byte; its `info.bytes` count from here. */
  private parserStart = 0;
  /** The number of lines before the parser's first byte. */
  private parserStartLineNo = 0;
  private fedBefore = 0;
  private isEndFed = false;
  /** Records parsed and not yet returned, with the file offset where each ends. */
  private parsed: Array<{ fields: string[]; endBytes: number }> = [];
  private parsedHead = 0;
  private failure: Failure | undefined;
  private position: LinePosition;

  constructor(
    readonly path: string,
    from: LinePosition,
    private readonly options: { delimiter: string; maxRecordBytes: number },
  ) {
    this.fd = openSync(path, "r");
    this.position = { ...from };
    this.bufferStart = this.readOffsetBytes = this.utf8CheckedBefore = from.offsetBytes;
    this.startParser();
  }

  /** Offset and number of the next line to read: where the next record starts. */
  get next(): LinePosition {
    return { ...this.position };
  }

  /**
   * The next record, or undefined at the end of the file. With `fieldCount`, a row of another number
   * of fields is refused, and blank lines are skipped. A record that cannot be parsed or has the wrong
   * number of fields and spans lines is taken for a quote opened on its first line and never closed:
   * that line is refused and reading starts again on the next (a row is never lost to a stray quote
   * above it).
   */
  readRecord(fieldCount?: number): CsvRecord | undefined {
    for (;;) {
      if (this.parsedHead < this.parsed.length) {
        const record = this.take(this.parsed[this.parsedHead++], fieldCount);
        if (record !== undefined) return record;
        continue;
      }
      if (this.failure !== undefined) return this.refuseFirstLine(this.failure);
      if (this.isEndFed) return undefined;
      this.feed();
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  private startParser(): void {
    // Records are arrays: the source maps them to its columns and counts their fields itself. Quotes
    // are strict (RFC 4180): a lenient parser would take a stray quote and the rows below it for one
    // long field, where a strict one fails and the reader refuses that line alone.
    const options = { delimiter: this.options.delimiter, record_delimiter: ["\r\n", "\n"], relax_column_count: true };
    this.parser = (new Parser(options) as unknown as { api: CsvParserCore }).api;
    if (typeof this.parser?.parse !== "function") throw new Error("csv-parse: its parser core (Parser#api) is not where flusso expects it");
    this.parserStart = this.fedBefore = this.position.offsetBytes;
    this.parserStartLineNo = this.position.lineNo;
    this.isEndFed = false;
    this.parsed = [];
    this.parsedHead = 0;
    this.failure = undefined;
  }

  /** Hands the parser its next bytes (reading more of the file first when it has seen all there is). */
  private feed(): void {
    if (this.parserStart === 0 && this.fedBefore === 0) {
      // The file's first bytes: a UTF-8 byte-order mark is encoding, not text. (csv-parse's own `bom`
      // would also take a UTF-16 mark and change the encoding; a UTF-8 file has none.)
      if (this.buffer.length < BOM.length && !this.isEof) return this.fill();
      if (this.buffer.subarray(0, BOM.length).equals(BOM)) this.parserStart = this.fedBefore = BOM.length;
    }
    if (this.parsedHead === this.parsed.length) {
      this.parsed.length = 0;
      this.parsedHead = 0;
    }
    const push = (fields: string[]) => this.parsed.push({ fields, endBytes: this.parserStart + this.parser.info.bytes });
    const bufferEnd = this.bufferStart + this.buffer.length;
    let error: Error | undefined;
    if (this.fedBefore < bufferEnd) {
      const until = Math.min(this.fedBefore + FEED_BYTES, bufferEnd);
      error = this.parser.parse(this.buffer.subarray(this.fedBefore - this.bufferStart, until - this.bufferStart), false, push, noop);
      this.fedBefore = until;
    } else if (!this.isEof) {
      this.fill();
      return;
    } else {
      error = this.parser.parse(undefined, true, push, noop);
      this.isEndFed = true;
    }
    if (error !== undefined) {
      // `lines`: csv-parse's count of the line it failed on, from the parser's first.
      const { code = "CSV_ERROR", lines = 0 } = error as Error & { code?: string; lines?: number };
      this.failure = { code, atLineNo: this.parserStartLineNo + lines };
    } else if (this.parsedHead === this.parsed.length && this.fedBefore - this.position.offsetBytes > this.options.maxRecordBytes + FEED_BYTES) {
      // A record still open past the limit is stopped here, before it holds more.
      this.failure = { code: "TOO_LONG", atLineNo: Infinity };
    }
  }

  /** The record `parsed` ends, as it is returned: undefined for a blank line skipped. */
  private take(parsed: { fields: string[]; endBytes: number }, fieldCount: number | undefined): CsvRecord | undefined {
    const start = this.position.offsetBytes;
    const end = parsed.endBytes;
    const bytes = this.buffer.subarray(start - this.bufferStart, end - this.bufferStart);
    const contentStart = start === 0 && bytes.subarray(0, BOM.length).equals(BOM) ? BOM.length : 0;
    let contentEnd = bytes.length;
    if (contentEnd > 0 && bytes[contentEnd - 1] === NEWLINE) contentEnd -= contentEnd > 1 && bytes[contentEnd - 2] === CARRIAGE_RETURN ? 2 : 1;
    const content = bytes.subarray(contentStart, contentEnd);
    const isMultiLine = content.includes(NEWLINE);
    const isWrongLength = fieldCount !== undefined && parsed.fields.length !== fieldCount;
    if (content.length > this.options.maxRecordBytes || (isMultiLine && isWrongLength)) {
      return this.refuseFirstLine({ code: content.length > this.options.maxRecordBytes ? "TOO_LONG" : "CSV_QUOTE_NOT_CLOSED", atLineNo: Infinity });
    }
    const lineNo = this.position.lineNo + 1;
    this.position = { offsetBytes: end, lineNo: this.position.lineNo + countNewlines(bytes) + (bytes[bytes.length - 1] === NEWLINE ? 0 : 1) };
    if (end > this.utf8CheckedBefore) {
      const problem = utf8Problem(content, 0, content.length, isMultiLine ? "row" : "line");
      if (problem !== undefined) return { problem, raw: preview(content), lineNo };
    }
    if (fieldCount === undefined) return { fields: parsed.fields, lineNo };
    if (!isMultiLine && parsed.fields.length === 1 && parsed.fields[0].trim() === "") return undefined;
    if (isWrongLength) return { problem: `bad CSV: ${parsed.fields.length} fields, the header has ${fieldCount}`, raw: content.toString("utf8"), lineNo };
    return { fields: parsed.fields, lineNo };
  }

  /**
   * Refuses the first line of the record that starts at the current position (why: `failure`), and
   * starts a new parser on the next line. A first line over the limit is skipped without being held.
   */
  private refuseFirstLine(failure: Failure): CsvRecord {
    const start = this.position.offsetBytes;
    const lineNo = this.position.lineNo + 1;
    let previewText: string | undefined;
    let newlineAt = this.buffer.indexOf(NEWLINE, start - this.bufferStart);
    while (newlineAt < 0 && !this.isEof) {
      const bufferEnd = this.bufferStart + this.buffer.length;
      if (bufferEnd - start > this.options.maxRecordBytes) {
        // Over the limit without a line break: keep a preview, and let the rest go by as it is read.
        previewText ??= preview(this.buffer.subarray(start - this.bufferStart));
        this.fill(bufferEnd);
      } else {
        this.fill(start);
      }
      newlineAt = this.buffer.indexOf(NEWLINE, bufferEnd - this.bufferStart);
    }
    const lineEnd = newlineAt < 0 ? this.bufferStart + this.buffer.length : this.bufferStart + newlineAt;
    const hasCarriageReturn = newlineAt > 0 && this.buffer[newlineAt - 1] === CARRIAGE_RETURN;
    const ownLength = lineEnd - start - (hasCarriageReturn ? 1 : 0);
    const held = this.buffer.subarray(Math.max(start - this.bufferStart, 0), lineEnd - this.bufferStart - (hasCarriageReturn ? 1 : 0));
    this.position = { offsetBytes: newlineAt < 0 ? lineEnd : lineEnd + 1, lineNo };
    this.startParser();
    if (ownLength > this.options.maxRecordBytes) {
      return { problem: `line of ${ownLength} bytes is over the limit`, raw: previewText ?? preview(held), lineNo };
    }
    // A failure past the first line comes of a quote the first line opened (the lines below were read as its field).
    const reason = failure.atLineNo > lineNo ? "unterminated quoted field" : (ONE_LINE_REASONS[failure.code] ?? failure.code.toLowerCase().replaceAll("_", " "));
    const text = held.subarray(start === 0 && held.subarray(0, BOM.length).equals(BOM) ? BOM.length : 0);
    return { problem: `bad CSV: ${reason}`, raw: text.toString("utf8"), lineNo };
  }

  /** Reads the next chunk of the file, keeping the bytes from `keepFrom` (default: the current record) on. */
  private fill(keepFrom = this.position.offsetBytes): void {
    const next = readNextChunk(this.fd, this.readOffsetBytes, this.buffer.subarray(keepFrom - this.bufferStart));
    if (next === undefined) {
      this.isEof = true;
      return;
    }
    this.readOffsetBytes += next.bytesRead;
    this.buffer = next.buffer;
    this.bufferStart = keepFrom;
    this.utf8CheckedBefore = this.bufferStart + next.utf8LinesEnd;
  }
}

function noop(): void {}

function countNewlines(bytes: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf(NEWLINE); at >= 0; at = bytes.indexOf(NEWLINE, at + 1)) count++;
  return count;
}

function preview(bytes: Buffer): string {
  return bytes.toString("utf8", 0, Math.min(bytes.length, RAW_PREVIEW_CHARS * 4)).slice(0, RAW_PREVIEW_CHARS);
}
