// The contract of an output: buffered writes, made durable at a checkpoint cut, and put back at
// the committed position by recovery. A sink that cannot take back what it sends also holds its
// outputs until the checkpoint that covers them commits.
import type { HeldOutputs } from "../store.ts";

/** What recovery hands a sink besides its committed position. */
export type SinkRecovery = {
  /** The sink's name in the job (what it writes: "file:out/alerts.jsonl", "nats:OUT/out.hourly"): part of the identity of its outputs. */
  sinkName: string;
  /** Names the state's life (new after a reset): part of every output identity a sink makes. */
  runId: string;
  /** What this sink held in committed checkpoints and had not reported delivered, oldest first. */
  held: HeldOutputs[];
  /**
   * A holding sink calls it, as it happens, with each checkpoint whose held outputs have all been
   * delivered (what output latency is measured to). Optional for the caller.
   */
  onDelivered?(checkpointId: number): void;
};

export type Sink = {
  readonly description: string;
  /** Puts the sink back at a committed position (undefined: nothing was ever committed). */
  recover(position: unknown, recovery: SinkRecovery): Promise<void>;
  /** Buffers one output; must not block. */
  write(value: object): void;
  /** At a cut: makes everything written durable (flush, fsync), or ready to hold, and returns the position to commit. */
  flush(): Promise<unknown>;
  close(): Promise<void>;
  /** Why it cannot deliver now (a server out of reach), if it cannot. Optional. */
  unavailable?(): string | undefined;
  /**
   * A holding sink (a message broker: what is published cannot be taken back) sends nothing a crash
   * could take back. At a cut it hands over what was written since the last one, which the
   * checkpoint stores (undefined: nothing). Optional; with it, `release`, `deliveredThrough` and
   * `delivered` are required.
   */
  hold?(checkpointId: number): unknown;
  /** Checkpoint `checkpointId` is durable: what it holds may be sent now. */
  release?(checkpointId: number): void;
  /** The newest checkpoint whose held outputs have all been delivered (0: none). */
  deliveredThrough?(): number;
  /** Resolves once everything released so far has been delivered. */
  delivered?(): Promise<void>;
};
