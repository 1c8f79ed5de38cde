// The CLI killed with SIGKILL at random points and restarted on the same state dir ends with output
// files identical to an uninterrupted run: nothing lost, nothing duplicated; and a reader tailing an
// output meanwhile only ever sees a prefix of the final file.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { eventSchemaYaml, SESSION_DURATION, windowPipelineYaml } from "../fixtures/pipelines.ts";
import { runCliUntilKilled } from "./pipelineFiles.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");

/** Two partition files of disordered events with some late ones and some bad lines. */
function writeEvents(dir: string, count: number, seed: number): string[] {
  const rnd = mulberry32(seed);
  const files = [join(dir, "events-0.jsonl"), join(dir, "events-1.jsonl")];
  const lines: string[][] = [[], []];
  let clockMs = Date.UTC(2024, 4, 20);
  for (let i = 0; i < count; i++) {
    clockMs += Math.floor(rnd() * 40);
    const user = `u${Math.floor(rnd() * 400)}`;
    const lateMs = rnd() < 0.01 ? 10 * 60_000 : 0;
    const event = {
      user_id: user,
      timestamp: clockMs - Math.floor(rnd() * 3000) - lateMs,
      event_type: ["view", "add_to_cart", "purchase"][Math.floor(rnd() * 3)],
      session_duration_sec: Math.round(rnd() * 3000) / 10,
    };
    const partition = Number(user.slice(1)) % 2;
    lines[partition].push(rnd() < 0.002 ? "{not json" : JSON.stringify(event));
  }
  files.forEach((f, p) => writeFileSync(f, lines[p].join("\n") + "\n"));
  return files;
}

function writePipeline(dir: string, files: string[], name: string): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    windowPipelineYaml({
      name,
      source: `{ file: { path: [${files.map((f) => JSON.stringify(f)).join(", ")}], format: jsonl } }`,
      schema: eventSchemaYaml({ fields: SESSION_DURATION }),
      watermark: "{ maxOutOfOrderness: 3s, idleness: 10m }",
      state: `{ dir: ./state-${name}, checkpointInterval: 30ms }`,
      windows: [
        `name: minute
type: tumbling
size: 1m
allowedLateness: 5s
aggregate:
  events: count
  carts: { count: 'event_type == "add_to_cart"' }
  duration: { sum: session_duration_sec }`,
        `name: hopping
type: hopping
size: 10m
slide: 5m
aggregate:
  events: count
  longest: { max: session_duration_sec }`,
        `name: sessions
type: session
gap: 2m
allowedLateness: 1m
aggregate:
  events: count
  types: { distinct: event_type }
  last_type: { last: event_type }`,
      ],
      sinks: [`file: { path: ./out-${name}/results.jsonl }`],
      late: `{ file: { path: ./out-${name}/late.jsonl } }`,
      deadLetter: `{ file: { path: ./out-${name}/dead.jsonl } }`,
    }),
  );
  return file;
}

function outputs(dir: string, name: string): Record<string, string> {
  const read = (f: string) => {
    const path = join(dir, `out-${name}`, f);
    return existsSync(path) ? readFileSync(path, "utf8") : "";
  };
  return { results: read("results.jsonl"), late: read("late.jsonl"), dead: read("dead.jsonl") };
}

describe("crash recovery through the CLI", () => {
  it("ends with output identical to an uninterrupted run after SIGKILLs at random points", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flusso-crash-"));
    const files = writeEvents(dir, 120_000, 7);
    const reference = spawnSync(process.execPath, [CLI, "run", writePipeline(dir, files, "reference"), "--quiet"], { encoding: "utf8" });
    expect(reference.status, reference.stderr).toBe(0);
    const expected = outputs(dir, "reference");
    expect(expected.results.split("\n").length).toBeGreaterThan(1000);
    expect(expected.late.length).toBeGreaterThan(0);
    expect(expected.dead.length).toBeGreaterThan(0);

    const crashed = writePipeline(dir, files, "crashed");
    const resultsPath = join(dir, "out-crashed", "results.jsonl");
    // A reader tailing the results while the job is killed and restarted: it must only ever see a
    // prefix of the final file, never a line that recovery takes back.
    const reads = { count: 0, growing: 0, notPrefix: [] as number[] };
    let lastReadBytes = 0;
    const reader = setInterval(() => {
      if (!existsSync(resultsPath)) return;
      const seen = readFileSync(resultsPath, "utf8");
      reads.count++;
      if (seen.length > lastReadBytes) reads.growing++;
      if (!expected.results.startsWith(seen) || seen.length < lastReadBytes) reads.notPrefix.push(seen.length);
      lastReadBytes = seen.length;
    }, 5);
    const rnd = mulberry32(99);
    let kills = 0;
    for (let attempt = 0; attempt < 40; attempt++) {
      // Killed by progress, not by time (a fast machine would finish first): the first kills land in
      // start-up or recovery, the later ones when the results have grown past the next eighth.
      const killAfterMs = kills < 2 ? 50 + Math.floor(rnd() * 400) : 60_000;
      const killAtBytes = (expected.results.length * (kills + 1)) / 8;
      const isPastIt = () => existsSync(resultsPath) && statSync(resultsPath).size > killAtBytes;
      const run = await runCliUntilKilled(crashed, killAfterMs, () => kills >= 2 && kills < 7 && isPastIt());
      if (run.killed) {
        kills++;
        continue;
      }
      expect(run.code, run.stderr).toBe(0);
      break;
    }
    clearInterval(reader);
    expect(kills).toBeGreaterThanOrEqual(3);
    expect(reads.notPrefix, "reads that were no prefix of the final file (their lengths)").toEqual([]);
    expect(reads.growing).toBeGreaterThan(5);
    const actual = outputs(dir, "crashed");
    expect(actual.results).toBe(expected.results);
    expect(actual.late).toBe(expected.late);
    expect(actual.dead).toBe(expected.dead);
  }, 120_000);
});
