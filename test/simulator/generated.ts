// What the simulator's tests share: sources opened on small populations and the events they produce.
import type { SourceBatch, SourceItem } from "../../engine/sources/source.ts";
import type { GeneratedEvent } from "../../simulator/events.ts";
import { GeneratorSource, type GeneratorOptions } from "../../simulator/generatorSource.ts";

export const SMALL: GeneratorOptions = { users: 1000, events: 5000 };

export async function opened(options: GeneratorOptions, position?: unknown): Promise<GeneratorSource> {
  const source = new GeneratorSource(options);
  await source.open(position);
  return source;
}

export async function readAll(options: GeneratorOptions, batchSize = 1000): Promise<SourceItem[]> {
  const source = await opened(options);
  const items: SourceItem[] = [];
  for (;;) {
    const batch = source.nextBatch(batchSize) as SourceBatch;
    items.push(...batch.items);
    if (batch.isDone) return items;
  }
}

/** The generator never reports undecodable items. */
export function eventIn(item: SourceItem): GeneratedEvent {
  return (item as { value: GeneratedEvent }).value;
}

export async function eventsOf(options: GeneratorOptions): Promise<GeneratedEvent[]> {
  return (await readAll(options)).map(eventIn);
}

export function batches(source: GeneratorSource, count: number, maxItems: number): SourceBatch[] {
  return Array.from({ length: count }, () => source.nextBatch(maxItems) as SourceBatch);
}
