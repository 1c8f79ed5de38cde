// Msgpack input, walked before it is decoded. msgpackr decodes by recursion (a value nested 100,000
// deep overflows the stack) and turns bad UTF-8 into U+FFFD silently; the walk here is a loop over
// the bytes that finds where a value ends and refuses, before msgpackr sees it, a value over the
// value limits (valueLimits.ts), a string that is not UTF-8 and an extension that reads past its own
// bytes. Standard msgpack, as msgpackr's `pack` writes it; msgpackr's records are not read.
import { isUtf8 } from "node:buffer";
import { Unpackr } from "msgpackr";
import { MAX_COLLECTION_ENTRIES, MAX_VALUE_DEPTH, tooDeepReason, tooManyEntriesReason } from "../valueLimits.ts";
import { firstInvalidUtf8At, hexPreview, type Decoding } from "./decoding.ts";

/**
 * Extension types whose value is their own bytes: -1 the msgpack timestamp, 0 undefined, 0x42 a
 * big integer, 0x74 a typed array. msgpackr's others read the values after them (sets, records,
 * structured clones) or are its private formats.
 */
const SELF_CONTAINED_EXTENSIONS = new Set([0xff, 0x00, 0x42, 0x74]);

/** How a walk stopped: at the end of a whole value, for want of bytes, or at bytes no value has. */
export type ScanStep = "whole" | "short" | "malformed";

/**
 * What the walk takes for a value: anything; a list or mapping (what a file of events holds, where a
 * lone number is a damaged byte that decodes by chance); or what an event is, a mapping of one entry
 * or more with string keys (what a search for the next event in damaged bytes wants).
 */
export type ValueShape = "any" | "collection" | "event";

/**
 * Walks one msgpack value at a time over an input of `endOfInputAt` bytes, given in pieces: it
 * stops for want of bytes (`short`, with `needAt`) and goes on from there when given more.
 */
export class MsgpackScanner {
  /** The input offset of the next byte to walk; after `whole`, the end of the value. */
  at = 0;
  /** After `short`: the walk goes on once the bytes before this offset are given. */
  needAt = 0;
  /** After `malformed`: why the bytes at `at` hold no value. */
  malformation = "";
  /** Why the value must not be decoded (over a limit, a string not UTF-8, ...), once found. */
  violation: string | undefined;
  /** Items still to come in each list or mapping the walk is in, innermost last. */
  private readonly pending: number[] = [];
  private isChecking = true;
  private startAt = 0;
  private shape: ValueShape = "any";
  private isOuterMapping = false;

  constructor(private readonly endOfInputAt: number) {}

  /** Starts on the value at `at`; one of another `shape` is malformed. */
  begin(at: number, shape: ValueShape = "any"): void {
    this.at = at;
    this.startAt = at;
    this.shape = shape;
    this.pending.length = 0;
    this.violation = undefined;
    this.isChecking = true;
  }

  /** Goes on without looking into strings, which then need no bytes: for a value that is not kept. */
  stopChecking(): void {
    this.isChecking = false;
  }

  /** Walks on over `bytes`, which hold the input from offset `bytesAt` (at or before `at`). */
  scan(bytes: Uint8Array, bytesAt: number): ScanStep {
    const bytesEnd = bytesAt + bytes.length;
    for (;;) {
      const at = this.at;
      if (at >= bytesEnd) return at >= this.endOfInputAt ? this.malformed(RUNS_PAST_END) : this.short(at + 1);
      const token = bytes[at - bytesAt];
      const isShapeChecked = this.shape === "event" || (this.shape === "collection" && at === this.startAt);
      const shapeProblem = isShapeChecked ? this.shapeProblem(token, at) : undefined;
      if (shapeProblem !== undefined) return this.malformed(shapeProblem);
      let step: ScanStep | "item" | "open";
      // Fixed-size tokens first: they are most of an event.
      const fixedBytes = FIXED_BYTES[token];
      if (fixedBytes > 0) step = this.walkOver(at + fixedBytes);
      else if (token === 0xc1) return this.malformed("0xc1, a byte msgpack never uses");
      else if (at + HEADER_BYTES[token] > this.endOfInputAt) return this.malformed(RUNS_PAST_END);
      else if (at + HEADER_BYTES[token] > bytesEnd) return this.short(at + HEADER_BYTES[token]);
      else if (token < 0xa0 || (token >= 0xdc && token <= 0xdf)) step = this.open(token, bytes, at - bytesAt);
      else step = this.walkSized(token, bytes, bytesAt);
      if (step === "item") {
        if (this.hasEnded()) return "whole";
      } else if (step !== "open") return step;
    }
  }

  /** Why `token` at `at` cannot be where it is in a value of `shape`, if it cannot. */
  private shapeProblem(token: number, at: number): string | undefined {
    if (token === 0xc1) return undefined; // its own reason
    if (at === this.startAt && !(this.shape === "event" ? isFilledMappingToken(token) : isCollectionToken(token))) {
      return `byte 0x${token.toString(16).padStart(2, "0")} starts no ${this.shape === "event" ? "mapping" : "list or mapping"}`;
    }
    // A mapping's items alternate key, value: a key when an even number of them is still to come.
    const isOuterKey = this.pending.length === 1 && this.isOuterMapping && (this.pending[0] & 1) === 0;
    return this.shape === "event" && isOuterKey && !isStringToken(token) ? "a key that is no string" : undefined;
  }

  /** Walks over an item of a fixed size that ends at `endAt`. */
  private walkOver(endAt: number): ScanStep | "item" {
    if (endAt > this.endOfInputAt) return this.malformed(RUNS_PAST_END);
    this.at = endAt;
    return "item";
  }

  /** A string, bytes or an extension (its header in `bytes`): a length, then that many bytes. */
  private walkSized(token: number, bytes: Uint8Array, bytesAt: number): ScanStep | "item" {
    const i = this.at - bytesAt;
    const headerBytes = HEADER_BYTES[token];
    let lengthBytes: number;
    let isString = false;
    let extensionAt = -1;
    if (token < 0xc0) {
      lengthBytes = token & 0x1f;
      isString = true;
    } else if (token >= 0xd9 && token <= 0xdb) {
      lengthBytes = readLength(bytes, i + 1, headerBytes - 1);
      isString = true;
    } else if (token >= 0xc4 && token <= 0xc6) {
      lengthBytes = readLength(bytes, i + 1, headerBytes - 1);
    } else if (token >= 0xc7 && token <= 0xc9) {
      lengthBytes = readLength(bytes, i + 1, headerBytes - 2);
      extensionAt = i + headerBytes - 1;
    } else {
      lengthBytes = FIXEXT_BYTES[token - 0xd4];
      extensionAt = i + 1;
    }
    const endAt = this.at + headerBytes + lengthBytes;
    if (endAt > this.endOfInputAt) {
      const what = isString ? "a string" : extensionAt >= 0 ? "an extension" : "bytes";
      return this.malformed(`${what} of ${lengthBytes} bytes runs past the end of the input`);
    }
    if (extensionAt >= 0 && this.violation === undefined && !SELF_CONTAINED_EXTENSIONS.has(bytes[extensionAt])) {
      this.violation = `msgpack extension type ${(bytes[extensionAt] << 24) >> 24} is not supported`;
    }
    if (isString && this.isChecking && this.violation === undefined) {
      if (endAt > bytesAt + bytes.length) return this.short(endAt);
      const badAt = firstNonUtf8At(bytes, i + headerBytes, endAt - bytesAt);
      if (badAt >= 0) this.violation = `not UTF-8: a string with an invalid byte sequence at byte ${bytesAt + badAt}`;
    }
    this.at = endAt;
    return "item";
  }

  /**
   * Enters the list or mapping whose header (`token`) is at `bytes[i]`: "open" while it has items
   * to come, "item" when it is empty (an item of what holds it), or "malformed".
   */
  private open(token: number, bytes: Uint8Array, i: number): ScanStep | "item" | "open" {
    const isList = (token >= 0x90 && token < 0xa0) || token === 0xdc || token === 0xdd;
    const entries = token < 0xa0 ? token & 0x0f : readLength(bytes, i + 1, token === 0xdc || token === 0xde ? 2 : 4);
    const items = isList ? entries : 2 * entries;
    const itemsAt = this.at + HEADER_BYTES[token];
    // Every item takes a byte at least: a count the rest of the input cannot hold is no count.
    if (itemsAt + items > this.endOfInputAt) {
      return this.malformed(`a ${isList ? "list" : "mapping"} of ${entries} entries cannot fit in the ${this.endOfInputAt - itemsAt} bytes left`);
    }
    if (this.violation === undefined) {
      if (this.pending.length + 1 > MAX_VALUE_DEPTH) this.violation = tooDeepReason(MAX_VALUE_DEPTH);
      else if (entries > MAX_COLLECTION_ENTRIES) this.violation = tooManyEntriesReason(isList, entries, MAX_COLLECTION_ENTRIES);
    }
    this.at = itemsAt;
    if (this.pending.length === 0) this.isOuterMapping = !isList;
    if (items === 0) return "item";
    this.pending.push(items);
    return "open";
  }

  /** Counts an item done; true when it completes the value (every list and mapping it is in). */
  private hasEnded(): boolean {
    const pending = this.pending;
    while (pending.length > 0) {
      if (--pending[pending.length - 1] > 0) return false;
      pending.pop();
    }
    return true;
  }

  private short(needAt: number): ScanStep {
    this.needAt = Math.min(needAt, this.endOfInputAt);
    return "short";
  }

  private malformed(why: string): ScanStep {
    this.malformation = why;
    return "malformed";
  }
}

const RUNS_PAST_END = "the value runs past the end of the input";

/** Bytes of the tokens whose size is fixed (0: the size is in a header). */
const FIXED_BYTES = new Uint8Array(256);
/** Header bytes of the tokens that are followed by a length's worth of bytes or by items. */
const HEADER_BYTES = new Uint8Array(256);
const FIXEXT_BYTES = [1, 2, 4, 8, 16];
for (let token = 0; token < 256; token++) {
  if (token < 0x80 || token >= 0xe0 || token === 0xc0 || token === 0xc2 || token === 0xc3) FIXED_BYTES[token] = 1;
  else if (token < 0xc0) HEADER_BYTES[token] = 1; // fixmap, fixarray, fixstr
}
Object.assign(FIXED_BYTES, { 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9, 0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9 });
Object.assign(HEADER_BYTES, { 0xc4: 2, 0xc5: 3, 0xc6: 5, 0xc7: 3, 0xc8: 4, 0xc9: 6, 0xd4: 2, 0xd5: 2, 0xd6: 2, 0xd7: 2, 0xd8: 2 });
Object.assign(HEADER_BYTES, { 0xd9: 2, 0xda: 3, 0xdb: 5, 0xdc: 3, 0xdd: 5, 0xde: 3, 0xdf: 5 });

/** A big-endian unsigned length of `size` (1, 2 or 4) bytes. */
function readLength(bytes: Uint8Array, i: number, size: number): number {
  if (size === 1) return bytes[i];
  if (size === 2) return (bytes[i] << 8) | bytes[i + 1];
  return bytes[i] * 0x1000000 + ((bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]);
}

/** Where `bytes[from, to)` stops being UTF-8, or -1; ASCII (most strings) in a JavaScript loop. */
function firstNonUtf8At(bytes: Uint8Array, from: number, to: number): number {
  let allBits = 0;
  for (let i = from; i < to; i++) allBits |= bytes[i];
  if (allBits < 0x80) return -1;
  return isUtf8(bytes.subarray(from, to)) ? -1 : firstInvalidUtf8At(bytes, from, to);
}

/** "1 byte", "75 bytes": a count of bytes in a reason. */
export function bytesText(count: number): string {
  return count === 1 ? "1 byte" : `${count} bytes`;
}

/** Does `token` start a list or a mapping. */
export function isCollectionToken(token: number): boolean {
  return (token >= 0x80 && token < 0xa0) || (token >= 0xdc && token <= 0xdf);
}

/** Does `token` start a mapping that can hold entries (what an event is): not the empty fixmap 0x80. */
export function isFilledMappingToken(token: number): boolean {
  return (token > 0x80 && token < 0x90) || token === 0xde || token === 0xdf;
}

function isStringToken(token: number): boolean {
  return (token >= 0xa0 && token < 0xc0) || (token >= 0xd9 && token <= 0xdb);
}

/** The decoder every msgpack source uses: plain objects for mappings, no records. */
export const unpackr = new Unpackr({ useRecords: false });

/** One msgpack message (all its bytes one value) as a value; what msgpackr must not see never reaches it. */
export function decodeMsgpackMessage(bytes: Uint8Array): Decoding {
  const scanner = new MsgpackScanner(bytes.length);
  scanner.begin(0);
  const step = scanner.scan(bytes, 0);
  if (step !== "whole") return { error: `not msgpack: ${scanner.malformation} (at byte ${scanner.at})`, raw: hexPreview(bytes) };
  if (scanner.at < bytes.length) return { error: `not msgpack: ${bytesText(bytes.length - scanner.at)} after the value`, raw: hexPreview(bytes) };
  if (scanner.violation !== undefined) return { error: scanner.violation, raw: hexPreview(bytes) };
  try {
    return { value: unpackr.unpack(bytes) };
  } catch (error) {
    // The walk refused what msgpackr cannot read; this is a last guard, a stack overflow included.
    return { error: `not msgpack: ${(error as Error).message}`, raw: hexPreview(bytes) };
  }
}
