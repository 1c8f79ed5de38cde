// The job's worker thread, started as soon as the command line says `run`: it loads the engine's
// modules while the main thread loads and checks the pipeline (two cores, half the wait), then waits
// for its request. It is unreferenced until handed one, so a pipeline refused before anything runs
// ends the process without it. Kept free of heavy imports: cli.ts loads it before anything else.
import { Worker } from "node:worker_threads";
import { IS_BUILT, PACKAGE_ROOT } from "./packageRoot.ts";

/** The job's thread: the built runWorker.js beside this module, or the sources through tsx (bin/flusso-job.js). */
const JOB_THREAD = IS_BUILT ? new URL("./runWorker.js", import.meta.url) : new URL("bin/flusso-job.js", PACKAGE_ROOT);

/** What a thread started ahead is told first: the job it runs (runWorker.ts's JobRequest). */
export type JobThreadStart = { type: "request"; request: unknown };

/** What the thread finds in its workerData: whether its request comes as its first message. */
export type JobThreadData = { awaitsRequest: true } | { awaitsRequest?: false; request: unknown };

/** A job thread loading its modules, idle and unreferenced until `handOver` gives it its request. */
export function startJobThread(): Worker {
  const worker = new Worker(JOB_THREAD, { workerData: { awaitsRequest: true } satisfies JobThreadData });
  worker.unref();
  return worker;
}

/** Gives a thread from startJobThread its request, or starts one with it; the process then waits for it. */
export function handOver(request: unknown, started?: Worker): Worker {
  if (started === undefined) return new Worker(JOB_THREAD, { workerData: { request } satisfies JobThreadData });
  started.ref();
  started.postMessage({ type: "request", request } satisfies JobThreadStart);
  return started;
}
