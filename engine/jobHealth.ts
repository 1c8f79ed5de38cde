// When a job is in trouble an operator should hear of: checkpoints that take too long, and a job
// falling behind its input. Both rules live here, and so does how often a warning may repeat.
import type { JobEvent } from "./jobEvents.ts";

/** A checkpoint is slow above half its interval, and never below 1 s (short intervals in tests and demos). */
export const CHECKPOINT_SLOW = { fractionOfInterval: 0.5, minMs: 1_000 } as const;

/**
 * Falling behind, judged on samples `sampleMs` apart over the last `samples` of them:
 * - a source that knows its backlog (NATS): the messages waiting grew at every sample;
 * - any source: the watermark lag (processing time minus the watermark) grew at every sample, by
 *   `minLagGrowthMs` in all, and no batch came back short meanwhile (a short batch: the source had
 *   nothing more waiting, so an idle source whose event time stands still is not behind).
 * A warning repeats at most every `repeatMs` while the job stays behind; caught-up is said once.
 */
export const FALLING_BEHIND = { sampleMs: 5_000, samples: 3, minLagGrowthMs: 5_000, repeatMs: 60_000 } as const;

type Sample = { atMs: number; lagMs: number; pending?: number; wasShort: boolean };

/** Watches a job's checkpoints and progress; `emit` hears the warnings, already rate-limited. */
export class JobHealth {
  private readonly samples: Sample[] = [];
  private wasShortSinceSample = false;
  private nextSampleAtMs = -Infinity;
  private behindSinceMs?: number;
  private lastBehindWarningMs = -Infinity;
  private lastSlowWarningMs = -Infinity;

  constructor(
    private readonly emit: (event: JobEvent) => void,
    private readonly checkpointIntervalMs: number,
  ) {}

  /** A checkpoint committed after `durationMs` (from its start to durable). */
  onCheckpoint(checkpointId: number, durationMs: number, nowMs: number): void {
    const slowMs = Math.max(CHECKPOINT_SLOW.minMs, this.checkpointIntervalMs * CHECKPOINT_SLOW.fractionOfInterval);
    if (durationMs <= slowMs || nowMs - this.lastSlowWarningMs < FALLING_BEHIND.repeatMs) return;
    this.lastSlowWarningMs = nowMs;
    this.emit({ event: "checkpoint-slow", checkpointId, durationMs: Math.round(durationMs), intervalMs: this.checkpointIntervalMs });
  }

  /**
   * After each batch: cheap (one comparison) except once every `sampleMs`. `isShort`: the batch had
   * fewer items than asked; `pending`: read only at a sample, where the source knows its backlog.
   */
  onBatch(nowMs: number, isShort: boolean, watermarkMs: number, pending: () => number | undefined): void {
    if (isShort) this.wasShortSinceSample = true;
    if (nowMs < this.nextSampleAtMs) return;
    this.nextSampleAtMs = nowMs + FALLING_BEHIND.sampleMs;
    this.sample({ atMs: nowMs, lagMs: Number.isFinite(watermarkMs) ? nowMs - watermarkMs : NaN, pending: pending(), wasShort: this.wasShortSinceSample });
    this.wasShortSinceSample = false;
  }

  private sample(sample: Sample): void {
    this.samples.push(sample);
    if (this.samples.length > FALLING_BEHIND.samples + 1) this.samples.shift();
    const isBehind = this.isBehind();
    if (isBehind) {
      this.behindSinceMs ??= this.samples[0].atMs;
      if (sample.atMs - this.lastBehindWarningMs >= FALLING_BEHIND.repeatMs) {
        this.lastBehindWarningMs = sample.atMs;
        this.emit({ event: "falling-behind", lagMs: Math.round(sample.lagMs), forMs: sample.atMs - this.behindSinceMs, ...(sample.pending === undefined ? {} : { pendingMessages: sample.pending }) });
      }
    } else if (this.behindSinceMs !== undefined) {
      this.behindSinceMs = undefined;
      if (this.lastBehindWarningMs > -Infinity) this.emit({ event: "caught-up", lagMs: Math.round(sample.lagMs) });
      this.lastBehindWarningMs = -Infinity;
    }
  }

  private isBehind(): boolean {
    const s = this.samples;
    if (s.length < FALLING_BEHIND.samples + 1) return false;
    const grows = (value: (x: Sample) => number | undefined) => s.every((x, i) => i === 0 || (value(x) ?? NaN) > (value(s[i - 1]) ?? NaN));
    if (s.every((x) => x.pending !== undefined)) return s.at(-1)!.pending! > 0 && grows((x) => x.pending);
    const lagGrowthMs = s.at(-1)!.lagMs - s[0].lagMs;
    return grows((x) => x.lagMs) && lagGrowthMs >= FALLING_BEHIND.minLagGrowthMs && s.slice(1).every((x) => !x.wasShort);
  }
}
