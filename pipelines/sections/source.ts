// Reads `source:` (files, the built-in generator or a NATS JetStream stream) into the SourceSpec the
// job's source is built from; a source file that is missing, no regular file or unreadable is refused
// here, before the run creates anything.
import { closeSync, openSync, statSync, type Stats } from "node:fs";
import type { FileSourceOptions } from "../../engine/sources/fileSource.ts";
import type { NatsSourceOptions } from "../../engine/sources/natsSource.ts";
import { NATS_SOURCE_DEFAULTS } from "../../engine/natsSubjects.ts";
import { MAX_LINE_BYTES } from "../../engine/valueLimits.ts";
import { GENERATOR_DEFAULTS, GENERATOR_RANGES, MAX_UPLIFT, type GeneratorOptions } from "../../simulator/generatorSource.ts";
import type { Assignment } from "../../engine/assignment.ts";
import { quote } from "../errors.ts";
import { describe, type Reader } from "../reader.ts";
import { readServers, STREAM_NAME, SUBJECT_PATTERN } from "./nats.ts";

/** A NATS source as read: the engine's options but what the job adds at run time (a stop signal, a log) or leaves to the engine (pollMs), every default filled in. */
export type NatsSourceSpec = Required<Omit<NatsSourceOptions, "pollMs" | "signal" | "log" | "partition" | "replicas">> & { servers: string[] };

/** The generator as read: its options but the share of duplicates (the simulator's own), every default filled in. */
export type GeneratorSpec = Required<Omit<GeneratorOptions, "duplicateFraction">> & {
  /** `effects:` as written, by experiment and variant: linked to the pipeline's experiments into `treatments` (linkEffects). */
  effects: Record<string, Record<string, number>>;
};

/**
 * What happens at the end of a bounded source: `stop` (the default) ends event time at the input's
 * horizon for the behaviour stages (no wake-up after the last event plus the bound fires), `drain`
 * fires every pending wake-up. Windows fire either way.
 */
export type AtEnd = "stop" | "drain";

export const DEFAULT_AT_END: AtEnd = "stop";

type SourceKindSpec = { file: FileSourceOptions } | { generator: GeneratorSpec } | { nats: NatsSourceSpec };

/** A source, and what happens at its end (`atEnd`, default "stop"). */
export type SourceSpec = SourceKindSpec & { atEnd?: AtEnd };

const SOURCE_KINDS = ["file", "generator", "nats"] as const;

/** Messages the NATS source may hold for the job, in memory: 10x the default, tens of MB of events. */
const MAX_BUFFER_MESSAGES = 100_000;

/** Partitions a source may have: each holds a watermark of its own, and the job looks through them all for the lowest. */
const MAX_PARTITIONS = 1024;

/** `checksFiles`: whether source files must exist and be readable now (see ValidateOptions). */
export function readSource(r: Reader, value: unknown, checksFiles: boolean): SourceSpec | undefined {
  const s = r.object("source", value, [...SOURCE_KINDS, "atEnd"]);
  if (!s) return undefined;
  const { atEnd: atEndValue, ...kinds } = s;
  const atEnd = atEndValue === undefined ? undefined : r.choice("source.atEnd", atEndValue, ["stop", "drain"] as const);
  const read = readSourceKind(r, kinds, checksFiles);
  return read && (atEnd === undefined ? read : { ...read, atEnd });
}

function readSourceKind(r: Reader, value: unknown, checksFiles: boolean): SourceKindSpec | undefined {
  const picked = r.oneOf("source", value, SOURCE_KINDS);
  if (!picked) return undefined;
  const [kind, body] = picked;
  if (kind === "generator") return readGenerator(r, body ?? {});
  if (kind === "nats") return readNatsSource(r, body);
  const path = "source.file";
  const f = r.object(path, body, ["path", "format", "columns", "delimiter", "maxLineBytes"], ["path", "format"]);
  if (!f) return undefined;
  const at = (i: number) => (Array.isArray(f.path) ? `${path}.path[${i}]` : `${path}.path`);
  const paths = (Array.isArray(f.path) ? f.path : [f.path]).map((p, i) => r.path(at(i), p));
  if (checksFiles) paths.forEach((file, i) => file !== undefined && checkReadable(r, at(i), file));
  const format = f.format === undefined ? undefined : r.choice(`${path}.format`, f.format, ["jsonl", "csv", "msgpack"] as const);
  const columns = f.columns === undefined ? undefined : r.list(`${path}.columns`, f.columns, { nonEmpty: true })?.map((c, i) => r.string(`${path}.columns[${i}]`, c)!);
  const delimiter = f.delimiter === undefined ? undefined : r.string(`${path}.delimiter`, f.delimiter);
  const maxLineBytes = f.maxLineBytes === undefined ? undefined : r.number(`${path}.maxLineBytes`, f.maxLineBytes, { min: 1024, max: MAX_LINE_BYTES, integer: true });
  if (paths.length === 0) r.fail(`${path}.path`, "expected at least one file");
  return { file: { paths: paths as string[], format: format!, columns, delimiter, maxLineBytes } };
}

function readNatsSource(r: Reader, body: unknown): SourceSpec | undefined {
  const path = "source.nats";
  const n = r.object(path, body, ["servers", "stream", "subjects", "format", "partitions", "bounded", "bufferMessages"], ["stream", "subjects"]);
  if (!n) return undefined;
  const servers = readServers(r, `${path}.servers`, n.servers);
  const stream = n.stream === undefined ? undefined : r.string(`${path}.stream`, n.stream, STREAM_NAME);
  const subjects = n.subjects === undefined ? undefined : r.list(`${path}.subjects`, n.subjects, { nonEmpty: true })?.map((x, i) => r.string(`${path}.subjects[${i}]`, x));
  subjects?.forEach((x, i) => {
    if (x !== undefined && !SUBJECT_PATTERN.test(x)) r.fail(`${path}.subjects[${i}]`, `expected a subject like "events.>", got ${JSON.stringify(x)}`);
  });
  const format = n.format === undefined ? "json" : r.choice(`${path}.format`, n.format, ["json", "msgpack"] as const);
  const partitions = n.partitions === undefined ? NATS_SOURCE_DEFAULTS.partitions : r.number(`${path}.partitions`, n.partitions, { min: 1, max: MAX_PARTITIONS, integer: true });
  const bounded = n.bounded === undefined ? NATS_SOURCE_DEFAULTS.bounded : r.boolean(`${path}.bounded`, n.bounded);
  const bufferMessages = n.bufferMessages === undefined ? NATS_SOURCE_DEFAULTS.bufferMessages : r.number(`${path}.bufferMessages`, n.bufferMessages, { min: 1, max: MAX_BUFFER_MESSAGES, integer: true });
  if (!servers || !stream || !subjects || subjects.some((x) => x === undefined) || !format || partitions === undefined || bounded === undefined || bufferMessages === undefined) {
    return undefined;
  }
  return { nats: { servers, stream, subjects: subjects as string[], format, partitions, bounded, bufferMessages } };
}

function readGenerator(r: Reader, body: unknown): SourceSpec | undefined {
  const path = "source.generator";
  const g = r.object(path, body, ["seed", "users", "events", "partitions", "eventsPerSecond", "disorder", "lateFraction", "lateBy", "start", "effects"]);
  if (!g) return undefined;
  // The simulator's defaults and ranges; a duration is never negative, and the file names them without "Ms".
  type Numeric = "seed" | "users" | "events" | "partitions" | "eventsPerSecond" | "lateFraction";
  const num = (field: Numeric, range = GENERATOR_RANGES[field]) =>
    g[field] === undefined ? GENERATOR_DEFAULTS[field] : r.number(`${path}.${field}`, g[field], range);
  const dur = (field: string, option: "disorderMs" | "lateByMs") =>
    g[field] === undefined ? GENERATOR_DEFAULTS[option] : r.duration(`${path}.${field}`, g[field], "2s");
  const startMs = g.start === undefined ? GENERATOR_DEFAULTS.startMs : Date.parse(String(g.start));
  if (!Number.isFinite(startMs)) r.fail(`${path}.start`, `expected an ISO-8601 time like "2024-05-20T00:00:00Z", got ${describe(g.start)}`);
  const spec = {
    seed: num("seed"),
    users: num("users"),
    events: num("events"),
    partitions: num("partitions", { ...GENERATOR_RANGES.partitions, max: MAX_PARTITIONS }),
    eventsPerSecond: num("eventsPerSecond"),
    disorderMs: dur("disorder", "disorderMs"),
    lateFraction: num("lateFraction"),
    lateByMs: dur("lateBy", "lateByMs"),
    startMs,
    treatments: [],
    effects: g.effects === undefined ? {} : readEffects(r, `${path}.effects`, g.effects),
  };
  if (Object.values(spec).some((v) => v === undefined)) return undefined;
  return { generator: spec as GeneratorSpec };
}

/**
 * `effects: { cart_recovery_2024q2: { sconto_10: 0.25 } }`: by experiment and variant, what a message
 * adds to a simulated user's chance of coming back for a cart (see GeneratorOptions.treatments).
 */
function readEffects(r: Reader, path: string, value: unknown): Record<string, Record<string, number>> | undefined {
  const experiments = r.entries(path, value, "experiment, like cart_recovery: { sconto_10: 0.25 }");
  if (!experiments) return undefined;
  const effects: Record<string, Record<string, number>> = {};
  for (const [experiment, variants] of experiments) {
    const entries = r.entries(`${path}.${experiment}`, variants, "variant, like sconto_10: 0.25");
    if (!entries) return undefined;
    effects[experiment] = {};
    for (const [variant, uplift] of entries) {
      const n = r.number(`${path}.${experiment}.${variant}`, uplift, { min: 0, max: MAX_UPLIFT });
      if (n === undefined) return undefined;
      effects[experiment][variant] = n;
    }
  }
  return effects;
}

/**
 * Links the generator's `effects` to the pipeline's experiments (their arms as the triggers assign
 * them): an effect on an experiment or a variant the pipeline does not run is refused, naming it.
 */
export function linkEffects(r: Reader, generator: GeneratorSpec, experiments: readonly Assignment[]): void {
  const path = "source.generator.effects";
  for (const [name, uplifts] of Object.entries(generator.effects)) {
    const assignment = experiments.find((e) => e.experiment === name);
    if (assignment === undefined) {
      r.fail(`${path}.${name}`, `no trigger rule runs an experiment named "${name}" (${experiments.length === 0 ? "the pipeline has none" : `it has ${experiments.map((e) => e.experiment).join(", ")}`})`);
      continue;
    }
    for (const variant of Object.keys(uplifts)) {
      if (!assignment.variants.some((v) => v.name === variant)) r.fail(`${path}.${name}.${variant}`, `the experiment has no variant "${variant}" (it has ${assignment.variants.map((v) => v.name).join(", ")})`);
    }
    generator.treatments = [...generator.treatments, { assignment, uplifts }];
  }
}

/**
 * Refuses, at `path`, a source file the job could not read: missing, not a regular file (a pipe, a
 * device or a directory cannot be read again from a recorded position) or not readable. The engine's
 * FileSource checks again when it opens, for a file that goes away between load and run.
 */
function checkReadable(r: Reader, path: string, file: string): void {
  let stats: Stats;
  try {
    stats = statSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return void r.fail(path, `${quote(file)} does not exist`);
    return void r.fail(path, `${quote(file)} cannot be read: ${reasonOf(error)}`);
  }
  if (!stats.isFile()) {
    return void r.fail(path, `${quote(file)} is ${kindOf(stats)}, not a regular file: flusso reads a source file again from a recorded position after a restart`);
  }
  try {
    closeSync(openSync(file, "r"));
  } catch (error) {
    r.fail(path, `${quote(file)} cannot be read: ${reasonOf(error)}`);
  }
}

function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a named pipe";
  if (stats.isSocket()) return "a socket";
  return "a device";
}

/** The system's reason without the call and path it repeats: "permission denied". */
function reasonOf(error: unknown): string {
  const message = String((error as Error)?.message ?? error).split("\n")[0];
  return /^E[A-Z]+: ([^,]+)/.exec(message)?.[1] ?? message;
}
