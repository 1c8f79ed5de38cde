// The contract of an output: buffered writes, flushed and committed at a checkpoint cut.

export type Sink = {
  readonly description: string;
  /** Puts the sink back at a committed position (undefined: nothing was ever committed). */
  recover(position: unknown): Promise<void>;
  /** Buffers one output; must not block. */
  write(value: object): void;
  /** Makes everything written durable (flush, fsync, acks) and returns the position to commit. */
  flush(): Promise<unknown>;
  close(): Promise<void>;
};
