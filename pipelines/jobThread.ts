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

/** A job thread loading its modules, idle and unreferenced until `handOver` gives it its request. */
export function startJobThread(): Worker {
  const worker = new Worker(JOB_THREAD);
  worker.unref();
  return worker;
}

/** Gives a thread from startJobThread its request; the process then waits for it. */
export function handOver(request: unknown, started: Worker): Worker {
  started.ref();
  started.postMessage({ type: "request", request } satisfies JobThreadStart);
  return started;
}
