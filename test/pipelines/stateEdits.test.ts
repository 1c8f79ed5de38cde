// Editing a pipeline between runs on one state dir: what only shapes outputs keeps the state (a
// message edited mid-run gives the outputs of a run that had it from the start, cooldowns, caps and
// lookbacks carried over), stages and windows added start empty and removed ones are dropped, sinks
// keep their own positions wherever they move, and a change to what the state means is refused
// naming the stage and the change, with --reset-stage as the way forward.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StateMismatch } from "../../engine/errors.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { ResetStageUnknown } from "../../pipelines/errors.ts";
import { inspectState } from "../../pipelines/inspect.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { PROJECT_ROOT, removeTempDirs, runCli, tempDir } from "./pipelineFiles.ts";
import { shippedVariant, variantOutputs, type Shipped, type VariantOptions } from "./shipped.ts";

afterAll(removeTempDirs);

type Obj = Record<string, any>;
const SIZE = { users: 800, eventCount: 12_000 };

/** Runs the pipeline file to its end, or (`stopAtRead`) stops at the first cut after reading that many items. */
async function run(file: string, { stopAtRead, resetStages }: { stopAtRead?: number; resetStages?: string[] } = {}) {
  const stop = new AbortController();
  return runPipeline(loadPipeline(file), {
    batchSize: 500,
    progressIntervalMs: 0,
    signal: stop.signal,
    onProgress: (counters) => stopAtRead !== undefined && counters.read >= stopAtRead && stop.abort(),
    resetStages,
  });
}

/**
 * Runs `name` with `before` applied on the first half of its input and `after` on the rest, and
 * straight through with `after`; gives both runs' output files.
 */
async function editedMidRun(name: Shipped, before: (p: Obj) => void, after: (p: Obj) => void, options: VariantOptions = SIZE) {
  const referenceDir = tempDir(`flusso-edits-${name}-ref-`);
  expect((await run(shippedVariant(name, referenceDir, { ...options, edit: after }))).isComplete).toBe(true);
  const dir = tempDir(`flusso-edits-${name}-`);
  const first = await run(shippedVariant(name, dir, { ...options, edit: before }), { stopAtRead: 6_000 });
  expect(first.isComplete).toBe(false);
  const second = await run(shippedVariant(name, dir, { ...options, edit: after }));
  expect(second.restoredFromCheckpoint).toBeDefined();
  expect(second.thisRun.read).toBe(12_000 - first.thisRun.read);
  return { dir, edited: variantOutputs(dir, name), reference: variantOutputs(referenceDir, name) };
}

const LEAD_ALERT = "Lead oltre 80 punti (vedi drivers): proponi una demo ora, ricontatta entro 2 ore";
const LEAD_TRIGGER = "Lead caldo: proponi una demo ora, ricontatta entro 2 ore";

/** lead-scoring with a cooldown and a cap on its rule (state that must carry over), and its messages as given. */
const leadScoring = (alert: string, trigger: string) => (p: Obj) => {
  p.scores.lead_score.alert.message = alert;
  Object.assign(p.triggers.rules.sales_alert, { message: trigger, cooldown: "3d", cap: { max: 1, per: "2d" } });
};

describe("edits that change only outputs keep the state", () => {
  it("gives, after a message edited mid-run, the outputs of a run that had it from the start (scores, alerts, cooldowns, caps)", async () => {
    const { edited, reference } = await editedMidRun("lead-scoring", leadScoring(LEAD_ALERT, LEAD_TRIGGER), leadScoring("Alert: call now", "Call now"));
    expect(reference["alerts.jsonl"].split("\n").length).toBeGreaterThan(50);
    // The first half was written with the old texts: the past does not change.
    const pastTexts = (text: string) => text.replaceAll(LEAD_ALERT, "Alert: call now").replaceAll(LEAD_TRIGGER, "Call now");
    expect(edited["alerts.jsonl"]).not.toBe(reference["alerts.jsonl"]);
    expect(pastTexts(edited["alerts.jsonl"])).toBe(reference["alerts.jsonl"]);
    expect(pastTexts(edited["triggers.jsonl"])).toBe(reference["triggers.jsonl"]);
    expect(reference["triggers.jsonl"]).toContain("Call now");
  }, 60_000);

  it("keeps 365-day lookbacks, cooldowns and caps when messages, templates and channels change mid-run", async () => {
    // A template naming the message's field: messaggio before the edit, text after it.
    const texts = (message: string, field: string) => (p: Obj) => {
      p.triggers.rules.win_back.message = message;
      p.triggers.template = { segmento: "trigger.segment", trigger: "trigger.name", [field]: "trigger.message", canali: "trigger.channels" };
    };
    // The win-back fires for users away 30 days, past the end of this input: it drains there.
    const { edited, reference } = await editedMidRun("segments", texts("Ci manchi!", "messaggio"), texts("We miss you", "text"), { ...SIZE, atEnd: "drain" });
    expect(edited["segments.jsonl"]).toBe(reference["segments.jsonl"]);
    expect(edited["quantiles.jsonl"]).toBe(reference["quantiles.jsonl"]);
    // Lines of the first half have the old field and text: the past does not change.
    const asEdited = (line: string) => {
      const { messaggio, ...rest } = JSON.parse(line) as Obj;
      return messaggio === undefined ? rest : { ...rest, text: messaggio === "Ci manchi!" ? "We miss you" : messaggio };
    };
    const lines = (text: string) => text.trim().split("\n");
    expect(lines(edited["triggers.jsonl"]).map(asEdited)).toEqual(lines(reference["triggers.jsonl"]).map((line) => JSON.parse(line)));
    expect(edited["triggers.jsonl"]).toContain('"messaggio":');
    expect(edited["triggers.jsonl"]).toContain('"text":"We miss you"');
  }, 60_000);

  it("keeps every file's own position when the sinks are reordered mid-run", async () => {
    const swapped = (p: Obj) => p.sinks.reverse();
    const { edited, reference } = await editedMidRun("lead-scoring", () => {}, swapped);
    expect(edited).toEqual(reference);
  }, 60_000);
});

describe("stages and windows added or removed", () => {
  // A label per user, kept in the user's record; no sink takes its outputs.
  const kbis = (p: Obj) => void (p.kbis = { reader: { rules: [{ label: "long", when: "session_duration_sec > 60.0" }], default: "short" } });

  it("starts a stage added mid-run empty, the others carrying on", async () => {
    const { dir, edited, reference } = await editedMidRun("lead-scoring", () => {}, kbis);
    expect(edited).toEqual(reference);
    const report = await inspectState(loadPipeline(join(dir, "lead-scoring.yaml")));
    expect(report.stages.kbis.users).toBeGreaterThan(0);
    // Only users stepped after the edit have a label; the others' records were left as they were.
    expect(report.stages.kbis.users).toBeLessThan(report.stages.dedup.users);
  }, 60_000);

  it("drops a removed stage's values from every user record, and its sink's position", async () => {
    const withoutTriggers = (p: Obj) => {
      delete p.triggers;
      p.sinks = p.sinks.filter((s: Obj) => !s.outputs.includes("trigger"));
    };
    const { dir, edited, reference } = await editedMidRun("lead-scoring", () => {}, withoutTriggers);
    expect(edited["alerts.jsonl"]).toBe(reference["alerts.jsonl"]);
    const spec = loadPipeline(join(dir, "lead-scoring.yaml"));
    const report = await inspectState(spec);
    expect(Object.keys(report.stages)).toEqual(["dedup", "scores"]);
    expect(Object.keys(report.checkpoint!.sinkPositions).sort()).toEqual(["file:out/alerts.jsonl", "file:out/dead-letter.jsonl"]);
    const alerted = JSON.parse(edited["alerts.jsonl"].split("\n")[0]).user_id as string;
    const values = (await inspectState(spec, { key: alerted })).key!;
    expect(values.stages.scores).toBeDefined();
    expect(values.stages.triggers).toBeUndefined();
  }, 60_000);
});

describe("changes to what the state means are refused", () => {
  const aggregatesResolution = (resolution?: string) => (p: Obj) => {
    if (resolution) p.aggregates.purchases_30d = { count: 'event_type == "purchase"', over: "30d", resolution };
  };

  it("refuses a lookback's new resolution with exit 2, naming the stage and the change, and --reset-stage rebuilds that stage", async () => {
    const dir = tempDir("flusso-edits-resolution-");
    const file = shippedVariant("segments", dir, { ...SIZE, edit: aggregatesResolution() });
    await run(file, { stopAtRead: 6_000 });
    const before = await inspectState(loadPipeline(file));
    shippedVariant("segments", dir, { ...SIZE, edit: aggregatesResolution("1h") });
    const refused = runCli(["run", file, "--quiet"]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain("stage aggregates: purchases_30d: resolution 1d -> 1h");
    expect(refused.stderr).toContain("run with --reset-stage aggregates to rebuild that stage from empty and keep the rest, or with --reset to start over");
    expect(refused.stderr).not.toMatch(/\n\s+at /);
    const unknown = runCli(["run", file, "--quiet", "--reset-stage", "aggregate"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr.split("\n")[0]).toBe(
      "flusso run: --reset-stage aggregate: names no stage or window of this pipeline; its stages and windows are dedup, aggregates, scores, quantiles, sequences, segments, triggers, experiments",
    );
    // Rebuilt from empty: only the users of the next 500 events have lookbacks; the scores go on.
    const rebuilt = await run(file, { stopAtRead: 6_500, resetStages: ["aggregates"] });
    expect(rebuilt.restoredFromCheckpoint).toBeDefined();
    const after = await inspectState(loadPipeline(file));
    expect(before.stages.aggregates.users).toBeGreaterThan(300);
    expect(after.stages.aggregates.users).toBeLessThan(before.stages.aggregates.users / 2);
    expect(after.stages.scores.users).toBeGreaterThanOrEqual(before.stages.scores.users);
    const rest = runCli(["run", file, "--quiet"]);
    expect(rest.status, rest.stderr).toBe(0);
  }, 60_000);
});

/** A windows pipeline over hand-written events, to edit one setting at a time. */
const WINDOWS = `name: edits
source:
  file: { path: ./events.jsonl, format: jsonl }
${eventSchemaYaml({ time: "ts" })}state: { dir: ./state, checkpointInterval: 1h }
windows:
  - name: quarter
    type: tumbling
    size: 15m
    aggregate:
      events: count
  - name: visits
    type: session
    gap: 10m
    aggregate:
      pages: count
sinks:
  - file: { path: ./out/results.jsonl }
`;

describe("windows edited between runs", () => {
  /** A project of 400 events of 5 users over 4 hours, run on its first 200 with `before`, then given `after`. */
  async function halfRun(after: (text: string) => string, before = WINDOWS) {
    const dir = tempDir("flusso-edits-windows-");
    const startMs = Date.UTC(2024, 4, 20);
    const events = Array.from({ length: 400 }, (_, i) => ({ user_id: `u${i % 5}`, ts: startMs + i * 36_000, event_type: i % 7 === 0 ? "add_to_cart" : "view" }));
    writeFileSync(join(dir, "events.jsonl"), events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    writeFileSync(join(dir, "other.jsonl"), "");
    const file = join(dir, "pipeline.yaml");
    writeFileSync(file, before);
    const spec = loadPipeline(file);
    await runPipeline(spec, { batchSize: 200, signal: AbortSignal.abort() });
    writeFileSync(file, after(before));
    return { dir, file, resume: (resetStages?: string[]) => runPipeline(loadPipeline(file), { batchSize: 200, resetStages }) };
  }

  it("keeps the state when a window's allowed lateness or aggregate conditions change", async () => {
    const { resume } = await halfRun((t) => t.replace("size: 15m", "size: 15m\n    allowedLateness: 1m").replace("events: count", "events: { count: 'event_type == \"view\"' }"));
    const resumed = await resume();
    expect(resumed.restoredFromCheckpoint).toBeDefined();
    expect(resumed.thisRun.read).toBe(200);
  });

  it("starts an aggregate added to a window empty in the windows already open, and drops one removed", async () => {
    const { dir, resume } = await halfRun((t) => t.replace("      events: count\n", "      carts: { count: 'event_type == \"add_to_cart\"' }\n"));
    await resume();
    const lines = readFileSync(join(dir, "out", "results.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const after = lines.filter((l) => l.window === "quarter" && "carts" in l);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((l) => !("events" in l))).toBe(true);
    // The open windows of the cut counted carts from the restart on: at most what the whole window had.
    expect(after.reduce((n, l) => n + l.carts, 0)).toBeLessThanOrEqual(400 / 7 + 1);
  });

  it("drops a removed window's state and starts an added one empty", async () => {
    const renamed = (t: string) => t.replace("name: visits", "name: sessions");
    const { file, resume } = await halfRun(renamed);
    const before = await inspectState(loadPipeline(file));
    expect(Object.keys(before.windows)).toEqual(["quarter", "visits"]);
    await resume();
    const report = await inspectState(loadPipeline(file));
    expect(Object.keys(report.windows)).toEqual(["quarter", "sessions"]);
    expect(Object.keys(report.otherStates)).toEqual([]);
  });

  it.each([
    ["a window's size", (t: string) => t.replace("size: 15m", "size: 30m"), "window quarter: size 15m -> 30m", "--reset-stage quarter"],
    ["a session's gap", (t: string) => t.replace("gap: 10m", "gap: 20m"), "window visits: gap 10m -> 20m", "--reset-stage visits"],
    ["an aggregate's kind", (t: string) => t.replace("pages: count", "pages: { distinct: event_type }"), 'window visits: pages: kind "count" -> "distinct"', "--reset-stage visits"],
    ["the key", (t: string) => t.replace("key: user_id", "key: event_type"), "key: user_id -> event_type", "--reset "],
    ["the time field", (t: string) => t.replace("time: ts", "time: ts2").replace("  ts: {", "  ts2: { type: timestamp, required: true }\n  ts: {"), "time: ts -> ts2", "--reset "],
    ["the source file", (t: string) => t.replace("./events.jsonl", "./other.jsonl"), 'source: {"file":{"format":"jsonl","paths":["events.jsonl"]}} -> {"file":{"format":"jsonl","paths":["other.jsonl"]}}', "--reset "],
    ["the partitions", (t: string) => t.replace("path: ./events.jsonl", "path: [./events.jsonl, ./other.jsonl]"), "source", "--reset "],
  ])("refuses %s, naming the change and the way out", async (_what, edit, change, wayOut) => {
    const { resume } = await halfRun(edit);
    const refused = await resume().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(StateMismatch);
    expect((refused as Error).message).toContain(change);
    expect((refused as Error).message).toContain(wayOut);
  });

  it("rebuilds a refused window from empty with --reset-stage, keeping the other", async () => {
    const { dir, resume } = await halfRun((t) => t.replace("size: 15m", "size: 30m"));
    await expect(resume()).rejects.toThrow(StateMismatch);
    await expect(resume(["quartr"])).rejects.toThrow(ResetStageUnknown);
    const written = readFileSync(join(dir, "out", "results.jsonl"), "utf8").length;
    const resumed = await resume(["quarter"]);
    expect(resumed.thisRun.read).toBe(200);
    const lines = readFileSync(join(dir, "out", "results.jsonl"), "utf8").slice(written).trim().split("\n").map((l) => JSON.parse(l));
    const sum = (window: string, field: string) => lines.filter((l) => l.window === window).reduce((n, l) => n + l[field], 0);
    // The half-hours count only the events after the restart; each user's one session counts them all.
    expect(sum("quarter", "events")).toBe(200);
    expect(sum("visits", "pages")).toBe(400);
  });
});

describe("flusso state", () => {
  it("prints the checkpoint, positions, shape and keys per stage, and one key's values as JSON", async () => {
    const dir = tempDir("flusso-edits-state-");
    const file = shippedVariant("lead-scoring", dir, { ...SIZE, eventCount: 3_000 });
    expect(runCli(["state", file]).stdout).toContain("no checkpoint");
    expect(runCli(["run", file, "--quiet"]).status).toBe(0);
    const alerted = JSON.parse(readFileSync(join(dir, "out", "alerts.jsonl"), "utf8").split("\n")[0]).user_id as string;
    const printed = runCli(["state", file, "--key", alerted]);
    expect(printed.status, printed.stderr).toBe(0);
    const out = printed.stdout;
    expect(out).toMatch(/^checkpoint \d+, taken 20/m);
    expect(out).toContain('source position: {"emitted":3000');
    expect(out).toMatch(/^ {2}file:out\/alerts\.jsonl: \{"committedBytes":\d+,"partNo":\d+\}$/m);
    expect(out).toMatch(/^ {2}scores: \d+ users; shape \{"parts":\[\["lead_score"/m);
    const values = JSON.parse(out.slice(out.indexOf(`key ${alerted}:\n`) + `key ${alerted}:\n`.length));
    expect(Object.keys(values.stages)).toEqual(["dedup", "scores", "triggers"]);
    expect(values.stages.scores.scores[0].alertsFired).toBe(1);
  }, 60_000);

  it("reads the last checkpoint beside a running job, which holds the lock", async () => {
    const dir = tempDir("flusso-edits-beside-");
    const file = shippedVariant("retention", dir, { users: 5000, eventCount: 150_000, checkpointInterval: "100ms" });
    const job = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", file, "--quiet"], { stdio: "ignore" });
    const ended = new Promise<number | null>((done) => job.on("exit", done));
    let printed = "";
    let isRunning = true;
    void ended.then(() => (isRunning = false));
    for (let i = 0; i < 100 && !/^checkpoint \d+/m.test(printed); i++) {
      await new Promise((wait) => setTimeout(wait, 100));
      printed = runCli(["state", file]).stdout;
    }
    const wasRunning = isRunning;
    job.kill("SIGTERM");
    await ended;
    expect(printed).toMatch(/^checkpoint \d+, taken/m);
    expect(printed).toMatch(/^ {2}segments: \d+ users/m);
    expect(wasRunning).toBe(true);
  }, 60_000);
});
