// Reads a file line by line synchronously, knowing the byte offset and number of every line, so
// a source can resume exactly after the last line a checkpoint covered. Lines longer than a limit
// are skipped without being held in memory, and lines that are not UTF-8 are not decoded: both
// are reported with the reason.
import { closeSync, openSync } from "node:fs";
import { RAW_PREVIEW_CHARS, utf8Problem } from "./decoding.ts";
import { readNextChunk } from "./fileChunks.ts";

const NEWLINE = 10;
const CARRIAGE_RETURN = 13;
/** The UTF-8 byte-order mark some editors write at the start of a file: encoding, not text. */
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** A line's text, or why it has none (`preview`: its start, at most RAW_PREVIEW_CHARS characters). */
export type Line =
  | { readonly text: string; readonly lineNo: number; readonly problem?: undefined }
  | { readonly problem: string; readonly preview: string; readonly lineNo: number };

export type LinePosition = { offsetBytes: number; lineNo: number };

export class LineReader {
  private fd: number;
  private buffer: Buffer = Buffer.alloc(0);
  private start = 0;
  private readOffsetBytes: number;
  private isEof = false;
  private position: LinePosition;
  /**
   * The buffer is known to be UTF-8 before this index. Checking a whole chunk at once, up to its
   * last line break (no UTF-8 sequence holds byte 10), costs ~4 ns a line; checking each line
   * ~90 ns. Only the lines of a chunk that fails the check are checked one by one.
   */
  private utf8CheckedBefore = 0;

  constructor(
    readonly path: string,
    from: LinePosition,
    private readonly maxLineBytes: number,
  ) {
    this.fd = openSync(path, "r");
    this.readOffsetBytes = from.offsetBytes;
    this.position = { ...from };
  }

  /** Offset and number of the next line to read. */
  get next(): LinePosition {
    return { ...this.position };
  }

  /** The next line, or undefined at the end of the file. */
  readLine(): Line | undefined {
    for (;;) {
      const newlineAt = this.buffer.indexOf(NEWLINE, this.start);
      if (newlineAt >= 0) return this.take(newlineAt, newlineAt + 1);
      if (this.buffer.length - this.start > this.maxLineBytes) return this.skipLongLine();
      if (this.isEof) return this.buffer.length > this.start ? this.take(this.buffer.length, this.buffer.length) : undefined;
      this.fill();
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  private take(endAt: number, nextAt: number): Line {
    const isFileStart = this.position.offsetBytes === 0;
    let lineStart = this.start;
    const lineNo = ++this.position.lineNo;
    this.position.offsetBytes += nextAt - lineStart;
    this.start = nextAt;
    if (endAt - lineStart > this.maxLineBytes) return tooLong(endAt - lineStart, this.preview(lineStart, endAt), lineNo);
    if (isFileStart && this.buffer.subarray(lineStart, lineStart + BOM.length).equals(BOM)) lineStart += BOM.length;
    const end = endAt > lineStart && this.buffer[endAt - 1] === CARRIAGE_RETURN ? endAt - 1 : endAt; // tolerate CRLF
    const problem = endAt > this.utf8CheckedBefore ? utf8Problem(this.buffer, lineStart, end, "line") : undefined;
    if (problem !== undefined) return { problem, preview: this.preview(lineStart, end), lineNo };
    return { text: this.buffer.toString("utf8", lineStart, end), lineNo };
  }

  /** The start of a line, decoded leniently: what a dead letter shows of it (at most RAW_PREVIEW_CHARS). */
  private preview(lineStart: number, endAt: number): string {
    return this.buffer.toString("utf8", lineStart, Math.min(endAt, lineStart + RAW_PREVIEW_CHARS));
  }

  /** Skips to the end of an over-long line, keeping only a preview of its start. */
  private skipLongLine(): Line {
    const preview = this.preview(this.start, this.buffer.length);
    let lengthBytes = 0;
    for (;;) {
      const newlineAt = this.buffer.indexOf(NEWLINE, this.start);
      const endAt = newlineAt >= 0 ? newlineAt + 1 : this.buffer.length;
      // The line's own length, as `take` reports it: without its line break.
      lengthBytes += (newlineAt >= 0 ? newlineAt : endAt) - this.start;
      this.position.offsetBytes += endAt - this.start;
      this.start = endAt;
      if (newlineAt >= 0 || this.isEof) break;
      this.fill();
    }
    this.position.lineNo++;
    return tooLong(lengthBytes, preview, this.position.lineNo);
  }

  private fill(): void {
    const next = readNextChunk(this.fd, this.readOffsetBytes, this.buffer.subarray(this.start));
    if (next === undefined) {
      this.isEof = true;
      return;
    }
    this.readOffsetBytes += next.bytesRead;
    this.buffer = next.buffer;
    this.start = 0;
    this.utf8CheckedBefore = next.utf8LinesEnd;
  }
}

/** The line's own length is what the reason gives: without its line break. */
function tooLong(lengthBytes: number, preview: string, lineNo: number): Line {
  return { problem: `line of ${lengthBytes} bytes is over the limit`, preview, lineNo };
}
