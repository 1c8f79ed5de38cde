// GET /metrics: the job in Prometheus' text format, with prom-client. A registry per job (not the
// process-wide one, so a process can hold several): counters and gauges read from the job's view at
// scrape time, histograms fed as checkpoints commit and as outputs reach their sinks. Label values
// are output kinds, partitions and bucket bounds: never anything of a user.
import { collectDefaultMetrics, Registry, type Metric } from "prom-client";
import { END_OF_TIME } from "../../engine/elements.ts";
import type { JobView } from "../../engine/jobView.ts";
import type { LatencyRecorder } from "../../engine/latency.ts";
import { WAKE_UP_STEPS_COUNTER } from "../../operators/behaviour.ts";
import type { HttpContext } from "./routes.ts";
import type { Route } from "./server.ts";

/** Output latency buckets (seconds), dense around the 500 ms promise. */
export const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10];
/** Checkpoint duration buckets (seconds). */
export const CHECKPOINT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

type Sample = { labels?: Record<string, string | number>; value: number };
type MetricType = "counter" | "gauge" | "histogram";

/** A metric whose samples are read when scraped; no samples (only HELP and TYPE) when there is nothing to tell yet. */
class ScrapedMetric {
  readonly aggregator = "sum";

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricType,
    private readonly read: () => Sample[],
  ) {}

  get() {
    const values = this.read().map(({ labels = {}, value }) => ({ labels, value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {}
}

/**
 * A cumulative histogram that takes `times` equal samples at once: outputs reach their sinks in
 * groups that share a latency, and one observe per output would cost a scan of the buckets each.
 */
export class GroupedHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bucketsS: readonly number[],
  ) {
    this.counts = bucketsS.map(() => 0);
  }

  observe(value: number, times = 1): void {
    let i = 0;
    while (i < this.bucketsS.length && value > this.bucketsS[i]) i++;
    if (i < this.bucketsS.length) this.counts[i] += times;
    this.sum += value * times;
    this.count += times;
  }

  get() {
    let cumulative = 0;
    const bucket = `${this.name}_bucket`;
    const values = this.bucketsS.map((le, i) => ({ metricName: bucket, labels: { le }, value: (cumulative += this.counts[i]) }));
    values.push({ metricName: bucket, labels: { le: "+Inf" as unknown as number }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {} as { le: number }, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {} as { le: number }, value: this.count });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.counts = this.bucketsS.map(() => 0);
    this.sum = this.count = 0;
  }
}

/** Feeds `histogram` from `recorder` from now on, after whoever listened before. */
function feed(recorder: LatencyRecorder, histogram: GroupedHistogram): void {
  const before = recorder.onSample;
  recorder.onSample = (seconds, times) => {
    before?.(seconds, times);
    histogram.observe(seconds, times);
  };
}

/**
 * Processing time minus the watermark, in seconds: how far event time trails the clock. None
 * before the first watermark (nothing is promised yet, so nothing is behind); 0 once a bounded
 * input has ended (event time is at its end: nothing is left to wait for).
 */
export function watermarkLagSeconds(watermarkMs: number, nowMs: number): number | undefined {
  if (watermarkMs === -Infinity) return undefined;
  if (watermarkMs >= END_OF_TIME) return 0;
  return (nowMs - watermarkMs) / 1000;
}

/** The job's metrics in a registry of its own, with the process defaults (CPU, memory, event loop lag, GC). */
export function jobRegistry(view: JobView, nowMs: () => number = Date.now): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges prom-client names as counters (`promtool check metrics` refuses them); the same counts by
  // type stay, as nodejs_active_handles, nodejs_active_requests and nodejs_active_resources.
  for (const misnamed of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) registry.removeSingleMetric(misnamed);
  const add = (metric: { name: string }) => registry.registerMetric(metric as unknown as Metric);
  const counter = (name: string, help: string, read: () => number) => add(new ScrapedMetric(name, help, "counter", () => [{ value: read() }]));
  const gauge = (name: string, help: string, read: () => Sample[]) => add(new ScrapedMetric(name, help, "gauge", read));

  counter("flusso_events_read_total", "Items read from the source, good or bad, since the job first started (across restarts).", () => view.counters().read);
  counter("flusso_events_dead_lettered_total", "Items sent to the dead-letter output: unreadable, invalid, or an operator failed on them.", () => view.counters().deadLettered);
  counter("flusso_events_late_total", "Events that arrived after the watermark had passed their window or step.", () => view.counters().late);
  counter("flusso_wake_ups_total", "Steps of a key woken by event time (a deadline, an expiry, inactivity) rather than by an event.", () => view.counters()[WAKE_UP_STEPS_COUNTER] ?? 0);
  counter("flusso_checkpoints_total", "Checkpoints taken since the job first started.", () => view.counters().checkpoints);
  add(
    new ScrapedMetric("flusso_outputs_total", "Outputs written to sinks in this run, by output kind (one per sink that takes it).", "counter", () =>
      Object.entries(view.outputsByKind()).map(([kind, value]) => ({ labels: { kind }, value })),
    ),
  );
  gauge("flusso_watermark_lag_seconds", "Processing time minus the watermark; absent before the first watermark, 0 once a bounded input has ended.", () => {
    const lagS = watermarkLagSeconds(view.watermarks().watermarkMs, nowMs());
    return lagS === undefined ? [] : [{ value: lagS }];
  });
  gauge("flusso_checkpoint_size_bytes", "Bytes the last committed checkpoint wrote (state changes, held outputs, metadata).", () => {
    const last = view.lastCheckpoint();
    return last === undefined ? [] : [{ value: last.bytes }];
  });
  gauge("flusso_last_checkpoint_timestamp_seconds", "When the last checkpoint committed (Unix time).", () => {
    const last = view.lastCheckpoint();
    return last === undefined ? [] : [{ value: last.committedAtMs / 1000 }];
  });
  gauge("flusso_state_keys", "Entries held in keyed state and timers, over every registered state.", () => [{ value: view.stateEntries() }]);
  gauge("flusso_source_pending_messages", "Messages waiting to be read, by partition (NATS: buffered, plus the server's backlog shared out by the buffer's partition mix).", () =>
    // flatMap skips holes: partitions another worker of a cluster reads.
    (view.source().pendingMessages ?? []).flatMap((value, partition) => [{ labels: { partition }, value }]),
  );

  const checkpointDuration = new GroupedHistogram("flusso_checkpoint_duration_seconds", "Checkpoint durations: from the cut until the checkpoint was durable.", CHECKPOINT_BUCKETS_S);
  add(checkpointDuration);
  view.onCheckpoint((checkpoint) => checkpointDuration.observe((checkpoint.flushMs + checkpoint.durableMs) / 1000));

  const { output, endToEnd } = view.latency();
  const outputLatency = new GroupedHistogram("flusso_output_latency_seconds", "From an event's arrival at the source to its outputs reaching their sink.", LATENCY_BUCKETS_S);
  add(outputLatency);
  feed(output, outputLatency);
  if (endToEnd !== undefined) {
    const endToEndLatency = new GroupedHistogram("flusso_end_to_end_latency_seconds", "From the publisher's stamp in an event (http.latencyStampField) to its outputs reaching their sink.", LATENCY_BUCKETS_S);
    add(endToEndLatency);
    feed(endToEnd, endToEndLatency);
  }
  return registry;
}

export function metricsRoutes({ view }: HttpContext): Route[] {
  const registry = jobRegistry(view);
  return [{ method: "GET", path: "/metrics", handle: async () => ({ body: await registry.metrics(), contentType: registry.contentType }) }];
}
