// Every route the job's HTTP server answers, gathered from the modules that format them.
import type { JobView } from "../../engine/jobView.ts";
import type { PipelineSpec } from "../validate.ts";
import { apiRoutes } from "./api.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { metricsRoutes } from "./metrics.ts";
import { queryRoutes } from "./queries.ts";
import type { Route } from "./server.ts";

/**
 * What a route module formats: the running job, as it tells about itself, and its pipeline;
 * `closed` aborts when the server closes, to stop what a module started (the dashboard's sampler).
 */
export type HttpContext = { view: JobView; spec: PipelineSpec; closed?: AbortSignal };

export function routesFor(context: HttpContext): Route[] {
  return [...apiRoutes(context), ...queryRoutes(context), ...metricsRoutes(context), ...dashboardRoutes(context)];
}
