// What `flusso run` and `flusso publish` tell on stderr, and how: the job's events (engine/jobEvents.ts)
// and the command's own, worded once here; human-readable lines on a terminal, JSON lines (pino: level,
// time, msg and the event's fields) otherwise or with `--log json`; the redrawn progress line (terminal
// only) and the summary at the end.
import { pino, type Logger } from "pino";
import type { JobEvent } from "../engine/jobEvents.ts";
import type { JobCounters, JobResult } from "../engine/job.ts";
import type { SourceProgress } from "../engine/sources/source.ts";

/** `--log`: text lines for a person, or JSON lines for a collector. */
export type LogFormat = "text" | "json";
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** `debug` lines are written only when asked (JobLog's `isDebug`: FLUSSO_LOG_LEVEL=debug). */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** What the commands themselves tell, beside the job's events. */
export type CommandEvent =
  | { event: "http"; url: string }
  | { event: "serving" }
  | { event: "stop-asked"; signal: string; timeoutMs: number }
  | { event: "stopped-now"; why: string; checkpointId?: number }
  | { event: "stopped-waiting" }
  | { event: "failed"; error: string }
  /** The job's thread had ended its work but something it opened kept it alive: it was ended after `graceMs`. */
  | { event: "thread-lingered"; graceMs: number }
  | { event: "publish-progress"; published: number; eventsPerSecond: number; done?: number; total?: number }
  | { event: "published"; published: number; elapsedMs: number; eventsPerSecond: number; subjects: string; unreadable: number }
  /** `--workers N` (pipelines/supervisor.ts): a worker process started; `http`: where it serves, if it does. */
  | { event: "worker-started"; worker: number; pid: number | undefined; isRestart: boolean; http?: string }
  /** A worker ended: `exitCode` null when a `signal` ended it; `isStopAsked`: the supervisor had asked it to stop. */
  | { event: "worker-ended"; worker: number; exitCode: number | null; signal: string | null; isStopAsked: boolean }
  | { event: "worker-restarting"; worker: number; exitCode: number | null; signal: string | null; delayMs: number }
  | { event: "worker-refused"; worker: number }
  | { event: "workers-stopping"; signal: string; workers: number };

/** An event, and the partition whose job told it when a cluster's worker runs one job per partition. */
export type LogEvent = (JobEvent | CommandEvent) & { partition?: number };

/** What the progress line shows: read from the job every progress interval. */
export type ProgressSnapshot = {
  counters: JobCounters;
  /** -Infinity before the first event, Infinity at the end. */
  watermarkMs: number;
  /** When the last checkpoint committed (processing time), if one has. */
  lastCheckpointAtMs?: number;
  /** How far a bounded source has read (Source.progress). */
  source?: SourceProgress;
  atMs: number;
};

/** The level and the sentence of an event; JSON lines carry the same sentence as `msg`. */
export function describeEvent(e: LogEvent): { level: LogLevel; msg: string } {
  const debug = (msg: string) => ({ level: "debug" as const, msg });
  const info = (msg: string) => ({ level: "info" as const, msg });
  const warn = (msg: string) => ({ level: "warn" as const, msg });
  const error = (msg: string) => ({ level: "error" as const, msg });
  switch (e.event) {
    case "started":
      return info(`started: reading ${e.source} (${plural(e.partitions, "partition")}), writing to ${e.sinks.join(", ")}; state in ${e.stateDir}`);
    case "restored":
      return info(`restored from checkpoint ${e.checkpointId}${Number.isFinite(e.watermarkMs) ? `; event time resumes at ${timeText(e.watermarkMs)}` : ""}`);
    case "fresh-start":
      return info(e.wasReset ? "fresh start: --reset dropped the checkpoint; reading the source from its beginning" : "fresh start: no checkpoint; reading the source from its beginning");
    case "connected":
      return info(`${e.client}: connected to NATS at ${e.address}`);
    case "retrying":
      return warn(`${e.client}: NATS at ${e.address} cannot be reached (${e.reason}); retrying every ${e.retryMs / 1000} s until it can`);
    case "disconnected":
      return warn(`${e.client}: disconnected from NATS at ${e.address}; reconnecting`);
    case "reconnected":
      return info(`${e.client}: reconnected to NATS at ${e.address}`);
    case "checkpoint":
      return debug(
        `checkpoint ${e.checkpointId} durable after ${duration(e.totalMs)} (the job held ${duration(e.waitMs + e.flushMs + e.snapshotMs)}: ` +
          `${duration(e.waitMs)} waiting for the previous one, ${duration(e.flushMs)} flushing sinks, ${duration(e.snapshotMs)} packing ${e.entries} entries), ${e.bytes} bytes`,
      );
    case "checkpoint-slow":
      return warn(`checkpoint ${e.checkpointId} was slow: ${duration(e.durationMs)}, with checkpoints every ${duration(e.intervalMs)}`);
    case "checkpoint-failed":
      return error(`checkpoint ${e.checkpointId} failed: ${e.error}`);
    case "falling-behind":
      return warn(`falling behind: event time is ${duration(e.lagMs)} behind the clock${e.pendingMessages === undefined ? "" : `, ${e.pendingMessages} messages waiting`}, growing for ${duration(e.forMs)}`);
    case "caught-up":
      return info(`caught up: event time is ${duration(e.lagMs)} behind the clock and no longer falling back`);
    case "input-ended":
      return info(`the input has ended after ${e.read} events: firing what is due and taking a last checkpoint`);
    case "stopping":
      return info(`stopping: taking a last checkpoint (${e.checkpointId})`);
    case "stopped-in-round":
      return info(`stopped while waiting for the group's round: checkpoint ${e.checkpointId} stands, and the partition resumes from it`);
    case "worker-joined":
      return info(`worker ${e.workerId} joined group ${e.group}: ${plural(e.workers, "worker")} share ${plural(e.partitions, "partition")}`);
    case "partition-taken": {
      const from = e.restoredFrom === "nothing" ? "no checkpoint yet" : `checkpoint ${e.checkpointId} from ${e.restoredFrom === "cache" ? "the local cache" : `NATS (${plural(e.transactions, "transaction")})`}`;
      return info(`partition ${e.partition} taken: ${from}`);
    }
    case "partition-released":
      return info(`partition ${e.partition} released after its last checkpoint (${e.why === "done" ? "read to its end" : e.why === "stop" ? "stopping" : "another worker's share"})`);
    case "partition-lost":
      return warn(`partition ${e.partition} lost: ${e.reason}`);
    case "group-done":
      return info(`every partition of group ${e.group} was read to its end`);
    case "http":
      return info(`state, metrics and the dashboard at ${e.url}`);
    case "serving":
      return info("the input has ended; its final state is still served until Ctrl-C");
    case "thread-lingered":
      return warn(`the job's thread was done but something it opened kept it alive for ${e.graceMs / 1000} s: it was ended (a bug to report)`);
    case "stop-asked":
      return warn(`${e.signal}: stopping after a last checkpoint (again to stop at once; at most ${e.timeoutMs / 1000} s)`);
    case "stopped-now": {
      const state =
        e.checkpointId === undefined
          ? "without a last checkpoint; the next run resumes from the last one"
          : `after its last checkpoint (${e.checkpointId}), which is durable; what it holds for NATS is delivered by the next run`;
      return error(`${e.why}: stopping now, ${state}`);
    }
    case "stopped-waiting":
      return info("stopped before the job started: nothing was read");
    case "failed":
      return error(e.error);
    case "publish-progress":
      return info(`${e.published} published, ${e.eventsPerSecond} events/s${e.total ? ` (${percent(e.done!, e.total)})` : ""}`);
    case "published":
      return info(
        `published: ${e.published} events in ${(e.elapsedMs / 1000).toFixed(1)} s (${e.eventsPerSecond} events/s) to ${e.subjects}${e.unreadable > 0 ? `, ${e.unreadable} unreadable skipped` : ""}`,
      );
    case "worker-started":
      return info(`worker ${e.worker} ${e.isRestart ? "restarted" : "started"} (pid ${e.pid ?? "unknown"})${e.http === undefined ? "" : `, serving HTTP at ${e.http}`}`);
    case "worker-ended": {
      const how = `worker ${e.worker} ended (${exitText(e.exitCode, e.signal)})`;
      if (e.exitCode === 0) return info(`${how}${e.isStopAsked ? "" : ": its input is read to the end"}`);
      return e.isStopAsked ? warn(how) : error(how);
    }
    case "worker-restarting":
      return warn(`worker ${e.worker} ended unexpectedly (${exitText(e.exitCode, e.signal)}); restarting it in ${duration(e.delayMs)}`);
    case "worker-refused":
      return error(`worker ${e.worker} was refused (exit code 2): stopping the other workers`);
    case "workers-stopping":
      return warn(`${e.signal}: stopping ${plural(e.workers, "worker")} after their last checkpoints (again to stop them at once)`);
  }
}

/** The engine's counters, in the order the summary shows them; the rest are the pipeline's own. */
const ENGINE_COUNTERS = ["read", "outputs", "late", "deadLettered", "checkpoints"] as const;

/** Width the summary's second line wraps at. */
const SUMMARY_COLUMNS = 100;

/**
 * The summary of a run: the engine's counters in a fixed order on the first line, the pipeline's own
 * (duplicates, triggers sent, ...) by name on a second, wrapped to fit a terminal.
 */
export function summaryLines(result: JobResult, workers?: number): string[] {
  const c = result.thisRun;
  if (result.isComplete && c.read === 0 && result.restoredFromCheckpoint !== undefined) {
    return [`done: the source was already read to its end (checkpoint ${result.restoredFromCheckpoint}); run with --reset to start over`];
  }
  const verb = result.isComplete ? "done" : "stopped";
  const first = `${verb}: ${c.read} events in ${(result.elapsedMs / 1000).toFixed(1)} s (${eventsPerSecond(c.read, result.elapsedMs)} events/s), ${c.outputs} outputs, ${c.late} late, ${c.deadLettered} dead-lettered${workers === undefined ? "" : `; ${plural(workers, "worker")}`}`;
  const own = pipelineCounters(c).map(([name, n]) => `${n} ${name.replaceAll("_", " ")}`);
  if (own.length === 0) return [first];
  const lines = ["  pipeline:"];
  for (const [i, part] of own.entries()) {
    const text = ` ${part}${i < own.length - 1 ? "," : ""}`;
    if (lines.at(-1)!.length + text.length > SUMMARY_COLUMNS) lines.push("   ");
    lines[lines.length - 1] += text;
  }
  return [first, ...lines];
}

/** The counters operators keep, sorted by name: a fixed order from run to run. */
function pipelineCounters(c: JobCounters): Array<[string, number]> {
  return Object.entries(c)
    .filter(([name]) => !(ENGINE_COUNTERS as readonly string[]).includes(name))
    .sort(([a], [b]) => (a < b ? -1 : 1));
}

function eventsPerSecond(events: number, elapsedMs: number): number {
  return Math.round(events / Math.max(elapsedMs / 1000, 1e-3));
}

/**
 * The fields of the summary as a JSON line: the engine's counters, then the pipeline's under `pipeline`
 * (and, for `--workers`, how many workers the counters add up).
 */
function summaryFields(result: JobResult, workers?: number): Record<string, unknown> {
  const c = result.thisRun;
  return {
    event: "done",
    isComplete: result.isComplete,
    ...Object.fromEntries(ENGINE_COUNTERS.map((name) => [name, c[name]])),
    elapsedMs: Math.round(result.elapsedMs),
    eventsPerSecond: eventsPerSecond(c.read, result.elapsedMs),
    restoredFromCheckpoint: result.restoredFromCheckpoint ?? null,
    // The process started at performance.timeOrigin (this is its main thread): its start-up, then
    // the state's restore and the sources' opening, until the first event went through.
    ...(result.firstEventAtMs === undefined ? {} : { firstEventAfterStartMs: Math.round(result.firstEventAtMs - performance.timeOrigin) }),
    pipeline: Object.fromEntries(pipelineCounters(c)),
    ...(workers === undefined ? {} : { workers }),
  };
}

/**
 * The progress line: events read, the rate since the last line, the watermark as a time, the age of
 * the last checkpoint and, where the input's size is known, how much of it was read.
 */
export function progressLine(now: ProgressSnapshot, previous: ProgressSnapshot | undefined, startedAtMs: number): string {
  const since = previous ?? { counters: { read: 0 }, atMs: startedAtMs };
  const rate = eventsPerSecond(now.counters.read - since.counters.read, now.atMs - since.atMs);
  const share = now.source !== undefined && now.source.total > 0 ? ` (${percent(now.source.done, now.source.total)})` : "";
  const watermark = Number.isFinite(now.watermarkMs) ? timeText(now.watermarkMs) : "none yet";
  const checkpoint = now.lastCheckpointAtMs === undefined ? "no checkpoint yet" : `checkpoint ${duration(now.atMs - now.lastCheckpointAtMs)} ago`;
  return `${now.counters.read} events${share}, ${rate}/s, watermark ${watermark}, ${checkpoint}`;
}

/** Writes events, the progress line and the summary to stderr, as `format` says. */
export class JobLog {
  private readonly json?: Logger;
  private isProgressShown = false;

  /**
   * `isTerminal`: stderr is a TTY (the progress line is drawn only there); `quiet`: only warnings
   * and errors, no progress and no summary; `isDebug`: debug lines too (every checkpoint).
   */
  constructor(
    private readonly format: LogFormat,
    private readonly options: { isTerminal: boolean; quiet: boolean; isDebug?: boolean; columns?: number; write?: (text: string) => void },
  ) {
    if (format === "json") {
      // Synchronous to fd 2: a line is out before the process can exit, and in order with any text.
      const destination = options.write ? { write: options.write } : pino.destination({ fd: 2, sync: true });
      const level = options.isDebug ? "debug" : "info";
      this.json = pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, destination);
    }
  }

  /** Whether debug lines are written (and so worth telling). */
  get isDebug(): boolean {
    return this.options.isDebug === true;
  }

  /** Whether a progress line is drawn at all: text on a terminal, not quiet. */
  get showsProgress(): boolean {
    return this.format === "text" && this.options.isTerminal && !this.options.quiet;
  }

  event(e: LogEvent): void {
    const { level, msg } = describeEvent(e);
    if (level === "debug" && !this.isDebug) return;
    if (this.options.quiet && (level === "info" || level === "debug")) return;
    // A field that only repeats the message (a failure's text) is left to `msg`.
    if (this.json) this.json[level](Object.fromEntries(Object.entries(e).filter(([, value]) => value !== msg)), msg);
    else this.line(`flusso: ${"partition" in e && !e.event.startsWith("partition-") ? `[p${e.partition}] ` : ""}${msg}`);
  }

  progress(line: string): void {
    if (!this.showsProgress) return;
    const columns = Math.max(20, (this.options.columns || 80) - 1);
    this.write(`\r\x1b[K${line.slice(0, columns)}`);
    this.isProgressShown = true;
  }

  /** The line a command ends with (published: ...): as it is in text, a JSON line otherwise; none when quiet. */
  outcome(e: LogEvent): void {
    if (this.options.quiet) return;
    const { level, msg } = describeEvent(e);
    if (this.json) this.json[level](e, msg);
    else this.line(msg);
  }

  /** `workers`: the result adds up that many workers' (`--workers`). */
  summary(result: JobResult, workers?: number): void {
    if (this.options.quiet) return;
    const lines = summaryLines(result, workers);
    if (this.json) this.json.info(summaryFields(result, workers), lines[0]);
    else for (const line of lines) this.line(line);
  }

  /** A line of text, below the progress line (which the next one redraws). */
  private line(text: string): void {
    this.write(`${this.isProgressShown ? "\r\x1b[K" : ""}${text}\n`);
    this.isProgressShown = false;
  }

  private write(text: string): void {
    if (this.options.write) this.options.write(text);
    else process.stderr.write(text);
  }
}

/** `2024-05-20 10:00:05` (UTC): an event time as the progress line and the log show it. */
export function timeText(ms: number): string {
  return Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") : "the end of time";
}

/** `850 ms`, `12.5 s`, `3 min`, `5 h`, `2 d`: a duration to the unit a person reads. */
export function duration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1_000) return `${Math.round(ms)} ms`;
  if (abs < 60_000) return `${(ms / 1000).toFixed(abs < 10_000 ? 1 : 0)} s`;
  if (abs < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (abs < 86_400_000) return `${Math.round(ms / 3_600_000)} h`;
  return `${Math.round(ms / 86_400_000)} d`;
}


function percent(done: number, total: number): string {
  return `${Math.min(100, Math.floor((done / total) * 100))}%`;
}

/** `exit code 1` or `signal SIGKILL`: how a process ended. */
function exitText(exitCode: number | null, signal: string | null): string {
  return signal === null ? `exit code ${exitCode}` : `signal ${signal}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
