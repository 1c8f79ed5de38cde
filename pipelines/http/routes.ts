// Every route the job's HTTP server answers, gathered from the modules that format them.
import type { JobView } from "../../engine/jobView.ts";
import type { PipelineSpec } from "../validate.ts";
import { apiRoutes } from "./api.ts";
import { metricsRoutes } from "./metrics.ts";
import type { Route } from "./server.ts";

/** What a route module formats: the running job, as it tells about itself, and its pipeline. */
export type HttpContext = { view: JobView; spec: PipelineSpec };

export function routesFor(context: HttpContext): Route[] {
  return [...apiRoutes(context), ...metricsRoutes(context)];
}
