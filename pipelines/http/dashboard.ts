// The live dashboard: GET / serves a static page (pipelines/http/dashboard/) that draws, with uPlot
// served from the package (no CDN: it works offline), what a sampler reads from the job once a
// second. The page gets the samples as server-sent events (/api/v1/stream), the history first, or
// polls them as JSON (/api/v1/series).
import { EXPERIMENT_OUTPUT } from "../../operators/experiments.ts";
import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { createRequire } from "node:module";
import type { JobPhase, JobView } from "../../engine/jobView.ts";
import type { HttpContext } from "./routes.ts";
import type { Route } from "./server.ts";

/** How often the sampler reads the job. */
export const SAMPLE_INTERVAL_MS = 1000;
/** Samples kept: the last 10 minutes at one a second. */
export const HISTORY_SAMPLES = 600;
/** What a stream's client may leave unread (a few history's worth) before it is dropped. */
const MAX_UNREAD_BYTES = 4 * 1024 * 1024;

/** One reading of the job; rates are over the time since the previous reading. */
export type Sample = {
  /** Processing time of the reading, epoch ms. */
  timeMs: number;
  phase: JobPhase;
  /** Why the job cannot serve current results, when it cannot. */
  notReady?: string;
  /** Items read from the source, ever (counted across restores). */
  read: number;
  eventsPerSecond: number;
  /** Output latency (arrival at the source to the sink) of recent outputs; null when none reached a sink since the previous reading. */
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  /** The pipeline's watermark, epoch ms; null before the first event and at the end of time. */
  watermarkMs: number | null;
  /** Processing time minus the watermark; null when there is no watermark. */
  watermarkLagSeconds: number | null;
  /** The slowest checkpoint that committed since the previous reading, from its cut to its being durable; null when none did. */
  checkpointMs: number | null;
  deadLetters: number;
  deadLettersPerSecond: number;
  late: number;
  latePerSecond: number;
  /** From the behaviour operator's named views, when the pipeline has them: members per group and segment, and per tag. */
  segments?: { groups: Record<string, Record<string, number>>; tags: Record<string, number> };
  /** Triggers sent per channel, ever. */
  triggersByChannel?: Record<string, number>;
  /** Members per behavioural cluster. */
  clusters?: Record<string, number>;
};

/** What the page needs before the first sample: the pipeline's name and the samples so far. */
/** `experiments`: the pipeline runs some, whose reports the page shows (from /api/v1/experiments). */
export type Series = { name: string; intervalMs: number; samples: Sample[]; experiments: boolean };

/** The counters a rate is computed from, as they were at the previous reading. */
type Reading = { timeMs: number; phase: JobPhase; read: number; deadLetters: number; late: number; latencyCount: number };

/** Reads the job every `intervalMs`, keeps the last `capacity` samples and hands each new one to the subscribers. */
export class DashboardSampler {
  readonly samples: Sample[] = [];
  private readonly subscribers = new Set<(sample: Sample) => void>();
  private previous?: Reading;
  private timer?: NodeJS.Timeout;
  /** Checkpoints come every 100 ms with a NATS sink: a sample shows the slowest since the previous one, not the last. */
  private slowestCheckpointMs: number | null = null;

  constructor(
    private readonly view: JobView,
    private readonly nowMs: () => number = Date.now,
    private readonly capacity = HISTORY_SAMPLES,
  ) {
    view.onCheckpoint((checkpoint) => {
      const ms = checkpoint.flushMs + checkpoint.durableMs;
      if (this.slowestCheckpointMs === null || ms > this.slowestCheckpointMs) this.slowestCheckpointMs = ms;
    });
  }

  /** Samples every `intervalMs` until `stop()`; the timer never keeps the process up. */
  start(intervalMs = SAMPLE_INTERVAL_MS): void {
    this.timer ??= setInterval(() => this.sample(), intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Calls `subscriber` with each sample from now on; returns the unsubscribe. */
  subscribe(subscriber: (sample: Sample) => void): () => void {
    this.subscribers.add(subscriber);
    return () => this.subscribers.delete(subscriber);
  }

  /** Reads the job now, keeps the sample and hands it on. */
  sample(): Sample {
    const sample = this.read();
    this.samples.push(sample);
    if (this.samples.length > this.capacity) this.samples.splice(0, this.samples.length - this.capacity);
    for (const subscriber of this.subscribers) subscriber(sample);
    return sample;
  }

  private read(): Sample {
    const { view } = this;
    const timeMs = this.nowMs();
    const { phase, notReady } = view.status();
    const counters = view.counters();
    const latency = view.latency().output;
    const { watermarkMs } = view.watermarks();
    const hasWatermark = Number.isFinite(watermarkMs) && Math.abs(watermarkMs) <= 8.64e15;
    const now: Reading = { timeMs, phase, read: counters.read, deadLetters: counters.deadLettered, late: counters.late, latencyCount: latency.count };
    // Counters jump when a restore brings back a checkpoint's: rates start from a reading taken while running.
    const before = this.previous !== undefined && this.previous.phase !== "starting" && this.previous.phase !== "restoring" ? this.previous : undefined;
    const seconds = before === undefined ? 0 : Math.max(timeMs - before.timeMs, 1) / 1000;
    const perSecond = (field: "read" | "deadLetters" | "late") => (before === undefined ? 0 : Math.max(0, now[field] - before[field]) / seconds);
    const hasNewLatency = latency.count > (this.previous?.latencyCount ?? 0);
    const [p50, p99] = (hasNewLatency ? latency.quantiles([0.5, 0.99]) : undefined) ?? [null, null];
    const checkpointMs = this.slowestCheckpointMs;
    this.slowestCheckpointMs = null;
    this.previous = now;
    return {
      timeMs,
      phase,
      ...(notReady === undefined ? {} : { notReady }),
      read: counters.read,
      eventsPerSecond: perSecond("read"),
      latencyP50Ms: p50 === null ? null : p50 * 1000,
      latencyP99Ms: p99 === null ? null : p99 * 1000,
      watermarkMs: hasWatermark ? watermarkMs : null,
      watermarkLagSeconds: hasWatermark ? (timeMs - watermarkMs) / 1000 : null,
      checkpointMs,
      deadLetters: counters.deadLettered,
      deadLettersPerSecond: perSecond("deadLetters"),
      late: counters.late,
      latePerSecond: perSecond("late"),
      ...this.behaviourViews(),
    };
  }

  /** What the behaviour operator's named views say now; a view that is absent (or fails) gives no chart. */
  private behaviourViews(): Pick<Sample, "segments" | "triggersByChannel" | "clusters"> {
    const views = this.view.operators().find(({ view }) => view?.views?.segments ?? view?.views?.clusters ?? view?.views?.triggersByChannel)?.view?.views;
    if (views === undefined) return {};
    const call = <T>(name: string): T | undefined => {
      try {
        return views[name]?.({}) as T | undefined;
      } catch {
        return undefined;
      }
    };
    const segments = call<Sample["segments"]>("segments");
    const triggersByChannel = call<Record<string, number>>("triggersByChannel");
    const clusters = call<Record<string, number>>("clusters");
    return {
      ...(segments && { segments: { groups: segments.groups ?? {}, tags: segments.tags ?? {} } }),
      ...(triggersByChannel && { triggersByChannel }),
      ...(clusters && { clusters }),
    };
  }
}

/** A static file, read once. */
type Asset = { body: Buffer; contentType: string };

const require = createRequire(import.meta.url);
const PAGE_DIR = new URL("./dashboard/", import.meta.url);

/** The files the page loads, by the name it asks for under /assets/. */
const ASSET_FILES: Record<string, { path: () => string | URL; contentType: string }> = {
  "dashboard.js": { path: () => new URL("dashboard.js", PAGE_DIR), contentType: "text/javascript; charset=utf-8" },
  "dashboard.css": { path: () => new URL("dashboard.css", PAGE_DIR), contentType: "text/css; charset=utf-8" },
  "uPlot.iife.min.js": { path: () => require.resolve("uplot/dist/uPlot.iife.min.js"), contentType: "text/javascript; charset=utf-8" },
  "uPlot.min.css": { path: () => require.resolve("uplot/dist/uPlot.min.css"), contentType: "text/css; charset=utf-8" },
};

let assets: { page: Buffer; files: Map<string, Asset> } | undefined;

function loadAssets(): NonNullable<typeof assets> {
  assets ??= {
    page: readFileSync(new URL("index.html", PAGE_DIR)),
    files: new Map(Object.entries(ASSET_FILES).map(([name, { path, contentType }]) => [name, { body: readFileSync(path()), contentType }])),
  };
  return assets;
}

/** Writes one server-sent event. */
function sendEvent(response: ServerResponse, event: string, data: unknown): void {
  response.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** `intervalMs`: how often the sampler reads the job (default SAMPLE_INTERVAL_MS). */
export function dashboardRoutes({ view, spec, closed }: HttpContext, { intervalMs = SAMPLE_INTERVAL_MS } = {}): Route[] {
  const { page, files } = loadAssets();
  const sampler = new DashboardSampler(view);
  sampler.start(intervalMs);
  const streams = new Set<ServerResponse>();
  closed?.addEventListener(
    "abort",
    () => {
      sampler.stop();
      for (const stream of streams) stream.end();
    },
    { once: true },
  );
  const hasExperiments = spec.behaviour?.outputs.includes(EXPERIMENT_OUTPUT) ?? false;
  const series = (): Series => ({ name: spec.name, intervalMs, samples: sampler.samples, experiments: hasExperiments });
  return [
    { method: "GET", path: "/", access: "public", handle: () => ({ body: page, contentType: "text/html; charset=utf-8" }) },
    {
      method: "GET",
      path: "/assets/:file",
      access: "public",
      handle: ({ params }) => {
        const asset = files.get(params.file);
        return asset === undefined ? { status: 404, json: { error: `no asset ${params.file}` } } : { body: asset.body, contentType: asset.contentType };
      },
    },
    { method: "GET", path: "/api/v1/series", handle: () => ({ json: series() }) },
    {
      method: "GET",
      path: "/api/v1/stream",
      access: "headerOrQuery",
      handle: ({ raw, response }) => {
        const headers = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", "x-accel-buffering": "no" };
        if (raw.method === "HEAD") return { body: "", contentType: headers["content-type"], headers };
        response.writeHead(200, headers);
        // EventSource reconnects after this long when the connection drops, and then gets the history again.
        response.write("retry: 2000\n\n");
        sendEvent(response, "history", series());
        streams.add(response);
        const unsubscribe = sampler.subscribe((sample) => {
          // A client that stopped reading is let go rather than buffered for without end.
          if (response.writableLength > MAX_UNREAD_BYTES) response.destroy();
          else sendEvent(response, "sample", sample);
        });
        response.on("close", () => {
          unsubscribe();
          streams.delete(response);
        });
      },
    },
  ];
}
