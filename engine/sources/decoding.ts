// What the sources share when they turn input bytes into a value: the UTF-8 check, JSON decoding
// within the value limits (valueLimits.ts), and the short previews of what they refuse.
import { isUtf8 } from "node:buffer";
import { valueLimitViolation } from "../valueLimits.ts";

/** A refused text keeps at most this many characters in its dead letter. */
export const RAW_PREVIEW_CHARS = 200;
/** A refused binary value keeps at most this many bytes, as hex, in its dead letter. */
export const RAW_PREVIEW_BYTES = 64;

/** A value, or why the input holds none (`raw`: a short preview of the input, when the reason wants one). */
export type Decoding = { value: unknown } | { error: string; raw?: string };

export function textPreview(text: string): string {
  return text.slice(0, RAW_PREVIEW_CHARS);
}

export function hexPreview(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, RAW_PREVIEW_BYTES)).toString("hex");
}

/**
 * Why `bytes[from, to)` is not UTF-8 (`what`: "line", "message"), or undefined when it is. Decoding
 * would turn bad bytes into U+FFFD silently, and two different ids into one.
 */
export function utf8Problem(bytes: Uint8Array, from: number, to: number, what: string): string | undefined {
  if (isUtf8(bytes.subarray(from, to))) return undefined;
  return `not UTF-8: an invalid byte sequence at byte ${firstInvalidUtf8At(bytes, from, to) - from} of the ${what}`;
}

/**
 * Where the first byte that starts no valid UTF-8 sequence is in `bytes[from, to)`, or -1. Slow
 * (JavaScript), for the reason of a refusal only; `isUtf8` answers yes or no natively.
 */
export function firstInvalidUtf8At(bytes: Uint8Array, from: number, to: number): number {
  let i = from;
  while (i < to) {
    const lead = bytes[i];
    if (lead < 0x80) {
      i++;
      continue;
    }
    // Continuation bytes after the lead, and the range the first of them must fall in (which
    // refuses overlong forms, surrogates and code points above U+10FFFF).
    let count: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) count = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      count = 2;
      if (lead === 0xe0) low = 0xa0;
      else if (lead === 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      count = 3;
      if (lead === 0xf0) low = 0x90;
      else if (lead === 0xf4) high = 0x8f;
    } else return i;
    if (i + count >= to || bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (let k = 2; k <= count; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return i;
    i += count + 1;
  }
  return -1;
}

/** A JSON text as a value within the value limits. */
export function decodeJson(text: string): Decoding {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { error: `not JSON: ${jsonErrorWithoutInput((error as Error).message)}` };
  }
  const violation = valueLimitViolation(value);
  return violation === undefined ? { value } : { error: violation, raw: textPreview(text) };
}

/** UTF-8 JSON bytes (`what`: "message") as a value within the value limits. */
export function decodeJsonBytes(bytes: Uint8Array, what: string): Decoding {
  const notUtf8 = utf8Problem(bytes, 0, bytes.length, what);
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8");
  return notUtf8 === undefined ? decodeJson(text) : { error: notUtf8, raw: textPreview(text) };
}

/**
 * V8 quotes the input in some JSON errors (`Unexpected token 'b', "bob@x.com" is not valid JSON`);
 * a reason must not carry input (a dead letter of a pipeline with privacy options withholds it).
 */
function jsonErrorWithoutInput(message: string): string {
  const quotedAt = message.indexOf(', "');
  if (quotedAt < 0 || !message.endsWith(" is not valid JSON")) return message;
  // The token is input too: "Unexpected token 'b'" -> "Unexpected token".
  return `${message.slice(0, quotedAt).replace(/ '.*'$/s, "")} (not valid JSON)`;
}
