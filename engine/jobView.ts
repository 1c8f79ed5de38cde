// What a running job tells about itself, for whoever watches it (an HTTP server, metrics, a
// dashboard): counters, watermarks, checkpoints, health, and each operator's view of its state.
// Read on the job's own thread between two batches, it never sees a half-applied step.
import type { CheckpointInfo, JobCounters } from "./job.ts";
import type { LatencyRecorder } from "./latency.ts";
import type { OperatorView } from "./operator.ts";
import type { SourceProgress } from "./sources/source.ts";

/** Where the job is in its life. */
export type JobPhase = "starting" | "restoring" | "running" | "ended" | "stopped" | "failed";

export type JobStatus = {
  phase: JobPhase;
  /** Why the job cannot serve current results now, if it cannot (restoring, a server out of reach, its failure). */
  notReady?: string;
};

export type PartitionWatermark = {
  /** What this partition promises (-Infinity before its first event). */
  watermarkMs: number;
  /** Its newest event time (-Infinity before its first event). */
  newestEventMs: number;
  isIdle: boolean;
  isFinished: boolean;
  /** Its number in the source, when that is not its place in the list (a cluster worker lists the partitions it holds). */
  partition?: number;
};

/** A checkpoint that committed, when (processing time) and what it cost. */
export type CheckpointRecord = CheckpointInfo & { committedAtMs: number };

export type JobView = {
  status(): JobStatus;
  counters(): Readonly<JobCounters>;
  /** Outputs written to sinks so far in this run, by output kind ("window", "trigger", ..., "late", "dead_letter"). */
  outputsByKind(): Readonly<Record<string, number>>;
  /** The pipeline's watermark and each partition's. */
  watermarks(): { watermarkMs: number; partitions: PartitionWatermark[] };
  lastCheckpoint(): CheckpointRecord | undefined;
  /** Entries held in keyed state and timers, over every registered state. */
  stateEntries(): number;
  /** The operators in the order they were built, each with its view when it offers one. */
  operators(): ReadonlyArray<{ name: string; view?: OperatorView }>;
  /**
   * `progress`: how far a bounded source has read, where it knows its size (Source.progress);
   * `pendingMessages` by partition number, with a hole for a partition this process does not read.
   */
  source(): { description: string; partitions: number; pendingMessages?: readonly number[]; progress?: SourceProgress };
  /**
   * Output latency: from an event's arrival at the source to its outputs reaching their sinks
   * (`output`), and from a stamp the publisher put in the event (`endToEnd`, when the job measures it).
   */
  latency(): { output: LatencyRecorder; endToEnd?: LatencyRecorder };
  /** Calls `listener` with each checkpoint that commits from now on (e.g. to feed a histogram of their durations). */
  onCheckpoint(listener: (checkpoint: CheckpointRecord) => void): void;
};
