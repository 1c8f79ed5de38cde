// A pipeline with a `cluster:` section, run as one worker of its group (engine/cluster/worker.ts):
// the same job as a single process would run, once per partition the worker holds, each reading its
// partition's subject only and keeping its state under the worker's folder and in NATS.
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamManager } from "@nats-io/jetstream";
import { connectNats, lastSeqOf, jetstreamManager } from "../engine/nats.ts";
import { SourceUnreadable } from "../engine/errors.ts";
import type { NatsSourceSpec } from "./sections/source.ts";
import { runClusterWorker } from "../engine/cluster/worker.ts";
import type { JobResult } from "../engine/job.ts";
import type { JobView } from "../engine/jobView.ts";
import { NatsSource } from "../engine/sources/natsSource.ts";
import { jobOptions, type RunOptions } from "./compile.ts";
import type { PipelineSpec } from "./validate.ts";

/** Runs this process's worker of the pipeline's group until stopped, or until a bounded group has read everything. */
export type ClusterRunOptions = RunOptions & {
  /** Told when a partition's job starts telling about itself, and with undefined when this worker no longer runs it. */
  onPartitionView?(partition: number, view: JobView | undefined): void;
};

export async function runClusterPipeline(spec: PipelineSpec, run: ClusterRunOptions = {}): Promise<JobResult> {
  const cluster = spec.cluster!;
  if (!("nats" in spec.source)) throw new Error("a cluster needs a NATS source");
  const nats = spec.source.nats;
  const managers = new WeakMap<NatsConnection, JetStreamManager>();
  const partitionSubject = (partition: number) => `${nats.subjects[0].slice(0, -2)}.${partition}`;
  await checkSubjectsArePartitions(nats, run.signal);
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
    jobFor: (partition, stateDir, signal) => {
      // Progress, views and the final-checkpoint notice belong to the worker, not to each partition's job.
      const { onProgress, onView, onFinalCheckpoint, onPartitionView, ...partitionRun } = run;
      const options = jobOptions(spec, { ...partitionRun, signal });
      return { ...options, stateDir, source: new NatsSource({ ...nats, partition, signal, log: run.onEvent, replicas: cluster.replicas }) };
    },
    lastSeqOf: async (nc, partition) => {
      managers.set(nc, managers.get(nc) ?? (await jetstreamManager(nc)));
      return lastSeqOf(managers.get(nc)!, nats.stream, partitionSubject(partition));
    },
  });
  return { counters: { ...result.thisRun }, thisRun: result.thisRun, elapsedMs: result.elapsedMs, isComplete: result.isComplete, restoredFromCheckpoint: undefined };
}

/** Subjects the stream lists at most in a refusal. */
const LISTED_SUBJECTS = 5;

/**
 * Refuses a stream holding messages on subjects no worker reads: a worker reads partition n from
 * `<prefix>.n` alone, so `<prefix>.9` with 8 partitions (a publisher told of more partitions) or
 * `<prefix>.x` would be left unread for ever. A single process reads them (n mod partitions); a
 * cluster cannot, without a consumer per subject it might meet.
 */
async function checkSubjectsArePartitions(nats: NatsSourceSpec, signal: AbortSignal | undefined): Promise<void> {
  const nc = await connectNats({ servers: nats.servers, client: `source ${nats.stream}`, signal });
  try {
    const prefix = nats.subjects[0].slice(0, -1);
    const info = await streamInfoOf(await jetstreamManager(nc), nats.stream, `${prefix}>`);
    const unread = Object.keys(info?.state.subjects ?? {}).filter((subject) => {
      const n = Number(subject.slice(prefix.length));
      return !(Number.isInteger(n) && n >= 0 && n < nats.partitions && subject.slice(prefix.length) === String(n));
    });
    if (unread.length > 0) {
      const listed = unread.slice(0, LISTED_SUBJECTS).join(", ") + (unread.length > LISTED_SUBJECTS ? `, ... (${unread.length} subjects)` : "");
      throw new SourceUnreadable(
        `nats:${nats.stream}`,
        `it holds messages on ${listed}, which no worker of a cluster reads: partition n is read from ${prefix}n only, n from 0 to ${nats.partitions - 1}. Publish with --partitions ${nats.partitions}, or set source.nats.partitions to what the publisher uses`,
      );
    }
  } finally {
    await nc.close();
  }
}

async function streamInfoOf(jsm: JetStreamManager, stream: string, subjectsFilter: string) {
  try {
    return await jsm.streams.info(stream, { subjects_filter: subjectsFilter });
  } catch (error) {
    if (/stream not found/i.test(String((error as Error).message))) return undefined;
    throw error;
  }
}
