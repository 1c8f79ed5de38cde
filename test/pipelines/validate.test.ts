// Bad pipeline files: each kind of mistake is refused before anything runs, with the path of the bad
// value and a message that says what was expected.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadPipeline } from "../../pipelines/load.ts";
import { MAX_STATE_DATABASES } from "../../engine/storeLimits.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { celEnvironment, compileExpression } from "../../pipelines/expressions.ts";
import { MAX_PIPELINE_BYTES, parsePipelineText } from "../../pipelines/load.ts";
import { MAX_LOOKBACK_BUCKETS } from "../../pipelines/stages/aggregates.ts";
import { MAX_SEQUENCE_STEPS } from "../../pipelines/stages/sequences.ts";
import { MAX_OPEN_WINDOWS_PER_KEY, MAX_WINDOWS, MAX_WINDOWS_PER_EVENT } from "../../pipelines/sections/windows.ts";
import { validatePipeline, type PipelineSpec } from "../../pipelines/validate.ts";
import { PROJECT_ROOT, removeTempDirs, runCli, tempDir } from "./pipelineFiles.ts";

const NOTHING_TO_COMPUTE =
  "is required when the pipeline has none of dedup, sessions, aggregates, features, kbis, scores, quantiles, sequences, phases, clusters, segments, triggers: there would be nothing to compute";

afterAll(removeTempDirs);

const FILE = "/pipelines/clicks.yaml";
const BASE_DIR = "/pipelines";

type Raw = Record<string, any>;

/** A valid pipeline; each test breaks one thing in a copy of it. */
const VALID: Raw = {
  name: "clicks",
  source: { file: { path: "./events.jsonl", format: "jsonl" } },
  schema: {
    user_id: { type: "string", required: true },
    ts: { type: "timestamp", required: true },
    event_type: { type: "string", required: true },
    page: { type: "string" },
    price: { type: "number" },
    props: { type: "object" },
    quantity: { type: "number", required: true },
    session_id: { type: "string" },
  },
  key: "user_id",
  time: "ts",
  windows: [{ name: "hourly", type: "tumbling", size: "1h", aggregate: { events: "count" } }],
  sinks: [{ file: { path: "./out/results.jsonl" } }],
};

/** The YAML text of the valid pipeline after `change`. */
function pipelineText(change: (p: Raw) => void = () => {}): string {
  const p = structuredClone(VALID);
  change(p);
  return stringify(p);
}

/** The spec of `text`, checked as a definition: its files (under /pipelines) need not exist. */
function validate(text: string, env: NodeJS.ProcessEnv = {}): PipelineSpec {
  return validatePipeline(parsePipelineText(text, FILE, env), FILE, BASE_DIR, { checksFiles: false });
}

/** What the validator says about `text`: one `path: detail` message per mistake. */
function mistakes(text: string, env: NodeJS.ProcessEnv = {}): Array<{ path: string; message: string }> {
  try {
    validate(text, env);
  } catch (error) {
    if (!(error instanceof PipelineInvalid)) throw error;
    expect(error.file).toBe(FILE);
    return error.errors.map((e) => ({ path: e.path, message: e.message }));
  }
  throw new Error("the pipeline was accepted");
}

function mistakesOf(change: (p: Raw) => void): Array<{ path: string; message: string }> {
  return mistakes(pipelineText(change));
}

/** The mistakes of the valid pipeline with `aggregate` as its window's aggregates. */
function aggregateMistakes(aggregate: Raw): Array<{ path: string; message: string }> {
  return mistakesOf((p) => {
    p.windows[0].aggregate = aggregate;
  });
}

describe("a valid pipeline", () => {
  it("is accepted, with its durations in milliseconds", () => {
    const spec = validate(pipelineText());
    expect(spec.name).toBe("clicks");
    expect(spec.windows[0].assigner).toEqual({ type: "tumbling", sizeMs: 3_600_000 });
    expect(spec.source).toEqual({ file: { paths: ["/pipelines/events.jsonl"], format: "jsonl" } });
  });

  it("accepts config/default.yaml", () => {
    expect(loadPipeline(join(PROJECT_ROOT, "config/default.yaml"), {}).name).toBe("default");
  });
});

describe("YAML", () => {
  it("names the line of a YAML syntax error", () => {
    const text = [
      "name: clicks",
      "source:",
      "  file: { path: ./events.jsonl, format: jsonl }",
      "windows:",
      "  - name: hourly",
      "   type: tumbling", // line 6: indented one space short
      "    size: 1h",
    ].join("\n");
    const found = mistakes(text);
    expect(found[0].path).toBe("");
    expect(found[0].message).toMatch(/^YAML syntax error at line 6, column \d+: /);
  });

  it("refuses a key given twice rather than keeping the last one", () => {
    const text = pipelineText() + "key: session_id\n";
    const found = mistakes(text);
    expect(found).toHaveLength(1);
    expect(found[0].message).toMatch(/^YAML syntax error.*Map keys must be unique/);
  });

  it("refuses a file that is not a mapping", () => {
    expect(mistakes("- name: clicks\n")).toEqual([
      { path: "", message: expect.stringMatching(/^expected a mapping with name, source, .*got a list$/) },
    ]);
  });

  /** Ten levels of aliases, each ten of the one before: 10^10 strings once expanded. */
  const BILLION_LAUGHS = [
    'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ...Array.from({ length: 9 }, (_, i) => {
      const [name, previous] = [String.fromCharCode(98 + i), String.fromCharCode(97 + i)];
      return `${name}: &${name} [${Array(10).fill(`*${previous}`).join(", ")}]`;
    }),
  ].join("\n");

  it("refuses aliases that expand exponentially (billion laughs) as an invalid pipeline", () => {
    expect(mistakes(BILLION_LAUGHS)).toEqual([{ path: "", message: "YAML cannot be read: Excessive alias count indicates a resource exhaustion attack" }]);
  });

  it("makes the CLI exit with code 2 on billion laughs, without a stack trace", () => {
    const file = join(tempDir(), "laughs.yaml");
    writeFileSync(file, BILLION_LAUGHS);
    const run = runCli(["run", file]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(`${file}: invalid pipeline`);
    expect(run.stderr).toContain("YAML cannot be read: Excessive alias count");
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it("accepts an anchor used a few times", () => {
    // Two windows sharing one aggregate object: the YAML writes it once, with an alias.
    const text = pipelineText((p) => (p.windows[1] = { ...p.windows[0], name: "daily", size: "1d" }));
    expect(text).toMatch(/aggregate: \*a1/);
    expect(validate(text).windows.map((w) => w.aggregates)).toEqual([[{ name: "events", kind: "count" }], [{ name: "events", kind: "count" }]]);
  });

  it("refuses YAML nested deeper than a value may be", () => {
    const found = mistakes(`${pipelineText()}\nextra: ${"[".repeat(80)}1${"]".repeat(80)}\n`);
    expect(found).toEqual([{ path: "", message: "the pipeline is nested deeper than 64 levels" }]);
  });

  it(`refuses a pipeline file over ${MAX_PIPELINE_BYTES} bytes`, () => {
    const file = join(tempDir(), "big.yaml");
    const text = `${pipelineText()}\n# ${"x".repeat(MAX_PIPELINE_BYTES)}\n`;
    writeFileSync(file, text);
    expect(() => loadPipeline(file, {})).toThrow(`the pipeline file has ${Buffer.byteLength(text)} bytes, over the limit of ${MAX_PIPELINE_BYTES}`);
  });
});

describe("fields", () => {
  it("refuses an unknown top-level field, listing the known ones", () => {
    expect(mistakesOf((p) => (p.output = []))).toEqual([
      {
        path: "output",
        message:
          "output: unknown field (expected one of name, source, schema, key, time, watermark, state, privacy, windows, dedup, sessions, aggregates, features, kbis, scores, quantiles, sequences, phases, clusters, segments, triggers, outputs, sinks, late, deadLetter, http, cluster)",
      },
    ]);
  });

  it("takes outputs.digits from 1 to 17, and refuses anything else there", () => {
    expect(() => validate(pipelineText((p) => (p.outputs = { digits: 4 })), {})).not.toThrow();
    expect(mistakesOf((p) => (p.outputs = { digits: 0 }))).toEqual([{ path: "outputs.digits", message: "outputs.digits: expected a number from 1 to 17, got 0" }]);
    expect(mistakesOf((p) => (p.outputs = { digits: 2.5 }))).toEqual([{ path: "outputs.digits", message: "outputs.digits: expected a whole number, got 2.5" }]);
    expect(mistakesOf((p) => (p.outputs = { precision: 3 })).map((m) => m.path)).toEqual(["outputs.precision"]);
  });

  it("refuses a misspelt window field, naming windows[0].sise", () => {
    const found = mistakesOf((p) => {
      p.windows[0].sise = p.windows[0].size;
      delete p.windows[0].size;
    });
    expect(found).toContainEqual({
      path: "windows[0].sise",
      message: "windows[0].sise: unknown field (expected one of name, type, size, slide, gap, allowedLateness, aggregate)",
    });
    expect(found).toContainEqual({ path: "windows[0].size", message: "windows[0].size: is required for a tumbling window" });
  });

  it("refuses a misspelt schema field option, naming its path", () => {
    const found = mistakesOf((p) => (p.schema.page.requried = true));
    expect(found.map((m) => m.path)).toEqual(["schema.page.requried"]);
  });

  it("names every missing required top-level field", () => {
    expect(mistakes("{}\n")).toEqual([
      ...["name", "source", "schema", "key", "time", "sinks"].map((path) => ({ path, message: `${path}: is required` })),
      { path: "windows", message: `windows: ${NOTHING_TO_COMPUTE}` },
    ]);
  });

  it.each(["name", "source", "sinks"])("refuses a pipeline without %s, naming it", (field) => {
    expect(mistakesOf((p) => delete p[field])).toEqual([{ path: field, message: `${field}: is required` }]);
  });

  it("refuses a pipeline with neither windows nor behaviour sections: there would be nothing to compute", () => {
    expect(mistakesOf((p) => delete p.windows)).toEqual([{ path: "windows", message: `windows: ${NOTHING_TO_COMPUTE}` }]);
  });

  it("refuses a source file without a format, naming source.file.format", () => {
    expect(mistakesOf((p) => delete p.source.file.format)).toEqual([{ path: "source.file.format", message: "source.file.format: is required" }]);
  });

  it("refuses an empty list of sinks", () => {
    expect(mistakesOf((p) => (p.sinks = []))).toEqual([{ path: "sinks", message: "sinks: expected at least one entry" }]);
  });

  it("reports two mistakes in one file together", () => {
    const found = mistakesOf((p) => {
      p.windows[0].size = "fast";
      p.key = "uid";
    });
    expect(found.map((m) => m.path).sort()).toEqual(["key", "windows[0].size"]);
  });
});

describe("windows", () => {
  it("refuses a size that is not a duration, with the exact message", () => {
    const found = mistakesOf((p) => (p.windows[0].size = "fast"));
    expect(found.map((m) => m.message)).toEqual(['windows[0].size: expected a duration like "15m", got "fast"']);
  });

  it.each([
    ["a bare number", 15, "got 15"],
    ["a negative duration", "-5m", 'got "-5m"'],
    ["an unknown unit", "15 minutes", 'got "15 minutes"'],
  ])("refuses %s as a window size", (_what, size, got) => {
    const found = mistakesOf((p) => (p.windows[0].size = size));
    expect(found).toEqual([{ path: "windows[0].size", message: `windows[0].size: expected a duration like "15m", ${got}` }]);
  });

  it("quotes at most ~120 characters of a bad value", () => {
    const [found, ...rest] = mistakesOf((p) => (p.windows[0].size = `${"9".repeat(1_000_000)}x`));
    expect(rest).toEqual([]);
    expect(found.message).toBe(`windows[0].size: expected a duration like "15m", got "${"9".repeat(117)}"... (1000001 characters)`);
  });

  it("refuses a window of zero size", () => {
    const found = mistakesOf((p) => (p.windows[0].size = "0"));
    expect(found).toEqual([{ path: "windows[0].size", message: 'windows[0].size: expected a duration above zero, got "0"' }]);
  });

  it("refuses a hopping window without a slide, naming windows[0].slide", () => {
    const found = mistakesOf((p) => (p.windows[0].type = "hopping"));
    expect(found).toEqual([{ path: "windows[0].slide", message: "windows[0].slide: is required for a hopping window" }]);
  });

  it("refuses a slide longer than the size, since events would fall between windows", () => {
    const found = mistakesOf((p) => Object.assign(p.windows[0], { type: "hopping", size: "1h", slide: "2h" }));
    expect(found).toEqual([
      {
        path: "windows[0].slide",
        message: "windows[0].slide: a slide of 7200000 ms is longer than the size of 3600000 ms: events would fall between windows",
      },
    ]);
  });

  it("refuses a size on a session window", () => {
    const found = mistakesOf((p) => Object.assign(p.windows[0], { type: "session", gap: "30m" }));
    expect(found).toEqual([{ path: "windows[0].size", message: "windows[0].size: does not apply to a session window" }]);
  });

  it("refuses a session window without a gap", () => {
    const found = mistakesOf((p) => {
      p.windows[0].type = "session";
      delete p.windows[0].size;
    });
    expect(found).toEqual([{ path: "windows[0].gap", message: "windows[0].gap: is required for a session window" }]);
  });

  it("refuses an unknown window type, listing the known ones", () => {
    const found = mistakesOf((p) => (p.windows[0].type = "sliding"));
    expect(found).toEqual([{ path: "windows[0].type", message: 'windows[0].type: expected one of tumbling, hopping, session, got "sliding"' }]);
  });

  it("refuses two windows of the same name, naming the second", () => {
    const found = mistakesOf((p) => p.windows.push({ ...p.windows[0], size: "2h" }));
    expect(found).toEqual([{ path: "windows[1].name", message: 'windows[1].name: "hourly" names another window already' }]);
  });

  it.each(["start", "start_ms", "end", "end_ms", "key", "window"])("refuses an aggregate named %s, a field of every result", (name) => {
    expect(aggregateMistakes({ [name]: "count" })).toEqual([
      {
        path: `windows[0].aggregate.${name}`,
        message: `windows[0].aggregate.${name}: "${name}" is a field of every window result; choose another name`,
      },
    ]);
  });
});

describe("settings that would explode", () => {
  /** The mistakes of the valid pipeline with behaviour `sections` added (its windows kept). */
  const sectionMistakes = (sections: Raw) => mistakesOf((p) => Object.assign(p, sections));

  it("refuses a hopping window of 30 days sliding by 1 ms: every event would fall into 2.6 billion windows", () => {
    const found = mistakesOf((p) => (p.windows[0] = { ...p.windows[0], type: "hopping", size: "30d", slide: "1ms" }));
    expect(found).toEqual([
      {
        path: "windows[0].slide",
        message: `windows[0].slide: every event would fall into 2592000000 windows (size / slide), over the limit of ${MAX_WINDOWS_PER_EVENT}: use a longer slide`,
      },
    ]);
  });

  it("accepts a day in 5-minute hops (288 windows per event)", () => {
    expect(() => validate(pipelineText((p) => (p.windows[0] = { ...p.windows[0], type: "hopping", size: "1d", slide: "5m" })))).not.toThrow();
  });

  it("refuses an allowed lateness that would keep thousands of windows of a key open", () => {
    const found = mistakesOf((p) => (p.windows[0] = { ...p.windows[0], size: "1s", allowedLateness: "1d" }));
    expect(found).toEqual([
      {
        path: "windows[0].allowedLateness",
        message: `windows[0].allowedLateness: a key could hold 86401 windows open at once ((size + allowedLateness) / size), over the limit of ${MAX_OPEN_WINDOWS_PER_KEY}`,
      },
    ]);
  });

  it(`refuses more than ${MAX_WINDOWS} windows, before the state store runs out of named databases`, () => {
    const found = mistakesOf((p) => (p.windows = Array.from({ length: MAX_WINDOWS + 1 }, (_, i) => ({ ...structuredClone(p.windows[0]), name: `w${i}` }))));
    expect(found).toEqual([{ path: "windows", message: `windows: expected at most ${MAX_WINDOWS} windows, got ${MAX_WINDOWS + 1}` }]);
  });

  it(`runs ${MAX_WINDOWS} windows beside every behaviour stage that keeps its own state: the store holds them all`, async () => {
    const dir = tempDir();
    const startMs = Date.UTC(2024, 4, 20);
    const events = Array.from({ length: 40 }, (_, i) => ({ user_id: `u${i % 4}`, ts: startMs + i * 120_000, event_type: "view", page: "/", price: i, quantity: 1 }));
    writeFileSync(join(dir, "events.jsonl"), events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const text = pipelineText((p) => {
      p.windows = Array.from({ length: MAX_WINDOWS }, (_, i) => ({ ...structuredClone(p.windows[0]), name: `w${i}` }));
      Object.assign(p, { aggregates: { spent: { sum: "price", over: "1d" } }, quantiles: { metrics: ["spent"], every: "1h" }, clusters: { k: 2, features: ["spent"], every: "30m" } });
    });
    writeFileSync(join(dir, "clicks.yaml"), text);
    const result = await runPipeline(loadPipeline(join(dir, "clicks.yaml"), {}));
    expect(MAX_WINDOWS).toBeLessThan(MAX_STATE_DATABASES);
    expect(result.isComplete).toBe(true);
  });

  it("refuses a duration that overflows to Infinity (a 400-digit number of days), naming the path", () => {
    const days = `${"9".repeat(400)}d`;
    const found = mistakesOf((p) => (p.windows[0].size = days));
    expect(found).toEqual([{ path: "windows[0].size", message: `windows[0].size: expected a duration of at most 100 years (36525d), got ${JSON.stringify(days.slice(0, 117))}... (401 characters)` }]);
  });

  it.each([
    ["windows[0].size", (p: Raw) => (p.windows[0].size = "36526d")],
    ["windows[0].allowedLateness", (p: Raw) => (p.windows[0].allowedLateness = "876625h")],
    ["watermark.maxOutOfOrderness", (p: Raw) => (p.watermark = { maxOutOfOrderness: "36526d" })],
    ["state.checkpointInterval", (p: Raw) => (p.state = { checkpointInterval: "3155760000001ms" })],
    ["aggregates.visits.over", (p: Raw) => (p.aggregates = { visits: { count: true, over: "36526d", resolution: "1000d" } })],
    ["phases.timers[0].after", (p: Raw) => (p.phases = { transitions: [{ to: "retention", when: "true" }], timers: [{ to: "re_engagement", after: "36526d" }] })],
  ])("refuses a duration over 100 years at %s", (path, change) => {
    expect(mistakesOf(change)).toContainEqual({ path, message: expect.stringContaining(`${path}: expected a duration of at most 100 years (36525d), got`) });
  });

  it("accepts exactly 100 years", () => {
    expect(validate(pipelineText((p) => (p.windows[0].size = "36525d"))).windows[0].assigner).toEqual({ type: "tumbling", sizeMs: 36_525 * 86_400_000 });
  });

  it.each([
    ["source.file.maxLineBytes", (p: Raw) => (p.source.file.maxLineBytes = 2 ** 30), "expected a number from 1024 to 16777216, got 1073741824"],
    ["source.nats.bufferMessages", (p: Raw) => (p.source = { nats: { stream: "E", subjects: ["e.>"], bufferMessages: 10_000_000 } }), "expected a number from 1 to 100000, got 10000000"],
    ["source.generator.users", (p: Raw) => (p.source = { generator: { users: 1e9 } }), "expected a number from 1 to 1000000, got 1000000000"],
  ])("bounds %s", (path, change, detail) => {
    expect(mistakesOf(change)).toEqual([{ path, message: `${path}: ${detail}` }]);
  });

  it.each([
    [
      "aggregates.visits.resolution",
      { aggregates: { visits: { count: true, over: "30d", resolution: "1s" } } },
      `the lookback would keep up to 2592000 buckets per user (over / resolution), over the limit of ${MAX_LOOKBACK_BUCKETS}: give a coarser resolution`,
    ],
    [
      "aggregates.visits.over",
      { aggregates: { visits: { count: true, over: "1500d" } } },
      `the lookback would keep up to 1500 buckets per user (over / resolution), over the limit of ${MAX_LOOKBACK_BUCKETS}: give a coarser resolution`,
    ],
    [
      "sequences.long.steps",
      { sequences: { long: { steps: Array.from({ length: MAX_SEQUENCE_STEPS + 1 }, (_, i) => ({ name: `s${i}`, when: "true" })) } } },
      `expected at most ${MAX_SEQUENCE_STEPS} steps, got ${MAX_SEQUENCE_STEPS + 1}`,
    ],
    ["clusters.every", { clusters: { features: ["price"], every: "1s" } }, 'expected at least 1m, got "1s"'],
    ["clusters.maxIterations", { clusters: { features: ["price"], maxIterations: 5000 } }, "expected a number from 1 to 1000, got 5000"],
    ["quantiles.every", { quantiles: { metrics: ["price"], every: "1ms" } }, 'expected at least 1m, got "1ms"'],
    ["quantiles.report", { quantiles: { metrics: ["price"], report: "1s" } }, 'expected at least 1m, got "1s"'],
    ["dedup.within", { dedup: { within: "30d" } }, 'expected at most 1d, got "30d"'],
    [
      "triggers.rules.r.cap.max",
      { aggregates: { n: { count: true, over: "1d" } }, segments: { groups: { g: { rules: [{ name: "a", when: "n > 1.0" }], default: "b" } } }, triggers: { rules: { r: { on: { segment: "a" }, message: "m", channels: ["email"], cap: { max: 1e6, per: "1d" } } } } },
      "expected a number from 1 to 1000, got 1000000",
    ],
  ])("bounds %s", (path, sections, detail) => {
    expect(sectionMistakes(sections)).toEqual([{ path, message: `${path}: ${detail}` }]);
  });
});

describe("schema, key and time", () => {
  it("refuses a key that is not a field of the schema", () => {
    const found = mistakesOf((p) => (p.key = "uid"));
    expect(found).toEqual([{ path: "key", message: expect.stringMatching(/^key: "uid" is not a field of the schema \(user_id, ts, /) }]);
  });

  it("refuses a key that is not required, since every event needs one", () => {
    const found = mistakesOf((p) => (p.key = "session_id"));
    expect(found).toEqual([{ path: "key", message: 'key: "session_id" must be declared required: true, since every event needs it' }]);
  });

  it("refuses a key that is not a string field", () => {
    const found = mistakesOf((p) => (p.key = "quantity"));
    expect(found).toEqual([{ path: "key", message: 'key: "quantity" is a number, expected a string field' }]);
  });

  it("refuses a time that is not a timestamp field", () => {
    const found = mistakesOf((p) => (p.time = "event_type"));
    expect(found).toEqual([{ path: "time", message: 'time: "event_type" is a string, expected a timestamp field' }]);
  });

  it("refuses an unknown field type, listing the known ones", () => {
    const found = mistakesOf((p) => (p.schema.page.type = "text"));
    expect(found).toEqual([
      { path: "schema.page.type", message: 'schema.page.type: expected one of string, number, boolean, timestamp, object, list, got "text"' },
    ]);
  });

  it("refuses a unit on a field that is not a timestamp", () => {
    const found = mistakesOf((p) => (p.schema.price.unit = "s"));
    expect(found).toEqual([{ path: "schema.price.unit", message: "schema.price.unit: only a timestamp field has a unit" }]);
  });

  it("refuses a field name that is no CEL identifier", () => {
    const found = mistakesOf((p) => (p.schema["page-url"] = { type: "string" }));
    expect(found.map((m) => m.path)).toEqual(["schema.page-url"]);
  });
});

describe("CEL expressions", () => {
  it("refuses a syntax error, naming the aggregate", () => {
    expect(aggregateMistakes({ carts: { count: 'event_type == "cart" &&' } })).toEqual([
      { path: "windows[0].aggregate.carts.count", message: expect.stringMatching(/^windows\[0\]\.aggregate\.carts\.count: CEL syntax error in /) },
    ]);
  });

  it("refuses an identifier that is not a field of the schema", () => {
    const [found, ...rest] = aggregateMistakes({ carts: { count: 'evnt_type == "cart"' } });
    expect(rest).toEqual([]);
    expect(found.path).toBe("windows[0].aggregate.carts.count");
    expect(found.message).toMatch(/CEL type error in .*evnt_type/);
  });

  it("refuses a type error such as comparing a string with a number", () => {
    expect(aggregateMistakes({ odd: { count: "event_type > 3" } })).toEqual([
      {
        path: "windows[0].aggregate.odd.count",
        message: 'windows[0].aggregate.odd.count: CEL type error in "event_type > 3": no such overload: string > int',
      },
    ]);
  });

  it("refuses a count condition that is not a boolean", () => {
    expect(aggregateMistakes({ priced: { count: "price" } })).toEqual([
      { path: "windows[0].aggregate.priced.count", message: 'windows[0].aggregate.priced.count: "price" is of type double, expected bool' },
    ]);
  });

  it("refuses a sum over a string field: not numeric", () => {
    expect(aggregateMistakes({ total: { sum: "event_type" } })).toEqual([
      { path: "windows[0].aggregate.total.sum", message: 'windows[0].aggregate.total.sum: "event_type" is of type string, expected double or int or uint' },
    ]);
  });

  it("accepts arithmetic mixing a number field with an integer literal", () => {
    expect(() => validate(pipelineText((p) => (p.windows[0].aggregate = { doubled: { sum: "price * 2" } })))).not.toThrow();
  });

  it.each([
    ["constructor", "constructor"],
    ["__proto__", "__proto__"],
    ['page.constructor == "x"', "constructor"],
    ['props["__proto__"] == 1', "__proto__"],
    ['props["constructor"] == 1', "constructor"],
    ["has(props.__proto__)", "__proto__"],
    ["page.__defineGetter__ == 1", "__defineGetter__"],
  ])("refuses %s, which reaches outside the event", (source, name) => {
    const found = aggregateMistakes({ x: { count: source } });
    expect(found).toHaveLength(1);
    expect(found[0].path).toBe("windows[0].aggregate.x.count");
    expect(found[0].message).toContain(name);
    expect(found[0].message).toMatch(/reaches outside the event|Reserved identifier/);
  });

  it("finds nothing outside the event through a key computed at run time", () => {
    const env = celEnvironment({ props: "map", page: "string" });
    const event = { props: { a: 1 }, page: "constructor" };
    for (const source of ["props[page]", 'props["con" + "structor"]', 'props["__pro" + "to__"]', 'props["toString"]']) {
      expect(compileExpression(env, source, "x").evaluate(event)).toBeUndefined();
    }
  });
});

describe("environment variables", () => {
  const withEventsDir = pipelineText((p) => (p.source.file.path = "${EVENTS_DIR}/events.jsonl"));

  it("refuses ${VAR} without a default when VAR is unset, naming the path", () => {
    expect(mistakes(withEventsDir, {})).toEqual([
      {
        path: "source.file.path",
        message: "source.file.path: environment variable EVENTS_DIR is not set and ${EVENTS_DIR} has no default",
      },
    ]);
  });

  it("names every unset variable", () => {
    const text = pipelineText((p) => {
      p.source.file.path = "${EVENTS_DIR}/events.jsonl";
      p.sinks[0].file.path = "${OUT_DIR}/results.jsonl";
    });
    expect(mistakes(text, {}).map((m) => m.path)).toEqual(["source.file.path", "sinks[0].file.path"]);
  });

  it("uses the value of ${VAR} when VAR is set", () => {
    expect(validate(withEventsDir, { EVENTS_DIR: "/data/clicks" }).source).toEqual({ file: { paths: ["/data/clicks/events.jsonl"], format: "jsonl" } });
  });

  it("uses the default of ${VAR:-default} when VAR is unset, and the value when it is set", () => {
    const text = pipelineText((p) => {
      p.source.file.path = "${EVENTS_DIR:-/srv/events}/events.jsonl";
      p.windows[0].size = "${WINDOW_SIZE:-15m}";
    });
    const unset = validate(text, {});
    expect(unset.source).toEqual({ file: { paths: ["/srv/events/events.jsonl"], format: "jsonl" } });
    expect(unset.windows[0].assigner).toEqual({ type: "tumbling", sizeMs: 900_000 });
    const set = validate(text, { EVENTS_DIR: "/data", WINDOW_SIZE: "2h" });
    expect(set.source).toEqual({ file: { paths: ["/data/events.jsonl"], format: "jsonl" } });
    expect(set.windows[0].assigner).toEqual({ type: "tumbling", sizeMs: 7_200_000 });
  });

  it("expands a default that holds a variable, as a shell does: ${X:-${Y:-./x}}", () => {
    const text = pipelineText((p) => (p.source.file.path = "${X:-${Y:-./x}}/events.jsonl"));
    expect(validate(text, {}).source).toEqual({ file: { paths: ["/pipelines/x/events.jsonl"], format: "jsonl" } });
    expect(validate(text, { Y: "/y" }).source).toEqual({ file: { paths: ["/y/events.jsonl"], format: "jsonl" } });
    expect(validate(text, { X: "/x", Y: "/y" }).source).toEqual({ file: { paths: ["/x/events.jsonl"], format: "jsonl" } });
  });

  it("refuses a default without its closing brace, naming the path", () => {
    const text = pipelineText((p) => (p.source.file.path = "${X:-./x/events.jsonl"));
    expect(mistakes(text, {})).toEqual([{ path: "source.file.path", message: 'source.file.path: "${X:-./x/events.jsonl" has no closing "}" for its ${X:-' }]);
  });

  it("keeps a ${ that starts no variable as it is", () => {
    const text = pipelineText((p) => (p.source.file.path = "./${1}/{x}/events.jsonl"));
    expect(validate(text, {}).source).toEqual({ file: { paths: ["/pipelines/${1}/{x}/events.jsonl"], format: "jsonl" } });
  });

  it("checks a substituted value like a written one", () => {
    const text = pipelineText((p) => (p.windows[0].size = "${WINDOW_SIZE}"));
    expect(mistakes(text, { WINDOW_SIZE: "fast" }).map((m) => m.message)).toEqual(['windows[0].size: expected a duration like "15m", got "fast"']);
  });

  it("keeps a variable's value a plain string: it cannot add YAML structure", () => {
    const spec = validate(withEventsDir, { EVENTS_DIR: "x\nformat: csv" });
    expect(spec.source).toEqual({ file: { paths: ["/pipelines/x\nformat: csv/events.jsonl"], format: "jsonl" } });
  });
});

describe("pipeline files on disk", () => {
  it("resolves relative paths against the pipeline file's folder, not the working directory", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "pipelines"));
    mkdirSync(join(dir, "data"));
    writeFileSync(join(dir, "data/events.jsonl"), "");
    const file = join(dir, "pipelines", "clicks.yaml");
    writeFileSync(file, pipelineText((p) => (p.source.file.path = "../data/events.jsonl")));
    const spec = loadPipeline(file, {});
    expect(spec.baseDir).toBe(join(dir, "pipelines"));
    expect(spec.source).toEqual({ file: { paths: [join(dir, "data/events.jsonl")], format: "jsonl" } });
    expect(spec.sinks).toEqual([{ sink: { file: { path: join(dir, "pipelines/out/results.jsonl") } } }]);
    expect(spec.state.dir).toBe(join(dir, "pipelines/state/clicks"));
    expect(spec.deadLetter).toEqual({ file: { path: join(dir, "pipelines/out/clicks.dead-letter.jsonl") } });
  });

  /** The mistakes loadPipeline finds in `file`. */
  function mistakesIn(file: string): Array<{ path: string; message: string }> {
    try {
      loadPipeline(file, {});
    } catch (error) {
      if (!(error instanceof PipelineInvalid)) throw error;
      return error.errors.map((e) => ({ path: e.path, message: e.message }));
    }
    throw new Error("the pipeline was accepted");
  }

  it("refuses a source file that does not exist, naming source.file.path and the file as resolved", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "clicks.yaml"), pipelineText());
    const events = join(dir, "events.jsonl");
    expect(mistakesIn(join(dir, "clicks.yaml"))).toEqual([{ path: "source.file.path", message: `source.file.path: ${JSON.stringify(events)} does not exist` }]);
    writeFileSync(events, "");
    expect(loadPipeline(join(dir, "clicks.yaml"), {}).source).toEqual({ file: { paths: [events], format: "jsonl" } });
  });

  it("refuses source files that are no regular files (a directory, a named pipe), each at its path", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "events.jsonl"), "");
    mkdirSync(join(dir, "folder"));
    const fifo = spawnSync("mkfifo", [join(dir, "pipe")]);
    expect(fifo.status, "mkfifo makes the named pipe").toBe(0);
    writeFileSync(join(dir, "clicks.yaml"), pipelineText((p) => (p.source.file.path = ["./events.jsonl", "./folder", "./pipe", "./missing/events.jsonl"])));
    const reason = "not a regular file: flusso reads a source file again from a recorded position after a restart";
    expect(mistakesIn(join(dir, "clicks.yaml"))).toEqual([
      { path: "source.file.path[1]", message: `source.file.path[1]: ${JSON.stringify(join(dir, "folder"))} is a directory, ${reason}` },
      { path: "source.file.path[2]", message: `source.file.path[2]: ${JSON.stringify(join(dir, "pipe"))} is a named pipe, ${reason}` },
      { path: "source.file.path[3]", message: `source.file.path[3]: ${JSON.stringify(join(dir, "missing/events.jsonl"))} does not exist` },
    ]);
  });

  it("makes the CLI exit with code 2 on a missing source file, one line naming the path, before it creates a state dir or an output", () => {
    const dir = tempDir();
    const file = join(dir, "clicks.yaml");
    writeFileSync(file, pipelineText());
    const run = runCli(["run", file]);
    expect(run.status).toBe(2);
    expect(run.stderr).toBe(`${file}: invalid pipeline\n  source.file.path: ${JSON.stringify(join(dir, "events.jsonl"))} does not exist\n`);
    expect(readdirSync(dir)).toEqual(["clicks.yaml"]);
  });

  it("says that a missing pipeline file cannot be read", () => {
    const file = join(tempDir(), "missing.yaml");
    expect(() => loadPipeline(file, {})).toThrow(/cannot read the pipeline file/);
  });

  it("makes the CLI exit with code 2, printing the file and each bad path on stderr", () => {
    const file = join(tempDir(), "bad.yaml");
    writeFileSync(
      file,
      pipelineText((p) => {
        p.windows[0].size = "fast";
        p.output = [];
      }),
    );
    const run = runCli(["run", file]);
    expect(run.status).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain(`${file}: invalid pipeline`);
    expect(run.stderr).toContain('windows[0].size: expected a duration like "15m", got "fast"');
    expect(run.stderr).toContain("output: unknown field");
  });
});

describe("names that would reach outside the data", () => {
  it("refuses a YAML key named __proto__ (it would replace the mapping's prototype), at its path", () => {
    const text = pipelineText(() => {}) + "\nfeatures:\n  __proto__: '1.0'\n  ok: '2.0'\n";
    expect(mistakes(text)).toContainEqual({ path: "features.__proto__", message: 'features.__proto__: a key named "__proto__" is not allowed' });
  });

  it("refuses a stage value named constructor, at its path", () => {
    const found = mistakes(pipelineText(() => {}) + "\nfeatures:\n  constructor: '1.0'\n");
    expect(found.map((m) => m.path)).toEqual(["features.constructor"]);
  });
});

describe("NATS servers and subjects", () => {
  const SOURCE_SERVER = "nats://10.0.0.7:4222";
  const natsSource = (p: Raw, subjects = ["events.>"]) => (p.source = { nats: { servers: SOURCE_SERVER, stream: "EVENTS", subjects } });

  /** Runs `check` with $NATS_URL set to `url` (unset for undefined), as it was afterwards. */
  function withNatsUrl<T>(url: string | undefined, check: () => T): T {
    const before = process.env.NATS_URL;
    if (url === undefined) delete process.env.NATS_URL;
    else process.env.NATS_URL = url;
    try {
      return check();
    } finally {
      if (before === undefined) delete process.env.NATS_URL;
      else process.env.NATS_URL = before;
    }
  }

  it("sends a NATS sink, late output or dead letter without servers to the source's servers", () => {
    const spec = withNatsUrl("nats://elsewhere:4222", () =>
      validate(
        pipelineText((p) => {
          natsSource(p);
          p.sinks = [{ nats: { stream: "OUT", subject: "out.hourly" } }];
          p.late = { nats: { stream: "LATE", subject: "late.events" } };
          p.deadLetter = { nats: { stream: "DEAD", subject: "dead.events" } };
        }),
      ),
    );
    for (const sink of [spec.sinks[0].sink, spec.late!, spec.deadLetter]) expect(sink).toMatchObject({ nats: { servers: [SOURCE_SERVER] } });
  });

  it("sends a NATS sink without servers to $NATS_URL when the source is not NATS, else to nats://127.0.0.1:4222", () => {
    const text = pipelineText((p) => (p.deadLetter = { nats: { stream: "DEAD", subject: "dead.events" } }));
    expect(withNatsUrl("nats://a:4222, nats://b:4222", () => validate(text)).deadLetter).toMatchObject({ nats: { servers: ["nats://a:4222", "nats://b:4222"] } });
    expect(withNatsUrl(undefined, () => validate(text)).deadLetter).toMatchObject({ nats: { servers: ["nats://127.0.0.1:4222"] } });
  });

  it("reads a NATS source without servers from $NATS_URL, and refuses a $NATS_URL that is no server URL at the path that uses it", () => {
    const text = pipelineText((p) => (p.source = { nats: { stream: "EVENTS", subjects: ["events.>"] } }));
    expect(withNatsUrl("nats://a:4222", () => validate(text)).source).toMatchObject({ nats: { servers: ["nats://a:4222"] } });
    expect(withNatsUrl("http://a", () => mistakes(text))).toEqual([
      {
        path: "source.nats.servers",
        message: 'source.nats.servers: is not given, so $NATS_URL is used, and it is no server URL like "nats://127.0.0.1:4222": "http://a"',
      },
    ]);
  });

  it("refuses a dead-letter subject among the subjects the source reads (events.dead under events.>), naming its path", () => {
    const found = mistakesOf((p) => {
      natsSource(p);
      p.deadLetter = { nats: { stream: "DEAD", subject: "events.dead" } };
    });
    expect(found).toEqual([
      {
        path: "deadLetter.nats.subject",
        message:
          'deadLetter.nats.subject: "events.dead" is among the subjects the source reads ("events.>", source.nats.subjects[0]): the job would read its own outputs, and JetStream refuses the stream (subjects overlap); write to a subject outside them',
      },
    ]);
  });

  it("refuses a sink subject a source's * matches, even in the source's own stream", () => {
    const found = mistakesOf((p) => {
      natsSource(p, ["events.*"]);
      p.sinks = [{ nats: { stream: "EVENTS", subject: "events.hourly" } }];
    });
    expect(found.map((m) => m.path)).toEqual(["sinks[0].nats.subject"]);
  });

  it("accepts a sink subject beside the source's: events.> does not hold events, nor a subject of another token count under *", () => {
    expect(() =>
      validate(
        pipelineText((p) => {
          natsSource(p, ["events.>", "clicks.*"]);
          p.sinks = [{ nats: { stream: "OUT", subject: "events" } }, { nats: { stream: "OUT", subject: "clicks.a.b" } }];
        }),
      ),
    ).not.toThrow();
  });

  it("does not compare subjects on servers that share nothing: another NATS system has other streams", () => {
    expect(() =>
      validate(
        pipelineText((p) => {
          natsSource(p);
          p.deadLetter = { nats: { servers: "nats://10.0.0.8:4222", stream: "DEAD", subject: "events.dead" } };
        }),
      ),
    ).not.toThrow();
  });

  it("takes localhost and 127.0.0.1, with or without the default port and scheme, for one server", () => {
    const found = mistakesOf((p) => {
      p.source = { nats: { servers: "nats://localhost:4222", stream: "EVENTS", subjects: ["events.>"] } };
      p.deadLetter = { nats: { servers: "127.0.0.1:4222", stream: "DEAD", subject: "events.dead" } };
    });
    expect(found.map((m) => m.path)).toEqual(["deadLetter.nats.subject"]);
  });

  it("refuses one subject in two streams, naming the second sink", () => {
    const found = mistakesOf((p) => {
      p.sinks = [{ nats: { stream: "OUT", subject: "out.results" } }];
      p.late = { nats: { stream: "LATE", subject: "out.results" } };
    });
    expect(found).toEqual([
      {
        path: "late.nats.subject",
        message:
          'late.nats.subject: "out.results" is already the subject of stream OUT (sinks[0].nats.subject): JetStream refuses a subject in two streams; write both to one stream, or use another subject',
      },
    ]);
  });

  it("accepts one subject written by two sinks of the same stream", () => {
    expect(() =>
      validate(
        pipelineText((p) => {
          p.sinks = [{ nats: { stream: "OUT", subject: "out.results" } }];
          p.late = { nats: { stream: "OUT", subject: "out.results" } };
        }),
      ),
    ).not.toThrow();
  });

  it("refuses source subjects that overlap one another, and subjects within JetStream's API", () => {
    const found = mistakesOf((p) => {
      natsSource(p, ["events.>", "events.3", "$JS.API.x"]);
      p.deadLetter = { nats: { stream: "DEAD", subject: "$JS.API.STREAM.LIST" } };
    });
    expect(found).toEqual([
      {
        path: "source.nats.subjects[1]",
        message: 'source.nats.subjects[1]: "events.3" overlaps "events.>" (source.nats.subjects[0]): JetStream refuses a stream whose subjects overlap',
      },
      { path: "source.nats.subjects[2]", message: 'source.nats.subjects[2]: "$JS.API.x" is within JetStream\'s API subjects ($JS.API.>), which no stream may take' },
      {
        path: "deadLetter.nats.subject",
        message: 'deadLetter.nats.subject: "$JS.API.STREAM.LIST" is within JetStream\'s API subjects ($JS.API.>), which no stream may take',
      },
    ]);
  });

  it("makes the CLI exit with code 2 on a dead-letter subject the source reads, naming its path, before connecting to anything", () => {
    const dir = tempDir();
    const file = join(dir, "overlap.yaml");
    writeFileSync(
      file,
      pipelineText((p) => {
        p.source = { nats: { servers: "nats://127.0.0.1:1", stream: "EVENTS", subjects: ["events.>"] } };
        p.deadLetter = { nats: { stream: "DEAD", subject: "events.dead" } };
      }),
    );
    const run = runCli(["run", file]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(`${file}: invalid pipeline`);
    expect(run.stderr).toContain('deadLetter.nats.subject: "events.dead" is among the subjects the source reads');
    expect(run.stderr).not.toMatch(/cannot be reached|at .*\.ts:\d+/);
  });
});

describe("outputs on one file", () => {
  it("refuses two outputs, or an output and the source, on one file, naming both", () => {
    const errors = mistakes(`name: shared
source: { file: { path: events.jsonl, format: jsonl } }
schema: { user_id: { type: string, required: true }, ts: { type: timestamp, required: true } }
key: user_id
time: ts
windows: [{ name: m, type: tumbling, size: 1m, aggregate: { events: count } }]
sinks:
  - file: { path: out/results.jsonl }
  - file: { path: out/results.jsonl }
late: { file: { path: events.jsonl } }
deadLetter: { file: { path: out/dead.jsonl } }
`);
    expect(errors).toContainEqual({ path: "sinks[1].file.path", message: expect.stringMatching(/\/out\/results\.jsonl" is also written or read at sinks\[0\]\.file\.path: each output needs a file of its own$/) });
    expect(errors).toContainEqual({ path: "late.file.path", message: expect.stringMatching(/\/events\.jsonl" is also written or read at source\.file\.path/) });
  });
});

describe("state.memoryBudget", () => {
  it("reads a size in KB, MB or GB as bytes (binary multiples), and none by default", () => {
    expect(validate(pipelineText((p) => (p.state = { memoryBudget: "1GB" }))).state.memoryBudgetBytes).toBe(1024 ** 3);
    expect(validate(pipelineText((p) => (p.state = { memoryBudget: "1.5 MB" }))).state.memoryBudgetBytes).toBe(1.5 * 1024 ** 2);
    expect(validate(pipelineText((p) => (p.state = { memoryBudget: "2048KB" }))).state.memoryBudgetBytes).toBe(2 * 1024 ** 2);
    expect(validate(pipelineText()).state.memoryBudgetBytes).toBeUndefined();
  });

  it.each([
    ["lots", 'expected a size like 512MB or 1GB, got "lots"'],
    [1073741824, "expected a size like 512MB or 1GB, got 1073741824"],
    ["1TB", 'expected a size like 512MB or 1GB, got "1TB"'],
    ["-1GB", 'expected a size like 512MB or 1GB, got "-1GB"'],
    ["512KB", 'expected at least 1MB, got "512KB"'],
  ])("refuses %j, naming the path", (budget, detail) => {
    expect(mistakesOf((p) => (p.state = { memoryBudget: budget }))).toEqual([{ path: "state.memoryBudget", message: `state.memoryBudget: ${detail}` }]);
  });
});
