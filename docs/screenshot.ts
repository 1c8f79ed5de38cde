// Takes docs/dashboard.png: the retention pipeline replays two weeks of generated clickstream, paced
// to end about now (so the watermark lag falls as it catches up), served with its dashboard; after
// a few minutes chromium looks up one user and photographs the page.
//   node --import tsx docs/screenshot.ts        (SCREENSHOT_SECONDS=180 by default)
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runJob } from "../engine/job.ts";
import type { Source } from "../engine/sources/source.ts";
import { jobOptions } from "../pipelines/compile.ts";
import { routesFor } from "../pipelines/http/routes.ts";
import { startHttpServer, type HttpServer } from "../pipelines/http/server.ts";
import { loadPipeline } from "../pipelines/load.ts";
import { launchChromium } from "../test/chromium.ts";

const ROOT = join(import.meta.dirname, "..");
const SECONDS = Number(process.env.SCREENSHOT_SECONDS ?? 180);
const EVENTS = 300_000;
/** Event time the generator covers at the retention pipeline's 0.25 events per second. */
const SPAN_MS = (EVENTS / 0.25) * 1000;

/** `source`, giving no more than `eventsPerSecond` of wall-clock time: a replay at a steady pace. */
function paced(source: Source, eventsPerSecond: number): Source {
  const startedAtMs = performance.now();
  let given = 0;
  return {
    description: `${source.description}, paced at ${eventsPerSecond} events/s`,
    partitions: source.partitions,
    open: (position) => source.open(position),
    position: () => source.position(),
    close: () => source.close(),
    originOf: source.originOf && ((partition, at) => source.originOf!(partition, at)),
    async nextBatch(maxItems) {
      const due = Math.floor(((performance.now() - startedAtMs) / 1000) * eventsPerSecond) - given;
      if (due <= 0) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return { items: [], isDone: false };
      }
      const batch = await source.nextBatch(Math.min(maxItems, due));
      given += batch.items.length;
      return batch;
    },
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-screenshot-"));
  mkdirSync(join(dir, "config"));
  const file = join(dir, "config/retention.yaml");
  const startIso = new Date(Date.now() - SPAN_MS).toISOString();
  writeFileSync(file, readFileSync(join(ROOT, "config/retention.yaml"), "utf8").replace("events: 300000,", `events: ${EVENTS}, start: "${startIso}",`));
  const spec = loadPipeline(file, process.env, { httpListen: "127.0.0.1:0" });
  const stop = new AbortController();
  const serverClosed = new AbortController();
  let server: Promise<HttpServer> | undefined;
  const options = jobOptions(spec, { signal: stop.signal, onView: (view) => (server = startHttpServer(spec.http!, routesFor({ view, spec, closed: serverClosed.signal }))) });
  // Paced to end a little after the photograph, which shows the job running.
  const running = runJob({ ...options, source: paced(options.source, EVENTS / (SECONDS + 30)) });
  const url = (await server!).url;
  console.log(`dashboard at ${url}; photographing in ${SECONDS} s`);
  const chromium = await launchChromium();
  try {
    const page = await chromium.browser.newPage();
    await page.setViewport({ width: 1500, height: 1000, deviceScaleFactor: 1 });
    page.on("console", (message) => message.type() === "error" && console.error(`page console: ${message.text()}`));
    await page.goto(url, { waitUntil: "load" });
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000 - 5_000));
    // A user whose segment changed lately, as a CRM would look one up (where the job answers key queries).
    const lines = readFileSync(join(dir, "out/retention/segments.jsonl"), "utf8").trimEnd().split("\n");
    const key = (JSON.parse(lines.at(-1)!) as { user_id: string }).user_id;
    const isAnswered = (await fetch(new URL(`/api/v1/keys/${encodeURIComponent(key)}`, url))).ok;
    if (isAnswered) {
      await page.type("#key-input", key);
      await page.click("#key-form button");
      await page.waitForSelector("#key-result table", { timeout: 5_000 });
    }
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await page.screenshot({ path: join(ROOT, "docs/dashboard.png"), fullPage: true });
    console.log(`docs/dashboard.png${isAnswered ? `, with ${key} looked up` : ": /api/v1/keys does not answer, no user shown"}`);
  } finally {
    await chromium.close();
    stop.abort();
    await running.catch(() => undefined);
    await (await server)?.close();
    serverClosed.abort();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
