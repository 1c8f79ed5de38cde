// The job side of `flusso run`: the pipeline runs on a worker thread, so the command's main thread
// stays free to honour signals and the stop timeout whatever the job is doing (a long step, a
// blocking read). Messages to and from the main thread are the types below.
import { parentPort } from "node:worker_threads";
import { EngineError, StateMismatch } from "../engine/errors.ts";
import type { JobEvent } from "../engine/jobEvents.ts";
import type { JobResult } from "../engine/job.ts";
import type { JobView } from "../engine/jobView.ts";
import { runPipeline } from "./compile.ts";
import { PipelineInvalid, ResetStageUnknown } from "./errors.ts";
import type { ProgressSnapshot } from "./jobLog.ts";
import { loadPipeline } from "./load.ts";
import type { JobThreadLoaded, JobThreadStart } from "./jobThread.ts";
import type { ClusterQueries } from "./http/clusterQueries.ts";
import type { ForwardedReply, ForwardedRequest } from "./http/forwarded.ts";

/** What the main thread asks the job: to stop, or to answer an HTTP request (http/forwarded.ts). */
export type ToJob = { type: "stop" } | ForwardedRequest;

/** What the job tells the main thread. */
export type FromJob =
  | { type: "progress"; progress: ProgressSnapshot }
  /** Something happened the operator should hear of (engine/jobEvents.ts). */
  | { type: "event"; event: JobEvent }
  | { type: "final-checkpoint"; checkpointId: number }
  | { type: "done"; result: JobResult }
  /** `text`: the error as a person should read it; `isRefused`: the state dir was refused before anything ran (exit 2). */
  | { type: "failed"; text: string; isRefused: boolean }
  /** A stop cut short a wait before the job could start (a server out of reach): nothing ran. */
  | { type: "stopped-waiting" }
  /** The job answers HTTP requests from now on: the main thread may listen (and forward them). */
  | { type: "http-open" }
  | ForwardedReply
  /** The input ended; the HTTP server goes on serving the final state until a stop. */
  | { type: "serving" }
  /** The thread's modules are loaded (for jobThread.ts; a run has nothing to do with it). */
  | JobThreadLoaded;

/** `http`: `--http [host:]port`, when given; `logsCheckpoints`: every checkpoint is told as an event (a debug line). */
export type JobRequest = { file: string; reset: boolean; resetStages: string[]; wantsProgress: boolean; http?: string; logsCheckpoints?: boolean };


async function runJobOnThisThread(port: NonNullable<typeof parentPort>, request: JobRequest): Promise<void> {
  const tell = (message: FromJob) => port.postMessage(message);
  const stop = new AbortController();
  let answer: ((request: ForwardedRequest) => void) | undefined;
  port.on("message", (message: ToJob) => {
    if (message.type === "stop") stop.abort(new Error("stopped"));
    else answer?.(message);
  });
  const serverClosed = new AbortController();
  let jobView: JobView | undefined;
  let cluster: ClusterQueries | undefined;
  let groupProgress: ReturnType<typeof setInterval> | undefined;
  try {
    const spec = loadPipeline(request.file, process.env, { httpListen: request.http });
    const http = spec.http;
    const onEvent = (event: JobEvent) => tell({ type: "event", event });
    // Loaded only by the jobs that use them: the first event comes sooner without (jobThread.ts).
    const { runClusterPipeline } = spec.cluster ? await import("./cluster.ts") : { runClusterPipeline: undefined };
    const served = http ? await httpModules() : undefined;
    const { ClusterQueries } = spec.cluster && http ? await import("./http/clusterQueries.ts") : { ClusterQueries: undefined };
    // A cluster worker answers for the partitions it runs as they come and go, and asks the others for theirs.
    cluster = ClusterQueries === undefined ? undefined : new ClusterQueries(spec, { signal: stop.signal, onEvent });
    if (cluster !== undefined) {
      const { answerForwarded, requestHandler, clusterRoutesFor } = served!;
      answer = answerForwarded(requestHandler(clusterRoutesFor(cluster, { spec, closed: serverClosed.signal }), http!.token), (reply) => port.postMessage(reply));
      tell({ type: "http-open" });
    }
    // A cluster worker's progress line adds up the partitions it holds now.
    const partitionViews = new Map<number, JobView>();
    if (spec.cluster && request.wantsProgress) groupProgress = setInterval(() => tell({ type: "progress", progress: progressOfPartitions([...partitionViews.values()]) }), PROGRESS_INTERVAL_MS);
    const result = await (runClusterPipeline ?? runPipeline)(spec, {
      onPartitionView: (partition, view) => {
        if (view === undefined) partitionViews.delete(partition);
        else partitionViews.set(partition, view);
        cluster?.onPartitionView(partition, view);
      },
      onView: (view) => {
        jobView = view;
        if (!http) return;
        // The main thread holds the sockets; this thread answers, between two steps of the job.
        const { answerForwarded, requestHandler, routesFor } = served!;
        answer = answerForwarded(requestHandler(routesFor({ view, spec, closed: serverClosed.signal }), http.token), (reply) => port.postMessage(reply));
        tell({ type: "http-open" });
      },
      reset: request.reset,
      resetStages: request.resetStages,
      signal: stop.signal,
      onProgress: request.wantsProgress ? () => jobView && tell({ type: "progress", progress: progressOf(jobView) }) : undefined,
      onFinalCheckpoint: (checkpointId) => tell({ type: "final-checkpoint", checkpointId }),
      onCheckpoint: request.logsCheckpoints ? (info) => onEvent({ event: "checkpoint", ...info }) : undefined,
      onEvent: (event) => {
        cluster?.onEvent(event);
        onEvent(event);
      },
    });
    clearInterval(groupProgress);
    tell({ type: "done", result });
    // With an HTTP server a finished input's final state stays up to be explored, until a stop.
    // (A cluster worker's group that read to its end holds no partition: there is nothing to explore.)
    if (answer !== undefined && cluster === undefined && result.isComplete && !stop.signal.aborted) {
      tell({ type: "serving" });
      await new Promise((resolve) => stop.signal.addEventListener("abort", resolve, { once: true }));
    }
  } catch (error) {
    if (stop.signal.aborted && error === stop.signal.reason) {
      tell({ type: "stopped-waiting" });
      return;
    }
    // The engine's and the pipeline's own errors say all a user needs; anything else is a bug, shown with its stack.
    const isExplained = error instanceof EngineError || error instanceof PipelineInvalid || error instanceof ResetStageUnknown;
    const isRefused = error instanceof StateMismatch || error instanceof ResetStageUnknown;
    tell({ type: "failed", text: isExplained ? String(error) : String((error as Error)?.stack ?? error), isRefused });
  } finally {
    clearInterval(groupProgress);
    // Ends the answers still streaming (server-sent events) before the main thread closes the server.
    serverClosed.abort();
    await cluster?.close();
    port.close();
  }
}

/** How often a cluster worker draws its progress line: as often as a single job does by default. */
const PROGRESS_INTERVAL_MS = 500;

/** What the progress line shows, read from the job between two batches. */
function progressOf(view: JobView): ProgressSnapshot {
  return {
    counters: { ...view.counters() },
    watermarkMs: view.watermarks().watermarkMs,
    lastCheckpointAtMs: view.lastCheckpoint()?.committedAtMs,
    source: view.source().progress,
    atMs: Date.now(),
  };
}

/**
 * The progress of the partitions a cluster worker holds: their counters added up (each since its
 * partition first started, so a partition taken over brings its count along), the lowest watermark,
 * the latest checkpoint, and how far their bounded sources have read together.
 */
function progressOfPartitions(views: readonly JobView[]): ProgressSnapshot {
  const snapshots = views.map(progressOf);
  const counters: ProgressSnapshot["counters"] = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 };
  for (const snapshot of snapshots) for (const [name, n] of Object.entries(snapshot.counters)) counters[name] = (counters[name] ?? 0) + n;
  const sources = snapshots.flatMap((s) => (s.source === undefined ? [] : [s.source]));
  const checkpoints = snapshots.flatMap((s) => (s.lastCheckpointAtMs === undefined ? [] : [s.lastCheckpointAtMs]));
  return {
    counters,
    watermarkMs: snapshots.length === 0 ? -Infinity : Math.min(...snapshots.map((s) => s.watermarkMs)),
    lastCheckpointAtMs: checkpoints.length === 0 ? undefined : Math.max(...checkpoints),
    source: sources.length === 0 ? undefined : { done: sources.reduce((sum, s) => sum + s.done, 0), total: sources.reduce((sum, s) => sum + s.total, 0) },
    atMs: Date.now(),
  };
}

/** What answering HTTP takes, for a job with a server. */
async function httpModules() {
  const [{ answerForwarded }, { requestHandler }, { clusterRoutesFor, routesFor }] = await Promise.all([import("./http/forwarded.ts"), import("./http/server.ts"), import("./http/routes.ts")]);
  return { answerForwarded, requestHandler, clusterRoutesFor, routesFor };
}

/** The thread's request (jobThread.ts: it is started ahead of it): its first message. */
function firstRequest(port: NonNullable<typeof parentPort>): Promise<JobRequest> {
  return new Promise((resolve) => port.once("message", (message: JobThreadStart) => resolve(message.request as JobRequest)));
}

if (parentPort !== null) {
  // Every module this file imports is loaded: the thread may now be ended safely (jobThread.ts's dismiss).
  parentPort.postMessage({ type: "loaded" } satisfies JobThreadLoaded);
  await runJobOnThisThread(parentPort, await firstRequest(parentPort));
}
