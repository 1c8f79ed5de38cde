// Output latency: every output is charged to the arrival of what caused it, and recorded when it
// reaches its sink. Outputs are counted per sink in groups that share a cause (no object per
// output), and a group is recorded once: at the cut for a sink that writes straight out, when its
// checkpoint's outputs are delivered for a sink that holds them until the checkpoint commits.
import { LatencyRecorder } from "./latency.ts";

/** A cause without a publisher's stamp: a wake-up by the clock, or a job that measures none. */
export const NO_STAMP = -Infinity;

/**
 * What outputs written now are charged to. The job runs a batch synchronously, so this is set as
 * the batch arrives (`arrivalMs`: when the source delivered it) and as each record goes in
 * (`stampMs`: its publisher's stamp); outputs that fire on the watermark after the batch belong to
 * the batch whose arrival moved it, those of an idle advance to the moment of the advance.
 */
export class OutputCause {
  arrivalMs = 0;
  stampMs = NO_STAMP;

  /** A batch arrived at `arrivalMs` (processing time); until a record says otherwise, no stamp. */
  arrived(arrivalMs: number): void {
    this.arrivalMs = arrivalMs;
    this.stampMs = NO_STAMP;
  }
}

/** Groups of outputs with one cause, in parallel arrays: no object per output or per group. */
class Groups {
  arrivalMs: number[] = [];
  stampMs: number[] = [];
  counts: number[] = [];

  add(arrivalMs: number, stampMs: number): void {
    const last = this.counts.length - 1;
    if (last >= 0 && this.arrivalMs[last] === arrivalMs && this.stampMs[last] === stampMs) this.counts[last]++;
    else {
      this.arrivalMs.push(arrivalMs);
      this.stampMs.push(stampMs);
      this.counts.push(1);
    }
  }

  get isEmpty(): boolean {
    return this.counts.length === 0;
  }
}

/** Where latencies go: from arrival (`output`), and from the publisher's stamp (`endToEnd`, when measured). */
export type LatencyRecorders = { output: LatencyRecorder; endToEnd?: LatencyRecorder };

/** One sink's outputs on their way: since the last cut, and held by checkpoints not yet delivered. */
export class SinkLatency {
  private pending = new Groups();
  private readonly held: Array<{ checkpointId: number; groups: Groups }> = [];

  constructor(
    private readonly cause: OutputCause,
    private readonly recorders: LatencyRecorders,
  ) {}

  /** One output was written now. */
  wrote(): void {
    this.pending.add(this.cause.arrivalMs, this.cause.stampMs);
  }

  /** At a cut, for a sink that does not hold its outputs: what it was given is out. */
  reached(nowMs: number): void {
    this.record(this.pending, nowMs);
    this.pending = new Groups();
  }

  /** At a cut, for a holding sink: what it was given waits for checkpoint `checkpointId`. */
  hold(checkpointId: number): void {
    if (this.pending.isEmpty) return;
    this.held.push({ checkpointId, groups: this.pending });
    this.pending = new Groups();
  }

  /** The sink has delivered everything checkpoints up to `checkpointId` held. */
  delivered(checkpointId: number, nowMs: number): void {
    while (this.held.length > 0 && this.held[0].checkpointId <= checkpointId) this.record(this.held.shift()!.groups, nowMs);
  }

  private record({ arrivalMs, stampMs, counts }: Groups, nowMs: number): void {
    const { output, endToEnd } = this.recorders;
    for (let i = 0; i < counts.length; i++) {
      output.record(Math.max(0, nowMs - arrivalMs[i]) / 1000, counts[i]);
      // A publisher's clock ahead of ours would give a negative latency: it counts as none.
      if (endToEnd !== undefined && stampMs[i] !== NO_STAMP) endToEnd.record(Math.max(0, nowMs - stampMs[i]) / 1000, counts[i]);
    }
  }
}
