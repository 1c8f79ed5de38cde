// A property over hostile input: generated events (deep, wide, huge, not UTF-8, odd time zones and
// numbers, prototype keys, not objects at all) and hostile expressions go through `flusso run`; the
// job never crashes or stalls, an expression is either refused at load (exit 2) or evaluated, and
// every input line is counted exactly once: in a window, as late, or as a dead letter.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { eventSchemaYaml, FILE_OUTPUTS, hourlyWindow, OUTPUT_FILES, windowPipelineYaml } from "../fixtures/pipelines.ts";
import { PROJECT_ROOT, readJsonLines, removeTempDirs, tempDir } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20);
/** A run that takes longer than this has stalled: the inputs are tens of lines. */
const STALLED_MS = 60_000;

const good = (i: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ user_id: `u${i % 5}`, ts: T0 + i * 60_000, event_type: i % 3 === 0 ? "purchase" : "view", page: "/a", ...extra });

/** One input line, as bytes: each generator is a way an attacker or a broken producer writes one. */
const hostileLine: fc.Arbitrary<(i: number) => Buffer> = fc.oneof(
  fc.constant((i: number) => Buffer.from(good(i))),
  fc.integer({ min: 60, max: 3000 }).map((depth) => (i: number) => Buffer.from(good(i, { props: "X" }).replace('"X"', "[".repeat(depth) + "]".repeat(depth)))),
  fc.constant((i: number) => Buffer.from(good(i, { props: "X" }).replace('"X"', '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000)))),
  fc.integer({ min: 9_000, max: 20_000 }).map((n) => (i: number) => Buffer.from(good(i, { tags: Array.from({ length: n }, () => "t") }))),
  fc.integer({ min: 100_000, max: 1_200_000 }).map((n) => (i: number) => Buffer.from(good(i, { page: "p".repeat(n) }))),
  fc.constant((i: number) => Buffer.concat([Buffer.from(good(i).slice(0, 14)), Buffer.from([0xff, 0xfe]), Buffer.from(good(i).slice(14))])),
  fc.constant((i: number) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(good(i))])),
  fc.constantFrom("+99:99", "+24:00", "-00:75", "+14:00", "-12:00", "+05:45", "Z", "+0100", "+1").map(
    (zone) => (i: number) => Buffer.from(good(i, { ts: `2024-05-20T10:${String(i % 60).padStart(2, "0")}:00${zone}` })),
  ),
  fc.constantFrom("1e400", "-0", "NaN", "9007199254740993", "1.7976931348623157e309", '"12"', "null", "[]", "{}").map(
    (n) => (i: number) => Buffer.from(good(i).replace(/"ts":\d+/, `"ts":${n}`)),
  ),
  fc.constantFrom('{"__proto__":{"user_id":"x"}}', '{"constructor":{"prototype":1}}', "[1,2]", "null", '"text"', "42", "{", "\u0000", '{"user_id":"\\ud800"}').map(
    (text) => (i: number) => Buffer.from(text.startsWith("{") && text.length > 2 && text.endsWith("}") ? good(i).replace(/^\{/, text.slice(0, -1) + ",") : text),
  ),
  fc.constant((i: number) => Buffer.from(good(i) + "\r")),
  // What a backtracking regex takes exponential time on.
  fc.constantFrom("a".repeat(40) + "!", "x".repeat(40), "/" + "ta".repeat(30)).map((page) => (i: number) => Buffer.from(good(i, { page, tags: [page, "t".repeat(40) + "!"] }))),
);

/** Shown for `value` in a counterexample: a short name rather than a megabyte of expression. */
function named<T extends object>(value: T, name: string): T {
  return Object.assign(value, { [fc.toStringMethod]: () => name });
}

/** A condition the pipeline counts by: harmless, catastrophic for a backtracking regex, costly, or malformed. */
const hostileCondition = fc.constantFrom(
  'event_type == "purchase"',
  'page.matches("^(a+)+$")',
  'page.matches("(x+x+)+y")',
  "page.matches(page)",
  'page.matches("[")',
  'page.matches("(?=a)")',
  'tags.exists(t, t.matches("^(t|t)+$"))',
  "tags.map(a, tags.map(b, a + b)).size() > 0",
  "tags.exists(a, tags.exists(b, a == b))",
  "[" + Array.from({ length: 1000 }, (_, i) => i).join(",") + "].exists(x, [" + Array.from({ length: 1000 }, (_, i) => i).join(",") + "].exists(y, x == y))",
  "(".repeat(300) + "true" + ")".repeat(300),
  Array.from({ length: 2000 }, () => "1.0").join(" + ") + " > 0.0",
  "size(page) > 3 && page.startsWith(\"/\")",
  "props.a == 1.0",
  "page + page == page",
  '"x".repeat(10)',
).map((text) => named({ text }, text.length > 80 ? `${text.slice(0, 60)}... (${text.length} characters)` : text));

function pipelineYaml(condition: string): string {
  return windowPipelineYaml({
    name: "hostile",
    source: "{ file: { path: events.jsonl, format: jsonl } }",
    schema: eventSchemaYaml({ time: "ts", fields: { page: "{ type: string }", tags: "{ type: list }", props: "{ type: object }" } }),
    watermark: "{ maxOutOfOrderness: 0s }",
    state: "{ dir: state }",
    windows: [hourlyWindow({ picked: `{ count: ${JSON.stringify(condition)} }` })],
    ...FILE_OUTPUTS,
  });
}

const lines = (path: string) => (existsSync(path) ? readJsonLines(path) : []);

describe("hostile input and expressions", () => {
  it("never crash or stall a job, and every line is counted once: in a window, late, or dead-lettered", () => {
    fc.assert(
      fc.property(hostileCondition, fc.array(hostileLine, { minLength: 1, maxLength: 25 }), ({ text: condition }, makers) => {
        const dir = tempDir("flusso-hostile-");
        const input = makers.map((make, i) => make(i));
        writeFileSync(join(dir, "events.jsonl"), Buffer.concat(input.flatMap((line) => [line, Buffer.from("\n")])));
        writeFileSync(join(dir, "pipeline.yaml"), pipelineYaml(condition));
        const run = spawnSync(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", join(dir, "pipeline.yaml"), "--quiet"], {
          encoding: "utf8",
          timeout: STALLED_MS,
          killSignal: "SIGKILL",
        });
        expect(run.signal, `stalled (killed after ${STALLED_MS / 1000} s) on ${condition}`).toBeNull();
        expect([0, 2], `${run.stderr}`).toContain(run.status);
        if (run.status === 2) {
          // Refused before anything ran, naming where.
          expect(run.stderr).toMatch(/windows\[0\]\.aggregate\.picked\.count: /);
          expect(run.stderr).not.toMatch(/\n\s+at /);
          return;
        }
        expect(run.stderr).toBe("");
        const counted = lines(join(dir, OUTPUT_FILES.results)).reduce((sum, r) => sum + (r.events as number), 0);
        const late = lines(join(dir, OUTPUT_FILES.late)).length;
        const dead = lines(join(dir, OUTPUT_FILES.deadLetter));
        expect(dead.every((d) => typeof d.reason === "string" && d.reason.length > 0)).toBe(true);
        // A carriage return alone, or a BOM alone, is no line of its own: every generated line is one input.
        expect(counted + late + dead.length).toBe(input.length);
        expect(readFileSync(join(dir, OUTPUT_FILES.deadLetter), "utf8").length).toBeLessThan(20 * 1024 * 1024);
      }),
      { numRuns: 24, seed: 9 },
    );
  }, 600_000);
});
