// The words of a `flusso` command line: which command, its file and its options, or one line saying
// what is wrong with them (an unknown command or option, an option of another command, a missing value).
import { LOG_FORMATS, type LogFormat } from "./jobLog.ts";

/** A bad pipeline file or a bad command line, or a state the pipeline cannot resume: nothing ran. */
export const EXIT_BAD_PIPELINE = 2;

/** A stop that could not wait for its last checkpoint (a second signal, or the stop timeout). */
export const EXIT_STOPPED_AT_ONCE = 130;

export const COMMANDS = ["run", "publish", "state", "validate"] as const;
export type CommandName = (typeof COMMANDS)[number];

type OptionSpec = {
  /** `--name VALUE` (or `--name=VALUE`); otherwise a flag. */
  takesValue: boolean;
  /** The commands it applies to; any other refuses it. */
  commands: readonly CommandName[];
  /** May be given more than once (each value kept, in order); otherwise the last one counts. */
  isRepeatable?: boolean;
};

/** Every option, with the commands that take it. `--help` and `--version` apply everywhere. */
export const OPTIONS: Record<string, OptionSpec> = {
  reset: { takesValue: false, commands: ["run"] },
  "reset-stage": { takesValue: true, commands: ["run"], isRepeatable: true },
  http: { takesValue: true, commands: ["run"] },
  workers: { takesValue: true, commands: ["run"] },
  quiet: { takesValue: false, commands: ["run", "publish"] },
  log: { takesValue: true, commands: ["run", "publish"] },
  servers: { takesValue: true, commands: ["publish"] },
  stream: { takesValue: true, commands: ["publish"] },
  subject: { takesValue: true, commands: ["publish"] },
  partitions: { takesValue: true, commands: ["publish"] },
  rate: { takesValue: true, commands: ["publish"] },
  format: { takesValue: true, commands: ["publish"] },
  key: { takesValue: true, commands: ["publish", "state"] },
  columns: { takesValue: true, commands: ["publish"] },
  events: { takesValue: true, commands: ["publish"] },
  seed: { takesValue: true, commands: ["publish"] },
  pace: { takesValue: true, commands: ["publish"] },
  stamp: { takesValue: true, commands: ["publish"] },
};

const GLOBAL_OPTIONS = ["help", "version"];

export type CommandLine =
  | { command: "help" }
  | { command: "version" }
  /** `resetStages`: only when `--reset-stage` was given. */
  /** `log`: `--log text|json`, when given (default: text on a terminal, JSON otherwise). */
  /** `workers`: `--workers N`, when given: that many local processes run the pipeline (pipelines/supervisor.ts). */
  | { command: "run"; file: string; reset: boolean; quiet: boolean; resetStages?: string[]; http?: string; log?: LogFormat; workers?: number }
  | { command: "state"; file: string; key?: string }
  | { command: "validate"; file: string }
  | { command: "publish"; input: string; values: Record<string, string>; quiet: boolean; log?: LogFormat }
  /** `message`: one line for the user; the usage follows it, and the exit code is 2. */
  | { command: "mistake"; message: string };

/** Reads `argv` (without `node` and the script). */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const positionals: string[] = [];
  const flags = new Set<string>();
  const values: Record<string, string> = {};
  const lists: Record<string, string[]> = {};
  const given: string[] = [];
  let isAfterDashes = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (isAfterDashes || !arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    if (arg === "--") {
      isAfterDashes = true;
      continue;
    }
    if (arg === "-h") {
      flags.add("help");
      continue;
    }
    if (!arg.startsWith("--")) return mistake(positionals[0], `unknown option ${arg}${suggestion(arg.replace(/^-+/, ""), optionNames(), "--")}`);
    const equalsAt = arg.indexOf("=");
    const name = arg.slice(2, equalsAt < 0 ? undefined : equalsAt);
    if (GLOBAL_OPTIONS.includes(name)) {
      flags.add(name);
      continue;
    }
    const spec = OPTIONS[name];
    if (spec === undefined) return mistake(positionals[0], `unknown option --${name}${suggestion(name, optionNames(), "--")}`);
    given.push(name);
    if (!spec.takesValue) {
      if (equalsAt >= 0) return mistake(positionals[0], `--${name} takes no value`);
      flags.add(name);
      continue;
    }
    let value: string | undefined;
    if (equalsAt >= 0) value = arg.slice(equalsAt + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) return mistake(positionals[0], `--${name} needs a value`);
      i++;
    }
    values[name] = value;
    if (spec.isRepeatable) (lists[name] ??= []).push(value);
  }
  if (flags.has("help")) return { command: "help" };
  if (flags.has("version")) return { command: "version" };
  const [command, target, ...extra] = positionals;
  const commandList = (last: string) => `${COMMANDS.slice(0, -1).join(", ")} ${last} ${COMMANDS.at(-1)}`;
  if (command === undefined) return { command: "mistake", message: `flusso: which command? ${commandList("or")}` };
  if (!(COMMANDS as readonly string[]).includes(command)) {
    return { command: "mistake", message: `flusso: unknown command ${JSON.stringify(command)}${suggestion(command, COMMANDS, "")}; the commands are ${commandList("and")}` };
  }
  const name = command as CommandName;
  for (const option of given) {
    const takers = OPTIONS[option].commands;
    if (!takers.includes(name)) return mistake(name, `--${option} is an option of flusso ${takers.join(" and ")}, not of ${name}`);
  }
  const what = name === "publish" ? "a file or generator" : "a pipeline file";
  if (target === undefined) return mistake(name, `${what} is missing`);
  if (extra.length > 0) return mistake(name, `one ${name === "publish" ? "input" : "pipeline file"} expected, got also ${extra.map((x) => JSON.stringify(x)).join(" ")}`);
  const quiet = flags.has("quiet");
  if (values.log !== undefined && !(LOG_FORMATS as readonly string[]).includes(values.log)) {
    return mistake(name, `--log: expected ${LOG_FORMATS.join(" or ")}, got ${JSON.stringify(values.log)}`);
  }
  const log = values.log === undefined ? {} : { log: values.log as LogFormat };
  if (name === "run") {
    const resetStages = lists["reset-stage"];
    const workers = values.workers === undefined ? undefined : workerCount(values.workers);
    if (workers === null) return mistake(name, `--workers: expected a whole number from 1 to ${MAX_WORKERS}, got ${JSON.stringify(values.workers)}`);
    return {
      command: "run",
      file: target,
      reset: flags.has("reset"),
      quiet,
      ...(resetStages ? { resetStages } : {}),
      ...(values.http === undefined ? {} : { http: values.http }),
      ...log,
      ...(workers === undefined ? {} : { workers }),
    };
  }
  if (name === "state") return { command: "state", file: target, ...(values.key === undefined ? {} : { key: values.key }) };
  if (name === "validate") return { command: "validate", file: target };
  const { log: _log, ...publishValues } = values;
  return { command: "publish", input: target, values: publishValues, quiet, ...log };
}

/** More local workers than this is a typo, not a machine's cores. */
export const MAX_WORKERS = 64;

/** `--workers`' value, or null when it is not a whole number from 1 to MAX_WORKERS. */
function workerCount(text: string): number | null {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= MAX_WORKERS ? n : null;
}

function mistake(command: string | undefined, text: string): CommandLine {
  const isCommand = command !== undefined && (COMMANDS as readonly string[]).includes(command);
  return { command: "mistake", message: `flusso${isCommand ? ` ${command}` : ""}: ${text}` };
}

function optionNames(): string[] {
  return [...Object.keys(OPTIONS), ...GLOBAL_OPTIONS];
}

/** ` (did you mean --reset?)` for a word within two edits of a known one, else "". */
function suggestion(word: string, known: readonly string[], prefix: string): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best === undefined ? "" : ` (did you mean ${prefix}${best}?)`;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}
