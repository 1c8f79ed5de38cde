// Reads where results go: `sinks:` (each a file, stdout or a NATS stream, optionally picking the
// output kinds it takes), `late:` and `deadLetter:`.
import { ACK_TIMEOUT_MS } from "../../engine/nats.ts";
import { DEFAULT_DUPLICATE_WINDOW_MS, type NatsSinkOptions } from "../../engine/sinks/natsSink.ts";
import type { Obj, Reader } from "../reader.ts";
import { readServers, STREAM_NAME, SUBJECT } from "./nats.ts";

/** A NATS sink as read: the engine's options but what the job adds at run time (the pipeline's name, a stop signal, a log), every default filled in. */
export type NatsSinkSpec = Required<Omit<NatsSinkOptions, "pipeline" | "signal" | "log">> & { servers: string[] };

export type SinkSpec = { file: { path: string } } | { stdout: Record<string, never> } | { nats: NatsSinkSpec };

/** A sink of results; `outputs` picks the output kinds it takes (default: all). */
export type RoutedSinkSpec = { sink: SinkSpec; outputs?: string[] };

/**
 * The stream's duplicate window only has to catch a message sent again within a run (its ack later
 * than ACK_TIMEOUT_MS): after a restart or a reconnect the sink reads the stream back instead, however
 * long it was away.
 */
const MIN_DUPLICATE_WINDOW_MS = 5_000;

/** The sinks of `top`: `sinks:` (each taking the kinds it names of `outputKinds`), `late:` and `deadLetter:`; undefined where bad. */
export function readSinks(
  r: Reader,
  top: Obj,
  name: string | undefined,
  outputKinds: readonly string[],
): { sinks: Array<RoutedSinkSpec | undefined> | undefined; late: SinkSpec | undefined; deadLetter: SinkSpec | undefined } {
  const sinks = top.sinks === undefined ? undefined : r.list("sinks", top.sinks, { nonEmpty: true })?.map((s, i) => readRoutedSink(r, `sinks[${i}]`, s, outputKinds));
  const late = top.late === undefined ? undefined : readSink(r, "late", top.late);
  const deadLetter = top.deadLetter === undefined ? defaultDeadLetter(r, name) : readSink(r, "deadLetter", top.deadLetter);
  return { sinks, late, deadLetter };
}

function readNatsSink(r: Reader, path: string, body: unknown): SinkSpec | undefined {
  const n = r.object(path, body, ["servers", "stream", "subject", "format", "duplicateWindow"], ["stream", "subject"]);
  if (!n) return undefined;
  const servers = readServers(r, `${path}.servers`, n.servers);
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

function defaultDeadLetter(r: Reader, name: string | undefined): SinkSpec | undefined {
  const file = r.path("deadLetter", `./out/${name ?? "pipeline"}.dead-letter.jsonl`);
  return file === undefined ? undefined : { file: { path: file } };
}
