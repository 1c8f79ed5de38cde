// A job as the HTTP modules see it (engine/jobView.ts), every part settable by a test, and an
// operator with the behaviour operator's named views (segments, clusters, triggers per channel).
import type { CheckpointRecord, JobPhase, JobView } from "../../../engine/jobView.ts";
import { LatencyRecorder } from "../../../engine/latency.ts";
import type { OperatorView } from "../../../engine/operator.ts";

/** A job as the dashboard sees it, every part settable by the test. */
export function fakeJob() {
  const checkpointListeners: Array<(checkpoint: CheckpointRecord) => void> = [];
  let checkpoint: CheckpointRecord | undefined;
  const job = {
    phase: "running" as JobPhase,
    notReady: undefined as string | undefined,
    counters: { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 },
    watermarkMs: -Infinity,
    /** Setting it commits a checkpoint: the job's checkpoint listeners hear of it. */
    get checkpoint(): CheckpointRecord | undefined {
      return checkpoint;
    },
    set checkpoint(committed: CheckpointRecord | undefined) {
      checkpoint = committed;
      if (committed !== undefined) for (const listener of checkpointListeners) listener(committed);
    },
    latency: new LatencyRecorder(),
    operators: [] as { name: string; view?: OperatorView }[],
  };
  const view: JobView = {
    status: () => ({ phase: job.phase, notReady: job.notReady }),
    counters: () => ({ ...job.counters }),
    outputsByKind: () => ({}),
    watermarks: () => ({ watermarkMs: job.watermarkMs, partitions: [] }),
    lastCheckpoint: () => job.checkpoint,
    stateEntries: () => 0,
    operators: () => job.operators,
    source: () => ({ description: "fake", partitions: 1 }),
    latency: () => ({ output: job.latency }),
    onCheckpoint: (listener) => void checkpointListeners.push(listener),
  };
  return { job, view };
}

/** An operator with the behaviour operator's named views, answering what `counts` holds at the time. */
export function behaviourOperator(counts: { segments: unknown; clusters: Record<string, number>; triggersByChannel: Record<string, number> }) {
  return {
    name: "behaviour",
    view: {
      keyCount: () => 0,
      key: () => undefined,
      views: { segments: () => counts.segments, clusters: () => counts.clusters, triggersByChannel: () => counts.triggersByChannel },
    },
  };
}
