// Reads a file of concatenated msgpack values, one item per value. Each value is walked before it
// is decoded (msgpack.ts): one that must not be decoded, or is longer than the limit (then never
// held whole), is dead-lettered and reading goes on after it. Bytes that hold no value are
// dead-lettered as one run, up to the next place a value is found. Every decision rests on the
// file's bytes only, never on where a read happened to end, so a job restored at a position
// reads exactly what an uninterrupted one read after it. Runs of good values are decoded by one
// msgpackr call, which is how it is fastest.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { SourcePositionInvalid } from "../errors.ts";
import { hexPreview } from "./decoding.ts";
import type { LinePosition } from "./lineReader.ts";
import { bytesText, isFilledMappingToken, MsgpackScanner, unpackr } from "./msgpack.ts";
import type { SourceItem } from "./source.ts";

const CHUNK_BYTES = 1 << 20;

export class MsgpackReader {
  private readonly fd: number;
  private readonly sizeBytes: number;
  private readonly scanner: MsgpackScanner;
  /** Bytes of the file from offset `bytesAt`. */
  private bytes = Buffer.alloc(0);
  private bytesAt = 0;
  private offsetBytes: number;
  private items = 0;
  /** Where each value of the run being decoded ends. */
  private readonly runEnds: number[] = [];
  /** Values before this offset are decoded one at a time: a run over them failed to decode. */
  private singlyBefore = 0;

  constructor(
    readonly path: string,
    private readonly partition: number,
    from: LinePosition,
    private readonly maxValueBytes: number,
  ) {
    this.fd = openSync(path, "r");
    this.sizeBytes = fstatSync(this.fd).size;
    this.scanner = new MsgpackScanner(this.sizeBytes);
    this.offsetBytes = from.offsetBytes;
    this.items = from.lineNo;
  }

  /** Up to `maxItems` items into `into`; false once the file is read to its end. */
  read(maxItems: number, into: SourceItem[]): boolean {
    for (let n = 0; n < maxItems; ) {
      if (this.offsetBytes >= this.sizeBytes) return false;
      let count = this.offsetBytes >= this.singlyBefore ? this.decodeRun(maxItems - n, into) : 0;
      if (count === 0) {
        into.push(this.nextItem());
        count = 1;
      }
      this.items += count;
      n += count;
    }
    return true;
  }

  /**
   * Decodes in one msgpackr call the values from `offsetBytes` on (at most `maxValues`) that are
   * whole in the bytes held and fit to decode: most of a file. msgpackr takes ~560 ns a value one
   * at a time and ~380 ns over many. What is not such a value is left to `nextItem`. The number
   * of values decoded.
   */
  private decodeRun(maxValues: number, into: SourceItem[]): number {
    const scanner = this.scanner;
    const ends = this.runEnds;
    const startAt = this.offsetBytes;
    ends.length = 0;
    if (startAt < this.bytesAt) return 0; // not held: nextItem reads it
    for (let at = startAt; ends.length < maxValues; at = scanner.at) {
      scanner.begin(at, "collection");
      const isFit = scanner.scan(this.bytes, this.bytesAt) === "whole" && scanner.violation === undefined && scanner.at - at <= this.maxValueBytes;
      if (!isFit) break;
      ends.push(scanner.at);
    }
    if (ends.length === 0) return 0;
    const endAt = ends[ends.length - 1];
    const itemsBefore = into.length;
    try {
      let i = 0;
      unpackr.unpackMultiple(this.bytes.subarray(startAt - this.bytesAt, endAt - this.bytesAt), (value: unknown) => {
        into.push({ partition: this.partition, value, at: i === 0 ? startAt : ends[i - 1] });
        i++;
      });
    } catch {
      // One of them msgpackr cannot decode after all: each on its own, so only that one is lost.
      into.length = itemsBefore;
      this.singlyBefore = endAt;
      return 0;
    }
    this.offsetBytes = endAt;
    return ends.length;
  }

  /** The offset of the next value and the number of items read before it. */
  position(): LinePosition {
    return { offsetBytes: this.offsetBytes, lineNo: this.items };
  }

  close(): void {
    closeSync(this.fd);
  }

  /**
   * The item at `offsetBytes`, which moves past it:
   * 1. the value is walked, its bytes held while it is within the limit; past it, the walk goes on
   *    to its end without holding them;
   * 2. bytes that are no value are one dead letter up to where a value is found again;
   * 3. a value over the limit, or one the walk refused, is a dead letter; any other is decoded.
   */
  private nextItem(): SourceItem {
    const startAt = this.offsetBytes;
    const scanner = this.scanner;
    // 1. A value of the file is a list or mapping: a scalar there is a damaged byte that decodes
    // by chance (a run of zeros is as many zeros), not a value to hand on.
    scanner.begin(startAt, "collection");
    let preview: string | undefined; // set once the value is over the limit and no longer held
    for (;;) {
      const step = scanner.scan(this.bytes, this.bytesAt);
      if (step === "whole") break;
      // 2.
      if (step === "malformed") return this.unreadable(startAt, scanner.at, scanner.malformation);
      if (preview === undefined && scanner.needAt - startAt > this.maxValueBytes) {
        preview = hexPreview(this.bytes.subarray(startAt - this.bytesAt));
        scanner.stopChecking();
        continue;
      }
      this.load(preview === undefined ? startAt : scanner.at, scanner.needAt);
    }
    // 3.
    const endAt = scanner.at;
    this.offsetBytes = endAt;
    const origin = `${this.path}@${startAt}`;
    const lengthBytes = endAt - startAt;
    // The walk may have found the end inside bytes already read: the limit is the value's length.
    if (lengthBytes > this.maxValueBytes) {
      const raw = preview ?? hexPreview(this.bytes.subarray(startAt - this.bytesAt));
      return { partition: this.partition, error: `msgpack value of ${lengthBytes} bytes (bytes ${startAt}..${endAt}) is over the limit of ${this.maxValueBytes}`, raw, origin };
    }
    const valueBytes = this.bytes.subarray(startAt - this.bytesAt, endAt - this.bytesAt);
    if (scanner.violation !== undefined) return { partition: this.partition, error: scanner.violation, raw: hexPreview(valueBytes), origin };
    try {
      return { partition: this.partition, value: unpackr.unpack(valueBytes), at: startAt };
    } catch (error) {
      // The walk refused what msgpackr cannot read; this is a last guard, a stack overflow included.
      return { partition: this.partition, error: `undecodable msgpack at bytes ${startAt}..${endAt}: ${(error as Error).message}`, raw: hexPreview(valueBytes), origin };
    }
  }

  /** The dead letter of the bytes from `startAt` (the fault at `faultAt`) up to the next value. */
  private unreadable(startAt: number, faultAt: number, why: string): SourceItem {
    const endAt = this.nextValueAt(startAt + 1);
    this.offsetBytes = endAt;
    this.load(startAt, startAt + 1);
    const raw = hexPreview(this.bytes.subarray(startAt - this.bytesAt, endAt - this.bytesAt));
    const fault = faultAt === startAt ? why : `${why}, at byte ${faultAt}`;
    return {
      partition: this.partition,
      error: `undecodable msgpack at bytes ${startAt}..${endAt} (${bytesText(endAt - startAt)}): ${fault}`,
      raw,
      origin: `${this.path}@${startAt}`,
    };
  }

  /**
   * Where reading resynchronises after bytes that hold no value: the first offset from `fromAt`
   * where an event can start, followed by the end of the file or by another. Damaged bytes decode
   * by chance often enough (a byte inside a number that looks like a mapping's header) that one
   * is not enough; two in a row are rare.
   */
  private nextValueAt(fromAt: number): number {
    for (let at = fromAt; at < this.sizeBytes; at++) {
      this.load(at, at + 1);
      if (!isFilledMappingToken(this.bytes[at - this.bytesAt])) continue;
      const endAt = this.eventEnd(at, at);
      if (endAt < 0) continue;
      if (endAt === this.sizeBytes) return at;
      this.load(at, endAt + 1);
      if (isFilledMappingToken(this.bytes[endAt - this.bytesAt]) && this.eventEnd(endAt, at) >= 0) return at;
    }
    return this.sizeBytes;
  }

  /**
   * The end of the value at `startAt` if it can be an event (a mapping with string keys, whole
   * within the limit and fit to decode), else -1; bytes held from `holdAt`.
   */
  private eventEnd(startAt: number, holdAt: number): number {
    const scanner = this.scanner;
    scanner.begin(startAt, "event");
    for (;;) {
      const step = scanner.scan(this.bytes, this.bytesAt);
      if (step === "whole") return scanner.at - startAt <= this.maxValueBytes && scanner.violation === undefined ? scanner.at : -1;
      if (step === "malformed" || scanner.needAt - startAt > this.maxValueBytes) return -1;
      this.load(holdAt, scanner.needAt);
    }
  }

  /** Makes `bytes` hold the file from `fromAt` (or before) to `toAt` at least, reading a chunk or more. */
  private load(fromAt: number, toAt: number): void {
    const bytesEnd = this.bytesAt + this.bytes.length;
    if (fromAt >= this.bytesAt && toAt <= bytesEnd) return;
    // What is held from `fromAt` stays; the file is read on from where the held bytes end.
    const isKept = fromAt >= this.bytesAt && fromAt <= bytesEnd;
    const readAt = isKept ? bytesEnd : fromAt;
    const chunk = Buffer.allocUnsafe(Math.max(0, Math.min(Math.max(CHUNK_BYTES, toAt - readAt), this.sizeBytes - readAt)));
    let filledBytes = 0;
    while (filledBytes < chunk.length) {
      const bytesRead = readSync(this.fd, chunk, filledBytes, chunk.length - filledBytes, readAt + filledBytes);
      // Walks rest on the size the file had when opened; waiting for bytes that never come would hang.
      if (bytesRead === 0) throw new SourcePositionInvalid(this.path, `the file has ${readAt + filledBytes} bytes, ${this.sizeBytes} when it was opened: it was cut short while read`);
      filledBytes += bytesRead;
    }
    this.bytes = isKept ? Buffer.concat([this.bytes.subarray(fromAt - this.bytesAt), chunk]) : chunk;
    this.bytesAt = fromAt;
  }
}
