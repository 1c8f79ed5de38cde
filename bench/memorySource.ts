// An in-memory source for benchmarks and tests: a fixed array of values, one partition.
import type { Source, SourceBatch, SourceItem } from "../engine/sources/source.ts";

export class MemorySource implements Source {
  readonly description = "memory";
  readonly partitions = 1;
  private at = 0;

  constructor(private readonly values: readonly unknown[]) {}

  async open(position: unknown): Promise<void> {
    this.at = typeof position === "number" ? position : 0;
  }

  nextBatch(maxItems: number): SourceBatch {
    const end = Math.min(this.at + maxItems, this.values.length);
    const items: SourceItem[] = new Array(end - this.at);
    for (let i = this.at; i < end; i++) items[i - this.at] = { partition: 0, value: this.values[i] };
    this.at = end;
    return { items, isDone: this.at >= this.values.length };
  }

  position(): number {
    return this.at;
  }

  async close(): Promise<void> {}
}
