// A cluster worker as one job to whoever watches it (the HTTP API, metrics, the dashboard): the views
// of the partitions' jobs it runs now, added up. It tells of this worker only; what the whole group
// holds is asked of every worker (clusterQueries.ts).
import type { JobCounters } from "../../engine/job.ts";
import type { CheckpointRecord, JobStatus, JobView, PartitionWatermark } from "../../engine/jobView.ts";
import { LatencyRecorder } from "../../engine/latency.ts";
import type { SourceProgress } from "../../engine/sources/source.ts";

/** A partition's job as this worker runs it; `isCurrent` turns false when the worker no longer does. */
type Held = { view: JobView; isCurrent: boolean };

export class ClusterView implements JobView {
  private readonly held = new Map<number, Held>();
  private readonly checkpointListeners: Array<(checkpoint: CheckpointRecord) => void> = [];
  /**
   * One recorder for every partition's outputs: recorders keep a ring of recent samples, which
   * cannot be merged cheaply at read time, so each partition's samples are copied here as they come.
   */
  private readonly recorders: { output: LatencyRecorder; endToEnd?: LatencyRecorder };

  /**
   * `partitions`: how many the group's source has; `measuresEndToEnd`: the jobs stamp end-to-end
   * latency (http.latencyStampField), known before any job runs since metrics register it once.
   */
  constructor(
    private readonly partitions: number,
    private readonly sourceDescription: string,
    measuresEndToEnd: boolean,
  ) {
    this.recorders = { output: new LatencyRecorder(), ...(measuresEndToEnd ? { endToEnd: new LatencyRecorder() } : {}) };
  }

  /** The partition's job view from now on, or (undefined) this worker no longer runs it. */
  setPartition(partition: number, view: JobView | undefined): void {
    const before = this.held.get(partition);
    if (before !== undefined) before.isCurrent = false;
    this.held.delete(partition);
    if (view === undefined) return;
    const held: Held = { view, isCurrent: true };
    this.held.set(partition, held);
    const { output, endToEnd } = view.latency();
    copySamples(output, this.recorders.output, held);
    if (endToEnd !== undefined && this.recorders.endToEnd !== undefined) copySamples(endToEnd, this.recorders.endToEnd, held);
    view.onCheckpoint((checkpoint) => {
      if (held.isCurrent) for (const listener of this.checkpointListeners) listener(checkpoint);
    });
  }

  /** The partitions this worker runs now, in order. */
  heldPartitions(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  /** The job view of `partition`, when this worker runs it. */
  partitionView(partition: number): JobView | undefined {
    return this.held.get(partition)?.view;
  }

  status(): JobStatus {
    if (this.held.size === 0) return { phase: "starting", notReady: "this worker holds no partition yet" };
    const notRunning = this.each().flatMap(([partition, view]) => {
      const status = view.status();
      return status.phase === "running" && status.notReady === undefined ? [] : [{ partition, ...status }];
    });
    if (notRunning.length === 0) return { phase: "running" };
    const reasons = notRunning.map(({ partition, phase, notReady }) => `partition ${partition}: ${notReady ?? phase}`);
    return { phase: notRunning[0].phase, notReady: reasons.join("; ") };
  }

  counters(): Readonly<JobCounters> {
    return sumOf(this.each().map(([, view]) => view.counters()), { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 });
  }

  outputsByKind(): Readonly<Record<string, number>> {
    return sumOf(this.each().map(([, view]) => view.outputsByKind()), {});
  }

  /** The worker's watermark is its slowest partition's; each partition is listed under its number in the source. */
  watermarks(): { watermarkMs: number; partitions: PartitionWatermark[] } {
    // Each partition's job reads one partition, its own partition 0.
    const partitions = this.each().flatMap(([partition, view]) => view.watermarks().partitions.map((p) => ({ ...p, partition })));
    const watermarkMs = this.held.size === 0 ? -Infinity : Math.min(...this.each().map(([, view]) => view.watermarks().watermarkMs));
    return { watermarkMs, partitions };
  }

  lastCheckpoint(): CheckpointRecord | undefined {
    let latest: CheckpointRecord | undefined;
    for (const [, view] of this.each()) {
      const last = view.lastCheckpoint();
      if (last !== undefined && (latest === undefined || last.committedAtMs > latest.committedAtMs)) latest = last;
    }
    return latest;
  }

  stateEntries(): number {
    return this.each().reduce((sum, [, view]) => sum + view.stateEntries(), 0);
  }

  /** None: a key's state is asked of its partition's job (clusterQueries.ts), never of the worker as a whole. */
  operators(): ReadonlyArray<{ name: string; view?: undefined }> {
    return [];
  }

  /** `pendingMessages` by partition number; a partition another worker reads is a hole (null in JSON). */
  source(): ReturnType<JobView["source"]> {
    const pendingMessages: number[] = [];
    const progresses: Array<SourceProgress | undefined> = [];
    for (const [partition, view] of this.each()) {
      const source = view.source();
      const pending = source.pendingMessages?.[0];
      if (pending !== undefined) pendingMessages[partition] = pending;
      progresses.push(source.progress);
    }
    const description = `${this.sourceDescription}, partitions ${this.heldPartitions().join(", ") || "none"} of ${this.partitions} on this worker`;
    return { description, partitions: this.partitions, pendingMessages, ...progressOf(progresses) };
  }

  latency(): { output: LatencyRecorder; endToEnd?: LatencyRecorder } {
    return this.recorders;
  }

  onCheckpoint(listener: (checkpoint: CheckpointRecord) => void): void {
    this.checkpointListeners.push(listener);
  }

  private each(): Array<[number, JobView]> {
    return [...this.held].map(([partition, { view }]) => [partition, view]);
  }
}

/** Copies `from`'s samples into `to` while `held` is current (the partition's job is gone otherwise). */
function copySamples(from: LatencyRecorder, to: LatencyRecorder, held: Held): void {
  const before = from.onSample;
  from.onSample = (seconds, times) => {
    before?.(seconds, times);
    if (held.isCurrent) to.record(seconds, times);
  };
}

function sumOf<T extends Record<string, number>>(parts: ReadonlyArray<Readonly<Record<string, number>>>, zero: T): T {
  const sum: Record<string, number> = { ...zero };
  for (const part of parts) for (const [name, n] of Object.entries(part)) sum[name] = (sum[name] ?? 0) + n;
  return sum as T;
}

/** How far the partitions have read, added up; none unless every partition knows its own. */
function progressOf(progresses: ReadonlyArray<SourceProgress | undefined>): { progress?: SourceProgress } {
  if (progresses.length === 0 || progresses.some((p) => p === undefined)) return {};
  return { progress: { done: progresses.reduce((n, p) => n + p!.done, 0), total: progresses.reduce((n, p) => n + p!.total, 0) } };
}
