// Which partition a record belongs to: by a hash of its key (for whoever writes partitioned
// input), and by the subject it arrived on (for the NATS source).

/** FNV-1a 32-bit over the key's UTF-8 bytes, so other languages can reproduce the assignment. */
export function partitionOf(key: string, partitions: number): number {
  return fnv1a32(key) % partitions;
}

/** `events.3` -> 3 mod partitions; a subject without a numeric last token is partition 0. */
export function partitionOfSubject(subject: string, partitions: number): number {
  const n = Number(subject.slice(subject.lastIndexOf(".") + 1));
  return Number.isInteger(n) && n >= 0 ? n % partitions : 0;
}

/** FNV-1a 32-bit over the text's UTF-8 bytes, as an unsigned integer. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    // ASCII hashes from the string directly; anything else is hashed as UTF-8 bytes from the start.
    if (code >= 0x80) return fnv1a32Bytes(Buffer.from(text, "utf8"));
    hash = Math.imul(hash ^ code, 0x01000193);
  }
  return hash >>> 0;
}

function fnv1a32Bytes(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193);
  return hash >>> 0;
}
