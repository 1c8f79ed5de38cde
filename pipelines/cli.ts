// The `flusso` command line: `flusso run <pipeline.yaml> [--reset]`. A bad pipeline exits with 2
// before anything runs; a run prints progress on a terminal and a one-line summary at the end.
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { JobCounters, JobResult } from "../engine/job.ts";
import { runPipeline } from "./compile.ts";
import { PipelineInvalid } from "./errors.ts";
import { loadPipelineFile } from "./load.ts";
import { publish, type PublishOptions } from "./publish.ts";
import { validatePipeline, type PipelineSpec } from "./validate.ts";

const USAGE = `usage: flusso run <pipeline.yaml> [--reset] [--quiet]
       flusso publish <file.jsonl|file.csv|file.msgpack|generator> [options]

  run      runs a pipeline until its source ends (or Ctrl-C: a last checkpoint, then exit)
    --reset        forgets the state dir's checkpoint and starts from the beginning
    --quiet        no progress line and no summary
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
    --stamp FIELD  adds the publish time (epoch ms) to every event`;

export const EXIT_BAD_PIPELINE = 2;

/** Loads and validates a pipeline file; throws PipelineInvalid with every bad value. */
export function readPipeline(file: string, env: NodeJS.ProcessEnv = process.env): PipelineSpec {
  const path = resolve(file);
  return validatePipeline(loadPipelineFile(path, env), path, dirname(path));
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

const OPTIONS = {
  reset: { type: "boolean" },
  quiet: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  servers: { type: "string" },
  stream: { type: "string" },
  subject: { type: "string" },
  partitions: { type: "string" },
  rate: { type: "string" },
  format: { type: "string" },
  key: { type: "string" },
  columns: { type: "string" },
  events: { type: "string" },
  seed: { type: "string" },
  stamp: { type: "string" },
} as const;

function wholeNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) throw new Error(`--${name}: expected a whole number, got ${JSON.stringify(text)}`);
  return n;
}

async function publishCommand(input: string, values: Record<string, string | boolean | undefined>): Promise<number> {
  const text = (name: string) => values[name] as string | undefined;
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
    process.stderr.write(`${(error as Error).message}\n`);
    return EXIT_BAD_PIPELINE;
  }
  const quiet = values.quiet === true;
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

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return EXIT_BAD_PIPELINE;
  }
  const [command, file] = parsed.positionals;
  if (command === "publish" && file && !parsed.values.help) return publishCommand(file, parsed.values);
  if (parsed.values.help || command !== "run" || !file) {
    process.stderr.write(`${USAGE}\n`);
    return parsed.values.help ? 0 : EXIT_BAD_PIPELINE;
  }
  let spec: PipelineSpec;
  try {
    spec = readPipeline(file);
  } catch (error) {
    if (!(error instanceof PipelineInvalid)) throw error;
    process.stderr.write(`${error.message}\n`);
    return EXIT_BAD_PIPELINE;
  }
  const stop = new AbortController();
  // The first signal stops at the next cut with a last checkpoint. That checkpoint may wait on a sink
  // that cannot answer (a NATS server out of reach), so a second signal, or the stop timeout, exits at
  // once: as safe as a crash, since the job resumes from its last checkpoint.
  const stopNow = (why: string) => {
    process.stderr.write(`${why}: stopping now, without a checkpoint; the next run resumes from the last one\n`);
    process.exit(130);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stop.signal.aborted) {
      const timeoutMs = stopTimeoutMs();
      process.stderr.write(`\n${signal}: stopping after a last checkpoint (again to stop at once; at most ${timeoutMs / 1000} s)\n`);
      setTimeout(() => stopNow(`no last checkpoint within ${timeoutMs / 1000} s`), timeoutMs).unref();
      stop.abort();
      return;
    }
    stopNow(signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const showProgress = !parsed.values.quiet && process.stderr.isTTY;
  const startedAtMs = Date.now();
  const result = await runPipeline(spec, {
    reset: parsed.values.reset,
    signal: stop.signal,
    onProgress: showProgress ? (c) => process.stderr.write(progressLine(c, startedAtMs)) : undefined,
  });
  if (showProgress) process.stderr.write("\r\x1b[K");
  if (!parsed.values.quiet) process.stderr.write(`${summaryLine(result)}\n`);
  return 0;
}
