// Test helpers for the pipelines shipped in config/: the same file with a smaller generator (or a
// file of hand-written events) and every state and output path moved into a temp folder.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parse, stringify } from "yaml";
import { PROJECT_ROOT, readJsonLines } from "./pipelineFiles.ts";

export const SHIPPED = ["retention", "journey", "lead-scoring", "segments"] as const;
export type Shipped = (typeof SHIPPED)[number];

/**
 * Every config/<name>.yaml that runs on its own: the behavioural ones, and the window pipelines on
 * the generator (default) and on the REES46 sample in data/ (rees46). config/nats/* need a NATS server.
 */
export const SHIPPED_LOCAL = [...SHIPPED, "default", "rees46"] as const;
export type ShippedLocal = (typeof SHIPPED_LOCAL)[number];

type Obj = Record<string, any>;

export type VariantOptions = {
  /** Generator size; ignored when `events` is given. */
  users?: number;
  eventCount?: number;
  /** Hand-written events, written to a JSON-lines file that replaces the generator. */
  events?: object[];
  checkpointInterval?: string;
  /** What happens at the end of the input (the source's `atEnd`); default: as the shipped file says. */
  atEnd?: "stop" | "drain";
  /** A last change to the parsed file (e.g. a template that adds the user id). */
  edit?: (pipeline: Obj) => void;
};

/** Writes the variant of config/<name>.yaml into `dir` and returns its path. */
export function shippedVariant(name: ShippedLocal, dir: string, options: VariantOptions = {}): string {
  const pipeline = parse(readFileSync(join(PROJECT_ROOT, "config", `${name}.yaml`), "utf8")) as Obj;
  if (options.events) {
    const eventsFile = join(dir, "events.jsonl");
    writeFileSync(eventsFile, options.events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    pipeline.source = { file: { path: eventsFile, format: "jsonl" } };
  } else if (pipeline.source.file) {
    // Read where the shipped file reads it: its path is relative to config/.
    pipeline.source.file.path = resolve(PROJECT_ROOT, "config", pipeline.source.file.path);
  } else {
    if (options.users !== undefined) pipeline.source.generator.users = options.users;
    if (options.eventCount !== undefined) pipeline.source.generator.events = options.eventCount;
  }
  if (options.atEnd !== undefined) pipeline.source.atEnd = options.atEnd;
  pipeline.state = { ...pipeline.state, dir: join(dir, "state") };
  if (options.checkpointInterval) pipeline.state.checkpointInterval = options.checkpointInterval;
  for (const sink of pipeline.sinks as Obj[]) sink.file.path = join(dir, "out", basename(sink.file.path));
  pipeline.deadLetter = { file: { path: join(dir, "out", "dead-letter.jsonl") } };
  if (pipeline.late) pipeline.late = { file: { path: join(dir, "out", "late.jsonl") } };
  options.edit?.(pipeline);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(pipeline));
  return file;
}

/** The JSON lines of one output file of a variant (empty when the file was never written). */
export function variantOutput<T = Obj>(dir: string, file: string): T[] {
  const path = join(dir, "out", file);
  return existsSync(path) ? readJsonLines<T>(path) : [];
}

/** Every output file of a variant, as text, for comparing whole runs. */
export function variantOutputs(dir: string, name: Shipped): Record<string, string> {
  const pipeline = parse(readFileSync(join(PROJECT_ROOT, "config", `${name}.yaml`), "utf8")) as Obj;
  const files = [...(pipeline.sinks as Obj[]).map((s) => basename(s.file.path)), "dead-letter.jsonl"];
  return Object.fromEntries(files.map((f) => [f, existsSync(join(dir, "out", f)) ? readFileSync(join(dir, "out", f), "utf8") : ""]));
}
