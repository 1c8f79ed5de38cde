// The commands of the `flusso` command line that do something (pipelines/cli.ts answers --help and
// --version alone, without loading any of this): run, validate, state, publish.
import { resolve } from "node:path";
import { EngineError } from "../engine/errors.ts";
import { EXIT_BAD_PIPELINE, EXIT_STOPPED_AT_ONCE, type CommandLine } from "./cliArgs.ts";
import { handOver, startJobThread, type JobThread } from "./jobThread.ts";
import { PipelineInvalid, ResetStageUnknown } from "./errors.ts";
import { loadPipeline } from "./load.ts";
import { resolveResets } from "./stateShape.ts";
import type { PipelineSpec } from "./validate.ts";
import type { PublishOptions } from "./publish.ts";
import type { forwardingServer } from "./http/forwarded.ts";
import type { FromJob, JobRequest, ToJob } from "./runWorker.ts";
import { JobLog, progressLine, type LogFormat, type ProgressSnapshot } from "./jobLog.ts";
import { runWorkers, SUPERVISED_ENV, type WorkerResultMessage } from "./supervisor.ts";
import type { JobResult } from "../engine/job.ts";



/** How long the job's thread may take to end after its result (closing connections, files). */
const THREAD_GRACE_MS = 10_000;

/** `--log` when given, else text on a terminal and JSON lines otherwise. */
function logFormat(format: LogFormat | undefined): LogFormat {
  return format ?? (process.stderr.isTTY === true ? "text" : "json");
}

/** The log levels FLUSSO_LOG_LEVEL takes: `debug` adds a line per checkpoint (for benchmarks and diagnosis). */
const LOG_LEVELS = ["info", "debug"] as const;

/** FLUSSO_LOG_LEVEL, `info` when unset; anything else is refused before the command runs. */
function logLevel(): (typeof LOG_LEVELS)[number] {
  const level = process.env.FLUSSO_LOG_LEVEL;
  if (level === undefined || level === "") return "info";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new Error(`FLUSSO_LOG_LEVEL: expected ${LOG_LEVELS.join(" or ")}, got ${JSON.stringify(level)}`);
  return level as (typeof LOG_LEVELS)[number];
}

/** The log of a command, in `logFormat`. */
function commandLog(format: LogFormat | undefined, quiet: boolean): JobLog {
  return new JobLog(logFormat(format), { isTerminal: process.stderr.isTTY === true, quiet, isDebug: logLevel() === "debug", columns: process.stderr.columns });
}

function wholeNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) throw new Error(`--${name}: expected a whole number, got ${JSON.stringify(text)}`);
  return n;
}

function positiveNumber(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a number above 0, got ${JSON.stringify(text)}`);
  return n;
}

async function publishCommand(input: string, values: Record<string, string | undefined>, log: JobLog): Promise<number> {
  const text = (name: string) => values[name];
  let options: PublishOptions;
  try {
    const format = text("format") ?? "json";
    if (format !== "json" && format !== "msgpack") throw new Error(`--format: expected json or msgpack, got ${JSON.stringify(format)}`);
    options = {
      input,
      servers: text("servers") ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222",
      stream: text("stream") ?? "EVENTS",
      subject: text("subject") ?? "events",
      partitions: Math.max(1, wholeNumber("partitions", text("partitions"), 4)),
      rate: wholeNumber("rate", text("rate"), 0),
      format,
      key: text("key") ?? "user_id",
      columns: text("columns")?.split(","),
      events: text("events") === undefined ? undefined : wholeNumber("events", text("events"), 0),
      seed: text("seed") === undefined ? undefined : wholeNumber("seed", text("seed"), 42),
      stamp: text("stamp"),
      pace: text("pace") === undefined ? undefined : positiveNumber("pace", text("pace")!),
    };
  } catch (error) {
    process.stderr.write(`flusso publish: ${(error as Error).message}\n`);
    return EXIT_BAD_PIPELINE;
  }
  let result;
  try {
    const { publish } = await import("./publish.ts");
    result = await publish(options, (event) => log.event(event));
  } catch (error) {
    log.event({ event: "failed", error: `flusso publish: ${(error as Error).message}` });
    return 1;
  }
  log.outcome({
    event: "published",
    published: result.published,
    elapsedMs: Math.round(result.elapsedMs),
    eventsPerSecond: Math.round(result.ratePerSecond),
    subjects: `${options.subject}.0..${options.subject}.${options.partitions - 1}`,
    unreadable: result.unreadable,
  });
  return 0;
}



/** How long a stop waits for its last checkpoint: FLUSSO_STOP_TIMEOUT_MS, default 20 s. */
function stopTimeoutMs(): number {
  const fromEnv = Number(process.env.FLUSSO_STOP_TIMEOUT_MS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 20_000;
}

/**
 * The commands that do something (all but help, version and a mistake, which cli.ts answers alone).
 * `jobThread`: for `run`, a job thread started ahead (jobThread.ts), used if the job runs here.
 */
export async function runCommandLine(line: Exclude<CommandLine, { command: "help" | "version" | "mistake" }>, jobThread?: JobThread): Promise<number> {
  try {
    logLevel();
  } catch (error) {
    process.stderr.write(`flusso ${line.command}: ${(error as Error).message}\n`);
    return EXIT_BAD_PIPELINE;
  }
  switch (line.command) {
    case "publish":
      return publishCommand(line.input, line.values, commandLog(line.log, line.quiet));
    case "validate": {
      // Reads and checks only: no state dir is opened, no output created, no server contacted.
      const spec = loadOrSay(line.file);
      if (spec === undefined) return EXIT_BAD_PIPELINE;
      const { describePipeline } = await import("./describe.ts");
      process.stdout.write(`${describePipeline(spec).join("\n")}\n`);
      return 0;
    }
    case "run": {
      const spec = loadOrSay(line.file, line.http);
      if (spec === undefined) return EXIT_BAD_PIPELINE;
      try {
        resolveResets(spec, line.resetStages ?? []);
      } catch (error) {
        if (!(error instanceof ResetStageUnknown)) throw error;
        process.stderr.write(`flusso run: ${error.message}\n`);
        return EXIT_BAD_PIPELINE;
      }
      if (spec.cluster && (line.reset || (line.resetStages ?? []).length > 0)) {
        // A worker's state dir is only a cache: the group's state is in NATS, shared by every worker.
        const { group } = spec.cluster;
        const [{ checkpointStreamName }, { roundsStreamNames }, { doneBucketName, leaseBucketName }] = await Promise.all([
          import("../engine/cluster/checkpointLog.ts"),
          import("../engine/cluster/rounds.ts"),
          import("../engine/cluster/leases.ts"),
        ]);
        process.stderr.write(
          `flusso run: --reset and --reset-stage do not apply to a cluster (${line.file}): its state lives in NATS, shared by all its workers. ` +
            `To start over, stop every worker and give cluster.group a new name, or delete the streams ${checkpointStreamName(group)}, ${roundsStreamNames(group).inbound} and ${roundsStreamNames(group).models} and the KV buckets ${leaseBucketName(group)} and ${doneBucketName(group)}\n`,
        );
        return EXIT_BAD_PIPELINE;
      }
      const log = commandLog(line.log, line.quiet);
      if (line.workers !== undefined) return runWorkers({ ...line, workers: line.workers }, spec, log, logFormat(line.log));
      return runCommand(
        { file: resolve(line.file), reset: line.reset, resetStages: line.resetStages ?? [], wantsProgress: log.showsProgress, http: line.http, logsCheckpoints: log.isDebug },
        log,
        spec.http,
        jobThread,
      );
    }
    case "state": {
      const spec = loadOrSay(line.file);
      if (spec === undefined) return EXIT_BAD_PIPELINE;
      try {
        const { formatStateReport, inspectState } = await import("./inspect.ts");
        process.stdout.write(`${formatStateReport(await inspectState(spec, { key: line.key }))}\n`);
        return 0;
      } catch (error) {
        process.stderr.write(`flusso state: ${error instanceof EngineError ? String(error) : String((error as Error)?.stack ?? error)}\n`);
        return 1;
      }
    }
  }
}

/** The pipeline (`http`: `--http`), or undefined after saying what is wrong with it. */
function loadOrSay(file: string, http?: string): PipelineSpec | undefined {
  try {
    return loadPipeline(file, process.env, { httpListen: http });
  } catch (error) {
    if (!(error instanceof PipelineInvalid)) throw error;
    process.stderr.write(`${error.message}\n`);
    return undefined;
  }
}

/**
 * Runs the job on a worker thread and watches it from this one, which does nothing else, so a stop
 * is honoured within its timeout whatever the job is doing. The first SIGINT or SIGTERM asks the job
 * to stop at its next cut after a last checkpoint; a second one, or the timeout, ends the process at
 * once with 130: as safe as a crash, since the next run resumes from the last durable checkpoint.
 */
function runCommand(request: JobRequest, log: JobLog, httpAddress?: { host: string; port: number }, jobThread?: JobThread): Promise<number> {
  const startedAtMs = Date.now();
  const worker = handOver(request, jobThread ?? startJobThread());
  // The job's HTTP server: its sockets on this thread, its answers from the job's (http/forwarded.ts).
  let server: Awaited<ReturnType<typeof forwardingServer>> | undefined;
  const startServer = async () => {
    try {
      const { forwardingServer } = await import("./http/forwarded.ts");
      server = await forwardingServer(httpAddress!, (forwarded) => worker.postMessage(forwarded satisfies ToJob));
      log.event({ event: "http", url: server.url });
    } catch (error) {
      log.event({ event: "failed", error: `cannot serve HTTP at ${httpAddress!.host}:${httpAddress!.port}: ${(error as Error).message}` });
      exitCode = 1;
      worker.postMessage({ type: "stop" } satisfies ToJob);
    }
  };
  let exitCode = 1;
  let finalCheckpoint: number | undefined;
  let isStopAsked = false;
  let lastProgress: ProgressSnapshot | undefined;
  const stopNow = (why: string) => {
    log.event({ event: "stopped-now", why, checkpointId: finalCheckpoint });
    process.exit(EXIT_STOPPED_AT_ONCE);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (isStopAsked) stopNow(signal);
    isStopAsked = true;
    const timeoutMs = stopTimeoutMs();
    log.event({ event: "stop-asked", signal, timeoutMs });
    setTimeout(() => stopNow(`not stopped within ${timeoutMs / 1000} s`), timeoutMs).unref();
    worker.postMessage({ type: "stop" } satisfies ToJob);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // A worker of `--workers` whose supervisor is gone (killed) stops as if told to, rather than run on unwatched.
  const isSupervised = process.env[SUPERVISED_ENV] === "1" && process.send !== undefined;
  const onSupervisorGone = () => onSignal("SIGTERM");
  if (isSupervised) process.on("disconnect", onSupervisorGone);
  let result: JobResult | undefined;
  return new Promise((settle) => {
    worker.on("message", (message: FromJob) => {
      switch (message.type) {
        case "progress":
          log.progress(progressLine(message.progress, lastProgress, startedAtMs));
          lastProgress = message.progress;
          return;
        case "event":
          log.event(message.event);
          return;
        case "final-checkpoint":
          finalCheckpoint = message.checkpointId;
          return;
        case "done":
          log.summary(message.result);
          result = message.result;
          exitCode = 0;
          endLingering();
          return;
        case "http-open":
          void startServer();
          return;
        case "http-reply":
          server?.reply(message);
          return;
        case "serving":
          // Alive on purpose, serving the final state until a stop.
          clearTimeout(lingering);
          log.event({ event: "serving" });
          return;
        case "stopped-waiting":
          log.event({ event: "stopped-waiting" });
          exitCode = 0;
          lingering = undefined;
          endLingering();
          return;
        case "failed":
          log.event({ event: "failed", error: message.text });
          exitCode = message.isRefused ? EXIT_BAD_PIPELINE : 1;
          endLingering();
      }
    });
    worker.on("error", (error) => {
      log.event({ event: "failed", error: String(error?.stack ?? error) });
      exitCode = 1;
    });
    // Once the job has said its last word, its thread ends; one that something it opened keeps alive
    // (a socket, a timer) is ended after a grace period, so the process never hangs after its result.
    let lingering: NodeJS.Timeout | undefined;
    function endLingering(): void {
      lingering ??= setTimeout(() => {
        log.event({ event: "thread-lingered", graceMs: THREAD_GRACE_MS });
        void worker.terminate();
      }, THREAD_GRACE_MS);
      lingering.unref();
    }
    worker.on("exit", async () => {
      clearTimeout(lingering);
      if (isSupervised) {
        process.off("disconnect", onSupervisorGone);
        await tellSupervisor(result);
      }
      await server?.close();
      settle(exitCode);
    });
  });
}

/**
 * Under `--workers` (pipelines/supervisor.ts): the run's result goes to the supervisor, which adds the
 * workers' up; then the channel is closed, as it would otherwise keep this process alive.
 */
function tellSupervisor(result: JobResult | undefined): Promise<void> {
  return new Promise((done) => {
    const close = () => {
      if (process.connected) process.disconnect();
      done();
    };
    if (result === undefined || !process.connected) return close();
    process.send!({ type: "flusso-result", result } satisfies WorkerResultMessage, close);
  });
}
