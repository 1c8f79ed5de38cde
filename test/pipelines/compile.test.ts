// The state's shape names what a job computes, not where it runs: a project folder copied
// elsewhere with its data and state, or a state dir moved, resumes from its checkpoint.
import { cpSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadPipeline } from "../../pipelines/load.ts";
import { jobOptions, runPipeline } from "../../pipelines/compile.ts";
import { pipelineShape } from "../../pipelines/stateShape.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";
import { schemaErrors } from "../outputSchemas.ts";

afterAll(removeTempDirs);

const PIPELINE = `name: moving
source:
  file: { path: ./data/events.jsonl, format: jsonl }
${eventSchemaYaml({ time: "ts" })}state: { dir: "\${STATE_DIR:-./state}", checkpointInterval: 1h }
windows:
  - name: quarter
    type: tumbling
    size: 15m
    aggregate:
      events: count
      carts: { count: 'event_type == "add_to_cart"' }
sinks:
  - file: { path: ./out/results.jsonl }
late: { file: { path: ./out/late.jsonl } }
deadLetter: { file: { path: ./out/dead.jsonl } }
`;

/** A project folder: the pipeline and 400 events of 5 users over 4 hours, in time order. */
function project(): string {
  const dir = tempDir("flusso-moving-");
  mkdirSync(join(dir, "data"));
  const startMs = Date.UTC(2024, 4, 20);
  const events = Array.from({ length: 400 }, (_, i) => ({ user_id: `u${i % 5}`, ts: startMs + i * 36_000, event_type: i % 7 === 0 ? "add_to_cart" : "view" }));
  writeFileSync(join(dir, "data", "events.jsonl"), events.map((e) => JSON.stringify(e)).join("\n") + "\n");
  writeFileSync(join(dir, "pipeline.yaml"), PIPELINE);
  return dir;
}

/** Runs the project's pipeline to the end, or (`isStoppedEarly`) for one batch of 50 and a checkpoint. */
function run(dir: string, env: NodeJS.ProcessEnv = {}, isStoppedEarly = false) {
  const spec = loadPipeline(join(dir, "pipeline.yaml"), env);
  return runPipeline(spec, isStoppedEarly ? { batchSize: 50, signal: AbortSignal.abort() } : { batchSize: 50 });
}

const results = (dir: string) => readFileSync(join(dir, "out", "results.jsonl"), "utf8");

describe("the state's shape", () => {
  it("lets a project folder copied elsewhere with its data and state resume from its checkpoint", async () => {
    const reference = project();
    expect((await run(reference)).isComplete).toBe(true);
    const original = project();
    const stopped = await run(original, {}, true);
    expect(stopped.isComplete).toBe(false);
    const copy = join(tempDir("flusso-copied-"), "elsewhere");
    cpSync(original, copy, { recursive: true });
    const resumed = await run(copy);
    expect(resumed.restoredFromCheckpoint).toBeDefined();
    expect(resumed.thisRun.read).toBe(350);
    expect(results(copy)).toBe(results(reference));
  });

  it("lets a state dir moved to another folder resume from its checkpoint", async () => {
    const reference = project();
    await run(reference);
    const dir = project();
    await run(dir, {}, true);
    const moved = join(tempDir("flusso-moved-state-"), "state");
    renameSync(join(dir, "state"), moved);
    const resumed = await run(dir, { STATE_DIR: moved });
    expect(resumed.restoredFromCheckpoint).toBeDefined();
    expect(results(dir)).toBe(results(reference));
  });

  it("leaves out settings that do not change what the job computes", () => {
    const dir = project();
    const of = (text: string, env: NodeJS.ProcessEnv = {}) => {
      writeFileSync(join(dir, "pipeline.yaml"), text);
      return pipelineShape(loadPipeline(join(dir, "pipeline.yaml"), env));
    };
    expect(of(PIPELINE.replace("checkpointInterval: 1h", "checkpointInterval: 2s"), { STATE_DIR: "/elsewhere/state" })).toEqual(of(PIPELINE));
    /** The pipeline reading from and writing to NATS, with these servers and options. */
    const throughNats = (servers: string, sourceOptions: string, sinkOptions: string) =>
      PIPELINE.replace("checkpointInterval: 1h", "checkpointInterval: 1s")
        .replace(/ {2}file: \{ path: \.\/data.*\n/, `  nats: { servers: "${servers}", stream: E, subjects: ["e.>"]${sourceOptions} }\n`)
        .replace("  - file: { path: ./out/results.jsonl }", `  - nats: { servers: "${servers}", stream: O, subject: out.q${sinkOptions} }`);
    const expected = of(throughNats("nats://a:4222", "", ""));
    expect(of(throughNats("nats://b:4222,nats://c:4222", ", bufferMessages: 5", ", duplicateWindow: 10m"))).toEqual(expected);
    expect(of(throughNats("nats://a:4222", ", partitions: 2", ""))).not.toEqual(expected);
  });

  it("tells apart pipelines that compute differently or read other files", () => {
    const dir = project();
    const of = () => pipelineShape(loadPipeline(join(dir, "pipeline.yaml"), {}));
    const expected = of();
    writeFileSync(join(dir, "pipeline.yaml"), PIPELINE.replace("size: 15m", "size: 30m"));
    expect(of()).not.toEqual(expected);
    writeFileSync(join(dir, "data", "other.jsonl"), "");
    writeFileSync(join(dir, "pipeline.yaml"), PIPELINE.replace("./data/events.jsonl", "./data/other.jsonl"));
    expect(of()).not.toEqual(expected);
  });
});

