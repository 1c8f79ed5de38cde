// Reads where results go: `sinks:` (each a file, stdout or a NATS stream, optionally picking the
// output kinds it takes), `late:` and `deadLetter:`; NATS sinks whose streams JetStream would refuse
// (subjects overlapping the source's or each other's) are refused here, before anything runs.
import { ACK_TIMEOUT_MS, DEFAULT_DUPLICATE_WINDOW_MS, isSubjectWithin, JETSTREAM_API_SUBJECTS, subjectsOverlap } from "../../engine/natsSubjects.ts";
import type { NatsSinkOptions } from "../../engine/sinks/natsSink.ts";
import type { Obj, Reader } from "../reader.ts";
import { isSameNats, readServers, STREAM_NAME, SUBJECT } from "./nats.ts";
import type { SourceSpec } from "./source.ts";

/** A NATS sink as read: the engine's options but what the job adds at run time (the pipeline's name, a stop signal, a log), every default filled in. */
export type NatsSinkSpec = Required<Omit<NatsSinkOptions, "pipeline" | "signal" | "log" | "replicas">> & { servers: string[] };

export type SinkSpec = { file: { path: string } } | { stdout: Record<string, never> } | { nats: NatsSinkSpec };

/** A sink of results; `outputs` picks the output kinds it takes (default: all). */
export type RoutedSinkSpec = { sink: SinkSpec; outputs?: string[] };

/**
 * The stream's duplicate window only has to catch a message sent again within a run (its ack later
 * than ACK_TIMEOUT_MS): after a restart or a reconnect the sink reads the stream back instead, however
 * long it was away.
 */
const MIN_DUPLICATE_WINDOW_MS = 5_000;

/**
 * The sinks of `top`: `sinks:` (each taking the kinds it names of `outputKinds`), `late:` and
 * `deadLetter:`; undefined where bad. A NATS sink without servers uses the NATS source's.
 */
export function readSinks(
  r: Reader,
  top: Obj,
  name: string | undefined,
  outputKinds: readonly string[],
  source: SourceSpec | undefined,
): { sinks: Array<RoutedSinkSpec | undefined> | undefined; late: SinkSpec | undefined; deadLetter: SinkSpec | undefined } {
  const sourceServers = source && "nats" in source ? source.nats.servers : undefined;
  const sinks = top.sinks === undefined ? undefined : r.list("sinks", top.sinks, { nonEmpty: true })?.map((s, i) => readRoutedSink(r, `sinks[${i}]`, s, outputKinds, sourceServers));
  const late = top.late === undefined ? undefined : readSink(r, "late", top.late, sourceServers);
  const deadLetter = top.deadLetter === undefined ? defaultDeadLetter(r, name) : readSink(r, "deadLetter", top.deadLetter, sourceServers);
  const written: Array<[string, SinkSpec | undefined]> = [...(sinks ?? []).map((s, i): [string, SinkSpec | undefined] => [`sinks[${i}]`, s?.sink]), ["late", late], ["deadLetter", deadLetter]];
  refuseOverlaps(r, source, written);
  refuseSharedFiles(r, written, source);
  return { sinks, late, deadLetter };
}

/**
 * Refuses two outputs (or an output and a source file) on one file: each sink keeps its own committed
 * length and part files, so two on one file would cut and append over each other.
 */
function refuseSharedFiles(r: Reader, written: Array<[string, SinkSpec | undefined]>, source: SourceSpec | undefined): void {
  const first = new Map<string, string>();
  if (source && "file" in source) source.file.paths.forEach((path, i) => first.set(path, source.file.paths.length > 1 ? `source.file.path[${i}]` : "source.file.path"));
  for (const [at, sink] of written) {
    if (sink === undefined || !("file" in sink)) continue;
    const earlier = first.get(sink.file.path);
    if (earlier !== undefined) r.fail(`${at}.file.path`, `${JSON.stringify(sink.file.path)} is also written or read at ${earlier}: each output needs a file of its own`);
    else first.set(sink.file.path, `${at}.file.path`);
  }
}

/**
 * Refuses, at the sink's subject, what JetStream would refuse when the job makes its streams (nats-server
 * 2.9: "subjects overlap with an existing stream", "subjects overlap with jetstream api"), among the
 * source and sinks that share a server: a subject the source reads (the job would also read its own
 * outputs), one subject in two streams, a subject of JetStream's API; and source subjects that
 * overlap one another.
 */
function refuseOverlaps(r: Reader, source: SourceSpec | undefined, written: Array<[string, SinkSpec | undefined]>): void {
  const nats = source && "nats" in source ? source.nats : undefined;
  const read = (nats?.subjects ?? []).map((subject, i) => ({ path: `source.nats.subjects[${i}]`, subject }));
  read.forEach(({ path, subject }, i) => {
    const other = read.slice(0, i).find((earlier) => subjectsOverlap(earlier.subject, subject));
    if (other) r.fail(path, `${JSON.stringify(subject)} overlaps ${JSON.stringify(other.subject)} (${other.path}): JetStream refuses a stream whose subjects overlap`);
    else if (isSubjectWithin(subject, JETSTREAM_API_SUBJECTS)) r.fail(path, jetstreamApi(subject));
  });
  const sinks: Array<{ path: string; spec: NatsSinkSpec }> = [];
  for (const [at, sink] of written) {
    if (sink === undefined || !("nats" in sink)) continue;
    const spec = sink.nats;
    const path = `${at}.nats.subject`;
    const sameSource = nats && isSameNats(nats.servers, spec.servers);
    const readHere = sameSource ? read.find((s) => subjectsOverlap(s.subject, spec.subject)) : undefined;
    const otherStream = sinks.find((s) => s.spec.stream !== spec.stream && s.spec.subject === spec.subject && isSameNats(s.spec.servers, spec.servers));
    if (readHere) {
      r.fail(path, `${JSON.stringify(spec.subject)} is among the subjects the source reads (${JSON.stringify(readHere.subject)}, ${readHere.path}): the job would read its own outputs, and JetStream refuses the stream (subjects overlap); write to a subject outside them`);
    } else if (otherStream) {
      r.fail(path, `${JSON.stringify(spec.subject)} is already the subject of stream ${otherStream.spec.stream} (${otherStream.path}): JetStream refuses a subject in two streams; write both to one stream, or use another subject`);
    } else if (isSubjectWithin(spec.subject, JETSTREAM_API_SUBJECTS)) {
      r.fail(path, jetstreamApi(spec.subject));
    }
    sinks.push({ path, spec });
  }
}

function jetstreamApi(subject: string): string {
  return `${JSON.stringify(subject)} is within JetStream's API subjects (${JETSTREAM_API_SUBJECTS}), which no stream may take`;
}

function readNatsSink(r: Reader, path: string, body: unknown, sourceServers: string[] | undefined): SinkSpec | undefined {
  const n = r.object(path, body, ["servers", "stream", "subject", "format", "duplicateWindow"], ["stream", "subject"]);
  if (!n) return undefined;
  const servers = readServers(r, `${path}.servers`, n.servers, sourceServers);
  const stream = n.stream === undefined ? undefined : r.string(`${path}.stream`, n.stream, STREAM_NAME);
  const subject = n.subject === undefined ? undefined : r.string(`${path}.subject`, n.subject);
  if (subject !== undefined && !SUBJECT.test(subject)) return r.fail(`${path}.subject`, `expected a subject without wildcards like "out.hourly", got ${JSON.stringify(subject)}`);
  const format = n.format === undefined ? "json" : r.choice(`${path}.format`, n.format, ["json", "msgpack"] as const);
  const duplicateWindowMs = n.duplicateWindow === undefined ? DEFAULT_DUPLICATE_WINDOW_MS : r.duration(`${path}.duplicateWindow`, n.duplicateWindow, "2m", { positive: true });
  if (duplicateWindowMs !== undefined && duplicateWindowMs < MIN_DUPLICATE_WINDOW_MS) {
    return r.fail(`${path}.duplicateWindow`, `expected at least ${MIN_DUPLICATE_WINDOW_MS / 1000}s: a message whose ack is late is sent again after ${ACK_TIMEOUT_MS / 1000} s, and the stream must still know its id then`);
  }
  if (!servers || !stream || !subject || !format || duplicateWindowMs === undefined) return undefined;
  return { nats: { servers, stream, subject, format, duplicateWindowMs } };
}

function readSink(r: Reader, path: string, value: unknown, sourceServers: string[] | undefined): SinkSpec | undefined {
  const picked = r.oneOf(path, value, ["file", "stdout", "nats"]);
  if (!picked) return undefined;
  const [kind, body] = picked;
  if (kind === "nats") return readNatsSink(r, `${path}.nats`, body, sourceServers);
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
function readRoutedSink(r: Reader, path: string, value: unknown, outputKinds: readonly string[], sourceServers: string[] | undefined): RoutedSinkSpec | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value) || !("outputs" in value)) {
    const sink = readSink(r, path, value, sourceServers);
    return sink && { sink };
  }
  const { outputs, ...rest } = value as Obj;
  const sink = readSink(r, path, rest, sourceServers);
  const kinds = r.list(`${path}.outputs`, outputs, { nonEmpty: true })?.map((k, i) => r.choice(`${path}.outputs[${i}]`, k, outputKinds));
  if (!sink || !kinds || kinds.some((k) => k === undefined)) return undefined;
  return { sink, outputs: kinds as string[] };
}

function defaultDeadLetter(r: Reader, name: string | undefined): SinkSpec | undefined {
  const file = r.path("deadLetter", `./out/${name ?? "pipeline"}.dead-letter.jsonl`);
  return file === undefined ? undefined : { file: { path: file } };
}
