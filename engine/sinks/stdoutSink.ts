// JSON lines to standard output: for looking, not for exactly-once (a restart may repeat lines).
import { writeSync } from "node:fs";
import { jsonText } from "./jsonText.ts";
import type { Sink } from "./sink.ts";

export class StdoutSink implements Sink {
  readonly description = "stdout";
  private pending: string[] = [];

  async recover(): Promise<void> {}

  write(value: object): void {
    this.pending.push(jsonText(value) + "\n");
    if (this.pending.length >= 1024) this.writePending();
  }

  async flush(): Promise<undefined> {
    this.writePending();
    return undefined;
  }

  async close(): Promise<void> {
    this.writePending();
  }

  private writePending(): void {
    if (this.pending.length === 0) return;
    const text = this.pending.join("");
    this.pending = [];
    writeSync(1, text);
  }
}
