// flusso as a user's dependency: a project of its own in a temp folder, with `flusso` in its
// node_modules as `npm install <path to flusso>` puts it (a link to the checkout), imports the package
// BY NAME, from a script run with `node --import tsx` and from a vitest test, loads a pipeline file
// and runs it.
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "./pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20);

const PIPELINE = `name: app
source: { file: { path: events.jsonl, format: jsonl } }
schema:
  user_id: { type: string, required: true }
  timestamp: { type: timestamp, required: true }
  amount: { type: number }
key: user_id
time: timestamp
state: { dir: state }
windows:
  - name: hourly
    type: tumbling
    size: 1h
    aggregate:
      events: count
      amount: { sum: amount }
sinks:
  - file: { path: out/hourly.jsonl }
deadLetter: { file: { path: out/dead.jsonl } }
`;

const EVENTS = [
  { user_id: "u1", timestamp: T0, amount: 2 },
  { user_id: "u1", timestamp: T0 + 60_000, amount: 3 },
  { user_id: "u2", timestamp: T0 + 120_000 },
  { user_id: "u1", timestamp: "not a time" },
];

// What the user's code does: every import by the package's name.
const SCRIPT = `import { loadPipeline, runPipeline, PipelineInvalid, type JobResult, type PipelineSpec, type RunOptions } from "flusso";
import { boundedOutOfOrderness, record, type Source, type Sink } from "flusso/engine";

const spec: PipelineSpec = loadPipeline("pipeline.yaml", { ...process.env });
const options: RunOptions = { reset: true };
const result: JobResult = await runPipeline(spec, options);

let refusal = "";
try {
  loadPipeline("bad.yaml");
} catch (error) {
  if (error instanceof PipelineInvalid) refusal = error.errors.map((e) => e.message).join("; ");
}
const generator = boundedOutOfOrderness(1000);
generator.onEvent(record("u1", 5000, {}).time);
const contracts: Array<Source | Sink> = [];
console.log(JSON.stringify({ counters: result.counters, isComplete: result.isComplete, refusal, watermarkMs: generator.onPeriodicEmit(), contracts: contracts.length }));
`;

const VITEST_TEST = `import { expect, it } from "vitest";
import { loadPipeline, runPipeline } from "flusso";
import { FileSource } from "flusso/engine";

it("runs a pipeline loaded through the package's name", async () => {
  const result = await runPipeline(loadPipeline("pipeline.yaml"), { reset: true });
  expect(result.counters).toMatchObject({ read: 4, deadLettered: 1 });
  expect(typeof FileSource).toBe("function");
});
`;

/** What a TypeScript project needs to type-check against flusso's sources (it ships no .d.ts: no build step). */
const CONSUMER_COMPILER_OPTIONS = {
  target: "ES2022",
  module: "NodeNext",
  moduleResolution: "NodeNext",
  strict: true,
  noEmit: true,
  allowImportingTsExtensions: true,
  skipLibCheck: true,
  types: ["node"],
};

describe("import ... from \"flusso\" in a project of the user's", () => {
  let app: string;

  beforeAll(() => {
    app = tempDir("flusso-app-");
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", type: "module", private: true, dependencies: { flusso: `file:${PROJECT_ROOT}` } }));
    writeFileSync(join(app, "pipeline.yaml"), PIPELINE);
    writeFileSync(join(app, "bad.yaml"), "name: app\nsource: { file: { path: events.jsonl } }\n");
    writeFileSync(join(app, "events.jsonl"), EVENTS.map((e) => JSON.stringify(e)).join("\n") + "\n");
    writeFileSync(join(app, "main.ts"), SCRIPT);
    writeFileSync(join(app, "app.test.ts"), VITEST_TEST);
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ compilerOptions: CONSUMER_COMPILER_OPTIONS, include: ["main.ts"] }));
    // As npm links a file: dependency; the app's own tools (tsx, vitest, typescript) come from flusso's install.
    mkdirSync(join(app, "node_modules"));
    symlinkSync(PROJECT_ROOT, join(app, "node_modules", "flusso"), "dir");
    for (const tool of ["tsx", "vitest", "typescript", "@types"]) symlinkSync(join(PROJECT_ROOT, "node_modules", tool), join(app, "node_modules", tool), "dir");
  });

  it("runs a pipeline from a script under node --import tsx, with the option and result types", () => {
    const run = spawnSync(process.execPath, ["--import", "tsx", "main.ts"], { cwd: app, encoding: "utf8", timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    const printed = JSON.parse(run.stdout);
    expect(printed).toMatchObject({ counters: { read: 4, outputs: 2, deadLettered: 1 }, isComplete: true, watermarkMs: 3999, contracts: 0 });
    expect(printed.refusal).toMatch(/(^|; )source\.file\.format: /);
    const results = readFileSync(join(app, "out/hourly.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(results).toEqual([
      { window: "hourly", key: "u1", start: new Date(T0).toISOString(), start_ms: T0, end: new Date(T0 + 3_600_000).toISOString(), end_ms: T0 + 3_600_000, events: 2, amount: 5 },
      { window: "hourly", key: "u2", start: new Date(T0).toISOString(), start_ms: T0, end: new Date(T0 + 3_600_000).toISOString(), end_ms: T0 + 3_600_000, events: 1, amount: 0 },
    ]);
  });

  it("runs the README's example (its ts block) as written", () => {
    const [block] = /```ts\n([\s\S]*?)```/.exec(readFileSync(join(PROJECT_ROOT, "README.md"), "utf8"))!.slice(1);
    writeFileSync(join(app, "readme.ts"), block);
    cpSync(join(PROJECT_ROOT, "config/rees46.yaml"), join(app, "config/rees46.yaml"));
    cpSync(join(PROJECT_ROOT, "data"), join(app, "data"), { recursive: true });
    const run = spawnSync(process.execPath, ["--import", "tsx", "readme.ts"], { cwd: app, encoding: "utf8", timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/read: 4000,\s+outputs: 2993,\s+late: 0,\s+deadLettered: 0/);
  });

  it("type-checks against the package's exports with tsc", () => {
    const tsc = join(PROJECT_ROOT, "node_modules", "typescript", "bin", "tsc");
    const run = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app, encoding: "utf8", timeout: 120_000 });
    expect(run.status, run.stdout + run.stderr).toBe(0);
  });

  it("runs a pipeline from the user's own vitest test", () => {
    const vitest = join(PROJECT_ROOT, "node_modules", "vitest", "vitest.mjs");
    const run = spawnSync(process.execPath, [vitest, "run", "--root", app], { cwd: app, encoding: "utf8", timeout: 120_000 });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/1 passed/);
  });
});
