// A pipeline with a `cluster:` section, run as one worker of its group (engine/cluster/worker.ts):
// the same job as a single process would run, once per partition the worker holds, each reading its
// partition's subject only and keeping its state under the worker's folder and in NATS.
import { runClusterWorker } from "../engine/cluster/worker.ts";
import type { JobResult } from "../engine/job.ts";
import type { JobView } from "../engine/jobView.ts";
import { NatsSource } from "../engine/sources/natsSource.ts";
import { jobOptions, natsConnectors, type RunOptions } from "./compile.ts";
import { behaviourMerger } from "../operators/behaviour.ts";
import type { PipelineSpec } from "./validate.ts";

export type ClusterRunOptions = RunOptions & {
  /** Told when a partition's job starts telling about itself, and with undefined when this worker no longer runs it. */
  onPartitionView?(partition: number, view: JobView | undefined): void;
};

/** Runs this process's worker of the pipeline's group until stopped, or until a bounded group has read everything. */
export async function runClusterPipeline(spec: PipelineSpec, run: ClusterRunOptions = {}): Promise<JobResult> {
  const cluster = spec.cluster!;
  if (!("nats" in spec.source)) throw new Error("a cluster needs a NATS source");
  const nats = spec.source.nats;
  const connectors = await natsConnectors(spec);
  const result = await runClusterWorker({
    servers: nats.servers,
    group: cluster.group,
    partitions: nats.partitions,
    leaseTtlMs: cluster.leaseTtlMs,
    replicas: cluster.replicas,
    stateDir: spec.state.dir,
    stateEncryptionKey: spec.state.encryptionKey,
    isBounded: nats.bounded,
    signal: run.signal,
    onEvent: run.onEvent,
    onPartitionView: run.onPartitionView,
    // Validation took one subject `<prefix>.>`: partition n is `<prefix>.n`.
    source: { stream: nats.stream, subjectPrefix: nats.subjects[0].slice(0, -1) },
    // Stages that work across users (clusters, quantiles) do so across the group's, in rounds.
    merger: spec.behaviour && behaviourMerger(spec.behaviour.stages),
    jobFor: (partition, stateDir, signal) => {
      // Progress, views and the final-checkpoint notice belong to the worker, not to each partition's job.
      const { onProgress, onView, onFinalCheckpoint, onPartitionView, ...partitionRun } = run;
      const options = jobOptions(spec, { ...partitionRun, signal }, connectors);
      return { ...options, stateDir, source: new NatsSource({ ...nats, partition, signal, log: run.onEvent, replicas: cluster.replicas }) };
    },
  });
  return { counters: { ...result.thisRun }, thisRun: result.thisRun, elapsedMs: result.elapsedMs, isComplete: result.isComplete, restoredFromCheckpoint: undefined };
}
