// GET /metrics: at the end of a bounded run the counters equal the job's summary, outputs by kind
// equal the lines written, the output-latency histogram counts every output that reached a sink,
// end-to-end latency is there only with http.latencyStampField, NATS partitions report their
// backlog, and `promtool check metrics` finds nothing wrong with the exposition.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { END_OF_TIME } from "../../engine/elements.ts";
import type { JobView } from "../../engine/jobView.ts";
import type { JobResult } from "../../engine/job.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { watermarkLagSeconds } from "../../pipelines/http/metrics.ts";
import { routesFor } from "../../pipelines/http/routes.ts";
import { startHttpServer } from "../../pipelines/http/server.ts";
import { loadPipeline, parsePipelineText } from "../../pipelines/load.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { validatePipeline } from "../../pipelines/validate.ts";
import { WAKE_UP_STEPS_COUNTER } from "../../operators/behaviour.ts";
import { eventSchemaYaml, windowPipelineYaml } from "../fixtures/pipelines.ts";
import { readStream, startNatsServer } from "../natsServer.ts";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "./pipelineFiles.ts";

afterAll(removeTempDirs);

type Series = Map<string, number>;

/** Every sample of the exposition, by `name{labels}` as written (labels in prom-client's order). */
function parse(text: string): Series {
  const series: Series = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    series.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return series;
}

/** What `promtool check metrics` says of `text` (it reads stdin): its exit code and output. */
function promtool(text: string): { status: number | null; output: string } {
  const run = spawnSync("/usr/bin/promtool", ["check", "metrics"], { input: text, encoding: "utf8", timeout: 20_000 });
  if (run.error) throw new Error(`promtool could not run (apt-get install prometheus): ${run.error.message}`);
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

function lineCount(path: string): number {
  return readFileSync(path, "utf8").split("\n").filter((line) => line !== "").length;
}

/** Runs `pipeline` to its end with the HTTP server up, and scrapes /metrics once it has ended; the watermark moves between batches. */
async function runAndScrape(pipeline: string, batchSize = 50): Promise<{ result: JobResult; metrics: string; contentType: string | null }> {
  const spec = loadPipeline(pipeline, {}, { httpListen: "127.0.0.1:0" });
  let server: ReturnType<typeof startHttpServer> | undefined;
  const result = await runPipeline(spec, { batchSize, onView: (view: JobView) => (server = startHttpServer(spec.http!, routesFor({ view, spec }))) });
  const { url, close } = await server!;
  try {
    const response = await fetch(`${url}metrics`);
    expect(response.status).toBe(200);
    return { result, metrics: await response.text(), contentType: response.headers.get("content-type") };
  } finally {
    await close();
  }
}

/** The shipped retention pipeline on a small generated population, its state and outputs in a temp dir. */
function retentionProject(): string {
  const dir = tempDir("flusso-metrics-");
  mkdirSync(join(dir, "config"));
  const yaml = readFileSync(join(PROJECT_ROOT, "config/retention.yaml"), "utf8").replace("users: 20000\n", "users: 300\n").replace("events: 300000\n", "events: 6000\n");
  expect(yaml).toContain("users: 300\n");
  expect(yaml).toContain("events: 6000\n");
  writeFileSync(join(dir, "config/retention.yaml"), yaml);
  return join(dir, "config/retention.yaml");
}

describe("GET /metrics", () => {
  it("at the end of a bounded run, matches the job's summary and the lines written, and passes promtool", async () => {
    const pipeline = retentionProject();
    const { result, metrics, contentType } = await runAndScrape(pipeline);
    expect(contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
    const series = parse(metrics);
    const { counters } = result;
    expect(series.get("flusso_events_read_total")).toBe(counters.read);
    expect(counters.read).toBe(6000);
    expect(series.get("flusso_events_dead_lettered_total")).toBe(counters.deadLettered);
    expect(series.get("flusso_events_late_total")).toBe(counters.late);
    expect(series.get("flusso_checkpoints_total")).toBe(counters.checkpoints);
    expect(counters[WAKE_UP_STEPS_COUNTER]).toBeGreaterThan(0);
    expect(series.get("flusso_wake_ups_total")).toBe(counters[WAKE_UP_STEPS_COUNTER]);

    // Each sink takes its own kinds: lines written per file equal the outputs counted for them.
    const out = resolve(pipeline, "../../out/retention");
    const kind = (k: string) => series.get(`flusso_outputs_total{kind="${k}"}`) ?? 0;
    expect(kind("trigger")).toBe(lineCount(join(out, "triggers.jsonl")));
    expect(kind("segment")).toBe(lineCount(join(out, "segments.jsonl")));
    expect(kind("kbi")).toBe(lineCount(join(out, "kbis.jsonl")));
    expect(kind("clusters") + kind("cluster_retention")).toBe(lineCount(join(out, "clusters.jsonl")));
    const allLines = readdirSync(out)
      .filter((f) => f.endsWith(".jsonl"))
      .reduce((sum, f) => sum + lineCount(join(out, f)), 0);
    const byKind = [...series].filter(([name]) => name.startsWith("flusso_outputs_total{")).reduce((sum, [, n]) => sum + n, 0);
    expect(kind("trigger")).toBeGreaterThan(0);
    expect(byKind).toBe(allLines);

    // Every output that reached a sink is in the latency histogram, once; none waited past its last bucket.
    expect(series.get("flusso_output_latency_seconds_count")).toBe(allLines);
    expect(series.get('flusso_output_latency_seconds_bucket{le="+Inf"}')).toBe(allLines);
    expect(series.get('flusso_output_latency_seconds_bucket{le="5"}')).toBe(allLines);
    expect(series.get("flusso_checkpoint_duration_seconds_count")).toBe(counters.checkpoints);
    expect(series.get("flusso_checkpoint_size_bytes")).toBeGreaterThan(0);
    expect(series.get("flusso_state_keys")).toBeGreaterThan(0);
    // The input ended: event time is at its end, nothing is behind.
    expect(series.get("flusso_watermark_lag_seconds")).toBe(0);
    expect(series.has("process_cpu_user_seconds_total")).toBe(true);
    expect(metrics).not.toContain("flusso_end_to_end_latency_seconds");
    expect(metrics).not.toContain("flusso_source_pending_messages{");

    const check = promtool(metrics);
    expect(check.output).toBe("");
    expect(check.status).toBe(0);
  });

  it("measures end-to-end latency from http.latencyStampField, and only then", async () => {
    const dir = tempDir("flusso-metrics-stamp-");
    const sentAtMs = Date.now() - 1_000;
    const startMs = Date.UTC(2024, 4, 20);
    const events = Array.from({ length: 500 }, (_, i) => ({ user_id: `u${i % 7}`, timestamp: startMs + i * 10_000, event_type: "view", sent_at: sentAtMs }));
    // Three lines that are not events, and two events an hour behind the watermark: dead letters and late ones.
    const lines = events.map((e) => JSON.stringify(e));
    for (const at of [300, 200, 100]) lines.splice(at, 0, "{not json");
    for (const at of [400, 250]) lines.splice(at, 0, JSON.stringify({ ...events[at], timestamp: events[at].timestamp - 3_600_000 }));
    writeFileSync(join(dir, "events.jsonl"), lines.join("\n") + "\n");
    const yaml = (http: string) =>
      windowPipelineYaml({
        name: "stamped",
        source: "{ file: { path: events.jsonl, format: jsonl } }",
        schema: eventSchemaYaml({ fields: { sent_at: "{ type: number }" } }),
        state: "{ dir: state, checkpointInterval: 1h }",
        windows: ["name: minute\ntype: tumbling\nsize: 1m\naggregate:\n  events: count"],
        sinks: ["file: { path: out/minutes.jsonl }"],
        deadLetter: "{ file: { path: out/dead.jsonl } }",
      }) + http;
    // The stamp is read as the source read the event: a field privacy does not keep still serves.
    writeFileSync(join(dir, "stamped.yaml"), yaml("http: { latencyStampField: sent_at }\nprivacy: { keep: [user_id, timestamp, event_type] }\n"));
    writeFileSync(join(dir, "plain.yaml"), yaml("").replace("dir: state", "dir: plain-state").replaceAll("out/", "plain-out/"));

    const run = await runAndScrape(join(dir, "stamped.yaml"));
    const stamped = parse(run.metrics);
    const { counters } = run.result;
    expect([counters.deadLettered, counters.late]).toEqual([3, 2]);
    expect(stamped.get("flusso_events_dead_lettered_total")).toBe(3);
    expect(stamped.get("flusso_events_late_total")).toBe(2);
    // Late events go to the dead-letter file (no late: output), counted under their own kind.
    expect((stamped.get('flusso_outputs_total{kind="dead_letter"}') ?? 0) + (stamped.get('flusso_outputs_total{kind="late"}') ?? 0)).toBe(lineCount(join(dir, "out/dead.jsonl")));
    const windowLines = lineCount(join(dir, "out/minutes.jsonl"));
    expect(stamped.get('flusso_outputs_total{kind="window"}')).toBe(windowLines);
    const outputs = windowLines + 5;
    expect(stamped.get("flusso_output_latency_seconds_count")).toBe(outputs);
    // Windows fired by the events' watermark carry their stamp; those the end of the input fires carry none.
    const stampedCount = stamped.get("flusso_end_to_end_latency_seconds_count")!;
    expect(stampedCount).toBeGreaterThan(0);
    expect(stampedCount).toBeLessThanOrEqual(outputs);
    // Stamped a second before the file was even written: no output can have taken less.
    expect(stamped.get('flusso_end_to_end_latency_seconds_bucket{le="0.75"}')).toBe(0);
    expect(stamped.get("flusso_end_to_end_latency_seconds_sum")! / stampedCount).toBeGreaterThanOrEqual(1);

    const { metrics } = await runAndScrape(join(dir, "plain.yaml"));
    expect(parse(metrics).get("flusso_output_latency_seconds_count")).toBe(outputs);
    expect(metrics).not.toContain("flusso_end_to_end_latency_seconds");
  });

  it("reports a NATS source's pending messages by partition, and a NATS sink's outputs once delivered", async () => {
    const nats = await startNatsServer();
    try {
      const nc = await connect({ servers: nats.url });
      await (await jetstreamManager(nc)).streams.add({ name: "EVENTS", subjects: ["events.>"] });
      const js = jetstream(nc);
      const startMs = Date.UTC(2024, 4, 20);
      for (let i = 0; i < 200; i++) await js.publish(`events.${i % 2}`, JSON.stringify({ user_id: `u${i % 5}`, timestamp: startMs + i * 1000, event_type: "view" }));
      await nc.close();
      const dir = tempDir("flusso-metrics-nats-");
      writeFileSync(
        join(dir, "nats.yaml"),
        windowPipelineYaml({
          name: "fromnats",
          source: `{ nats: { servers: "${nats.url}", stream: EVENTS, subjects: ["events.>"], format: json, partitions: 2, bounded: true } }`,
          schema: eventSchemaYaml(),
          state: "{ dir: state, checkpointInterval: 1h }",
          windows: ["name: minute\ntype: tumbling\nsize: 1m\naggregate:\n  events: count"],
          sinks: [`nats: { servers: "${nats.url}", stream: OUT, subject: out.minutes }`],
          deadLetter: "{ file: { path: out/dead.jsonl } }",
        }),
      );
      const { result, metrics } = await runAndScrape(join(dir, "nats.yaml"));
      expect(result.counters.read).toBe(200);
      const series = parse(metrics);
      // Published after their checkpoint committed, and counted once the server acked them all.
      const published = (await readStream(nats.url, "OUT")).length;
      expect(published).toBeGreaterThan(0);
      expect(series.get('flusso_outputs_total{kind="window"}')).toBe(published);
      expect(series.get("flusso_output_latency_seconds_count")).toBe(published);
      // Read to the end: nothing waits in either partition.
      expect(series.get('flusso_source_pending_messages{partition="0"}')).toBe(0);
      expect(series.get('flusso_source_pending_messages{partition="1"}')).toBe(0);
      expect(promtool(metrics).status).toBe(0);
    } finally {
      await nats.stop();
    }
  });

  it("tells the watermark lag as processing time minus the watermark, none before the first, 0 after the end", () => {
    const nowMs = Date.UTC(2026, 11, 6, 5);
    expect(watermarkLagSeconds(-Infinity, nowMs)).toBeUndefined();
    expect(watermarkLagSeconds(nowMs - 7_500, nowMs)).toBe(7.5);
    expect(watermarkLagSeconds(nowMs + 2_000, nowMs)).toBe(-2);
    expect(watermarkLagSeconds(END_OF_TIME, nowMs)).toBe(0);
  });

  it("refuses a latencyStampField that is not a number or timestamp field of the schema; one privacy does not keep is fine", () => {
    const mistakes = (fields: string, privacy: string) => {
      const text =
        windowPipelineYaml({
          name: "stamps",
          source: "{ file: { path: events.jsonl, format: jsonl } }",
          schema: eventSchemaYaml({ fields: { sent_at: fields, note: "{ type: string }" } }),
          state: "{ dir: state }",
          windows: ["name: minute\ntype: tumbling\nsize: 1m\naggregate:\n  events: count"],
          sinks: ["file: { path: out/minutes.jsonl }"],
        }) + `http: { latencyStampField: sent_at }\n${privacy}`;
      try {
        validatePipeline(parsePipelineText(text, "stamps.yaml", {}), "stamps.yaml", "/tmp", { checksFiles: false });
        return [];
      } catch (error) {
        if (!(error instanceof PipelineInvalid)) throw error;
        return error.errors.map((e) => e.message);
      }
    };
    expect(mistakes("{ type: number }", "")).toEqual([]);
    expect(mistakes("{ type: timestamp }", "")).toEqual([]);
    expect(mistakes("{ type: string }", "")).toEqual([expect.stringMatching(/^http\.latencyStampField: "sent_at" is not a number or timestamp field of the schema \(timestamp\)/)]);
    expect(mistakes("{ type: number }", "privacy: { keep: [user_id, timestamp, event_type] }\n")).toEqual([]);
  });
});
