// The README as a new user meets it on a fresh clone: every YAML example and every shipped pipeline file
// loads and validates, every command names a script, a file or a pipeline the clone has and parses as
// flusso reads it, and the commands that need no setup beyond a nats-server run: the REES46 sample through
// config/rees46.yaml, and the README's publishers into the streams config/nats/*.yaml read. Its output
// reference shows a line of every output kind, each valid against its kind's schema.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { loadPipeline } from "../pipelines/load.ts";
import { parseCommandLine } from "../pipelines/cliArgs.ts";
import { runPipeline } from "../pipelines/compile.ts";
import { PipelineInvalid } from "../pipelines/errors.ts";
import { parsePipelineText } from "../pipelines/load.ts";
import { validatePipeline } from "../pipelines/validate.ts";
import { readStream, startNatsServer, type NatsServer } from "./natsServer.ts";
import { OUTPUT_KINDS, schemaErrors, timePairMismatches } from "./outputSchemas.ts";
import { PROJECT_ROOT, readJsonLines, removeTempDirs, tempDir } from "./pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

type Obj = Record<string, unknown>;
type Block = { line: number; text: string };

const README = readFileSync(join(PROJECT_ROOT, "README.md"), "utf8");

/** The fenced blocks of one language, with the README line their text starts on. */
function fencedBlocks(language: string): Block[] {
  const blocks: Block[] = [];
  const lines = README.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```" + language) continue;
    const end = lines.findIndex((l, j) => j > i && l.trim() === "```");
    blocks.push({ line: i + 2, text: lines.slice(i + 1, end).join("\n") + "\n" });
    i = end;
  }
  return blocks;
}

/** config/**\/*.yaml, relative to the project root. */
function shippedPipelineFiles(dir = join(PROJECT_ROOT, "config")): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return shippedPipelineFiles(path);
    return name.endsWith(".yaml") ? [relative(PROJECT_ROOT, path)] : [];
  });
}

/**
 * The environment an example needs: a 32-byte key in each variable named by `keyEnv` or
 * `encryptionKeyEnv` (validation reads them from process.env). `${VAR:-default}` stays unset: the default is the example.
 */
function setEnvFor(text: string): void {
  for (const m of text.matchAll(/(?:keyEnv|encryptionKeyEnv):\s*([A-Za-z_][A-Za-z0-9_]*)/g)) vi.stubEnv(m[1], "k".repeat(32));
}

/** Validates a parsed pipeline as if it were a file in the project root; the PipelineInvalid's messages, or []. */
function mistakesOf(raw: unknown): string[] {
  try {
    validatePipeline(raw, "README.md", PROJECT_ROOT, { checksFiles: false }); // the examples' data files are illustrations
    return [];
  } catch (error) {
    if (error instanceof PipelineInvalid) return error.errors.map((e) => e.message);
    throw error;
  }
}

/** Sections that are one of several kinds (`file`, `nats`, ...): a fragment's replaces the host's. */
const ONE_OF_KINDS = new Set(["source", "sinks", "late", "deadLetter"]);

/** `over` laid on `base`: mappings merge key by key, anything else (lists too) replaces. */
function merged(base: unknown, over: unknown, isTop = true): unknown {
  const isMapping = (x: unknown): x is Obj => x !== null && typeof x === "object" && !Array.isArray(x);
  if (!isMapping(base) || !isMapping(over)) return over;
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base && !(isTop && ONE_OF_KINDS.has(k)) ? merged(base[k], v, false) : v;
  return out;
}

const isWholePipeline = (raw: unknown) => raw !== null && typeof raw === "object" && "name" in raw && "source" in raw;

describe("README.md's YAML examples", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });
  const blocks = fencedBlocks("yaml");
  const parseBlock = (b: Block) => parsePipelineText(b.text, `README.md:${b.line}`, {});
  // Where a fragment is tried: the README's whole pipelines (those that parse: the others fail below) and the shipped ones.
  const hosts = [
    ...blocks.flatMap((b) => {
      try {
        const raw = parseBlock(b);
        return isWholePipeline(raw) ? [{ name: `README.md:${b.line}`, raw }] : [];
      } catch {
        return [];
      }
    }),
    ...shippedPipelineFiles().map((file) => ({ name: file, raw: parsePipelineText(readFileSync(join(PROJECT_ROOT, file), "utf8"), file, {}) })),
  ];

  it("holds whole pipelines and fragments", () => {
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    expect(hosts.length).toBeGreaterThan(shippedPipelineFiles().length);
  });

  it.each(blocks.map((b) => [b.line, b]))("the block at line %i parses and validates", (_line, block) => {
    setEnvFor(block.text);
    const raw = parseBlock(block);
    if (isWholePipeline(raw)) {
      expect(mistakesOf(raw)).toEqual([]);
      return;
    }
    // A fragment (a section, or a source and sinks) is valid where it fits: laid over one of the
    // whole pipelines, it must validate in at least one (it may use values another section declares).
    const tries = hosts.map((host) => ({ host: host.name, mistakes: mistakesOf(merged(host.raw, raw)) }));
    expect(tries.some((t) => t.mistakes.length === 0), JSON.stringify(tries, null, 1)).toBe(true);
  });
});

describe("README.md's output reference", () => {
  const section = README.slice(README.indexOf("#### Output reference"), README.indexOf("### Shipped pipelines"));
  const shown = [...section.matchAll(/^\*\*`([a-z_]+)`\*\*.*\n```json\n(.*)\n```$/gm)].map((m) => ({ kind: m[1], line: m[2] }));

  it("shows one line of every output kind", () => {
    expect(shown.map((s) => s.kind).sort()).toEqual([...OUTPUT_KINDS].sort());
  });

  it.each(shown.map((s) => [s.kind, s.line]))("shows a %s line that is valid against its schema", (kind, line) => {
    const value = JSON.parse(line) as unknown;
    expect(schemaErrors(kind, value)).toEqual([]);
    expect(timePairMismatches(value)).toEqual([]);
  });
});

describe("the shipped pipeline files", () => {
  it.each(shippedPipelineFiles())("%s loads and validates as shipped", (file) => {
    expect(() => loadPipeline(join(PROJECT_ROOT, file), {})).not.toThrow();
  });

  it.each([
    ["config/nats/rees46.yaml", "config/rees46.yaml"],
    ["config/nats/clickstream.yaml", "config/default.yaml"],
  ])("%s computes what %s does", (...files) => {
    const [nats, file] = files.map((f) => parse(readFileSync(join(PROJECT_ROOT, f), "utf8")) as Obj);
    for (const part of ["schema", "key", "time", "watermark", "windows"]) expect(nats[part], part).toEqual(file[part]);
  });
});

/** Every command of the README's sh blocks and inline `npx flusso ...` spans, without comments. */
function readmeCommands(): string[] {
  const fromBlocks = fencedBlocks("sh").flatMap((b) => b.text.split("\n"));
  const inline = [...README.matchAll(/`((?:npx flusso|npm (?:start|test|run|ci))[^`]*)`/g)].map((m) => m[1]);
  return [...fromBlocks, ...inline].map((line) => line.replace(/\s+#.*$/, "").trim()).filter((line) => line !== "" && !line.includes("<"));
}

describe("README.md's commands", () => {
  const scripts = (JSON.parse(readFileSync(join(PROJECT_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
  const commands = readmeCommands();

  it("are found", () => {
    expect(commands).toEqual(expect.arrayContaining(["npm ci && npm start", "npx flusso run config/rees46.yaml", "npx flusso publish data/rees46/events.csv --stream REES46 --subject rees46 --key user_id --rate 5000"]));
  });

  it.each(commands)("%s: names what a fresh clone has", (line) => {
    for (const command of line.split("&&").map((c) => c.trim().replace(/^([A-Z_]+=\S+\s+)+/, ""))) {
      const words = command.split(/\s+/);
      if (words[0] === "npm") {
        if (words[1] === "ci") continue;
        const script = words[1] === "run" ? words[2] : words[1];
        expect(scripts, command).toHaveProperty(script);
      } else if (words[0] === "npx" && words[1] === "flusso") {
        const parsed = parseCommandLine(words.slice(2));
        expect(parsed.command, `${command}: ${JSON.stringify(parsed)}`).not.toBe("mistake");
        if (parsed.command === "run" || parsed.command === "validate") expect(() => loadPipeline(join(PROJECT_ROOT, parsed.file), {})).not.toThrow();
        if (parsed.command === "publish" && parsed.input !== "generator") expect(isInProject(parsed.input), command).toBe(true);
      } else {
        // `node --import tsx bench/x.ts`, `node bench/y.ts ...`: the files named exist.
        for (const word of words.filter((w) => /\.(ts|js)$/.test(w))) expect(isInProject(word), command).toBe(true);
      }
    }
  });

  it("npx flusso --help prints the usage", () => {
    const run = spawnSync(process.execPath, ["bin/flusso.js", "--help"], { cwd: PROJECT_ROOT, encoding: "utf8" });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^usage: flusso run <pipeline.yaml>/);
  });
});

/** A path inside the project that exists (a fresh clone has nothing outside it). */
function isInProject(path: string): boolean {
  const full = resolve(PROJECT_ROOT, path);
  return !relative(PROJECT_ROOT, full).startsWith("..") && existsSync(full);
}

/** config/<file> and data/ copied into a temp folder laid out as the project, so runs write there. */
function projectCopy(file: string): string {
  const dir = tempDir("flusso-readme-");
  mkdirSync(dirname(join(dir, file)), { recursive: true });
  cpSync(join(PROJECT_ROOT, file), join(dir, file));
  cpSync(join(PROJECT_ROOT, "data"), join(dir, "data"), { recursive: true });
  return dir;
}

type WindowResult = { window: string; key: string; start_ms: number };
const byWindow = (a: WindowResult, b: WindowResult) => a.window.localeCompare(b.window) || a.key.localeCompare(b.key) || a.start_ms - b.start_ms;

describe("npx flusso run config/rees46.yaml", () => {
  let dir: string;
  let run: ReturnType<typeof spawnSync>;

  beforeAll(() => {
    dir = projectCopy("config/rees46.yaml");
    run = spawnSync(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", "config/rees46.yaml", "--log", "text"], { cwd: dir, encoding: "utf8", timeout: 60_000 });
  });

  it("reads all 4,000 REES46 events with their own fields, none dead-lettered or late", () => {
    expect(run.status, String(run.stderr)).toBe(0);
    expect(String(run.stderr)).toMatch(/\ndone: 4000 events in .*, 2993 outputs, 0 late, 0 dead-lettered\n$/);
    expect(readFileSync(join(dir, "out/rees46/dead-letter.jsonl"), "utf8")).toBe("");
  });

  it("writes hourly and session results", () => {
    const results = readJsonLines<WindowResult & { events: number }>(join(dir, "out/rees46/results.jsonl"));
    expect(results).toHaveLength(2993);
    expect(results.filter((r) => r.window === "hourly").reduce((n, r) => n + r.events, 0)).toBe(4000);
    expect(results.filter((r) => r.window === "sessions").reduce((n, r) => n + r.events, 0)).toBe(4000);
  });
});

describe("README.md's publishers, into the streams config/nats/*.yaml read", () => {
  let server: NatsServer;

  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(() => server?.stop());

  /** The README's `npx flusso publish ...` line that reads `input`, run against the test's server. */
  function publishAsInReadme(input: string, change: (words: string[]) => string[] = (w) => w) {
    const line = readmeCommands().find((c) => c.startsWith(`npx flusso publish ${input} `));
    expect(line, `a publish command of ${input} in README.md`).toBeDefined();
    const args = [...change(line!.split(/\s+/).slice(2)), "--servers", server.url, "--quiet"];
    return spawnSync(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), ...args], { cwd: PROJECT_ROOT, encoding: "utf8", timeout: 60_000 });
  }

  /** config/nats/<name>.yaml as shipped, but bounded (it stops at the end of the stream), its files in `dir`. */
  async function runBounded(name: string, dir: string) {
    const pipeline = parse(readFileSync(join(PROJECT_ROOT, "config/nats", `${name}.yaml`), "utf8")) as Obj & { source: { nats: Obj } };
    pipeline.source.nats.bounded = true;
    pipeline.state = { dir: join(dir, "state") };
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, stringify(pipeline).replaceAll("../../out/", `${dir}/out/`));
    return runPipeline(loadPipeline(file, { NATS_URL: server.url }), { reset: true });
  }

  it("the REES46 sample: every event read by config/nats/rees46.yaml, with the results of config/rees46.yaml", async () => {
    const published = publishAsInReadme("data/rees46/events.csv");
    expect(published.status, published.stderr).toBe(0);
    const dir = tempDir("flusso-readme-nats-");
    const result = await runBounded("rees46", dir);
    expect(result.counters).toMatchObject({ read: 4000, deadLettered: 0, late: 0 });
    const fromNats = (await readStream(server.url, "REES46_RESULTS")).map((body) => JSON.parse(body) as WindowResult);
    const fromFile = projectCopy("config/rees46.yaml");
    await runPipeline(loadPipeline(join(fromFile, "config/rees46.yaml"), {}), { reset: true });
    expect(fromNats.sort(byWindow)).toEqual(readJsonLines<WindowResult>(join(fromFile, "out/rees46/results.jsonl")).sort(byWindow));
  });

  it("the generator: every event read by config/nats/clickstream.yaml", async () => {
    // The README's line with fewer events and no pacing, to keep the test short.
    const published = publishAsInReadme("generator", (words) => words.map((w, i) => (words[i - 1] === "--events" ? "3000" : words[i - 1] === "--rate" ? "0" : w)));
    expect(published.status, published.stderr).toBe(0);
    const result = await runBounded("clickstream", tempDir("flusso-readme-nats-"));
    expect(result.counters).toMatchObject({ read: 3000, deadLettered: 0 });
    expect(result.counters.outputs).toBeGreaterThan(0);
  });
});
