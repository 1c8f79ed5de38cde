// Watermark generators (Flink's shape: onEvent + onPeriodicEmit), idleness, and the per-partition
// tracker whose minimum is the pipeline's watermark. The rule that a watermark never goes backwards
// lives here and only here: `advanceWatermark`.
import { END_OF_TIME } from "./elements.ts";
import { WatermarkRegression } from "./errors.ts";

/** Sees every event time of one partition and says how far event time has progressed there. */
export type WatermarkGenerator = {
  onEvent(timeMs: number): void;
  /** The watermark this partition can promise now, or -Infinity before its first event. */
  onPeriodicEmit(): number;
  /** The watermark it would promise were its newest event at `timeMs` (event time following a clock). */
  watermarkAt(timeMs: number): number;
  /** The latest time an event of this partition could still have had: its newest plus the bound; -Infinity before its first. */
  horizonMs(): number;
  /** Its newest event time; -Infinity before its first. */
  newestEventMs(): number;
  snapshot(): number;
  restore(snapshot: number): void;
};

/** Promises that no event older than `maxOutOfOrdernessMs` behind the newest one seen will come. */
export function boundedOutOfOrderness(maxOutOfOrdernessMs: number): WatermarkGenerator {
  let maxTimeMs = -Infinity;
  return {
    onEvent(timeMs) {
      if (timeMs > maxTimeMs) maxTimeMs = timeMs;
    },
    onPeriodicEmit: () => maxTimeMs - maxOutOfOrdernessMs - 1,
    watermarkAt: (timeMs) => timeMs - maxOutOfOrdernessMs - 1,
    horizonMs: () => maxTimeMs + maxOutOfOrdernessMs,
    newestEventMs: () => maxTimeMs,
    snapshot: () => maxTimeMs,
    restore(snapshot) {
      maxTimeMs = snapshot;
    },
  };
}

/** Events arrive in time order: the watermark trails the newest event by one millisecond. */
export function monotonic(): WatermarkGenerator {
  return boundedOutOfOrderness(0);
}

/**
 * The one place a watermark moves: forward, or not at all. A caller that asks for a regression
 * has a bug, and hears about it.
 */
export function advanceWatermark(currentMs: number, nextMs: number): number {
  if (nextMs < currentMs) throw new WatermarkRegression(currentMs, nextMs);
  return nextMs;
}

export type WatermarkTrackerOptions = {
  partitions: number;
  newGenerator: () => WatermarkGenerator;
  /** Processing time without events after which a partition stops holding the watermark back; 0 = never. */
  idlenessMs: number;
  /**
   * When every partition is idle, event time follows the processing-time clock (as a partition whose
   * newest event is now would promise), so deadlines fire and windows close in a quiet period.
   * For live sources whose event times are wall-clock times. Default false: event time stands still.
   */
  advancesWhenIdle?: boolean;
  /** Processing-time clock, injectable for tests. Default: Date.now. */
  nowMs?: () => number;
};

export type WatermarkTrackerSnapshot = { watermarkMs: number; partitions: number[]; finished: boolean[] };

/**
 * The pipeline watermark: the minimum over active partitions of their own watermarks. An idle
 * partition (no events for `idlenessMs`) or a finished one is left out; when an idle partition
 * resumes it holds the watermark back again, but the watermark already emitted never regresses.
 * With every partition idle, event time stands still, or follows the clock (`advancesWhenIdle`).
 */
export class WatermarkTracker {
  private readonly generators: WatermarkGenerator[];
  private readonly lastEventAtMs: number[];
  private readonly finished: boolean[];
  private readonly nowMs: () => number;
  private currentMs = -Infinity;

  constructor(private readonly options: WatermarkTrackerOptions) {
    this.generators = Array.from({ length: options.partitions }, options.newGenerator);
    this.nowMs = options.nowMs ?? Date.now;
    const now = this.nowMs();
    this.lastEventAtMs = new Array(options.partitions).fill(now);
    this.finished = new Array(options.partitions).fill(false);
  }

  get watermarkMs(): number {
    return this.currentMs;
  }

  onEvent(partition: number, timeMs: number, arrivedAtMs: number): void {
    this.generators[partition].onEvent(timeMs);
    this.lastEventAtMs[partition] = arrivedAtMs;
  }

  /** A bounded partition that has nothing more to give no longer holds the watermark back. */
  finish(partition: number): void {
    this.finished[partition] = true;
  }

  /** Recomputes the watermark; returns it when it moved forward, undefined otherwise. */
  poll(): number | undefined {
    const now = this.nowMs();
    let minMs = Infinity;
    let active = 0;
    for (let p = 0; p < this.generators.length; p++) {
      if (this.finished[p]) continue;
      const isIdle = this.options.idlenessMs > 0 && now - this.lastEventAtMs[p] >= this.options.idlenessMs;
      if (isIdle) continue;
      active++;
      const partitionMs = this.generators[p].onPeriodicEmit();
      if (partitionMs < minMs) minMs = partitionMs;
    }
    // With every partition idle, event time stands still rather than jumping ahead, unless asked to follow the clock.
    if (active === 0 && this.options.advancesWhenIdle && this.isAnyUnfinished()) minMs = this.generators[0].watermarkAt(now);
    else if (active === 0) return undefined;
    if (minMs === Infinity || minMs <= this.currentMs) return undefined;
    this.currentMs = advanceWatermark(this.currentMs, minMs);
    return this.currentMs;
  }

  /**
   * The latest event time the input could have held: the newest event of any partition plus the
   * bound. Where a bounded input's event time ends, for operators that stop there.
   */
  horizonMs(): number {
    let horizonMs = -Infinity;
    for (const generator of this.generators) horizonMs = Math.max(horizonMs, generator.horizonMs());
    return horizonMs;
  }

  private isAnyUnfinished(): boolean {
    return this.finished.some((isFinished) => !isFinished);
  }

  /** Moves the watermark to `horizonMs()` when that is ahead; returns it when it moved. */
  reachHorizon(): number | undefined {
    const horizonMs = this.horizonMs();
    if (!Number.isFinite(horizonMs) || horizonMs <= this.currentMs) return undefined;
    this.currentMs = advanceWatermark(this.currentMs, horizonMs);
    return this.currentMs;
  }

  /** The source is exhausted: event time jumps to its end, so every window and timer fires. */
  end(): number {
    this.currentMs = advanceWatermark(this.currentMs, END_OF_TIME);
    return this.currentMs;
  }

  /** Each partition as it stands now: its promise, newest event, and whether it is idle or finished. */
  partitionsNow(): Array<{ watermarkMs: number; newestEventMs: number; isIdle: boolean; isFinished: boolean }> {
    const now = this.nowMs();
    return this.generators.map((g, p) => ({
      watermarkMs: g.onPeriodicEmit(),
      newestEventMs: g.newestEventMs(),
      isIdle: this.options.idlenessMs > 0 && now - this.lastEventAtMs[p] >= this.options.idlenessMs,
      isFinished: this.finished[p],
    }));
  }

  snapshot(): WatermarkTrackerSnapshot {
    return {
      watermarkMs: this.currentMs,
      partitions: this.generators.map((g) => g.snapshot()),
      finished: [...this.finished],
    };
  }

  restore(snapshot: WatermarkTrackerSnapshot): void {
    this.currentMs = snapshot.watermarkMs;
    snapshot.partitions.forEach((s, p) => this.generators[p]?.restore(s));
    snapshot.finished.forEach((f, p) => {
      if (p < this.finished.length) this.finished[p] = f;
    });
  }
}
