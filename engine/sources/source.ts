// The contract of a partitioned, resumable source.

/** One item read from a partition: a decoded value, or the reason it could not be decoded. */
export type SourceItem =
  | { readonly partition: number; readonly value: unknown; readonly error?: undefined; readonly at?: number }
  | { readonly partition: number; readonly error: string; readonly raw: string; readonly origin: string };

export type SourceBatch = {
  readonly items: SourceItem[];
  /** Partitions that have nothing more to give (bounded sources), reported once. */
  readonly finishedPartitions?: number[];
  /** True when the whole source is exhausted: a bounded source's last batch. */
  readonly isDone: boolean;
};

/** How far a bounded source has read: `done` of `total`, in the same unit. */
export type SourceProgress = { done: number; total: number };

export type Source = {
  /** A name for messages, e.g. the file path. */
  readonly description: string;
  /** The number of partitions; each has its own watermark. Fixed for the life of a state dir. */
  readonly partitions: number;
  /** Positions the source after `position` (from a checkpoint), or at its start. */
  open(position: unknown): Promise<void>;
  /**
   * Up to `maxItems` items. Batches are cut by count, never by time, so a job restored from a
   * checkpoint sees the same batches as an uninterrupted one.
   */
  nextBatch(maxItems: number): SourceBatch | Promise<SourceBatch>;
  /** Where an item came from, for dead letters, e.g. "events.jsonl:42" (`at`: the item's own `at`). */
  originOf?(partition: number, at: number): string;
  /** The position after every item returned so far: what a checkpoint records. */
  position(): unknown;
  /** Why it cannot read now (a server out of reach), if it cannot. Optional. */
  unavailable?(): string | undefined;
  /** Messages waiting to be read, by partition, where the source knows (a stream's backlog). Optional. */
  pendingMessages?(): readonly number[] | undefined;
  /**
   * How far a bounded source has read, in units of its own (bytes of files, events of the generator,
   * messages of a bounded stream): `done` of `total`. Undefined where the size is unknown (a live stream). Optional.
   */
  progress?(): SourceProgress | undefined;
  close(): Promise<void>;
};
