// The dashboard in a real browser (Debian's chromium, driven by puppeteer-core), against a real
// `flusso run --http` of the retention pipeline on the generator: the page loads with no console
// errors, no failed and no external requests; its charts draw the job's samples, non-zero once events
// flowed; it keeps updating; and the user search shows what /api/v1/keys/{key} answers.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sample, Series } from "../../pipelines/http/dashboard.ts";
import { dashboardRoutes } from "../../pipelines/http/dashboard.ts";
import { startHttpServer, type HttpServer, type Route } from "../../pipelines/http/server.ts";
import type { PipelineSpec } from "../../pipelines/validate.ts";
import { launchChromium, type Chromium } from "../chromium.ts";
import { behaviourOperator, fakeJob } from "./http/fakeJobView.ts";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "./pipelineFiles.ts";

/** What the page keeps in `window.__flussoDashboard`: the samples, and each chart's uPlot with its series names. */
type PageCharts = Record<string, { names: string[]; data: (number | null)[][] }>;

const startedAtMs = performance.now();
let job: ChildProcess | undefined;
let chromium: Chromium | undefined;
let page: Page;
let baseUrl: string;
let outDir: string;
const problems: string[] = [];

/** Polls `check` until it gives a value (not undefined), or fails after `timeoutMs` saying what it waited for. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `flusso run <pipeline> --http 127.0.0.1:0`; resolves with the URL it logs (JSON lines, stderr being a pipe). */
async function startJob(pipeline: string): Promise<string> {
  job = spawn(process.execPath, [join(PROJECT_ROOT, "bin/flusso.js"), "run", pipeline, "--http", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  job.stderr!.on("data", (chunk) => (stderr += chunk));
  let exit: string | undefined;
  job.on("exit", (code, signal) => (exit = `the job exited (${code ?? signal}) before serving: ${stderr}`));
  return waitFor("the job's URL", () => {
    if (exit !== undefined) throw new Error(exit);
    return urlLogged(stderr);
  });
}

function urlLogged(log: string): string | undefined {
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    const entry = JSON.parse(line) as { event?: string; url?: string };
    if (entry.event === "http") return entry.url;
  }
  return undefined;
}

/** A small retention run: the shipped pipeline on half the generated events, in a temp folder. */
function retentionPipeline(): string {
  const dir = tempDir("flusso-dashboard-");
  // Half the events (a week), and attribution windows of a day, so that the experiment counts users by the end.
  const text = readFileSync(join(PROJECT_ROOT, "config/retention.yaml"), "utf8").replace("events: 300000", "events: 150000").replace("within: 7d", "within: 1d");
  mkdirSync(join(dir, "config"));
  outDir = join(dir, "out/retention");
  const pipeline = join(dir, "config/retention.yaml");
  writeFileSync(pipeline, text);
  return pipeline;
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(new URL(path, baseUrl));
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as T;
}

const pageSamples = () => page.evaluate(() => (window as unknown as { __flussoDashboard: { samples: Sample[] } }).__flussoDashboard.samples);

const pageCharts = () =>
  page.evaluate(() => {
    const charts = (window as unknown as { __flussoDashboard: { charts: Record<string, { names: string[]; plot: { data: (number | null)[][] } }> } }).__flussoDashboard.charts;
    return Object.fromEntries(Object.entries(charts).map(([id, { names, plot }]) => [id, { names, data: plot.data.map((column) => Array.from(column)) }]));
  }) as Promise<PageCharts>;

/** The largest value a chart's series drew (0 when it drew none). */
function largest(charts: PageCharts, chart: string, series: string): number {
  const index = charts[chart]?.names.indexOf(series) ?? -1;
  if (index < 0) return 0;
  return Math.max(0, ...charts[chart].data[index + 1].filter((v): v is number => v !== null));
}

/** Opens `url` in a new page that records every console error, page error, failed, refused or external request into `problems`. */
async function openPage(url: string): Promise<Page> {
  const opened = await chromium!.browser.newPage();
  const origin = new URL(url).origin;
  opened.on("console", (message) => message.type() === "error" && problems.push(`console error: ${message.text()}`));
  opened.on("pageerror", (error) => problems.push(`page error: ${String(error)}`));
  opened.on("requestfailed", (request) => problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`));
  opened.on("response", (response) => response.status() >= 400 && problems.push(`${response.status()} for ${response.url()}`));
  opened.on("request", (request) => !request.url().startsWith(origin) && !request.url().startsWith("data:") && problems.push(`external request: ${request.url()}`));
  await opened.goto(url, { waitUntil: "load" });
  return opened;
}

beforeAll(async () => {
  chromium = await launchChromium();
}, 15_000);

afterAll(async () => {
  await chromium?.close();
  job?.kill("SIGKILL");
  removeTempDirs();
  console.log(`dashboard browser tests: ${((performance.now() - startedAtMs) / 1000).toFixed(1)} s`);
});

describe("the dashboard of `flusso run --http` in chromium", () => {
  beforeAll(async () => {
    baseUrl = await startJob(retentionPipeline());
    page = await openPage(baseUrl);
  }, 30_000);

  it("draws what the job samples, non-zero once events flowed, with no console errors and no failed or external requests", async () => {
    // The bounded input ends within seconds (~5 s alone; a loaded machine may take several times that);
    // the server goes on serving its final state.
    await waitFor("the job to end", async () => ((await getJson<Series>("/api/v1/series")).samples.at(-1)?.phase === "ended" ? true : undefined), 60_000);
    const series = await getJson<Series>("/api/v1/series");
    const charts = await waitFor("the page to draw the samples of the whole run", async () => {
      const drawn = await pageCharts();
      return drawn.events?.data[0].includes(series.samples.at(-1)!.timeMs / 1000) ? drawn : undefined;
    });
    // The page draws the job's samples, as /api/v1/series has them.
    const drawn = new Map(charts.events.data[0].map((timeSeconds, i) => [timeSeconds, charts.events.data[1][i]]));
    expect(series.samples.map((s) => drawn.get(s.timeMs / 1000))).toEqual(series.samples.map((s) => s.eventsPerSecond));
    expect(largest(charts, "events", "events/s")).toBeGreaterThan(0);
    expect(largest(charts, "watermarkLag", "lag")).toBeGreaterThan(0);
    expect(largest(charts, "checkpoints", "checkpoint")).toBeGreaterThan(0);
    expect(charts.failures.names).toEqual(["dead letters/s", "late/s", "dead letters (total)", "late (total)"]);
    // Retention has every chart: output latency, segments, triggers per channel and clusters.
    expect(largest(charts, "latency", "p99")).toBeGreaterThan(0);
    for (const chart of ["segments", "triggers", "clusters"] as const) {
      expect(charts[chart], chart).toBeDefined();
      expect(Math.max(...charts[chart].names.map((name) => largest(charts, chart, name))), chart).toBeGreaterThan(0);
    }
    // The header names the pipeline and its phase.
    expect(await page.$eval("#pipeline-name", (e) => e.textContent)).toBe("retention");
    expect(await page.$eval("#phase", (e) => e.textContent)).toBe("ended");
    expect(problems).toEqual([]);
  });

  it("shows each experiment's latest report as /api/v1/experiments answers it: arms, rates with their intervals, p-values", async () => {
    await waitFor("the job to end", async () => ((await getJson<Series>("/api/v1/series")).samples.at(-1)?.phase === "ended" ? true : undefined), 60_000);
    type Reports = { experiments: Array<{ experiment: string; report: { final: boolean; cells: Array<{ group: string | null; arms: Array<{ exposed: number }> }> } | null }> };
    const answered = await getJson<Reports>("/api/v1/experiments");
    const lines = readFileSync(join(outDir, "experiments.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line) as { output: string });
    // The latest report the job wrote, the final one.
    expect(answered.experiments.map((e) => e.report)).toEqual([lines.filter((l) => l.output === "experiment").at(-1)]);
    expect(answered.experiments[0].report!.final).toBe(true);
    const shown = await waitFor("the page to show the experiment", async () => {
      // One evaluation reads the panel whole: between two, the page may draw a newer report.
      const { rows, bars, tests } = await page.evaluate(() => {
        const panel = '[data-experiment="cart_recovery_2024q2"]';
        return {
          rows: [...document.querySelectorAll(`${panel} table.arms tbody tr`)].map((row) => [...row.children].map((cell) => cell.textContent)),
          bars: document.querySelectorAll(`${panel} .rate .ci`).length,
          tests: document.querySelector(`${panel} .tests`)?.textContent ?? "",
        };
      });
      return rows.length > 0 && tests.includes("final") ? { rows, bars, tests } : undefined;
    }, 20_000);
    const overall = answered.experiments[0].report!.cells.find((cell) => cell.group === null)!;
    expect(shown.rows.map((row) => row[0])).toEqual(["holdout", "sconto_10", "spedizione_gratis"]);
    expect(shown.rows.map((row) => Number(row[1]))).toEqual(overall.arms.map((arm) => arm.exposed));
    // An interval for each arm with users counted (the others are still inside their windows).
    expect(shown.bars).toBe(overall.arms.filter((arm) => arm.exposed > 0).length);
    expect(shown.bars).toBeGreaterThan(0);
    expect(shown.tests).toMatch(/chi-squared p = /);
  });

  it("keeps updating from the stream", async () => {
    const before = (await pageSamples()).at(-1)!.timeMs;
    const after = await waitFor("a new sample on the page", async () => {
      const last = (await pageSamples()).at(-1)!.timeMs;
      return last > before ? last : undefined;
    }, 5_000);
    expect(after).toBeGreaterThan(before);
    expect(problems).toEqual([]);
  });

  it("shows a user's state as /api/v1/keys/{key} answers it", async () => {
    const lastSegmentChange = readFileSync(join(outDir, "segments.jsonl"), "utf8").trimEnd().split("\n").at(-1)!;
    const key = (JSON.parse(lastSegmentChange) as { user_id: string }).user_id;
    const state = await getJson<unknown>(`/api/v1/keys/${encodeURIComponent(key)}`);
    await page.type("#key-input", key);
    await page.click("#key-form button");
    await page.waitForSelector("#key-result table", { timeout: 5_000 });
    const shown = await page.$$eval("#key-result [data-path]", (leaves) => leaves.map((leaf) => [(leaf as HTMLElement).dataset.path!, leaf.textContent!] as const));
    expect(Object.fromEntries(shown)).toEqual(leavesOf(state));
    expect(await page.$eval("#key-result h2", (e) => e.textContent)).toBe(key);
    expect(problems).toEqual([]);
  });
});

const TOKEN = "a-token-of-sixteen-characters";

/** A user's state with every kind of JSON in it, as a key query might answer. */
const USER_STATE = {
  key: "u1",
  lastEventTime: { time: "2024-05-20T10:00:00.000Z", time_ms: 1716199200000 },
  features: { p_exit: 1.7, recent_interest: -2, "odd <b>name</b>": "a & b" },
  phase: { name: "conversion", since_ms: 1716190000000 },
  segments: { lifecycle: "vip" },
  tags: ["mobile", "night_owl"],
  cluster: null,
  isErased: false,
  wakeUps: [{ at: "2024-05-21T10:00:00.000Z", cause: "phase timer" }],
  windows: {},
};

describe("the dashboard with a token, on a job with the behaviour views, in chromium", () => {
  const closed = new AbortController();
  let server: HttpServer | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let fakePage: Page;

  beforeAll(async () => {
    const { job: fake, view } = fakeJob();
    const counts = { segments: { groups: { lifecycle: { vip: 3, nuovo_cliente: 40 } }, tags: { mobile: 12 } }, clusters: { fedele: 5, in_uscita: 9 }, triggersByChannel: { email: 0, sms: 0 } as Record<string, number> };
    fake.operators = [behaviourOperator(counts)];
    fake.watermarkMs = Date.now() - 3_000;
    // Events flow: the counters, latencies and views move between samples.
    ticker = setInterval(() => {
      fake.counters.read += 50;
      fake.latency.record(0.004 + Math.random() * 0.01, 5);
      counts.triggersByChannel = { email: counts.triggersByChannel.email + 1, sms: counts.triggersByChannel.sms + 2 };
      fake.watermarkMs = Date.now() - 3_000;
    }, 50);
    const keys: Route = { method: "GET", path: "/api/v1/keys/:key", handle: ({ params }) => (params.key === "u1" ? { json: USER_STATE } : { status: 404, json: { error: "unknown key" } }) };
    server = await startHttpServer({ host: "127.0.0.1", port: 0, token: TOKEN }, [...dashboardRoutes({ view, spec: { name: "shop" } as PipelineSpec, closed: closed.signal }, { intervalMs: 200 }), keys]);
    fakePage = await openPage(`${server.url}?token=${TOKEN}`);
  }, 15_000);

  afterAll(async () => {
    clearInterval(ticker);
    closed.abort();
    await server?.close();
  });

  it("sends the token from ?token= (a header on fetch, ?access_token= on the stream) and draws every chart, the behaviour views' too", async () => {
    const charts = await waitFor("every chart with data", async () => {
      const drawn = (await fakePage.evaluate(() => {
        const charts = (window as unknown as { __flussoDashboard: { charts: Record<string, { names: string[]; plot: { data: (number | null)[][] } }> } }).__flussoDashboard.charts;
        return Object.fromEntries(Object.entries(charts).map(([id, { names, plot }]) => [id, { names, data: plot.data.map((column) => Array.from(column)) }]));
      })) as PageCharts;
      const isDrawn = ["events", "latency", "segments", "tags", "triggers", "clusters"].every((id) => drawn[id] !== undefined);
      return isDrawn && largest(drawn, "events", "events/s") > 0 && largest(drawn, "triggers", "sms") > 0 ? drawn : undefined;
    }, 10_000);
    expect(largest(charts, "events", "events/s")).toBeGreaterThan(0);
    expect(largest(charts, "latency", "p99")).toBeGreaterThan(0);
    expect(largest(charts, "latency", "500 ms")).toBe(500);
    expect(charts.segments.names).toEqual(["lifecycle: vip", "lifecycle: nuovo_cliente"]);
    expect(largest(charts, "segments", "lifecycle: nuovo_cliente")).toBe(40);
    expect(charts.tags.names).toEqual(["mobile"]);
    expect(charts.clusters.names).toEqual(["fedele", "in_uscita"]);
    expect(largest(charts, "clusters", "in_uscita")).toBe(9);
    expect(await fakePage.$eval("#pipeline-name", (e) => e.textContent)).toBe("shop");
    expect(await fakePage.$eval("#phase", (e) => e.textContent)).toBe("running");
    expect(problems).toEqual([]);
  });

  it("shows any state as nested tables, every leaf as the query answered it", async () => {
    await fakePage.type("#key-input", "u1");
    await fakePage.click("#key-form button");
    await fakePage.waitForSelector("#key-result table", { timeout: 5_000 });
    const shown = await fakePage.$$eval("#key-result [data-path]", (leaves) => leaves.map((leaf) => [(leaf as HTMLElement).dataset.path!, leaf.textContent!] as const));
    expect(Object.fromEntries(shown)).toEqual(leavesOf(USER_STATE));
    expect(await fakePage.$eval("#key-result", (e) => e.textContent)).toContain("odd <b>name</b>");
    expect(problems).toEqual([]);
  });
});

/** Every leaf of a JSON value by its path (as the page marks it: a JSON array), shown as the page shows it. */
function leavesOf(value: unknown, path: string[] = [], into: Record<string, string> = {}): Record<string, string> {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
    for (const [name, child] of entries) leavesOf(child, [...path, name], into);
  } else {
    into[JSON.stringify(path)] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return into;
}
