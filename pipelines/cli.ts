// The `flusso` command line: `flusso run <pipeline.yaml> [--reset]`, `flusso state <pipeline.yaml>`.
// A bad pipeline or command line exits with 2 before anything runs, and so does a state dir the
// pipeline cannot resume (its state changed shape); a run (on a worker thread) prints progress on a
// terminal and a one-line summary at the end. Exit codes: 0 done or stopped, 1 failed, 2 bad pipeline,
// command line or state refused, 130 stopped at once.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Worker } from "node:worker_threads";
import { EngineError } from "../engine/errors.ts";
import type { JobCounters, JobResult } from "../engine/job.ts";
import { parseCommandLine } from "./cliArgs.ts";
import { PipelineInvalid, ResetStageUnknown } from "./errors.ts";
import { formatStateReport, inspectState } from "./inspect.ts";
import { loadPipeline } from "./load.ts";
import { resolveResets } from "./stateShape.ts";
import type { PipelineSpec } from "./validate.ts";
import { publish, type PublishOptions } from "./publish.ts";
import type { FromJob, JobRequest, ToJob } from "./runWorker.ts";

const USAGE = `usage: flusso run <pipeline.yaml> [--reset | --reset-stage NAME ...] [--quiet]
       flusso state <pipeline.yaml> [--key K]
       flusso publish <file.jsonl|file.csv|file.msgpack|generator> [options]
       flusso --version | --help

  run      runs a pipeline until its source ends (or Ctrl-C: a last checkpoint, then exit)
    --reset        forgets the state dir's checkpoint and starts from the beginning
    --reset-stage NAME  rebuilds that stage or window from empty and keeps the rest (repeatable)
    --quiet        no progress line and no summary
  state    prints what the state dir holds, without running (beside a running job too)
    --key K        also that key's values, per window and stage (JSON)
  publish  sends events to JetStream, <subject>.<partition> by a hash of their key
    --servers URL  default $NATS_URL or nats://127.0.0.1:4222
    --stream NAME  default EVENTS (created if missing, subjects <subject>.>)
    --subject S    default events
    --partitions N default 4
    --rate R       events per second, 0 = as fast as acks allow (default 0)
    --format F     json | msgpack (default json)
    --key FIELD    default user_id
    --columns a,b  CSV without a header: its column names
    --events N --seed S   generator only
    --stamp FIELD  adds the publish time (epoch ms) to every event
    --quiet        no progress and no summary`;

/** A bad pipeline file or a bad command line, or a state the pipeline cannot resume: nothing ran. */
export const EXIT_BAD_PIPELINE = 2;

/** The version in package.json. */
export function flussoVersion(): string {
  return (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
}


const ENGINE_COUNTERS = new Set(["read", "outputs", "late", "deadLettered", "checkpoints"]);

export function summaryLine(result: JobResult): string {
  const c = result.thisRun;
  const seconds = result.elapsedMs / 1000;
  const rate = Math.round(c.read / Math.max(seconds, 1e-3));
  const resumed = result.restoredFromCheckpoint === undefined ? "" : ` (resumed from checkpoint ${result.restoredFromCheckpoint})`;
  const verb = result.isComplete ? "done" : "stopped";
  if (result.isComplete && c.read === 0 && result.restoredFromCheckpoint !== undefined) {
    return `done: the source was already read to its end (checkpoint ${result.restoredFromCheckpoint}); run with --reset to start over`;
  }
  // Counters the operators keep (duplicates, triggers_sent, ...), after the engine's own.
  const extra = Object.entries(c)
    .filter(([name]) => !ENGINE_COUNTERS.has(name))
    .map(([name, n]) => `, ${n} ${name.replaceAll("_", " ")}`)
    .join("");
  return (
    `${verb}: ${c.read} events in ${seconds.toFixed(1)} s (${rate} events/s)${resumed}, ` +
    `${c.outputs} outputs, ${c.late} late, ${c.deadLettered} dead-lettered${extra}`
  );
}

function progressLine(c: Readonly<JobCounters>, startedAtMs: number): string {
  const seconds = (Date.now() - startedAtMs) / 1000;
  return `\r${c.read} events, ${c.outputs} outputs, ${c.late} late, ${c.deadLettered} dead-lettered, ${seconds.toFixed(1)} s `;
}

function wholeNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) throw new Error(`--${name}: expected a whole number, got ${JSON.stringify(text)}`);
  return n;
}

async function publishCommand(input: string, values: Record<string, string | undefined>, quiet: boolean): Promise<number> {
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
    };
  } catch (error) {
    process.stderr.write(`flusso publish: ${(error as Error).message}\n`);
    return EXIT_BAD_PIPELINE;
  }
  let result;
  try {
    result = await publish(options, quiet ? undefined : (line) => process.stderr.write(`${line}\n`));
  } catch (error) {
    process.stderr.write(`flusso publish: ${(error as Error).message}\n`);
    return 1;
  }
  if (!quiet) {
    const unreadable = result.unreadable > 0 ? `, ${result.unreadable} unreadable skipped` : "";
    process.stderr.write(
      `published: ${result.published} events in ${(result.elapsedMs / 1000).toFixed(1)} s (${Math.round(result.ratePerSecond)} events/s) ` +
        `to ${options.subject}.0..${options.subject}.${options.partitions - 1}${unreadable}\n`,
    );
  }
  return 0;
}

/** How long a stop waits for its last checkpoint: FLUSSO_STOP_TIMEOUT_MS, default 20 s. */
function stopTimeoutMs(): number {
  const fromEnv = Number(process.env.FLUSSO_STOP_TIMEOUT_MS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 20_000;
}

export const EXIT_STOPPED_AT_ONCE = 130;

export async function main(argv: string[]): Promise<number> {
  const line = parseCommandLine(argv);
  switch (line.command) {
    case "help":
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case "version":
      process.stdout.write(`${flussoVersion()}\n`);
      return 0;
    case "mistake":
      process.stderr.write(`${line.message}\n${USAGE}\n`);
      return EXIT_BAD_PIPELINE;
    case "publish":
      return publishCommand(line.input, line.values, line.quiet);
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
      return runCommand({ file: resolve(line.file), reset: line.reset, resetStages: line.resetStages ?? [], wantsProgress: !line.quiet && process.stderr.isTTY, http: line.http }, line.quiet);
    }
    case "state": {
      const spec = loadOrSay(line.file);
      if (spec === undefined) return EXIT_BAD_PIPELINE;
      try {
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
function runCommand(request: JobRequest, quiet: boolean): Promise<number> {
  const showProgress = request.wantsProgress;
  const startedAtMs = Date.now();
  const worker = new Worker(new URL("../bin/flusso-job.js", import.meta.url), { workerData: request });
  let finalCheckpoint: number | undefined;
  let isStopAsked = false;
  const stopNow = (why: string) => {
    const state =
      finalCheckpoint === undefined
        ? "without a last checkpoint; the next run resumes from the last one"
        : `after its last checkpoint (${finalCheckpoint}), which is durable; what it holds for NATS is delivered by the next run`;
    process.stderr.write(`\n${why}: stopping now, ${state}\n`);
    process.exit(EXIT_STOPPED_AT_ONCE);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (isStopAsked) stopNow(signal);
    isStopAsked = true;
    const timeoutMs = stopTimeoutMs();
    process.stderr.write(`\n${signal}: stopping after a last checkpoint (again to stop at once; at most ${timeoutMs / 1000} s)\n`);
    setTimeout(() => stopNow(`not stopped within ${timeoutMs / 1000} s`), timeoutMs).unref();
    worker.postMessage({ type: "stop" } satisfies ToJob);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return new Promise((settle) => {
    let exitCode = 1;
    worker.on("message", (message: FromJob) => {
      switch (message.type) {
        case "progress":
          process.stderr.write(progressLine(message.counters, startedAtMs));
          return;
        case "log":
          process.stderr.write(`${showProgress ? "\r\x1b[K" : ""}flusso: ${message.line}\n`);
          return;
        case "final-checkpoint":
          finalCheckpoint = message.checkpointId;
          return;
        case "done":
          if (showProgress) process.stderr.write("\r\x1b[K");
          if (!quiet) process.stderr.write(`${summaryLine(message.result)}\n`);
          exitCode = 0;
          return;
        case "http":
          process.stderr.write(`${showProgress ? "\r\x1b[K" : ""}flusso: state, metrics and the dashboard at ${message.url}\n`);
          return;
        case "serving":
          process.stderr.write("flusso: the input has ended; its final state is still served until Ctrl-C\n");
          return;
        case "stopped-waiting":
          process.stderr.write("stopped before the job started: nothing was read\n");
          exitCode = 0;
          return;
        case "failed":
          if (showProgress) process.stderr.write("\r\x1b[K");
          process.stderr.write(`flusso: ${message.text}\n`);
          exitCode = message.isRefused ? EXIT_BAD_PIPELINE : 1;
      }
    });
    worker.on("error", (error) => {
      process.stderr.write(`flusso: ${error?.stack ?? error}\n`);
      exitCode = 1;
    });
    worker.on("exit", () => settle(exitCode));
  });
}
