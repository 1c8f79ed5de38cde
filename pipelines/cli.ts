// The `flusso` command line: `flusso run <pipeline.yaml> [--reset]`. A bad pipeline exits with 2
// before anything runs; a run prints progress on a terminal and a one-line summary at the end.
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { JobCounters, JobResult } from "../engine/job.ts";
import { runPipeline } from "./compile.ts";
import { PipelineInvalid } from "./errors.ts";
import { loadPipelineFile } from "./load.ts";
import { validatePipeline, type PipelineSpec } from "./validate.ts";

const USAGE = `usage: flusso run <pipeline.yaml> [--reset] [--quiet]

  run      runs a pipeline until its source ends (or Ctrl-C: a last checkpoint, then exit)
  --reset  forgets the state dir's checkpoint and starts from the beginning
  --quiet  no progress line and no summary`;

export const EXIT_BAD_PIPELINE = 2;

/** Loads and validates a pipeline file; throws PipelineInvalid with every bad value. */
export function readPipeline(file: string, env: NodeJS.ProcessEnv = process.env): PipelineSpec {
  const path = resolve(file);
  return validatePipeline(loadPipelineFile(path, env), path, dirname(path));
}

export function summaryLine(result: JobResult): string {
  const c = result.thisRun;
  const seconds = result.elapsedMs / 1000;
  const rate = Math.round(c.read / Math.max(seconds, 1e-3));
  const resumed = result.restoredFromCheckpoint === undefined ? "" : ` (resumed from checkpoint ${result.restoredFromCheckpoint})`;
  const verb = result.isComplete ? "done" : "stopped";
  if (result.isComplete && c.read === 0 && result.restoredFromCheckpoint !== undefined) {
    return `done: the source was already read to its end (checkpoint ${result.restoredFromCheckpoint}); run with --reset to start over`;
  }
  return (
    `${verb}: ${c.read} events in ${seconds.toFixed(1)} s (${rate} events/s)${resumed}, ` +
    `${c.outputs} outputs, ${c.late} late, ${c.deadLettered} dead-lettered`
  );
}

function progressLine(c: Readonly<JobCounters>, startedAtMs: number): string {
  const seconds = (Date.now() - startedAtMs) / 1000;
  return `\r${c.read} events, ${c.outputs} outputs, ${c.late} late, ${c.deadLettered} dead-lettered, ${seconds.toFixed(1)} s `;
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { reset: { type: "boolean" }, quiet: { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return EXIT_BAD_PIPELINE;
  }
  const [command, file] = parsed.positionals;
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
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
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
