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

/** What the thread tells once its modules are loaded, before it waits for its request. */
export type JobThreadLoaded = { type: "loaded" };

/** A job thread started ahead: its worker, and whether it has its request (or has been dismissed). */
export type JobThread = { readonly worker: Worker; isHandedOver: boolean; readonly loaded: Promise<void> };

/** A job thread loading its modules, idle and unreferenced until `handOver` gives it its request. */
export function startJobThread(): JobThread {
  const worker = new Worker(JOB_THREAD);
  worker.unref();
  const loaded = new Promise<void>((resolve) => {
    worker.on("message", (message: { type?: string }) => message.type === "loaded" && resolve());
    worker.once("exit", () => resolve());
    worker.once("error", () => resolve());
  });
  return { worker, isHandedOver: false, loaded };
}

/** Gives a thread from startJobThread its request; the process then waits for it. */
export function handOver(request: unknown, thread: JobThread): Worker {
  thread.isHandedOver = true;
  thread.worker.ref();
  thread.worker.postMessage({ type: "request", request } satisfies JobThreadStart);
  return thread.worker;
}

/**
 * Ends a thread that was never handed its request (the pipeline was refused, or ran elsewhere).
 * Not before its modules are loaded: a process that exits while the thread is loading a native addon
 * (lmdb) aborts, FATAL ERROR and exit 134, instead of exiting with its own code.
 */
export async function dismiss(thread: JobThread): Promise<void> {
  if (thread.isHandedOver) return;
  thread.isHandedOver = true;
  thread.worker.ref();
  await thread.loaded;
  await thread.worker.terminate();
}
