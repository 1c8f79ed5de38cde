// Reading a text file a chunk at a time, for the line and CSV readers: the next chunk joined to what
// the reader still holds, and how much of it is valid UTF-8 as whole lines.
import { isUtf8 } from "node:buffer";
import { readSync } from "node:fs";

/** Bytes read from the file at a time. */
const CHUNK_BYTES = 1 << 20;
const NEWLINE = 10;

/**
 * The chunk of `fd` at `offsetBytes` joined after `kept`, with the bytes read, and where its whole lines
 * end if they are all valid UTF-8 (0 otherwise); undefined at the end of the file. The lines are
 * checked at once up to the last line break (no UTF-8 sequence holds byte 10): only those of a buffer
 * that fails need checking one by one.
 */
export function readNextChunk(fd: number, offsetBytes: number, kept: Buffer): { buffer: Buffer; bytesRead: number; utf8LinesEnd: number } | undefined {
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  const bytesRead = readSync(fd, chunk, 0, CHUNK_BYTES, offsetBytes);
  if (bytesRead === 0) return undefined;
  const buffer = Buffer.concat([kept, chunk.subarray(0, bytesRead)]);
  const lineBreaksEnd = buffer.lastIndexOf(NEWLINE) + 1;
  return { buffer, bytesRead, utf8LinesEnd: isUtf8(buffer.subarray(0, lineBreaksEnd)) ? lineBreaksEnd : 0 };
}
