// The dashboard's server side: what the sampler reads from a job (on a fake JobView whose operator
// offers the behaviour views' shapes), and the page, its assets, the series and the event stream
// served over HTTP, with and without a token.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { afterEach, describe, expect, it } from "vitest";
import type { JobView } from "../../../engine/jobView.ts";
import { DashboardSampler, dashboardRoutes, type Sample, type Series } from "../../../pipelines/http/dashboard.ts";
import { startHttpServer, type HttpServer } from "../../../pipelines/http/server.ts";
import type { PipelineSpec } from "../../../pipelines/validate.ts";
import { behaviourOperator, fakeJob } from "./fakeJobView.ts";

function samplerAt(view: JobView) {
  const clock = { nowMs: 1_000_000 };
  const sampler = new DashboardSampler(view, () => clock.nowMs, 5);
  return { clock, sampler };
}

describe("DashboardSampler", () => {
  it("gives events read per second over the time since the previous sample", () => {
    const { job, view } = fakeJob();
    const { clock, sampler } = samplerAt(view);
    job.counters.read = 1000;
    expect(sampler.sample().eventsPerSecond).toBe(0);
    job.counters.read = 4000;
    clock.nowMs += 2000;
    const sample = sampler.sample();
    expect(sample.eventsPerSecond).toBe(1500);
    expect(sample.read).toBe(4000);
  });

  it("starts rates after a restore, not across the counters it brings back", () => {
    const { job, view } = fakeJob();
    const { clock, sampler } = samplerAt(view);
    job.phase = "restoring";
    sampler.sample();
    job.phase = "running";
    job.counters.read = 1_000_000;
    clock.nowMs += 1000;
    expect(sampler.sample().eventsPerSecond).toBe(0);
    job.counters.read += 500;
    clock.nowMs += 1000;
    expect(sampler.sample().eventsPerSecond).toBe(500);
  });

  it("gives output latency p50 and p99 in ms when outputs reached a sink since the previous sample, null otherwise", () => {
    const { job, view } = fakeJob();
    const { clock, sampler } = samplerAt(view);
    expect(sampler.sample()).toMatchObject({ latencyP50Ms: null, latencyP99Ms: null });
    for (let i = 1; i <= 100; i++) job.latency.record(i / 1000);
    clock.nowMs += 1000;
    expect(sampler.sample()).toMatchObject({ latencyP50Ms: 51, latencyP99Ms: 100 });
    clock.nowMs += 1000;
    expect(sampler.sample()).toMatchObject({ latencyP50Ms: null, latencyP99Ms: null });
  });

  it("gives the watermark lag in seconds, and null without a watermark", () => {
    const { job, view } = fakeJob();
    const { clock, sampler } = samplerAt(view);
    expect(sampler.sample()).toMatchObject({ watermarkMs: null, watermarkLagSeconds: null });
    job.watermarkMs = clock.nowMs - 2500;
    expect(sampler.sample()).toMatchObject({ watermarkMs: clock.nowMs - 2500, watermarkLagSeconds: 2.5 });
    job.watermarkMs = Infinity;
    expect(sampler.sample().watermarkLagSeconds).toBeNull();
  });

  it("gives a checkpoint's duration, flush to durable, once: in the sample after it committed, the slowest of several", () => {
    const { job, view } = fakeJob();
    const { sampler } = samplerAt(view);
    job.checkpoint = { checkpointId: 7, entries: 10, bytes: 100, startedAtMs: 0, waitMs: 0, flushMs: 3, snapshotMs: 4, durableMs: 20, totalMs: 23, committedAtMs: 0 };
    expect(sampler.sample().checkpointMs).toBe(23);
    expect(sampler.sample().checkpointMs).toBeNull();
    job.checkpoint = { ...job.checkpoint, checkpointId: 8, flushMs: 1, durableMs: 9 };
    expect(sampler.sample().checkpointMs).toBe(10);
    // Several in one sample's time: the slowest shows.
    job.checkpoint = { ...job.checkpoint, checkpointId: 9, flushMs: 1, durableMs: 40 };
    job.checkpoint = { ...job.checkpoint, checkpointId: 10, flushMs: 1, durableMs: 4 };
    expect(sampler.sample().checkpointMs).toBe(41);
  });

  it("counts dead letters and late events, in total and per second", () => {
    const { job, view } = fakeJob();
    const { clock, sampler } = samplerAt(view);
    sampler.sample();
    job.counters.deadLettered = 6;
    job.counters.late = 3;
    clock.nowMs += 3000;
    expect(sampler.sample()).toMatchObject({ deadLetters: 6, deadLettersPerSecond: 2, late: 3, latePerSecond: 1 });
  });

  it("reads segments, triggers per channel and clusters from the operator that has those views, as they are at each sample", () => {
    const { job, view } = fakeJob();
    const counts = { segments: { groups: { lifecycle: { vip: 2, nuovo: 5 } }, tags: { mobile: 3 } }, clusters: { fedele: 4 }, triggersByChannel: { email: 1 } as Record<string, number> };
    job.operators = [{ name: "window" }, behaviourOperator(counts)];
    const { sampler } = samplerAt(view);
    expect(sampler.sample()).toMatchObject({ segments: counts.segments, clusters: { fedele: 4 }, triggersByChannel: { email: 1 } });
    counts.triggersByChannel = { email: 2, sms: 1 };
    expect(sampler.sample().triggersByChannel).toEqual({ email: 2, sms: 1 });
  });

  it("leaves out what no operator offers, and a view that throws", () => {
    const { job, view } = fakeJob();
    const { sampler } = samplerAt(view);
    const plain = sampler.sample();
    expect(plain).not.toHaveProperty("segments");
    expect(plain).not.toHaveProperty("clusters");
    expect(plain).not.toHaveProperty("triggersByChannel");
    const operator = behaviourOperator({ segments: { groups: {}, tags: {} }, clusters: {}, triggersByChannel: {} });
    job.operators = [{ name: "behaviour", view: { ...operator.view, views: { ...operator.view.views, clusters: () => { throw new Error("broken"); } } } }];
    const sample = sampler.sample();
    expect(sample).not.toHaveProperty("clusters");
    expect(sample.segments).toEqual({ groups: {}, tags: {} });
  });

  it("keeps only the latest samples, up to its capacity", () => {
    const { job, view } = fakeJob();
    const { sampler } = samplerAt(view);
    for (let i = 1; i <= 8; i++) {
      job.counters.read = i;
      sampler.sample();
    }
    expect(sampler.samples.map((s) => s.read)).toEqual([4, 5, 6, 7, 8]);
  });

  it("hands each new sample to its subscribers until they unsubscribe", () => {
    const { view } = fakeJob();
    const { sampler } = samplerAt(view);
    const seen: Sample[] = [];
    const unsubscribe = sampler.subscribe((s) => seen.push(s));
    sampler.sample();
    unsubscribe();
    sampler.sample();
    expect(seen).toHaveLength(1);
  });
});

const TOKEN = "a-token-of-sixteen-characters";
const servers: HttpServer[] = [];
const closers: AbortController[] = [];

afterEach(async () => {
  for (const closer of closers.splice(0)) closer.abort();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serveDashboard(token?: string) {
  const { job, view } = fakeJob();
  const closed = new AbortController();
  closers.push(closed);
  const routes = dashboardRoutes({ view, spec: { name: "shop" } as PipelineSpec, closed: closed.signal }, { intervalMs: 20 });
  const server = await startHttpServer({ host: "127.0.0.1", port: 0, token }, routes);
  servers.push(server);
  return { job, server, closed, url: (path: string) => new URL(path, server.url).href };
}

/** Reads server-sent events from `response` until `count` have come (or the stream ends). */
async function readEvents(response: Response, count: number): Promise<{ event: string; data: unknown }[]> {
  const events: { event: string; data: unknown }[] = [];
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (events.length < count) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event !== undefined && data !== undefined) events.push({ event, data: JSON.parse(data) });
    }
  }
  await reader.cancel();
  return events;
}

describe("the dashboard over HTTP", () => {
  it("serves the page, its script and uPlot from the package, and nothing else under /assets/", async () => {
    const { url } = await serveDashboard();
    const page = await fetch(url("/"));
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('<script src="/assets/uPlot.iife.min.js"></script>');
    expect(html).not.toMatch(/https?:\/\//);
    const uplot = await fetch(url("/assets/uPlot.iife.min.js"));
    expect(uplot.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(await uplot.text()).toBe(readFileSync(createRequire(import.meta.url).resolve("uplot/dist/uPlot.iife.min.js"), "utf8"));
    expect((await fetch(url("/assets/uPlot.min.css"))).status).toBe(200);
    expect((await fetch(url("/assets/dashboard.js"))).status).toBe(200);
    expect((await fetch(url("/assets/dashboard.css"))).status).toBe(200);
    expect((await fetch(url("/assets/package.json"))).status).toBe(404);
    expect((await fetch(url("/assets/..%2Fserver.ts"))).status).toBe(404);
  });

  it("streams the history first, then each new sample", async () => {
    const { job, url } = await serveDashboard();
    job.counters.read = 42;
    const response = await fetch(url("/api/v1/stream"));
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const [history, ...samples] = await readEvents(response, 3);
    expect(history.event).toBe("history");
    expect((history.data as Series).name).toBe("shop");
    expect(samples.map((s) => s.event)).toEqual(["sample", "sample"]);
    expect((samples[1].data as Sample).read).toBe(42);
    const series = (await (await fetch(url("/api/v1/series"))).json()) as Series;
    expect(series.samples.length).toBeGreaterThanOrEqual(2);
  });

  it("answers HEAD on the stream with its headers, without holding the connection", async () => {
    const { url } = await serveDashboard();
    const response = await fetch(url("/api/v1/stream"), { method: "HEAD" });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(await response.text()).toBe("");
  }, 5_000);

  it("ends open streams when the server closes", async () => {
    const { server, url } = await serveDashboard();
    const response = await fetch(url("/api/v1/stream"));
    const reading = readEvents(response, Infinity).catch(() => []);
    await server.close();
    expect((await reading).length).toBeGreaterThanOrEqual(0);
  }, 5_000);

  it("stops sampling and ends its streams when told the server closes", async () => {
    const { closed, url } = await serveDashboard();
    const response = await fetch(url("/api/v1/stream"));
    const reading = readEvents(response, Infinity);
    closed.abort();
    expect((await reading)[0].event).toBe("history");
    const before = ((await (await fetch(url("/api/v1/series"))).json()) as Series).samples.length;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(((await (await fetch(url("/api/v1/series"))).json()) as Series).samples.length).toBe(before);
  }, 5_000);

  describe("with a token", () => {
    it("serves the page and its assets to anyone: they hold nothing of the job", async () => {
      const { url } = await serveDashboard(TOKEN);
      expect((await fetch(url("/"))).status).toBe(200);
      expect((await fetch(url("/assets/dashboard.js"))).status).toBe(200);
    });

    it("asks the bearer token for the series, and takes it only in the header there", async () => {
      const { url } = await serveDashboard(TOKEN);
      expect((await fetch(url("/api/v1/series"))).status).toBe(401);
      expect((await fetch(url(`/api/v1/series?access_token=${TOKEN}`))).status).toBe(401);
      expect((await fetch(url("/api/v1/series"), { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    });

    it("takes the token as ?access_token= on the stream, which EventSource cannot send in a header", async () => {
      const { url } = await serveDashboard(TOKEN);
      expect((await fetch(url("/api/v1/stream"))).status).toBe(401);
      expect((await fetch(url("/api/v1/stream?access_token=wrong-token-of-sixteen-chars"))).status).toBe(401);
      const byQuery = await fetch(url(`/api/v1/stream?access_token=${TOKEN}`));
      expect(byQuery.status).toBe(200);
      expect((await readEvents(byQuery, 1))[0].event).toBe("history");
      const byHeader = await fetch(url("/api/v1/stream"), { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(byHeader.status).toBe(200);
      await byHeader.body!.cancel();
    });
  });
});
