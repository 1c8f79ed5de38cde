// Benchmark 6's pieces: the JSONL events file, the pipeline YAML that aggregates it, timing a child
// process, and checking that flusso and the plain script wrote the same rows.
import { spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { eventSchemaYaml, FILE_OUTPUTS, hourlyWindow, OUTPUT_FILES, SESSION_DURATION, windowPipelineYaml } from "../test/fixtures/pipelines.ts";
import { mulberry32 } from "./benchUtil.ts";

export type JsonlWorkload = { events: number; keys: number; startMs: number; stepMs: number; disorderMs: number; seed: number };

/** 1,000,000 events over 50,000 users, ~10.8 ms apart (about 3 hours), each moved back by up to 1 s. */
export const JSONL_WORKLOAD: JsonlWorkload = {
  events: 1_000_000,
  keys: 50_000,
  startMs: 1_700_000_000_000,
  stepMs: 10.8,
  disorderMs: 1000,
  seed: 7,
};

const EVENT_TYPES = ["page_view", "click", "add_to_cart", "purchase"];

/** Writes the events as JSON lines; returns the file's size in bytes. */
export function writeJsonlEvents(path: string, workload: JsonlWorkload): number {
  const rnd = mulberry32(workload.seed);
  const fd = openSync(path, "w");
  let sizeBytes = 0;
  let lines: string[] = [];
  const flush = () => {
    const bytes = Buffer.from(lines.join(""));
    writeSync(fd, bytes);
    sizeBytes += bytes.length;
    lines = [];
  };
  for (let i = 0; i < workload.events; i++) {
    const event = {
      user_id: `u${Math.floor(rnd() * workload.keys)}`,
      timestamp: workload.startMs + Math.floor(i * workload.stepMs) - Math.floor(rnd() * workload.disorderMs),
      event_type: EVENT_TYPES[Math.floor(rnd() * EVENT_TYPES.length)],
      session_duration_sec: Math.floor(rnd() * 1800),
    };
    lines.push(JSON.stringify(event) + "\n");
    if (lines.length === 10_000) flush();
  }
  flush();
  closeSync(fd);
  return sizeBytes;
}

/** The pipeline: one tumbling 1 h window per user_id with `events: count` and `duration: { sum }`. */
export function writePipelineYaml(dir: string, eventsFile: string): { yamlPath: string; resultsPath: string; deadLetterPath: string } {
  const yamlPath = join(dir, "pipeline.yaml");
  const pipeline = windowPipelineYaml({
    name: "bench-jsonl",
    source: `{ file: { path: ${JSON.stringify(eventsFile)}, format: jsonl } }`,
    // event_type optional, as the benchmark has always declared it.
    schema: eventSchemaYaml({ fields: { event_type: "{ type: string }", ...SESSION_DURATION } }),
    watermark: "{ maxOutOfOrderness: 2s }",
    state: "{ dir: ./state, checkpointInterval: 2s }",
    windows: [hourlyWindow({ duration: "{ sum: session_duration_sec }" })],
    sinks: FILE_OUTPUTS.sinks,
    deadLetter: FILE_OUTPUTS.deadLetter,
  });
  writeFileSync(yamlPath, `# Benchmark 6: one tumbling 1 h window over a JSONL file.\n${pipeline}`);
  return { yamlPath, resultsPath: join(dir, OUTPUT_FILES.results), deadLetterPath: join(dir, OUTPUT_FILES.deadLetter) };
}

/** Runs a command to its end and returns its wall-clock time; a failing command throws with its stderr. */
export function timeCommand(command: string, args: string[], cwd: string): number {
  const startedAtMs = performance.now();
  const child = spawnSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const elapsedMs = performance.now() - startedAtMs;
  if (child.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited with ${child.status ?? child.signal}: ${child.stderr}`);
  }
  return elapsedMs;
}

/** The rows of a results file as sorted `key,start,events,duration` lines. */
export function resultRows(path: string): string[] {
  const rows: string[] = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line === "") continue;
    // flusso's results carry the start as ISO-8601 and `start_ms`; the plain script's as epoch ms.
    const r = JSON.parse(line) as { key: string; start: number | string; start_ms?: number; events: number; duration: number };
    rows.push(`${r.key},${r.start_ms ?? r.start},${r.events},${r.duration}`);
  }
  return rows.sort();
}

export function countLines(path: string): number {
  try {
    const text = readFileSync(path, "utf8");
    return text === "" ? 0 : text.split("\n").filter((l) => l !== "").length;
  } catch {
    return 0;
  }
}
