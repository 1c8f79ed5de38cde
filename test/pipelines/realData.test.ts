// Real clickstream data (the first 4,000 REES46 events): the pipeline's per-user hourly counts equal
// a plain recount of the CSV done here with code of its own.
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobResult } from "../../engine/job.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { FILE_OUTPUTS, hourlyWindow, OUTPUT_FILES, windowPipelineYaml } from "../fixtures/pipelines.ts";
import { readJsonLines, removeTempDirs, tempDir } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

const FIXTURE = resolve(import.meta.dirname, "../../data/rees46/events.csv");
const HOUR_MS = 3_600_000;

type HourlyResult = { window: string; key: string; start: string; start_ms: number; end: string; end_ms: number; events: number; views: number; carts: number; revenue: number };

/** The columns of the REES46 CSV, as they are: not the schema of the events the other tests write. */
const REES46_SCHEMA = `schema:
  event_time: { type: timestamp, required: true }
  event_type: { type: string, required: true }
  product_id: { type: string }
  category_id: { type: string }
  category_code: { type: string }
  brand: { type: string }
  price: { type: number }
  user_id: { type: string, required: true }
  user_session: { type: string }
key: user_id
time: event_time
`;

function pipelineYaml(): string {
  return windowPipelineYaml({
    name: "rees46-hourly",
    source: `{ file: { path: ${JSON.stringify(FIXTURE)}, format: csv } }`,
    schema: REES46_SCHEMA,
    watermark: "{ maxOutOfOrderness: 0s }",
    state: "{ dir: state }",
    windows: [
      hourlyWindow({
        views: `{ count: 'event_type == "view"' }`,
        carts: `{ count: 'event_type == "cart"' }`,
        revenue: `{ sum: price, where: 'event_type == "purchase"' }`,
      }),
    ],
    ...FILE_OUTPUTS,
  });
}

const UTC_TIME = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) UTC$/;

/** `2019-10-01 00:00:00 UTC` in epoch milliseconds. */
function parseUtc(text: string): number {
  const m = UTC_TIME.exec(text);
  if (!m) throw new Error(`not a time like "2019-10-01 00:00:00 UTC": ${text}`);
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** The data rows of the fixture, each as a map from header name to field (the data has no quoted fields). */
function fixtureRows(): Array<Record<string, string>> {
  const [header, ...rows] = readFileSync(FIXTURE, "utf8")
    .split("\n")
    .map((line) => line.replace(/\r$/, ""))
    .filter((line) => line !== "");
  const columns = header.split(",");
  return rows.map((row) => {
    const fields = row.split(",");
    if (fields.length !== columns.length) throw new Error(`row of ${fields.length} fields: ${row}`);
    return Object.fromEntries(columns.map((c, i) => [c, fields[i]]));
  });
}

/** Per-user hourly results counted from the rows, in file order, sorted by key and start. */
function recount(rows: Array<Record<string, string>>): HourlyResult[] {
  const windows = new Map<string, HourlyResult>();
  for (const row of rows) {
    const start = Math.floor(parseUtc(row.event_time) / HOUR_MS) * HOUR_MS;
    const id = `${row.user_id} ${start}`;
    let w = windows.get(id);
    if (!w) {
      const iso = (ms: number) => new Date(ms).toISOString();
      w = { window: "hourly", key: row.user_id, start: iso(start), start_ms: start, end: iso(start + HOUR_MS), end_ms: start + HOUR_MS, events: 0, views: 0, carts: 0, revenue: 0 };
      windows.set(id, w);
    }
    w.events++;
    if (row.event_type === "view") w.views++;
    if (row.event_type === "cart") w.carts++;
    if (row.event_type === "purchase") w.revenue += Number(row.price);
  }
  // A sum is shown to 12 significant digits, without the noise of adding decimals in binary.
  for (const w of windows.values()) w.revenue = Number(w.revenue.toPrecision(12));
  return sortResults([...windows.values()]);
}

function sortResults(results: HourlyResult[]): HourlyResult[] {
  return [...results].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.start_ms - b.start_ms));
}

describe("per-user hourly counts over 4,000 REES46 events", () => {
  const rows = fixtureRows();
  const expected = recount(rows);
  let result: JobResult;
  let results: HourlyResult[];
  let deadLetters: unknown[];
  let late: unknown[];

  beforeAll(async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "pipeline.yaml"), pipelineYaml());
    result = await runPipeline(loadPipeline(join(dir, "pipeline.yaml"), {}), { reset: true });
    results = readJsonLines<HourlyResult>(join(dir, OUTPUT_FILES.results));
    deadLetters = readJsonLines(join(dir, OUTPUT_FILES.deadLetter));
    late = readJsonLines(join(dir, OUTPUT_FILES.late));
  });

  it("uses a fixture under 1 MB of 4,000 unquoted rows over three hours", () => {
    expect(statSync(FIXTURE).size).toBeLessThan(1_000_000);
    expect(readFileSync(FIXTURE, "utf8")).not.toContain('"');
    expect(rows).toHaveLength(4000);
    expect(new Set(expected.map((r) => r.start_ms)).size).toBe(3);
    expect(expected.some((r) => r.carts > 0 && r.views > 0)).toBe(true);
    expect(expected.some((r) => r.revenue > 0)).toBe(true);
  });

  it("reads every row as one event and completes", () => {
    expect(result.isComplete).toBe(true);
    expect(result.counters.read).toBe(4000);
  });

  it("gives per-user hourly counts exactly equal to a recount of the CSV", () => {
    expect(sortResults(results)).toEqual(expected);
    expect(result.counters.outputs).toBe(expected.length);
  });

  it("dead-letters nothing and has no late events in this in-order data", () => {
    expect(deadLetters).toEqual([]);
    expect(late).toEqual([]);
    expect(result.counters.deadLettered).toBe(0);
    expect(result.counters.late).toBe(0);
  });
});
