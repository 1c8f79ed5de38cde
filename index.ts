// flusso as a library: load a pipeline file and run it, in this thread, with what `flusso run` does
// around it left to the caller (signals, progress lines). `flusso/engine` holds the building blocks.
//
//   import { loadPipeline, runPipeline } from "flusso";
//   const result = await runPipeline(loadPipeline("config/rees46.yaml"), { reset: true });

export { loadPipeline } from "./pipelines/load.ts";
export { runPipeline, type RunOptions } from "./pipelines/compile.ts";
export type { PipelineSpec } from "./pipelines/validate.ts";
export { ConfigError, PipelineInvalid, ResetStageUnknown } from "./pipelines/errors.ts";
export { EngineError } from "./engine/errors.ts";
export type { CheckpointInfo, DeadLetter, JobCounters, JobResult } from "./engine/job.ts";
export type { ConnectionEvent, JobEvent } from "./engine/jobEvents.ts";
