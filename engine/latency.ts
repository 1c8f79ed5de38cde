// Latency samples of a running job (how long outputs took to reach their sinks): recent ones for
// percentiles that move with the job, and every one for a cumulative histogram, as metrics want.

/** The latest `capacity` samples in a ring, their quantiles on demand, and a running count and sum. */
export class LatencyRecorder {
  private readonly ring: Float64Array;
  private next = 0;
  private filled = 0;
  /** Samples ever recorded, and their sum (seconds), as a Prometheus summary would count them. */
  count = 0;
  sumSeconds = 0;
  /** Called with each `record` (a latency in seconds, and how many outputs had it), e.g. to feed a histogram. */
  onSample?: (seconds: number, times: number) => void;

  constructor(private readonly capacity = 10_000) {
    this.ring = new Float64Array(capacity);
  }

  /** `times` outputs that took `seconds`. */
  record(seconds: number, times = 1): void {
    // More than the ring holds would only overwrite themselves.
    for (let i = Math.min(times, this.capacity); i > 0; i--) {
      this.ring[this.next] = seconds;
      this.next = (this.next + 1) % this.capacity;
      if (this.filled < this.capacity) this.filled++;
    }
    this.onSample?.(seconds, times);
    this.count += times;
    this.sumSeconds += seconds * times;
  }

  /** Quantiles (0..1) of the recent samples, in seconds; undefined before the first. */
  quantiles(qs: readonly number[]): number[] | undefined {
    if (this.filled === 0) return undefined;
    const sorted = Array.from(this.ring.subarray(0, this.filled)).sort((a, b) => a - b);
    return qs.map((q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
  }
}
