// The job's JSON API: liveness, readiness and the running pipeline. Every answer is read from the
// job between two batches.
import type { HttpContext } from "./routes.ts";
import type { Route } from "./server.ts";

export function apiRoutes({ view, spec, cluster }: HttpContext): Route[] {
  return [
    // The process runs its loop: this thread answers.
    { method: "GET", path: "/healthz", handle: () => ({ json: { status: "ok" } }) },
    {
      method: "GET",
      path: "/readyz",
      handle: () => {
        const { phase, notReady } = view.status();
        return notReady === undefined ? { json: { status: "ready", phase } } : { status: 503, json: { status: "not ready", phase, reason: notReady } };
      },
    },
    {
      method: "GET",
      path: "/api/v1/pipeline",
      handle: () => {
        const { watermarkMs, partitions } = view.watermarks();
        return {
          json: {
            name: spec.name,
            ...(cluster === undefined ? {} : { cluster: cluster.describe() }),
            status: view.status(),
            source: view.source(),
            watermark: timeOrNull(watermarkMs),
            partitions: partitions.map((p, i) => ({ partition: p.partition ?? i, watermark: timeOrNull(p.watermarkMs), newestEvent: timeOrNull(p.newestEventMs), isIdle: p.isIdle, isFinished: p.isFinished })),
            windows: spec.windows.map((w) => w.name),
            stages: spec.behaviour?.stages.map((s) => s.name) ?? [],
            lastCheckpoint: view.lastCheckpoint() ?? null,
            counters: view.counters(),
            outputsByKind: view.outputsByKind(),
            stateEntries: view.stateEntries(),
          },
        };
      },
    },
  ];
}

/** An event time as ISO-8601 with its ms, or null before there is one (or at the end of time). */
function timeOrNull(ms: number): { time: string; time_ms: number } | null {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? { time: new Date(ms).toISOString(), time_ms: ms } : null;
}
