// Checks a loaded pipeline file value by value and turns it into a PipelineSpec; every mistake is a
// ConfigError naming the path of the bad value, and all of them are reported together.
import type { Environment } from "@marcbachmann/cel-js";
import type { AggregateKind } from "../operators/aggregations.ts";
import type { WindowAssigner } from "../operators/windowAssigners.ts";
import { MAX_LINE_BYTES } from "../engine/valueLimits.ts";
import { PipelineInvalid } from "./errors.ts";
import { describe, Reader, type Obj } from "./reader.ts";
import { ERASURE_OUTPUT } from "../operators/behaviour.ts";
import { readBehaviour } from "./behaviour.ts";
import { STAGE_SECTION_NAMES } from "./stages/registry.ts";
import { MIN_KEY_BYTES, pseudonymiser } from "../operators/pseudonymise.ts";
import type { StageDefinition } from "../operators/stage.ts";
import { fieldsNamedIn, type Scope } from "./scope.ts";
import { celEnvironment, compileExpression, type Compiled } from "./expressions.ts";
import { CEL_TYPE, FIELD_TYPES, type EventSchema, type FieldType } from "./schema.ts";

export type NatsSinkSpec = { servers: string[]; stream: string; subject: string; format: "json" | "msgpack"; duplicateWindowMs: number };

export type SinkSpec = { file: { path: string } } | { stdout: Record<string, never> } | { nats: NatsSinkSpec };

/** A sink of results; `outputs` picks the output kinds it takes (default: all). */
export type RoutedSinkSpec = { sink: SinkSpec; outputs?: string[] };

/**
 * Privacy at ingestion: ids replaced by a keyed hash (HMAC-SHA-256, key from an environment
 * variable) before anything keys or stores them, and fields no stage uses dropped.
 */
export type PrivacySpec = {
  pseudonymise: { fields: string[]; keyEnv: string; pseudonym: (id: string) => string } | undefined;
  /** The event fields kept; everything else is dropped at decoding. Undefined: all kept. */
  keep: string[] | undefined;
};

export type NatsSourceSpec = {
  servers: string[];
  stream: string;
  subjects: string[];
  format: "json" | "msgpack";
  partitions: number;
  bounded: boolean;
  bufferMessages: number;
};

export type GeneratorSpec = {
  seed: number;
  users: number;
  events: number;
  partitions: number;
  eventsPerSecond: number;
  disorderMs: number;
  lateFraction: number;
  lateByMs: number;
  startMs: number;
};

export type SourceSpec =
  | { file: { paths: string[]; format: "jsonl" | "csv" | "msgpack"; columns?: string[]; delimiter?: string; maxLineBytes?: number } }
  | { generator: GeneratorSpec }
  | { nats: NatsSourceSpec };

export type AggregateDef = { name: string; kind: AggregateKind; value?: Compiled; where?: Compiled };

export type WindowSpec = { name: string; assigner: WindowAssigner; allowedLatenessMs: number; aggregates: AggregateDef[] };

export type PipelineSpec = {
  name: string;
  /** The pipeline file, and the folder relative paths resolve against. */
  file: string;
  baseDir: string;
  source: SourceSpec;
  schema: EventSchema;
  key: string;
  time: string;
  watermark: { maxOutOfOrdernessMs: number; idlenessMs: number };
  /** `encryptionKey`: read from the environment variable `state.encryptionKeyEnv` names. */
  state: { dir: string; checkpointIntervalMs: number; encryptionKey?: string };
  /** Keyed event-time windows; empty when the pipeline has only behaviour stages. */
  windows: WindowSpec[];
  /** The behaviour stages, in the order they run, and the output kinds they can emit. */
  behaviour?: {
    stages: StageDefinition[];
    outputs: string[];
    varNames: string[];
    eventFields: string[];
    /** The behaviour sections as written (the fingerprint's part). */
    source: Record<string, unknown>;
    /** `privacy.erase.when`: an event it holds for erases its user. */
    erasesWhen?: (vars: Record<string, unknown>) => unknown;
  };
  privacy?: PrivacySpec;
  sinks: RoutedSinkSpec[];
  /** Where late events go; default: the dead-letter output. */
  late?: SinkSpec;
  deadLetter: SinkSpec;
};

/**
 * Windows in one pipeline. Each is an operator that sees every event and keeps one named state in
 * the store, whose LMDB environment holds MAX_STATE_DATABASES: with the store's own two and the
 * behaviour operator's at most four, 100 windows stay far below it, and 100 passes over every
 * event is already more than a pipeline should ask for.
 */
export const MAX_WINDOWS = 100;

/**
 * Hopping windows one event falls into (size / slide). The cost of an event grows with its square
 * (each window's slot is looked up among the key's open ones): measured here 54 us at 60, 335 us at
 * 288 and 2.5 ms at 1000. 500 keeps an event near 1 ms and admits a day in 5-minute hops (288).
 */
export const MAX_WINDOWS_PER_EVENT = 500;

/**
 * Windows one key may hold open at once: (size + allowedLateness) / slide (tumbling: size; session:
 * gap). Every event of the key looks through them, and each is kept in memory and checkpointed.
 */
export const MAX_OPEN_WINDOWS_PER_KEY = 10_000;

const AGGREGATE_KINDS: readonly AggregateKind[] = ["count", "sum", "avg", "min", "max", "first", "last", "distinct"];
const NUMERIC = ["double", "int", "uint"];
const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

const TOP_LEVEL = [
  "name", "source", "schema", "key", "time", "watermark", "state", "privacy", "windows", ...STAGE_SECTION_NAMES, "sinks", "late", "deadLetter",
] as const;

/** The output kind of window results, for sinks that pick kinds with `outputs:`. */
export const WINDOW_OUTPUT = "window";

/** Validates a loaded pipeline file; throws PipelineInvalid listing every bad value. */
export function validatePipeline(raw: unknown, file: string, baseDir: string): PipelineSpec {
  const r = new Reader(baseDir);
  const top = r.object("", raw, TOP_LEVEL, ["name", "source", "schema", "key", "time", "sinks"]);
  if (!top) throw new PipelineInvalid(file, r.errors);
  const name = top.name === undefined ? undefined : r.string("name", top.name, NAME);
  const source = top.source === undefined ? undefined : readSource(r, top.source);
  const schema = top.schema === undefined ? undefined : readSchema(r, top.schema);
  const key = top.key === undefined ? undefined : readField(r, "key", top.key, schema, ["string"]);
  const time = top.time === undefined ? undefined : readField(r, "time", top.time, schema, ["timestamp"]);
  const watermark = readWatermark(r, top.watermark);
  const state = readState(r, top.state, name);
  const fields = schema && Object.fromEntries(Object.entries(schema).map(([f, s]) => [f, CEL_TYPE[s.type]]));
  const env = fields && celEnvironment(fields);
  const windows = top.windows === undefined ? [] : readWindows(r, top.windows, env);
  const behaviour = fields ? readBehaviour(r, top, fields) : undefined;
  if (top.windows === undefined && !STAGE_SECTION_NAMES.some((section) => top[section] !== undefined)) {
    r.fail("windows", `is required when the pipeline has none of ${STAGE_SECTION_NAMES.join(", ")}: there would be nothing to compute`);
  }
  const privacy = top.privacy === undefined ? undefined : readPrivacy(r, top.privacy, schema, [key, time], windows, behaviour?.scope);
  const outputKinds = [...(top.windows === undefined ? [] : [WINDOW_OUTPUT]), ...(behaviour?.outputs ?? [])];
  const sinks = top.sinks === undefined ? undefined : r.list("sinks", top.sinks, { nonEmpty: true })?.map((s, i) => readRoutedSink(r, `sinks[${i}]`, s, outputKinds));
  const late = top.late === undefined ? undefined : readSink(r, "late", top.late);
  const deadLetter = top.deadLetter === undefined ? defaultDeadLetter(r, name) : readSink(r, "deadLetter", top.deadLetter);
  if (behaviour?.erasesWhen && sinks?.every((s) => s?.outputs !== undefined && !s.outputs.includes(ERASURE_OUTPUT))) {
    r.fail("privacy.erase", `no sink takes "${ERASURE_OUTPUT}" outputs, the audit trail of erasures: add it to a sink's outputs`);
  }
  const allSinks = [...(sinks ?? []).map((s) => s?.sink), late, deadLetter];
  if (state && state.checkpointIntervalMs === undefined) {
    state.checkpointIntervalMs = allSinks.some((s) => s !== undefined && "nats" in s) ? HOLDING_CHECKPOINT_INTERVAL_MS : CHECKPOINT_INTERVAL_MS;
  }
  if (r.errors.length > 0) throw new PipelineInvalid(file, r.errors);
  return {
    name: name!,
    file,
    baseDir,
    source: source!,
    schema: schema!,
    key: key!,
    time: time!,
    watermark: watermark!,
    state: state as PipelineSpec["state"],
    windows: windows!,
    behaviour: behaviour && {
      stages: behaviour.stages,
      outputs: behaviour.outputs,
      varNames: behaviour.scope.names(),
      eventFields: behaviour.scope.fields(),
      erasesWhen: behaviour.erasesWhen,
      source: behaviourSource(top),
    },
    privacy,
    sinks: sinks as RoutedSinkSpec[],
    late,
    deadLetter: deadLetter!,
  };
}

/** Messages the NATS source may hold for the job, in memory: 10x the default, tens of MB of events. */
const MAX_BUFFER_MESSAGES = 100_000;

/** Users the built-in generator simulates: each is an object in memory (~300 bytes), so ~300 MB at most. */
const MAX_GENERATOR_USERS = 1_000_000;

const DEFAULT_NATS = "nats://127.0.0.1:4222";
const SUBJECT = /^[^\s*>]+(\.[^\s*>]+)*$/;
const SUBJECT_PATTERN = /^([^\s.]+\.)*([^\s.]+|>)$/;
const STREAM_NAME = /^[^\s.*>/\\]+$/;

function readServers(r: Reader, path: string, value: unknown): string[] | undefined {
  if (value === undefined) return [DEFAULT_NATS];
  const list = typeof value === "string" ? value.split(",").map((s) => s.trim()) : r.list(path, value, { nonEmpty: true });
  const servers = list?.map((s, i) => r.string(Array.isArray(value) ? `${path}[${i}]` : path, s));
  if (!servers || servers.some((s) => s === undefined)) return undefined;
  for (const server of servers as string[]) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$|^[^\s/:]+:\d+$/.test(server)) return r.fail(path, `expected a server URL like "nats://127.0.0.1:4222", got ${JSON.stringify(server)}`);
  }
  return servers as string[];
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
  const partitions = n.partitions === undefined ? 1 : r.number(`${path}.partitions`, n.partitions, { min: 1, max: 1024, integer: true });
  const bounded = n.bounded === undefined ? false : r.boolean(`${path}.bounded`, n.bounded);
  const bufferMessages = n.bufferMessages === undefined ? 10_000 : r.number(`${path}.bufferMessages`, n.bufferMessages, { min: 1, max: MAX_BUFFER_MESSAGES, integer: true });
  if (!servers || !stream || !subjects || subjects.some((x) => x === undefined) || !format || partitions === undefined || bounded === undefined || bufferMessages === undefined) {
    return undefined;
  }
  return { nats: { servers, stream, subjects: subjects as string[], format, partitions, bounded, bufferMessages } };
}

function readSource(r: Reader, value: unknown): SourceSpec | undefined {
  const picked = r.oneOf("source", value, ["file", "generator", "nats"]);
  if (!picked) return undefined;
  const [kind, body] = picked;
  if (kind === "generator") return readGenerator(r, body ?? {});
  if (kind === "nats") return readNatsSource(r, body);
  const path = "source.file";
  const f = r.object(path, body, ["path", "format", "columns", "delimiter", "maxLineBytes"], ["path", "format"]);
  if (!f) return undefined;
  const paths = Array.isArray(f.path) ? f.path.map((p, i) => r.path(`${path}.path[${i}]`, p)) : [r.path(`${path}.path`, f.path)];
  const format = f.format === undefined ? undefined : r.choice(`${path}.format`, f.format, ["jsonl", "csv", "msgpack"] as const);
  const columns = f.columns === undefined ? undefined : r.list(`${path}.columns`, f.columns, { nonEmpty: true })?.map((c, i) => r.string(`${path}.columns[${i}]`, c)!);
  const delimiter = f.delimiter === undefined ? undefined : r.string(`${path}.delimiter`, f.delimiter);
  const maxLineBytes = f.maxLineBytes === undefined ? undefined : r.number(`${path}.maxLineBytes`, f.maxLineBytes, { min: 1024, max: MAX_LINE_BYTES, integer: true });
  if (paths.length === 0) r.fail(`${path}.path`, "expected at least one file");
  return { file: { paths: paths as string[], format: format!, columns, delimiter, maxLineBytes } };
}

function readGenerator(r: Reader, body: unknown): SourceSpec | undefined {
  const path = "source.generator";
  const g = r.object(path, body, ["seed", "users", "events", "partitions", "eventsPerSecond", "disorder", "lateFraction", "lateBy", "start"]);
  if (!g) return undefined;
  const num = (field: string, fallback: number, opts: { min?: number; max?: number; integer?: boolean }) =>
    g[field] === undefined ? fallback : r.number(`${path}.${field}`, g[field], opts);
  const dur = (field: string, fallback: number) => (g[field] === undefined ? fallback : r.duration(`${path}.${field}`, g[field], "2s"));
  const startMs = g.start === undefined ? Date.UTC(2024, 4, 20) : Date.parse(String(g.start));
  if (!Number.isFinite(startMs)) r.fail(`${path}.start`, `expected an ISO-8601 time like "2024-05-20T00:00:00Z", got ${describe(g.start)}`);
  const spec = {
    seed: num("seed", 42, { integer: true }),
    users: num("users", 10_000, { min: 1, max: MAX_GENERATOR_USERS, integer: true }),
    events: num("events", 200_000, { min: 1, integer: true }),
    partitions: num("partitions", 4, { min: 1, max: 1024, integer: true }),
    eventsPerSecond: num("eventsPerSecond", 200, { min: 0.001 }),
    disorderMs: dur("disorder", 2000),
    lateFraction: num("lateFraction", 0.001, { min: 0, max: 1 }),
    lateByMs: dur("lateBy", 60_000),
    startMs,
  };
  if (Object.values(spec).some((v) => v === undefined)) return undefined;
  return { generator: spec as GeneratorSpec };
}

function readSchema(r: Reader, value: unknown): EventSchema | undefined {
  const entries = r.entries("schema", value, "field");
  if (!entries) return undefined;
  const schema: EventSchema = {};
  for (const [name, spec] of entries) {
    const path = `schema.${name}`;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      r.fail(path, "a field name must be letters, digits and _ (it is a CEL identifier)");
      continue;
    }
    const s = r.object(path, spec, ["type", "required", "unit"], ["type"]);
    if (!s || s.type === undefined) continue;
    const type = r.choice<FieldType>(`${path}.type`, s.type, FIELD_TYPES);
    const required = s.required === undefined ? false : r.boolean(`${path}.required`, s.required);
    const unit = s.unit === undefined ? "ms" : r.choice(`${path}.unit`, s.unit, ["ms", "s"] as const);
    if (s.unit !== undefined && type !== "timestamp") r.fail(`${path}.unit`, "only a timestamp field has a unit");
    if (type && required !== undefined && unit) schema[name] = { type, required, unit };
  }
  return schema;
}

function readField(r: Reader, path: string, value: unknown, schema: EventSchema | undefined, types: FieldType[]): string | undefined {
  const field = r.string(path, value);
  if (field === undefined || schema === undefined) return field;
  const spec = schema[field];
  if (!spec) return r.fail(path, `"${field}" is not a field of the schema (${Object.keys(schema).join(", ")})`);
  if (!types.includes(spec.type)) return r.fail(path, `"${field}" is a ${spec.type}, expected a ${types.join(" or ")} field`);
  if (!spec.required) return r.fail(path, `"${field}" must be declared required: true, since every event needs it`);
  return field;
}

function readWatermark(r: Reader, value: unknown): PipelineSpec["watermark"] | undefined {
  if (value === undefined) return { maxOutOfOrdernessMs: 0, idlenessMs: 0 };
  const w = r.object("watermark", value, ["maxOutOfOrderness", "idleness"]);
  if (!w) return undefined;
  const maxOutOfOrdernessMs = w.maxOutOfOrderness === undefined ? 0 : r.duration("watermark.maxOutOfOrderness", w.maxOutOfOrderness, "5s");
  const idlenessMs = w.idleness === undefined ? 0 : r.duration("watermark.idleness", w.idleness, "1m");
  if (maxOutOfOrdernessMs === undefined || idlenessMs === undefined) return undefined;
  return { maxOutOfOrdernessMs, idlenessMs };
}

/** Bytes of a state encryption key (LMDB's ChaCha8 key). */
const STATE_KEY_BYTES = 32;

/** Between checkpoints by default: each costs a flush and a commit, and recovery replays at most this much. */
const CHECKPOINT_INTERVAL_MS = 10_000;
/**
 * Between checkpoints by default when a sink is NATS: its outputs leave only once the checkpoint
 * that made them has committed, so this is most of their latency (the promise is 500 ms).
 */
const HOLDING_CHECKPOINT_INTERVAL_MS = 100;

/** The state settings; `checkpointIntervalMs` is left unset when not given: its default depends on the sinks. */
function readState(r: Reader, value: unknown, name: string | undefined): (Omit<PipelineSpec["state"], "checkpointIntervalMs"> & { checkpointIntervalMs?: number }) | undefined {
  const s = value === undefined ? {} : r.object("state", value, ["dir", "checkpointInterval", "encryptionKeyEnv"]);
  if (!s) return undefined;
  const dir = s.dir === undefined ? r.path("state.dir", `./state/${name ?? "pipeline"}`) : r.path("state.dir", s.dir);
  const checkpointIntervalMs = s.checkpointInterval === undefined ? undefined : r.duration("state.checkpointInterval", s.checkpointInterval, "2s", { positive: true });
  const encryptionKey = s.encryptionKeyEnv === undefined ? undefined : readStateKey(r, s.encryptionKeyEnv);
  if (dir === undefined || (s.checkpointInterval !== undefined && checkpointIntervalMs === undefined) || encryptionKey === null) return undefined;
  return { dir, checkpointIntervalMs, ...(encryptionKey === undefined ? {} : { encryptionKey }) };
}

/** The state encryption key from the environment variable named at state.encryptionKeyEnv; null if refused. */
function readStateKey(r: Reader, value: unknown): string | null {
  const keyEnv = r.string("state.encryptionKeyEnv", value);
  if (keyEnv === undefined) return null;
  const key = process.env[keyEnv];
  // LMDB's cipher takes exactly 32 bytes: a key of another length is refused rather than padded or cut.
  if (key !== undefined && Buffer.byteLength(key) === STATE_KEY_BYTES) return key;
  r.fail("state.encryptionKeyEnv", `the environment variable ${keyEnv} must hold the state encryption key, exactly ${STATE_KEY_BYTES} bytes (${key === undefined ? "it is not set" : `it has ${Buffer.byteLength(key)}`})`);
  return null;
}

function readWindows(r: Reader, value: unknown, env: Environment | undefined): WindowSpec[] | undefined {
  const list = r.list("windows", value, { nonEmpty: true });
  if (!list) return undefined;
  if (list.length > MAX_WINDOWS) return r.fail("windows", `expected at most ${MAX_WINDOWS} windows, got ${list.length}`);
  const windows = list.map((w, i) => readWindow(r, `windows[${i}]`, w, env));
  const names = windows.map((w) => w?.name).filter(Boolean);
  names.forEach((n, i) => {
    if (names.indexOf(n) !== i) r.fail(`windows[${i}].name`, `"${n}" names another window already`);
  });
  return windows as WindowSpec[];
}

function readWindow(r: Reader, path: string, value: unknown, env: Environment | undefined): WindowSpec | undefined {
  const w = r.object(path, value, ["name", "type", "size", "slide", "gap", "allowedLateness", "aggregate"], ["name", "type", "aggregate"]);
  if (!w) return undefined;
  const name = w.name === undefined ? undefined : r.string(`${path}.name`, w.name, NAME);
  const type = w.type === undefined ? undefined : r.choice(`${path}.type`, w.type, ["tumbling", "hopping", "session"] as const);
  const allowedLatenessMs = w.allowedLateness === undefined ? 0 : r.duration(`${path}.allowedLateness`, w.allowedLateness, "1m");
  const assigner = type && readAssigner(r, path, type, w);
  const aggregates = w.aggregate === undefined ? undefined : readAggregates(r, `${path}.aggregate`, w.aggregate, env);
  if (!name || !assigner || allowedLatenessMs === undefined || !aggregates) return undefined;
  const [openWindows, formula] = openWindowsPerKey(assigner, allowedLatenessMs);
  if (openWindows > MAX_OPEN_WINDOWS_PER_KEY) {
    return r.fail(`${path}.allowedLateness`, `a key could hold ${openWindows} windows open at once (${formula}), over the limit of ${MAX_OPEN_WINDOWS_PER_KEY}`);
  }
  return { name, assigner, allowedLatenessMs, aggregates };
}

/** How many windows of one key can be open at once, and the formula that says so. */
function openWindowsPerKey(assigner: WindowAssigner, allowedLatenessMs: number): [number, string] {
  const [lengthMs, stepMs, formula] =
    assigner.type === "tumbling"
      ? [assigner.sizeMs, assigner.sizeMs, "(size + allowedLateness) / size"]
      : assigner.type === "hopping"
        ? [assigner.sizeMs, assigner.slideMs, "(size + allowedLateness) / slide"]
        : [assigner.gapMs, assigner.gapMs, "(gap + allowedLateness) / gap"];
  return [Math.ceil((lengthMs + allowedLatenessMs) / stepMs), formula];
}

function readAssigner(r: Reader, path: string, type: WindowAssigner["type"], w: Obj): WindowAssigner | undefined {
  const needs = { tumbling: ["size"], hopping: ["size", "slide"], session: ["gap"] }[type];
  for (const field of ["size", "slide", "gap"]) {
    if (needs.includes(field) && w[field] === undefined) r.fail(`${path}.${field}`, `is required for a ${type} window`);
    if (!needs.includes(field) && w[field] !== undefined) r.fail(`${path}.${field}`, `does not apply to a ${type} window`);
  }
  const size = w.size === undefined ? undefined : r.duration(`${path}.size`, w.size, "15m", { positive: true });
  const slide = w.slide === undefined ? undefined : r.duration(`${path}.slide`, w.slide, "5m", { positive: true });
  const gap = w.gap === undefined ? undefined : r.duration(`${path}.gap`, w.gap, "30m", { positive: true });
  if (type === "tumbling") return size === undefined ? undefined : { type, sizeMs: size };
  if (type === "session") return gap === undefined ? undefined : { type, gapMs: gap };
  if (size === undefined || slide === undefined) return undefined;
  if (slide > size) return r.fail(`${path}.slide`, `a slide of ${slide} ms is longer than the size of ${size} ms: events would fall between windows`);
  const windowsPerEvent = Math.ceil(size / slide);
  if (windowsPerEvent > MAX_WINDOWS_PER_EVENT) {
    return r.fail(`${path}.slide`, `every event would fall into ${windowsPerEvent} windows (size / slide), over the limit of ${MAX_WINDOWS_PER_EVENT}: use a longer slide`);
  }
  return { type, sizeMs: size, slideMs: slide };
}

function readAggregates(r: Reader, path: string, value: unknown, env: Environment | undefined): AggregateDef[] | undefined {
  const entries = r.entries(path, value, "aggregate");
  if (!entries) return undefined;
  const reserved = ["window", "key", "start", "end"];
  const defs: AggregateDef[] = [];
  for (const [name, spec] of entries) {
    const at = `${path}.${name}`;
    if (reserved.includes(name)) {
      r.fail(at, `"${name}" is a field of every window result; choose another name`);
      continue;
    }
    const def = readAggregate(r, at, name, spec, env);
    if (def) defs.push(def);
  }
  return defs;
}

function readAggregate(r: Reader, path: string, name: string, spec: unknown, env: Environment | undefined): AggregateDef | undefined {
  if (spec === "count") return { name, kind: "count" };
  if (typeof spec === "string") return r.fail(path, `expected "count" or a mapping like { sum: field }, got ${describe(spec)}`);
  const obj = r.object(path, spec, [...AGGREGATE_KINDS, "where"]);
  if (!obj) return undefined;
  const kinds = Object.keys(obj).filter((k): k is AggregateKind => (AGGREGATE_KINDS as readonly string[]).includes(k));
  if (kinds.length !== 1) {
    return r.fail(path, `expected exactly one of ${AGGREGATE_KINDS.join(", ")}, got ${kinds.length === 0 ? "none" : kinds.join(" and ")}`);
  }
  const kind = kinds[0];
  if (!env) return undefined;
  const where = obj.where === undefined ? undefined : r.compiled(() => compileExpression(env, obj.where, `${path}.where`, ["bool"]));
  if (kind === "count") {
    // `count: <condition>` counts where the condition holds; `count: true` or `count: {}` counts all.
    const body = obj.count;
    if (body === true || (body && typeof body === "object" && Object.keys(body).length === 0)) return { name, kind, where };
    const condition = r.compiled(() => compileExpression(env, body, `${path}.count`, ["bool"]));
    if (!condition) return undefined;
    if (where) return r.fail(path, "give the condition either as count: <condition> or as where:, not both");
    return { name, kind, where: condition };
  }
  const expected = kind === "first" || kind === "last" || kind === "distinct" ? undefined : NUMERIC;
  const valueExpr = r.compiled(() => compileExpression(env, obj[kind], `${path}.${kind}`, expected));
  if (!valueExpr) return undefined;
  return { name, kind, value: valueExpr, where };
}

/**
 * The stream's duplicate window only has to catch a message sent again within a run (its ack late):
 * after a restart or a reconnect the sink reads the stream back instead, however long it was away.
 */
const MIN_DUPLICATE_WINDOW_MS = 5_000;

function readNatsSink(r: Reader, path: string, body: unknown): SinkSpec | undefined {
  const n = r.object(path, body, ["servers", "stream", "subject", "format", "duplicateWindow"], ["stream", "subject"]);
  if (!n) return undefined;
  const servers = readServers(r, `${path}.servers`, n.servers);
  const stream = n.stream === undefined ? undefined : r.string(`${path}.stream`, n.stream, STREAM_NAME);
  const subject = n.subject === undefined ? undefined : r.string(`${path}.subject`, n.subject);
  if (subject !== undefined && !SUBJECT.test(subject)) return r.fail(`${path}.subject`, `expected a subject without wildcards like "out.hourly", got ${JSON.stringify(subject)}`);
  const format = n.format === undefined ? "json" : r.choice(`${path}.format`, n.format, ["json", "msgpack"] as const);
  const duplicateWindowMs = n.duplicateWindow === undefined ? 120_000 : r.duration(`${path}.duplicateWindow`, n.duplicateWindow, "2m", { positive: true });
  if (duplicateWindowMs !== undefined && duplicateWindowMs < MIN_DUPLICATE_WINDOW_MS) {
    return r.fail(`${path}.duplicateWindow`, `expected at least ${MIN_DUPLICATE_WINDOW_MS / 1000}s: a message whose ack is late is sent again after 2 s, and the stream must still know its id then`);
  }
  if (!servers || !stream || !subject || !format || duplicateWindowMs === undefined) return undefined;
  return { nats: { servers, stream, subject, format, duplicateWindowMs } };
}

function readSink(r: Reader, path: string, value: unknown): SinkSpec | undefined {
  const picked = r.oneOf(path, value, ["file", "stdout", "nats"]);
  if (!picked) return undefined;
  const [kind, body] = picked;
  if (kind === "nats") return readNatsSink(r, `${path}.nats`, body);
  if (kind === "stdout") {
    if (body !== null && body !== undefined && !(typeof body === "object" && Object.keys(body).length === 0)) {
      return r.fail(`${path}.stdout`, "takes no options: write stdout: {}");
    }
    return { stdout: {} };
  }
  const f = r.object(`${path}.file`, body, ["path"], ["path"]);
  const file = f?.path === undefined ? undefined : r.path(`${path}.file.path`, f.path);
  return file === undefined ? undefined : { file: { path: file } };
}

/** A `sinks:` entry: one sink kind plus an optional `outputs: [kind, ...]` naming the kinds it takes. */
function readRoutedSink(r: Reader, path: string, value: unknown, outputKinds: readonly string[]): RoutedSinkSpec | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value) || !("outputs" in value)) {
    const sink = readSink(r, path, value);
    return sink && { sink };
  }
  const { outputs, ...rest } = value as Obj;
  const sink = readSink(r, path, rest);
  const kinds = r.list(`${path}.outputs`, outputs, { nonEmpty: true })?.map((k, i) => r.choice(`${path}.outputs[${i}]`, k, outputKinds));
  if (!sink || !kinds || kinds.some((k) => k === undefined)) return undefined;
  return { sink, outputs: kinds as string[] };
}

/** The behaviour sections as written, for the fingerprint (stage definitions hold compiled closures). */
function behaviourSource(top: Obj): Record<string, unknown> {
  return Object.fromEntries(STAGE_SECTION_NAMES.filter((s) => top[s] !== undefined).map((s) => [s, top[s]]));
}

/**
 * ```yaml
 * privacy:
 *   pseudonymise: { fields: [user_id], keyEnv: FLUSSO_PSEUDONYM_KEY }
 *   keep: used          # or a list of fields; default: keep all
 * ```
 */
function readPrivacy(
  r: Reader,
  value: unknown,
  schema: EventSchema | undefined,
  [key, time]: [string | undefined, string | undefined],
  windows: WindowSpec[] | undefined,
  scope: Scope | undefined,
): PrivacySpec | undefined {
  const p = r.object("privacy", value, ["pseudonymise", "keep", "erase"]);
  if (!p || !schema) return undefined;
  // Read with the behaviour sections (readErasure): only their state is erased per user.
  if (p.erase !== undefined && !scope) r.fail("privacy.erase", `needs behaviour sections (${STAGE_SECTION_NAMES.join(", ")}): window state is not kept per user, so it cannot be erased per user`);
  const fieldList = (path: string, list: unknown): string[] | undefined => {
    const names = r.list(path, list, { nonEmpty: true })?.map((f, i) => r.string(`${path}[${i}]`, f));
    names?.forEach((f, i) => {
      if (f !== undefined && !schema[f]) r.fail(`${path}[${i}]`, `"${f}" is not a field of the schema (${Object.keys(schema).join(", ")})`);
    });
    return names && !names.some((f) => f === undefined || !schema[f]) ? (names as string[]) : undefined;
  };
  let pseudonymise: PrivacySpec["pseudonymise"];
  if (p.pseudonymise !== undefined) {
    const ps = r.object("privacy.pseudonymise", p.pseudonymise, ["fields", "keyEnv"], ["keyEnv"]);
    const fields = ps && (ps.fields === undefined ? (key ? [key] : undefined) : fieldList("privacy.pseudonymise.fields", ps.fields));
    fields?.forEach((f, i) => {
      if (schema[f].type !== "string") r.fail(`privacy.pseudonymise.fields[${i}]`, `"${f}" is a ${schema[f].type}; only string fields can be pseudonymised`);
    });
    const keyEnv = ps?.keyEnv === undefined ? undefined : r.string("privacy.pseudonymise.keyEnv", ps.keyEnv);
    const secret = keyEnv === undefined ? undefined : process.env[keyEnv];
    if (keyEnv !== undefined && (secret === undefined || Buffer.byteLength(secret) < MIN_KEY_BYTES)) {
      r.fail(
        "privacy.pseudonymise.keyEnv",
        `the environment variable ${keyEnv} must hold the pseudonymisation key, at least ${MIN_KEY_BYTES} bytes (${secret === undefined ? "it is not set" : "it is shorter"})`,
      );
    } else if (fields && keyEnv && secret !== undefined) {
      pseudonymise = { fields, keyEnv, pseudonym: pseudonymiser(secret, { source: `environment variable ${keyEnv}` }) };
    }
  }
  let keep: string[] | undefined;
  if (p.keep === "used") keep = usedFields(schema, windows ?? [], scope);
  else if (p.keep !== undefined) keep = fieldList("privacy.keep", p.keep);
  for (const needed of [key, time]) if (keep && needed && !keep.includes(needed)) keep.push(needed);
  return { pseudonymise, keep };
}

/** The event fields the windows' aggregates and the behaviour stages read. */
function usedFields(schema: EventSchema, windows: WindowSpec[], scope: Scope | undefined): string[] {
  const fields = new Set(Object.keys(schema));
  const used = new Set(scope?.usedEventFields() ?? []);
  for (const w of windows) {
    for (const a of w.aggregates) for (const e of [a.value, a.where]) if (e) for (const f of fieldsNamedIn(e.source, fields)) used.add(f);
  }
  return [...used];
}

function defaultDeadLetter(r: Reader, name: string | undefined): SinkSpec | undefined {
  const file = r.path("deadLetter", `./out/${name ?? "pipeline"}.dead-letter.jsonl`);
  return file === undefined ? undefined : { file: { path: file } };
}
