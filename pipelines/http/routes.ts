// Every route the job's HTTP server answers, gathered from the modules that format them.
import type { JobView } from "../../engine/jobView.ts";
import type { PipelineSpec } from "../validate.ts";
import { apiRoutes } from "./api.ts";
import { clusterQueryRoutes, type ClusterQueries } from "./clusterQueries.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { metricsRoutes } from "./metrics.ts";
import { queryRoutes } from "./queries.ts";
import type { Route } from "./server.ts";

/**
 * What a route module formats: the running job, as it tells about itself, and its pipeline;
 * `closed` aborts when the server closes, to stop what a module started (the dashboard's sampler);
 * `cluster`: on a cluster worker, its partitions' jobs (`view` is `cluster.view`) and the group's queries.
 */
export type HttpContext = { view: JobView; spec: PipelineSpec; closed?: AbortSignal; cluster?: ClusterQueries };

export function routesFor(context: HttpContext): Route[] {
  const { cluster } = context;
  const queries = cluster === undefined ? queryRoutes(context) : clusterQueryRoutes({ ...context, cluster });
  return [...apiRoutes(context), ...queries, ...metricsRoutes(context), ...dashboardRoutes(context)];
}

/** The routes of a cluster worker: those of a job, over the partitions it runs, with the group's queries. */
export function clusterRoutesFor(cluster: ClusterQueries, context: Omit<HttpContext, "view" | "cluster">): Route[] {
  return routesFor({ ...context, view: cluster.view, cluster });
}
