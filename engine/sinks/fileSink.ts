// JSON-lines file output, exactly once, and never a line a crash takes back: lines are written to a
// part file beside the named one; at a cut the part file is fsynced and set aside for its checkpoint,
// and once that checkpoint has committed it is appended to the named file. A reader of the named file
// only ever sees committed lines; recovery completes an append a crash interrupted.
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { SinkPositionLost } from "../errors.ts";
import { jsonText } from "./jsonText.ts";
import type { Sink, SinkRecovery } from "./sink.ts";

const FLUSH_AT_CHARS = 256 * 1024;
const COPY_CHUNK_BYTES = 1 << 20;

/**
 * What a checkpoint records: the named file's length once this checkpoint's lines are appended, and
 * the number of the part file that holds them (`<path>.part-<n>`) until they are.
 */
type FilePosition = { committedBytes: number; partNo: number };

export class FileSink implements Sink {
  /** The named file: committed lines only. */
  private fd = -1;
  private committedBytes = 0;
  /** The part file being written: lines since the last cut. */
  private partFd = -1;
  private partBytes = 0;
  private partNo = 0;
  private pending: string[] = [];
  private pendingChars = 0;
  /** Part files set aside at cuts, by checkpoint id, waiting for their checkpoint to commit. */
  private readonly heldParts = new Map<number, string>();
  private released = 0;
  private onDelivered?: (checkpointId: number) => void;

  constructor(readonly path: string) {}

  get description(): string {
    return this.path;
  }

  /**
   * 1. cuts the named file back to the committed length (a file longer than that was changed outside
   *    flusso), or completes the append of the checkpoint's part file that a crash interrupted;
   * 2. deletes the part files of checkpoints that never committed;
   * 3. starts a new part file.
   * A position from before part files (a plain length) is the named file's committed length.
   */
  async recover(position: unknown, recovery?: Pick<SinkRecovery, "onDelivered">): Promise<void> {
    this.onDelivered = recovery?.onDelivered;
    mkdirSync(dirname(this.path), { recursive: true });
    const committed = positionOf(position);
    this.fd = openSync(this.path, existsSync(this.path) ? "r+" : "w+");
    // 1.
    const actualBytes = fstatSync(this.fd).size;
    if (actualBytes > committed.committedBytes) ftruncateSync(this.fd, committed.committedBytes);
    else if (actualBytes < committed.committedBytes) this.completeAppend(committed, actualBytes);
    fsyncSync(this.fd);
    this.committedBytes = committed.committedBytes;
    // 2.
    for (const leftover of this.partFiles()) rmSync(leftover, { force: true });
    // 3.
    this.partNo = committed.partNo + 1;
    this.openPart();
  }

  write(value: object): void {
    const line = jsonText(value) + "\n";
    this.pending.push(line);
    this.pendingChars += line.length;
    if (this.pendingChars >= FLUSH_AT_CHARS) this.writePending();
  }

  /** Makes the lines since the last cut durable in the part file; the position counts them in. */
  async flush(): Promise<FilePosition> {
    this.writePending();
    fsyncSync(this.partFd);
    return { committedBytes: this.committedBytes + this.partBytes, partNo: this.partNo };
  }

  /** Sets the part file aside for checkpoint `checkpointId`; nothing goes into the checkpoint itself. */
  hold(checkpointId: number): undefined {
    closeSync(this.partFd);
    const held = this.partPath(this.partNo);
    renameSync(this.partPath(), held);
    this.heldParts.set(checkpointId, held);
    this.committedBytes += this.partBytes;
    this.partNo++;
    this.openPart();
    return undefined;
  }

  /** The checkpoint committed: its lines join the named file, durably, and their part file goes. */
  release(checkpointId: number): void {
    const held = this.heldParts.get(checkpointId);
    if (held === undefined) return;
    this.heldParts.delete(checkpointId);
    this.appendFrom(held, 0);
    fsyncSync(this.fd);
    rmSync(held, { force: true });
    this.released = checkpointId;
    this.onDelivered?.(checkpointId);
  }

  deliveredThrough(): number {
    return this.released;
  }

  async delivered(): Promise<void> {}

  /**
   * Lines written since the last cut stay in the part file, which the next recovery deletes: no
   * checkpoint covers them. An empty part file (a clean end) is removed now.
   */
  async close(): Promise<void> {
    if (this.fd >= 0) closeSync(this.fd);
    if (this.partFd >= 0) {
      closeSync(this.partFd);
      if (this.partBytes === 0 && this.pending.length === 0) rmSync(this.partPath(), { force: true });
    }
    this.fd = this.partFd = -1;
  }

  /** Appends the tail of the checkpoint's part file that the named file lacks. */
  private completeAppend(committed: FilePosition, actualBytes: number): void {
    const part = this.partPath(committed.partNo);
    const partBytes = existsSync(part) ? fstatSizeOf(part) : 0;
    const missingBytes = committed.committedBytes - actualBytes;
    if (partBytes < missingBytes) throw new SinkPositionLost(this.path, committed.committedBytes, actualBytes + partBytes);
    this.appendFrom(part, partBytes - missingBytes);
  }

  /** Copies `source` from `fromBytes` to its end onto the end of the named file. */
  private appendFrom(source: string, fromBytes: number): void {
    const sourceFd = openSync(source, "r");
    try {
      const chunk = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
      let atBytes = fstatSync(this.fd).size;
      for (let readAt = fromBytes; ; ) {
        const bytesRead = readSync(sourceFd, chunk, 0, chunk.length, readAt);
        if (bytesRead === 0) break;
        readAt += bytesRead;
        for (let offset = 0; offset < bytesRead; ) offset += writeSync(this.fd, chunk, offset, bytesRead - offset, atBytes + offset);
        atBytes += bytesRead;
      }
    } finally {
      closeSync(sourceFd);
    }
  }

  private openPart(): void {
    this.partFd = openSync(this.partPath(), "w");
    this.partBytes = 0;
  }

  private writePending(): void {
    if (this.pending.length === 0) return;
    const bytes = Buffer.from(this.pending.join(""), "utf8");
    for (let offset = 0; offset < bytes.length; ) offset += writeSync(this.partFd, bytes, offset, bytes.length - offset, this.partBytes + offset);
    this.partBytes += bytes.length;
    this.pending = [];
    this.pendingChars = 0;
  }

  /** `<path>.part` while written; `<path>.part-<n>` once set aside for a checkpoint. */
  private partPath(partNo?: number): string {
    return partNo === undefined ? `${this.path}.part` : `${this.path}.part-${partNo}`;
  }

  private partFiles(): string[] {
    const prefix = `${basename(this.path)}.part`;
    return readdirSync(dirname(this.path))
      .filter((name) => name === prefix || (name.startsWith(`${prefix}-`) && /^\d+$/.test(name.slice(prefix.length + 1))))
      .map((name) => join(dirname(this.path), name));
  }
}

function positionOf(position: unknown): FilePosition {
  if (typeof position === "number") return { committedBytes: position, partNo: 0 };
  if (position !== null && typeof position === "object" && "committedBytes" in position) return position as FilePosition;
  return { committedBytes: 0, partNo: 0 };
}

function fstatSizeOf(path: string): number {
  const fd = openSync(path, "r");
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}
