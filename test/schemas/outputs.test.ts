// The output contract, checked on real runs: every shipped pipeline (smaller, every output kind in
// a file of its own) writes lines that validate against their kind's JSON Schema (schemas/), with
// ISO-8601 times that agree with their epoch ms, no two lines alike, and triggers that name their
// recipient and carry a unique message id.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { TRIGGER_OUTPUT } from "../../operators/triggers.ts";
import { WINDOW_OUTPUT } from "../../operators/keyedWindow.ts";
import { DEAD_LETTER, OUTPUT_KINDS, schemaErrors, schemaKinds, schemaOf, timePairMismatches } from "../outputSchemas.ts";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

type Obj = Record<string, any>;

const CONFIG_DIR = join(PROJECT_ROOT, "config");
/** The shipped pipelines (config/nats/ holds two of them reading from NATS instead). */
const SHIPPED = readdirSync(CONFIG_DIR)
  .filter((f) => f.endsWith(".yaml"))
  .map((f) => f.slice(0, -".yaml".length));

/** What delivery needs of every message the shipped pipelines send, besides the recipient. */
const TRIGGER_FIELDS = ["message_id", "rule", "segmento", "trigger", "messaggio", "canali", "follow_up", "timestamp_trigger", "timestamp_trigger_ms", "send_at", "send_at_ms"];

/**
 * Writes config/<name>.yaml into `dir` with every output kind it can produce in a file of its own
 * (`<kind>.jsonl`, late events and dead letters too), sessions emitted, its generator a tenth of
 * the size over the same span of event time, and `edit` applied last.
 */
function variant(name: string, dir: string, edit: (pipeline: Obj) => void = () => {}): string {
  const file = join(CONFIG_DIR, `${name}.yaml`);
  const pipeline = parse(readFileSync(file, "utf8")) as Obj;
  const spec = loadPipeline(file, {});
  const kinds = [...(spec.windows.length > 0 ? [WINDOW_OUTPUT] : []), ...(spec.behaviour?.outputs ?? [])];
  const generator = pipeline.source.generator;
  if (generator) {
    generator.users = Math.ceil((generator.users ?? 10_000) / 10);
    generator.events = Math.ceil((generator.events ?? 200_000) / 10);
    generator.eventsPerSecond = (generator.eventsPerSecond ?? 200) / 10;
  }
  if (pipeline.source.file) {
    const paths = [pipeline.source.file.path].flat().map((p: string) => resolve(CONFIG_DIR, p));
    pipeline.source.file.path = paths.length === 1 ? paths[0] : paths;
  }
  if (pipeline.sessions) pipeline.sessions.emit = true;
  if (pipeline.sessions && !kinds.includes("session")) kinds.push("session");
  pipeline.state = { dir: join(dir, "state") };
  pipeline.sinks = kinds.map((kind) => ({ file: { path: join(dir, `${kind}.jsonl`) }, outputs: [kind] }));
  if (spec.windows.length > 0) pipeline.late = { file: { path: join(dir, "late.jsonl") } };
  pipeline.deadLetter = { file: { path: join(dir, `${DEAD_LETTER}.jsonl`) } };
  edit(pipeline);
  const variantFile = join(dir, `${name}.yaml`);
  writeFileSync(variantFile, stringify(pipeline));
  return variantFile;
}

/** Each output file of a run in `dir`, by kind, as its lines. */
function linesByKind(dir: string): Map<string, string[]> {
  const byKind = new Map<string, string[]>();
  for (const kind of OUTPUT_KINDS) {
    const path = join(dir, `${kind}.jsonl`);
    if (!existsSync(path)) continue;
    byKind.set(kind, readFileSync(path, "utf8").split("\n").filter((l) => l !== ""));
  }
  return byKind;
}

/**
 * What is wrong with the lines of one kind: a line that fails its schema, a time and its ms that
 * disagree, a line written twice (byte for byte: only the same message produced again may be, and
 * a run produces each once). At most a few of each, for a readable failure.
 */
function contractBreaches(kind: string, lines: string[]): string[] {
  const breaches: string[] = [];
  const seen = new Set<string>();
  for (const line of lines) {
    const value = JSON.parse(line) as unknown;
    for (const error of schemaErrors(kind, value)) breaches.push(`${kind} ${error}: ${line.slice(0, 300)}`);
    for (const path of timePairMismatches(value)) breaches.push(`${kind} ${path} disagrees with its _ms: ${line.slice(0, 300)}`);
    if (seen.has(line)) breaches.push(`${kind} written twice: ${line.slice(0, 300)}`);
    seen.add(line);
    if (breaches.length > 10) break;
  }
  return breaches;
}

describe("the output schemas", () => {
  it("cover every output kind, one draft 2020-12 schema each", () => {
    expect(schemaKinds()).toEqual([...OUTPUT_KINDS].sort());
    for (const kind of OUTPUT_KINDS) expect((schemaOf(kind) as Obj).$schema).toBe("https://json-schema.org/draft/2020-12/schema");
  });

  it("refuse what breaks the contract: a time without its ms, an empty segmento, a trigger without its id", () => {
    const phase = { output: "phase", user_id: "u1", time: "2024-05-20T10:30:00.000Z", time_ms: 1716201000000, phase: "awareness", previous: null };
    expect(schemaErrors("phase", phase)).toEqual([]);
    const { time_ms: _timeMs, ...withoutMs } = phase;
    expect(schemaErrors("phase", withoutMs)).toEqual(["/: must have required property 'time_ms'"]);
    expect(schemaErrors("phase", { ...phase, time: 1716201000000 })).not.toEqual([]);
    expect(schemaErrors("phase", { ...phase, time: "2024-05-20T10:30:00Z" })).not.toEqual([]);
    expect(schemaErrors("trigger", { user_id: "u1", segmento: "" })).toEqual([
      "/: must have required property 'message_id'",
      "/segmento: must NOT have fewer than 1 characters",
    ]);
    expect(timePairMismatches({ time: "2024-05-20T10:30:00.000Z", time_ms: 1, matched: [{ time: "2024-05-20T10:30:00.000Z", time_ms: 1716201000000 }] })).toEqual(["/time"]);
  });

  it.each(SHIPPED)(
    "config/%s.yaml: every output line validates against its kind's schema, none twice, every trigger with its recipient and a unique id",
    async (name) => {
      const dir = tempDir(`flusso-schemas-${name}-`);
      const file = variant(name, dir);
      const spec = loadPipeline(file, {});
      const result = await runPipeline(spec, { reset: true });
      expect(result.counters.outputs).toBeGreaterThan(0);
      const byKind = linesByKind(dir);
      const breaches = [...byKind].flatMap(([kind, lines]) => contractBreaches(kind, lines));
      expect(breaches).toEqual([]);
      // Every kind the pipeline can produce was produced (but erasures: no generated event asks for one).
      const produced = [...byKind].filter(([kind, lines]) => kind !== "late" && kind !== DEAD_LETTER && lines.length > 0).map(([kind]) => kind);
      const expected = [...(spec.windows.length > 0 ? [WINDOW_OUTPUT] : []), ...(spec.behaviour?.outputs ?? [])];
      expect(produced.sort()).toEqual(expected.filter((k) => k !== "erasure").sort());
      const triggers = (byKind.get(TRIGGER_OUTPUT) ?? []).map((l) => JSON.parse(l) as Obj);
      for (const t of triggers) {
        expect(typeof t[spec.key], JSON.stringify(t)).toBe("string");
        for (const field of TRIGGER_FIELDS) expect(t, field).toHaveProperty(field);
      }
      expect(new Set(triggers.map((t) => t.message_id)).size).toBe(triggers.length);
    },
  );

  it("dead letters, late events and erasures validate too", async () => {
    const dir = tempDir("flusso-schemas-bad-");
    const t0 = Date.UTC(2024, 5, 3, 10);
    const events = [
      { user_id: "u1", timestamp: t0, event_type: "view", page: "/", session_duration_sec: 3 },
      { user_id: "u2", timestamp: t0 + 3 * 3_600_000, event_type: "view", page: "/" },
      // Hours behind the watermark: late for every window.
      { user_id: "u1", timestamp: t0 + 60_000, event_type: "view", page: "/late" },
      { user_id: "u3", timestamp: "soon", event_type: "view" },
    ];
    const lines = [...events.map((e) => JSON.stringify(e)), "{not json", ""].join("\n");
    writeFileSync(join(dir, "events.jsonl"), lines);
    const source = { file: { path: join(dir, "events.jsonl"), format: "jsonl" } };
    // Late events to their own output, then (no late output) to the dead letters.
    // One event a batch: the watermark moves past the first hour before the late event comes.
    await runPipeline(loadPipeline(variant("default", dir, (p) => (p.source = source)), {}), { reset: true, batchSize: 1 });
    const deadDir = tempDir("flusso-schemas-dead-");
    await runPipeline(loadPipeline(variant("default", deadDir, (p) => ((p.source = source), delete p.late)), {}), { reset: true, batchSize: 1 });
    // An erasure: a user asks to be forgotten.
    const erasureDir = tempDir("flusso-schemas-erasure-");
    writeFileSync(
      join(erasureDir, "events.jsonl"),
      [
        { user_id: "R1", timestamp: t0, event_type: "add_to_cart", page: "/p", session_duration_sec: 3, tz: "Europe/Rome" },
        { user_id: "R1", timestamp: t0 + 60_000, event_type: "erasure_request", page: "/privacy", session_duration_sec: 3 },
      ]
        .map((e) => JSON.stringify(e))
        .join("\n"),
    );
    const erasureSource = { file: { path: join(erasureDir, "events.jsonl"), format: "jsonl" } };
    await runPipeline(loadPipeline(variant("retention", erasureDir, (p) => (p.source = erasureSource)), {}), { reset: true });

    const late = linesByKind(dir);
    const dead = linesByKind(deadDir);
    const erased = linesByKind(erasureDir);
    // Late for both window definitions (hourly, sessions).
    expect(late.get("late")?.map((l) => JSON.parse(l).window)).toEqual(["hourly", "sessions"]);
    expect(late.get(DEAD_LETTER)?.map((l) => JSON.parse(l).reason.slice(0, 8))).toEqual(["field \"t", "not JSON"]);
    expect(dead.get(DEAD_LETTER)?.map((l) => JSON.parse(l).reason.slice(0, 8))).toEqual(["late", "late", "field \"t", "not JSON"]);
    expect(erased.get("erasure")?.length).toBe(1);
    const breaches = [late, dead, erased].flatMap((byKind) => [...byKind].flatMap(([kind, lines]) => contractBreaches(kind, lines)));
    expect(breaches).toEqual([]);
  });
});
