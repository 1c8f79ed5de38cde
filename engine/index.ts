// `flusso/engine`: the runtime's building blocks for code that builds a job without a pipeline file.
// Records and watermarks, the Source and Sink contracts with the built-in ones, keyed state and
// timers over the LMDB store, operators and `runJob`. The pipeline file's door is the package root.

// Elements: records carry their key and event time; watermarks are their own element.
export { END_OF_TIME, record, watermark, type Element, type KindedOutput, type StreamRecord, type Watermark } from "./elements.ts";
// Event time: the watermark generators (Flink's two hooks) and the one rule that a watermark only moves forward.
export { advanceWatermark, boundedOutOfOrderness, monotonic, type WatermarkGenerator } from "./watermarks.ts";
// The job: a source, a decoder, a graph of operators and sinks, checkpointed at consistent cuts.
export {
  OPERATOR_FAILURE_REASON,
  runJob,
  type CheckpointInfo,
  type DeadLetter,
  type Decoded,
  type GraphBuilder,
  type JobCounters,
  type JobOptions,
  type JobResult,
  type SinkRoute,
} from "./job.ts";
// What a job tells as it happens (start, restore, connections, slow checkpoints, falling behind, its end).
export type { ConnectionEvent, JobEvent } from "./jobEvents.ts";
// Operators: a definition builds its logic from a restored snapshot; `operate` routes errors and teardown.
export { operate, type OperatorContext, type OperatorDefinition, type OperatorLogic, type Output } from "./operator.ts";
// Keyed state and timers, made durable by the store at every checkpoint.
export { KeyedMapState, KeyedValueState, type KeyedStateOptions } from "./keyedState.ts";
export { TimerService } from "./timers.ts";
export { StateStore, type Checkpointable, type CheckpointMeta, type CommitInfo, type StateDelta } from "./store.ts";
// Sources: the contract, and files and NATS JetStream; a key's partition.
export { partitionOf, partitionOfSubject } from "./partitioning.ts";
export type { Source, SourceBatch, SourceItem, SourceProgress } from "./sources/source.ts";
export { FileSource, type FileFormat, type FileSourceOptions } from "./sources/fileSource.ts";
export { NatsSource, type NatsSourceOptions } from "./sources/natsSource.ts";
// Sinks: the contract, and files, stdout and NATS JetStream.
export type { Sink, SinkRecovery } from "./sinks/sink.ts";
export { FileSink } from "./sinks/fileSink.ts";
export { StdoutSink } from "./sinks/stdoutSink.ts";
export { NatsSink, type NatsSinkOptions } from "./sinks/natsSink.ts";
// Limits every decoded value is held to.
export { DEFAULT_MAX_LINE_BYTES, MAX_COLLECTION_ENTRIES, MAX_LINE_BYTES, MAX_VALUE_DEPTH, valueLimitViolation } from "./valueLimits.ts";
// What goes wrong at run time, each naming what was violated.
export {
  EngineError,
  SinkLost,
  SinkPositionLost,
  SourcePositionInvalid,
  SourceUnreadable,
  StateCorrupt,
  StateDirForeign,
  StateDirLocked,
  StateDirUnusable,
  StateKeyChanged,
  StateMismatch,
  StateUnreadable,
  WatermarkRegression,
} from "./errors.ts";
