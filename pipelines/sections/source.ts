// Reads `source:` (files, the built-in generator or a NATS JetStream stream) into the SourceSpec the
// job's source is built from.
import { MAX_LINE_BYTES } from "../../engine/valueLimits.ts";
import { describe, type Reader } from "../reader.ts";
import { readServers, STREAM_NAME, SUBJECT_PATTERN } from "./nats.ts";

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

/** Messages the NATS source may hold for the job, in memory: 10x the default, tens of MB of events. */
const MAX_BUFFER_MESSAGES = 100_000;

/** Users the built-in generator simulates: each is an object in memory (~300 bytes), so ~300 MB at most. */
const MAX_GENERATOR_USERS = 1_000_000;

export function readSource(r: Reader, value: unknown): SourceSpec | undefined {
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
