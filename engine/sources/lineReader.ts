// Reads a file line by line synchronously, knowing the byte offset and number of every line, so
// a source can resume exactly after the last line a checkpoint covered. Lines longer than a limit
// are skipped without being held in memory and reported as such.
import { closeSync, openSync, readSync } from "node:fs";

const CHUNK_BYTES = 1 << 20;
const NEWLINE = 10;
const RAW_PREVIEW_CHARS = 200;

export type Line =
  | { readonly text: string; readonly lineNo: number; readonly tooLong?: undefined }
  | { readonly tooLong: true; readonly lengthBytes: number; readonly preview: string; readonly lineNo: number };

export type LinePosition = { offsetBytes: number; lineNo: number };

export class LineReader {
  private fd: number;
  private buffer: Buffer = Buffer.alloc(0);
  private start = 0;
  private readOffsetBytes: number;
  private isEof = false;
  private position: LinePosition;

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
    const lineStart = this.start;
    const lineNo = ++this.position.lineNo;
    this.position.offsetBytes += nextAt - lineStart;
    this.start = nextAt;
    if (endAt - lineStart > this.maxLineBytes) {
      const preview = this.buffer.toString("utf8", lineStart, lineStart + RAW_PREVIEW_CHARS);
      return { tooLong: true, lengthBytes: endAt - lineStart, preview, lineNo };
    }
    const end = endAt > lineStart && this.buffer[endAt - 1] === 13 ? endAt - 1 : endAt; // tolerate CRLF
    return { text: this.buffer.toString("utf8", lineStart, end), lineNo };
  }

  /** Skips to the end of an over-long line, keeping only a preview of its start. */
  private skipLongLine(): Line {
    const preview = this.buffer.toString("utf8", this.start, this.start + RAW_PREVIEW_CHARS);
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
    return { tooLong: true, lengthBytes, preview, lineNo: this.position.lineNo };
  }

  private fill(): void {
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    const bytesRead = readSync(this.fd, chunk, 0, CHUNK_BYTES, this.readOffsetBytes);
    if (bytesRead === 0) {
      this.isEof = true;
      return;
    }
    this.readOffsetBytes += bytesRead;
    this.buffer = Buffer.concat([this.buffer.subarray(this.start), chunk.subarray(0, bytesRead)]);
    this.start = 0;
  }
}
