// JSON-lines file output, exactly once: a checkpoint records the file's length after an fsync, and
// recovery truncates what was written after it, which the restored job then writes again.
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { SinkPositionLost } from "../errors.ts";
import { jsonText } from "./jsonText.ts";
import type { Sink } from "./sink.ts";

const FLUSH_AT_BYTES = 256 * 1024;

export class FileSink implements Sink {
  private fd = -1;
  private pending: string[] = [];
  private pendingChars = 0;
  private lengthBytes = 0;

  constructor(readonly path: string) {}

  get description(): string {
    return this.path;
  }

  async recover(position: unknown): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    const committedBytes = typeof position === "number" ? position : 0;
    this.fd = openSync(this.path, existsSync(this.path) ? "r+" : "w+");
    const actualBytes = fstatSync(this.fd).size;
    if (actualBytes < committedBytes) throw new SinkPositionLost(this.path, committedBytes, actualBytes);
    ftruncateSync(this.fd, committedBytes);
    this.lengthBytes = committedBytes;
  }

  write(value: object): void {
    const line = jsonText(value) + "\n";
    this.pending.push(line);
    this.pendingChars += line.length;
    if (this.pendingChars >= FLUSH_AT_BYTES) this.writePending();
  }

  async flush(): Promise<number> {
    this.writePending();
    fsyncSync(this.fd);
    return this.lengthBytes;
  }

  async close(): Promise<void> {
    if (this.fd < 0) return;
    this.writePending();
    closeSync(this.fd);
    this.fd = -1;
  }

  private writePending(): void {
    if (this.pending.length === 0) return;
    const bytes = Buffer.from(this.pending.join(""), "utf8");
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(this.fd, bytes, offset, bytes.length - offset, this.lengthBytes + offset);
    this.lengthBytes += bytes.length;
    this.pending = [];
    this.pendingChars = 0;
  }
}
