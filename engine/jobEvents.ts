// What a job tells its operator as it happens, as typed events: its start and restore, its
// connections to servers, checkpoints that are slow or fail, falling behind, its end. The engine
// only emits them; whoever runs the job (the CLI) words and formats them.
import type { CheckpointInfo } from "./job.ts";

/** A connection to a server (NATS) as a source, sink or publisher sees it; `address`: the URLs tried. */
export type ConnectionEvent =
  /** Connected for the first time. */
  | { event: "connected"; client: string; address: string }
  /** No server answered the first connection yet; retried every `retryMs`, said again every few seconds. */
  | { event: "retrying"; client: string; address: string; reason: string; retryMs: number }
  /** A connection that was up went away; the client reconnects on its own. */
  | { event: "disconnected"; client: string; address: string }
  | { event: "reconnected"; client: string; address: string };

export type JobEvent =
  | ConnectionEvent
  /** The job starts: what it reads, where it writes, where its state lives. */
  | { event: "started"; source: string; partitions: number; sinks: string[]; stateDir: string }
  /** The state of checkpoint `checkpointId` is back (`watermarkMs`: where event time resumes). */
  | { event: "restored"; checkpointId: number; watermarkMs: number }
  /** No checkpoint to resume: the job starts from the beginning of its source. */
  | { event: "fresh-start"; wasReset: boolean }
  /**
   * A checkpoint is durable, and what it took: told only to whoever asks for every checkpoint (the CLI
   * with FLUSSO_LOG_LEVEL=debug, through JobOptions.onCheckpoint), never by the job on its own.
   */
  | ({ event: "checkpoint" } & CheckpointInfo)
  /** A checkpoint took longer than CHECKPOINT_SLOW (see engine/jobHealth.ts). */
  | { event: "checkpoint-slow"; checkpointId: number; durationMs: number; intervalMs: number }
  /** A checkpoint could not be written: the job fails with `error`. */
  | { event: "checkpoint-failed"; checkpointId: number; error: string }
  /** The job falls behind its input (see engine/jobHealth.ts for the rule). */
  | { event: "falling-behind"; lagMs: number; pendingMessages?: number; forMs: number }
  /** It no longer does. */
  | { event: "caught-up"; lagMs: number }
  /** The bounded source has nothing more: the job drains and takes its last checkpoint. */
  | { event: "input-ended"; read: number }
  /** A stop was asked: the job takes a last checkpoint and ends. */
  | { event: "stopping"; checkpointId: number }
  /** A stop came while the job waited for its group's round: it ends without a last checkpoint, `checkpointId` stands. */
  | { event: "stopped-in-round"; checkpointId: number }
  | ClusterEvent;

/**
 * What a cluster's worker tells (engine/cluster/worker.ts). The events of the job it runs for a
 * partition carry that partition (PartitionEvent).
 */
export type ClusterEvent =
  /** The worker joined its group (`workers`: how many it saw, itself included). */
  | { event: "worker-joined"; group: string; workerId: string; workers: number; partitions: number }
  /** It took a partition's lease; its state came from the local cache, from NATS, or is new. */
  | { event: "partition-taken"; partition: number; restoredFrom: "cache" | "nats" | "nothing"; checkpointId: number; transactions: number }
  /** It gave a partition back after its last checkpoint: to even out the group, on a stop, or read to its end. */
  | { event: "partition-released"; partition: number; why: "rebalance" | "stop" | "done" }
  /** It lost a partition without giving it back: its lease ran out or another worker fenced it off. */
  | { event: "partition-lost"; partition: number; reason: string }
  /** Every partition of a bounded group was read to its end. */
  | { event: "group-done"; group: string };

/** An event of the job a worker runs for one partition. */
export type PartitionEvent = JobEvent & { partition?: number };

export type JobEventName = JobEvent["event"];
