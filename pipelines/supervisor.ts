// `flusso run --workers N`: N local processes run the same cluster pipeline (they share its NATS source's
// partitions) under one supervisor, which restarts a worker that crashed after a backoff, stops them all
// on a signal or when one is refused, and adds their counters up in one summary.
import { fork } from "node:child_process";
import { createInterface } from "node:readline";
import type { JobCounters, JobResult } from "../engine/job.ts";
import { EXIT_STOPPED_AT_ONCE, type CommandLine } from "./cliArgs.ts";
import type { JobLog, LogEvent, LogFormat } from "./jobLog.ts";
import type { PipelineSpec } from "./validate.ts";

/** What the supervisor needs of a worker process: a forked ChildProcess has it, and tests fake it. */
export type WorkerProcess = {
  readonly pid?: number;
  on(event: "message", listener: (message: unknown) => void): unknown;
  /** After the process ended and its stderr was passed on: `code` null when `signal` ended it. */
  on(event: "close", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  kill(signal: NodeJS.Signals): boolean;
};

/** Starts worker `index` (0 to N-1); `isRestart`: it ran before and ended unexpectedly. */
export type StartWorker = (index: number, isRestart: boolean) => WorkerProcess;

/** What a supervised `flusso run` sends its supervisor before it exits (pipelines/cli.ts). */
export type WorkerResultMessage = { type: "flusso-result"; result: JobResult };

/** The environment variables a worker is started with. */
export const WORKER_INDEX_ENV = "FLUSSO_WORKER_INDEX";
export const SUPERVISED_ENV = "FLUSSO_SUPERVISED";

/** A worker that dies is restarted after this long, doubled at each further death up to MAX_RESTART_DELAY_MS. */
export const FIRST_RESTART_DELAY_MS = 1_000;
export const MAX_RESTART_DELAY_MS = 30_000;

const EXIT_REFUSED = 2;

export type SupervisorOptions = {
  workers: number;
  start: StartWorker;
  log: (event: LogEvent) => void;
  /** Where SIGINT and SIGTERM are heard: `process` by default; tests emit them on an EventEmitter. */
  signals?: Pick<NodeJS.EventEmitter, "on" | "off">;
  nowMs?: () => number;
};

/** How the supervision ended: the exit code, and the workers' results added up (none when no run reported one). */
export type SupervisorOutcome = { exitCode: number; result?: JobResult };

type Slot = {
  index: number;
  child?: WorkerProcess;
  restartTimer?: ReturnType<typeof setTimeout>;
  nextDelayMs: number;
  startedAtMs: number;
  isDone: boolean;
  /** Every result the worker's runs reported, in order (a restarted worker reports once per run). */
  results: JobResult[];
};

/**
 * Runs N workers until every one has finished:
 * 1. exit 0: finished (a bounded source read to its end, or stopped when asked); not restarted;
 * 2. exit 2: refused (its config or state): the others get SIGTERM and the supervisor exits 2;
 * 3. any other end not asked for (exit 1, a signal): restarted after a backoff, 1 s doubling to 30 s,
 *    back to 1 s after a run that lasted 30 s (a worker that ran that long was not crash-looping);
 * 4. a first SIGINT/SIGTERM sends SIGTERM to every live worker (each stops after a last checkpoint) and
 *    cancels pending restarts; a second sends SIGKILL and ends at once with 130.
 * The exit code is 0 when every worker ended with 0, 2 after a refusal, else 1.
 */
export function superviseWorkers(options: SupervisorOptions): Promise<SupervisorOutcome> {
  const { workers, start, log, signals = process, nowMs = Date.now } = options;
  const startedAtMs = nowMs();
  const slots: Slot[] = Array.from({ length: workers }, (_, index) => ({ index, nextDelayMs: FIRST_RESTART_DELAY_MS, startedAtMs, isDone: false, results: [] }));
  let stopSignal: string | undefined;
  let isRefused = false;
  let hasFailure = false;
  let isFinished = false;
  return new Promise((settle) => {
    const finish = (exitCode: number) => {
      isFinished = true;
      signals.off("SIGINT", onSignal);
      signals.off("SIGTERM", onSignal);
      settle({ exitCode, result: addResults(slots.map((s) => s.results), nowMs() - startedAtMs) });
    };
    const finishIfAllDone = () => {
      if (slots.every((s) => s.isDone)) finish(isRefused ? EXIT_REFUSED : hasFailure ? 1 : 0);
    };
    const stopAll = () => {
      for (const slot of slots) {
        if (slot.restartTimer !== undefined) {
          clearTimeout(slot.restartTimer);
          slot.restartTimer = undefined;
          slot.isDone = true;
        }
        slot.child?.kill("SIGTERM");
      }
      finishIfAllDone();
    };
    const run = (slot: Slot, isRestart: boolean) => {
      slot.restartTimer = undefined;
      slot.startedAtMs = nowMs();
      const child = start(slot.index, isRestart);
      slot.child = child;
      child.on("message", (message) => isResultMessage(message) && slot.results.push(message.result));
      child.on("close", (code, signal) => onEnd(slot, code, signal));
    };
    const onEnd = (slot: Slot, exitCode: number | null, signal: NodeJS.Signals | null) => {
      slot.child = undefined;
      // After a stop at once the workers' ends are no news.
      if (isFinished) return;
      const isStopAsked = stopSignal !== undefined || isRefused;
      // 3.
      if (!isStopAsked && exitCode !== 0 && exitCode !== EXIT_REFUSED) {
        const ranMs = nowMs() - slot.startedAtMs;
        const delayMs = ranMs >= MAX_RESTART_DELAY_MS ? FIRST_RESTART_DELAY_MS : slot.nextDelayMs;
        slot.nextDelayMs = Math.min(delayMs * 2, MAX_RESTART_DELAY_MS);
        log({ event: "worker-restarting", worker: slot.index, exitCode, signal, delayMs });
        slot.restartTimer = setTimeout(() => run(slot, true), delayMs);
        return;
      }
      // 1. and 2.
      log({ event: "worker-ended", worker: slot.index, exitCode, signal, isStopAsked });
      slot.isDone = true;
      if (exitCode !== 0) hasFailure = true;
      if (exitCode === EXIT_REFUSED && !isRefused) {
        isRefused = true;
        log({ event: "worker-refused", worker: slot.index });
        return stopAll();
      }
      finishIfAllDone();
    };
    // 4.
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopSignal !== undefined) {
        for (const slot of slots) slot.child?.kill("SIGKILL");
        log({ event: "stopped-now", why: `${signal} again` });
        return finish(EXIT_STOPPED_AT_ONCE);
      }
      stopSignal = signal;
      log({ event: "workers-stopping", signal, workers: slots.filter((s) => s.child !== undefined).length });
      stopAll();
    };
    signals.on("SIGINT", onSignal);
    signals.on("SIGTERM", onSignal);
    for (const slot of slots) run(slot, false);
  });
}

function isResultMessage(message: unknown): message is WorkerResultMessage {
  return typeof message === "object" && message !== null && (message as { type?: unknown }).type === "flusso-result";
}

/**
 * The workers' results as one: every run's events of this run added up, each worker's counters since it
 * first started (its last run's) added up; complete when every worker's last run was. `elapsedMs` is the
 * supervisor's: the workers ran side by side, so their times do not add up.
 */
export function addResults(resultsPerWorker: readonly JobResult[][], elapsedMs: number): JobResult | undefined {
  const lasts = resultsPerWorker.flatMap((results) => results.slice(-1));
  if (lasts.length === 0) return undefined;
  return {
    counters: addCounters(lasts.map((r) => r.counters)),
    thisRun: addCounters(resultsPerWorker.flat().map((r) => r.thisRun)),
    elapsedMs,
    isComplete: lasts.length === resultsPerWorker.length && lasts.every((r) => r.isComplete),
    // Each worker restored its own checkpoint: no one of them is the run's.
    restoredFromCheckpoint: undefined,
  };
}

function addCounters(all: readonly JobCounters[]): JobCounters {
  const sum: JobCounters = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 };
  for (const counters of all) for (const [name, n] of Object.entries(counters)) sum[name] = (sum[name] ?? 0) + n;
  return sum;
}

type RunLine = Extract<CommandLine, { command: "run" }>;

/**
 * The command line of worker `index`: the supervisor's without `--workers`, the log format made explicit
 * (a worker's stderr is a pipe, which would make it JSON), and `--http` at the port plus `index`. A
 * restart leaves out `--reset` and `--reset-stage`: they were for the first run, and a restarted worker
 * must resume from its checkpoint, not start over.
 */
export function workerArgs(line: RunLine, index: number, format: LogFormat, http: { host: string; port: number } | undefined, isRestart: boolean): string[] {
  const args = ["run", line.file, "--log", format];
  if (line.quiet) args.push("--quiet");
  if (http !== undefined) args.push("--http", workerListen(http, index));
  if (isRestart) return args;
  if (line.reset) args.push("--reset");
  for (const stage of line.resetStages ?? []) args.push("--reset-stage", stage);
  return args;
}

/** Where worker `index` serves HTTP: `port + index` (port 0, any free port, stays 0). */
export function workerListen(http: { host: string; port: number }, index: number): string {
  const host = http.host.includes(":") ? `[${http.host}]` : http.host;
  return `${host}:${http.port === 0 ? 0 : http.port + index}`;
}

/**
 * A line a worker wrote on stderr as the supervisor writes it: a JSON log line gets `worker: index`
 * (after its level and time, where a reader looks first), any other line a `[w<index>] ` prefix.
 */
export function workerLine(line: string, index: number, format: LogFormat): string {
  if (format === "json") {
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
        const { level, time, ...rest } = parsed as Record<string, unknown>;
        return JSON.stringify({ level, time, worker: index, ...rest });
      }
    } catch {
      // Not a log line (a crash's stack trace): prefixed like text.
    }
  }
  return `[w${index}] ${line}`;
}

/** Forks the `flusso` command (this process's script and node options) as worker `index`, its stderr passed on. */
function forkWorker(argsOf: (index: number, isRestart: boolean) => string[], format: LogFormat): StartWorker {
  return (index, isRestart) => {
    const child = fork(process.argv[1], argsOf(index, isRestart), {
      execArgv: process.execArgv,
      env: { ...process.env, [WORKER_INDEX_ENV]: String(index), [SUPERVISED_ENV]: "1" },
      stdio: ["ignore", "inherit", "pipe", "ipc"],
      // Its own process group: a Ctrl-C on the terminal reaches the supervisor only, which forwards one
      // SIGTERM; a worker hearing both would take the second as "stop at once".
      detached: true,
    });
    createInterface({ input: child.stderr!, crlfDelay: Infinity }).on("line", (line) => process.stderr.write(`${workerLine(line, index, format)}\n`));
    return child;
  };
}

/**
 * `flusso run --workers N` once the pipeline loaded: refused (exit 2, nothing started) without a
 * `cluster:` section or with HTTP ports past 65535; else supervises N forked workers and logs the summary.
 */
export async function runWorkers(line: RunLine & { workers: number }, spec: PipelineSpec, log: JobLog, format: LogFormat): Promise<number> {
  const refuse = (text: string) => {
    process.stderr.write(`flusso run: ${text}\n`);
    return EXIT_REFUSED;
  };
  if (spec.cluster === undefined) {
    return refuse(`--workers needs a cluster: section in ${line.file}: without one every worker would read all of the source's partitions`);
  }
  const lastPort = spec.http === undefined || spec.http.port === 0 ? 0 : spec.http.port + line.workers - 1;
  if (lastPort > 65535) return refuse(`--workers ${line.workers}: worker ${line.workers - 1} would serve HTTP at port ${lastPort}, past 65535`);
  const start = forkWorker((index, isRestart) => workerArgs(line, index, format, spec.http, isRestart), format);
  const logStart: StartWorker = (index, isRestart) => {
    const child = start(index, isRestart);
    log.event({ event: "worker-started", worker: index, pid: child.pid, isRestart, ...(spec.http ? { http: workerListen(spec.http, index) } : {}) });
    return child;
  };
  const outcome = await superviseWorkers({ workers: line.workers, start: logStart, log: (event) => log.event(event) });
  if (outcome.result !== undefined && outcome.exitCode !== EXIT_STOPPED_AT_ONCE) log.summary(outcome.result, line.workers);
  return outcome.exitCode;
}
