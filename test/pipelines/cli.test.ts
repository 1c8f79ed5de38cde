// The `flusso` command line as a user meets it: a mistyped command or option is named in one line of
// flusso's own, followed by the usage, with exit code 2, before anything runs.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../../pipelines/cliArgs.ts";
import { PROJECT_ROOT, runCli } from "./pipelineFiles.ts";

const VERSION = (JSON.parse(readFileSync(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string }).version;

describe("flusso's command line", () => {
  it("prints the package version for --version", () => {
    const run = runCli(["--version"]);
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(`${VERSION}\n`);
  });

  it("says that an unknown command is unknown, lists the commands and exits 2", () => {
    const run = runCli(["runn", "config/default.yaml"]);
    expect(run.status).toBe(2);
    const [first, second] = run.stderr.split("\n");
    expect(first).toBe('flusso: unknown command "runn" (did you mean run?); the commands are run, publish, state and validate');
    expect(second).toMatch(/^usage: flusso run /);
  });

  it("refuses a --pace that is no positive number, and a FLUSSO_LOG_LEVEL it does not know, before anything runs", () => {
    const pace = runCli(["publish", "generator", "--pace", "0", "--servers", "nats://127.0.0.1:1"]);
    expect(pace.status).toBe(2);
    expect(pace.stderr.split("\n")[0]).toBe('flusso publish: --pace: expected a number above 0, got "0"');
    const level = spawnSync(process.execPath, ["bin/flusso.js", "validate", "config/default.yaml"], { cwd: PROJECT_ROOT, encoding: "utf8", timeout: 20_000, env: { ...process.env, FLUSSO_LOG_LEVEL: "verbose" } });
    expect(level.status).toBe(2);
    expect(level.stderr).toBe('flusso validate: FLUSSO_LOG_LEVEL: expected info or debug, got "verbose"\n');
  });

  it("tells every durable checkpoint as a debug line with FLUSSO_LOG_LEVEL=debug, and none without", () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-cli-debug-"));
    try {
      const pipeline = join(dir, "p.yaml");
      writeFileSync(
        pipeline,
        `name: debug-lines
source: { generator: { events: 3000, seed: 7 } }
schema: { user_id: { type: string, required: true }, timestamp: { type: timestamp, required: true } }
key: user_id
time: timestamp
windows: [{ name: hourly, type: tumbling, size: 1h, aggregate: { events: count } }]
sinks: [{ file: { path: ./out.jsonl } }]
state: { dir: ./state }
`,
      );
      const run = (env: Record<string, string>) =>
        spawnSync(process.execPath, ["bin/flusso.js", "run", pipeline, "--reset", "--log", "json"], { cwd: PROJECT_ROOT, encoding: "utf8", timeout: 60_000, env: { ...process.env, ...env } });
      const lines = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
      const plain = run({ FLUSSO_LOG_LEVEL: "" });
      expect(plain.status).toBe(0);
      expect(lines(plain.stderr).filter((l) => l.event === "checkpoint")).toEqual([]);
      const debug = run({ FLUSSO_LOG_LEVEL: "debug" });
      expect(debug.status).toBe(0);
      const checkpoints = lines(debug.stderr).filter((l) => l.event === "checkpoint");
      // At least the last one, at the end of the input; each with when it began and how long it took.
      expect(checkpoints.length).toBeGreaterThan(0);
      for (const c of checkpoints) {
        expect(c).toMatchObject({ level: "debug", checkpointId: expect.any(Number), startedAtMs: expect.any(Number), totalMs: expect.any(Number) });
        expect(c.totalMs as number).toBeGreaterThanOrEqual((c.flushMs as number) + (c.snapshotMs as number));
      }
      expect(checkpoints.map((c) => c.checkpointId)).toEqual([...checkpoints.keys()].map((i) => i + 1));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses an option of another command, in its own words, before reading the pipeline", () => {
    const run = runCli(["run", "config/default.yaml", "--rate", "5"]);
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe("flusso run: --rate is an option of flusso publish, not of run");
    expect(run.stderr).not.toMatch(/ERR_PARSE_ARGS|TypeError/);
  });

  it("names a mistyped option with its likely meaning and exits 2", () => {
    const run = runCli(["run", "config/default.yaml", "--rest"]);
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")[0]).toBe("flusso run: unknown option --rest (did you mean --reset?)");
    expect(run.stderr).toContain("usage: flusso run");
  });
});

describe("parseCommandLine", () => {
  it("reads a run with its flags", () => {
    expect(parseCommandLine(["run", "p.yaml", "--reset"])).toEqual({ command: "run", file: "p.yaml", reset: true, quiet: false });
  });

  it("reads --reset-stage as often as it is given, in order", () => {
    expect(parseCommandLine(["run", "p.yaml", "--reset-stage", "scores", "--reset-stage=window:sessions"])).toEqual({
      command: "run",
      file: "p.yaml",
      reset: false,
      quiet: false,
      resetStages: ["scores", "window:sessions"],
    });
  });

  it("reads a state command with its key", () => {
    expect(parseCommandLine(["state", "p.yaml", "--key", "u1"])).toEqual({ command: "state", file: "p.yaml", key: "u1" });
    expect(parseCommandLine(["state", "p.yaml"])).toEqual({ command: "state", file: "p.yaml" });
  });

  it("reads publish options as --name value and --name=value", () => {
    expect(parseCommandLine(["publish", "generator", "--rate", "500", "--stream=EV", "--quiet"])).toEqual({
      command: "publish",
      input: "generator",
      values: { rate: "500", stream: "EV" },
      quiet: true,
    });
  });

  it.each([
    [["publish", "generator", "--reset"], "flusso publish: --reset is an option of flusso run, not of publish"],
    [["publish", "generator", "--rate"], "flusso publish: --rate needs a value"],
    [["publish", "generator", "--rate", "--quiet"], "flusso publish: --rate needs a value"],
    [["run", "p.yaml", "--reset=yes"], "flusso run: --reset takes no value"],
    [["run"], "flusso run: a pipeline file is missing"],
    [["run", "a.yaml", "b.yaml"], 'flusso run: one pipeline file expected, got also "b.yaml"'],
    [["publish", "generator", "--stremm", "X"], "flusso publish: unknown option --stremm (did you mean --stream?)"],
    [["run", "p.yaml", "--frobnicate"], "flusso run: unknown option --frobnicate"],
    [["run", "p.yaml", "-r"], "flusso run: unknown option -r"],
    [[], "flusso: which command? run, publish, state or validate"],
    [["pubish", "x.csv"], 'flusso: unknown command "pubish" (did you mean publish?); the commands are run, publish, state and validate'],
    [["run", "p.yaml", "--reset-stage"], "flusso run: --reset-stage needs a value"],
    [["state", "p.yaml", "--reset-stage", "scores"], "flusso state: --reset-stage is an option of flusso run, not of state"],
    [["state"], "flusso state: a pipeline file is missing"],
  ])("refuses %j: %s", (argv, message) => {
    expect(parseCommandLine(argv)).toEqual({ command: "mistake", message });
  });

  it("answers --help and --version wherever they stand", () => {
    expect(parseCommandLine(["run", "--help"])).toEqual({ command: "help" });
    expect(parseCommandLine(["-h"])).toEqual({ command: "help" });
    expect(parseCommandLine(["--version"])).toEqual({ command: "version" });
  });

  it("takes what follows -- as a file, even when it starts with a dash", () => {
    expect(parseCommandLine(["run", "--", "--odd.yaml"])).toEqual({ command: "run", file: "--odd.yaml", reset: false, quiet: false });
  });
});
