// The `flusso` command line: `flusso run`, `flusso validate`, `flusso state`, `flusso publish`.
// A bad pipeline or command line exits with 2 before anything runs, and so does a state dir the
// pipeline cannot resume (its state changed shape); a run (on a worker thread) logs what happens as it
// happens (pipelines/jobLog.ts: text on a terminal, JSON lines otherwise), draws a progress line on a
// terminal and a summary at the end. stdout carries only what a command answers (the state report, the
// validated pipeline, --help, --version) and the stdout sink's outputs. Exit codes: 0 done or stopped,
// 1 failed, 2 bad pipeline, command line or state refused, 130 stopped at once.
import { readFileSync } from "node:fs";
import { EXIT_BAD_PIPELINE, parseCommandLine } from "./cliArgs.ts";
import { PACKAGE_ROOT } from "./packageRoot.ts";

const USAGE = `usage: flusso run <pipeline.yaml> [--reset | --reset-stage NAME ...] [--http [HOST:]PORT] [--workers N] [--log text|json] [--quiet]
       flusso validate <pipeline.yaml>
       flusso state <pipeline.yaml> [--key K]
       flusso publish <file.jsonl|file.csv|file.msgpack|generator> [options]
       flusso --version | --help

  run      runs a pipeline until its source ends (or Ctrl-C: a last checkpoint, then exit)
    --reset        forgets the state dir's checkpoint and starts from the beginning
    --reset-stage NAME  rebuilds that stage or window from empty and keeps the rest (repeatable)
    --http [HOST:]PORT  serves state, metrics and the dashboard there (default host 127.0.0.1)
    --log F        text | json: how events are logged on stderr (default: text on a terminal, else json)
    --workers N    runs N local worker processes (1 to 64) of a pipeline with a cluster: section,
                   restarting one that crashes; worker i serves --http at PORT+i; one summary adds them up
    --quiet        only warnings and errors: no progress line and no summary
  validate checks a pipeline and prints what it compiles to, without running or creating anything
           (exit 0; or 2, naming every error with its path)
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
    --pace P       generator only: events per second of simulated event time (default 200): lower,
                   and its clock runs faster beside the publish rate
    --stamp FIELD  adds the publish time (epoch ms) to every event
    --log F        text | json, as for run
    --quiet        only warnings and errors: no progress and no summary`;

/** The version in package.json. */
export function flussoVersion(): string {
  return (JSON.parse(readFileSync(new URL("package.json", PACKAGE_ROOT), "utf8")) as { version: string }).version;
}

/** Help, the version and a mistake are answered at once; the commands load what they need first. */
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
    case "run": {
      // A run in this process: its job's thread loads while the pipeline is read and checked.
      const threads = await import("./jobThread.ts");
      const jobThread = line.workers === undefined ? threads.startJobThread() : undefined;
      try {
        return await (await import("./commands.ts")).runCommandLine(line, jobThread);
      } finally {
        // A pipeline refused before it ran leaves the thread unused.
        if (jobThread !== undefined) await threads.dismiss(jobThread);
      }
    }
    default:
      return (await import("./commands.ts")).runCommandLine(line);
  }
}
