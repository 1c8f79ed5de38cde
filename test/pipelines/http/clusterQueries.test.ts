// The HTTP API of cluster workers: any worker answers a key's state (its partition's holder does, over
// NATS) and the group's segment counts and members (gathered from every partition), as one process
// running the whole pipeline would.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobView } from "../../../engine/jobView.ts";
import { partitionOf } from "../../../engine/partitioning.ts";
import { runClusterPipeline } from "../../../pipelines/cluster.ts";
import { runPipeline } from "../../../pipelines/compile.ts";
import { ClusterQueries } from "../../../pipelines/http/clusterQueries.ts";
import { clusterRoutesFor, routesFor } from "../../../pipelines/http/routes.ts";
import { startHttpServer, type HttpServer } from "../../../pipelines/http/server.ts";
import { loadPipeline } from "../../../pipelines/load.ts";
import type { PipelineSpec } from "../../../pipelines/validate.ts";
import { eventSchemaYaml } from "../../fixtures/pipelines.ts";
import { clusterEvents, publishPartitioned } from "../../fixtures/clusterEvents.ts";
import { startNatsServer, type NatsServer } from "../../natsServer.ts";
import { removeTempDirs, tempDir } from "../pipelineFiles.ts";

const PARTITIONS = 4;
/** Every wait here is bounded by this much. */
const WAIT_LIMIT_MS = 60_000;

let server: NatsServer;
const cleanups: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  server = await startNatsServer();
}, 30_000);
afterAll(async () => {
  // A failed test must not leave workers running against a server that is gone.
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await server?.stop();
  removeTempDirs();
});

const events = (count: number, users: number) => clusterEvents(count, 7, users);
const publish = (stream: string, all: object[]) => publishPartitioned(server.url, stream, all, PARTITIONS);

/** Segments decided by each user's latest event only: no wake-ups, so the counts do not depend on how far the watermark went. */
function pipelineYaml(name: string, input: string, output: string, stateDir: string): string {
  return `name: ${name}
source: { nats: { servers: "${server.url}", stream: ${input}, subjects: ["${input.toLowerCase()}.>"], partitions: ${PARTITIONS}, bounded: false } }
${eventSchemaYaml({ fields: { price: "{ type: number }" } })}watermark: { maxOutOfOrderness: 10s }
state: { dir: ${stateDir}, checkpointInterval: 100ms }
segments:
  groups:
    latest:
      rules:
        - { name: buyer, when: 'event_type == "purchase"' }
        - { name: carter, when: 'event_type == "cart"' }
      default: browser
  tags:
    - { name: big_spender, when: 'price > 90.0' }
triggers:
  rules:
    cart_nudge:
      on: { segment: carter }
      message: "Il carrello ti aspetta"
      channels: [email]
      experiment: { holdout: 20%, goal: 'event_type == "purchase"', within: 5m, report: 10m }
sinks:
  - { nats: { servers: "${server.url}", stream: ${output}, subject: ${output.toLowerCase()}.out } }
deadLetter: { nats: { servers: "${server.url}", stream: ${output}, subject: ${output.toLowerCase()}.dead } }
cluster: { group: ${name}, leaseTtl: 2s }
`;
}

function specOf(dir: string, yaml: string): PipelineSpec {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  return loadPipeline(file);
}

type Answer = { status: number; json: any; retryAfter: string | null };

async function get(base: string, path: string): Promise<Answer> {
  const response = await fetch(new URL(path, base));
  return { status: response.status, json: await response.json(), retryAfter: response.headers.get("retry-after") };
}

/** Asks until `isDone` holds of the answer (bounded): the workers settle their partitions meanwhile. */
async function getUntil(base: string, path: string, isDone: (answer: Answer) => boolean, what: string): Promise<Answer> {
  const deadline = Date.now() + WAIT_LIMIT_MS;
  for (;;) {
    const answer = await get(base, path);
    if (isDone(answer)) return answer;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(answer)} after ${WAIT_LIMIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A worker of the group in this process, with its own HTTP server. */
async function startWorker(spec: PipelineSpec): Promise<{ url: string; queries: ClusterQueries }> {
  const stop = new AbortController();
  const closed = new AbortController();
  const queries = new ClusterQueries(spec, { signal: stop.signal });
  const running = runClusterPipeline(spec, {
    signal: stop.signal,
    onPartitionView: (partition, view) => queries.onPartitionView(partition, view),
    onEvent: (event) => queries.onEvent(event),
  });
  const http: HttpServer = await startHttpServer({ host: "127.0.0.1", port: 0 }, clusterRoutesFor(queries, { spec, closed: closed.signal }));
  cleanups.push(async () => {
    stop.abort(new Error("stopped"));
    await running.catch(() => undefined);
    closed.abort();
    await http.close();
    await queries.close();
  });
  return { url: http.url, queries };
}

/** The same pipeline as one process over every partition: its HTTP answers once it has read `count` events. */
async function startSingle(spec: PipelineSpec, count: number): Promise<string> {
  const stop = new AbortController();
  const closed = new AbortController();
  let resolveView: (view: JobView) => void;
  const viewed = new Promise<JobView>((resolve) => (resolveView = resolve));
  const running = runPipeline(spec, { signal: stop.signal, onView: (view) => resolveView(view) });
  const view = await viewed;
  const http = await startHttpServer({ host: "127.0.0.1", port: 0 }, routesFor({ view, spec, closed: closed.signal }));
  cleanups.push(async () => {
    stop.abort(new Error("stopped"));
    await running.catch(() => undefined);
    closed.abort();
    await http.close();
  });
  await getUntil(http.url, "/api/v1/pipeline", (a) => a.json.counters?.read === count, "the single process reading every event");
  return http.url;
}

/** Every member of a segment, page by page of `limit`. */
async function allMembers(base: string, group: string, segment: string, limit: number): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | null = null;
  do {
    const { status, json } = await get(base, `/api/v1/segments/${group}/${segment}?limit=${limit}${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`);
    expect(status, JSON.stringify(json)).toBe(200);
    expect(json.keys.length).toBeLessThanOrEqual(limit);
    keys.push(...json.keys);
    cursor = json.nextCursor;
  } while (cursor !== null);
  return keys;
}

describe("the HTTP API of cluster workers", () => {
  it("answers a key's state and the group's segments from any worker, as one process over every partition does", async () => {
    const dir = tempDir("flusso-cluster-http-");
    const all = events(4000, 200);
    await publish("INQ", all);
    const spec = specOf(dir, pipelineYaml("chq", "INQ", "OUTQ", join(dir, "state")));
    const [a, b] = await Promise.all([startWorker(spec), startWorker(spec)]);

    // 1. both hold a fair share, and between them have read every event.
    const settled = async () => {
      const pipelines = await Promise.all([a, b].map((w) => get(w.url, "/api/v1/pipeline")));
      const held = pipelines.map((p) => p.json.cluster.partitions as number[]);
      const read = pipelines.reduce((n, p) => n + p.json.counters.read, 0);
      return { pipelines, held, isSettled: held.every((h) => h.length === PARTITIONS / 2) && read === all.length && pipelines.every((p) => p.json.status.phase === "running") };
    };
    const deadline = Date.now() + WAIT_LIMIT_MS;
    let state = await settled();
    while (!state.isSettled) {
      if (Date.now() > deadline) throw new Error(`the workers did not settle: ${JSON.stringify(state.pipelines.map((p) => p.json))}`);
      await new Promise((r) => setTimeout(r, 100));
      state = await settled();
    }
    const [heldByA, heldByB] = state.held;
    expect([...heldByA, ...heldByB].sort()).toEqual([0, 1, 2, 3]);
    for (const { json } of state.pipelines) {
      expect(json.cluster.group).toBe("chq");
      expect(json.cluster.workerId).toEqual(expect.any(String));
      // Each partition listed under its own number.
      expect(json.partitions.map((p: { partition: number }) => p.partition)).toEqual(json.cluster.partitions);
    }
    expect(state.pipelines[0].json.cluster.workerId).not.toBe(state.pipelines[1].json.cluster.workerId);

    // 2. a user of each worker's partitions, asked of both workers.
    const users = [...new Set(all.map((e) => e.user_id))];
    for (const held of [heldByA, heldByB]) {
      const user = users.find((u) => held.includes(partitionOf(u, PARTITIONS)))!;
      const fromA = await getUntil(a.url, `/api/v1/keys/${user}`, (r) => r.status !== 503, `${user} from worker A`);
      const fromB = await getUntil(b.url, `/api/v1/keys/${user}`, (r) => r.status !== 503, `${user} from worker B`);
      expect(fromA.status, JSON.stringify(fromA.json)).toBe(200);
      expect(fromA.json.key).toBe(user);
      expect(fromA.json).toEqual(fromB.json);
    }
    expect((await get(a.url, "/api/v1/keys/nobody")).status).toBe(404);

    // 3. the group's segment counts, the same from either worker and from one process over every partition.
    const fromA = await getUntil(a.url, "/api/v1/segments", (r) => r.status !== 503, "segments from worker A");
    const fromB = await getUntil(b.url, "/api/v1/segments", (r) => r.status !== 503, "segments from worker B");
    expect(fromA.status).toBe(200);
    expect(fromA.json).toEqual(fromB.json);
    const single = await startSingle(specOf(dir, pipelineYaml("chqsingle", "INQ", "OUTQS", join(dir, "state-single")).replace(/cluster:.*\n/, "")), all.length);
    const fromSingle = await get(single, "/api/v1/segments");
    expect(fromA.json).toEqual(fromSingle.json);
    const latest = fromA.json.groups.latest as Record<string, number>;
    expect(latest.buyer + latest.carter + latest.browser).toBe(users.length);
    expect(latest.buyer).toBeGreaterThan(0);
    expect(fromA.json.tags.big_spender).toBeGreaterThan(0);

    // 4. a segment's members, page by page across partitions: every member once, in key order, as one process pages them.
    const members = await allMembers(b.url, "latest", "carter", 7);
    expect(members).toEqual([...members].sort());
    expect(new Set(members).size).toBe(latest.carter);
    expect(members).toEqual(await allMembers(single, "latest", "carter", 7));
    expect((await get(a.url, "/api/v1/segments/latest/nothing")).status).toBe(404);

    // 5. the group's experiment reports, written by partition 0's job: the same from either worker.
    const hasReport = (r: { status: number; json: { experiments?: Array<{ report: unknown }> } }) => r.status === 200 && r.json.experiments?.[0]?.report !== null;
    const reportsFromA = await getUntil(a.url, "/api/v1/experiments", hasReport, "experiment reports from worker A");
    const reportsFromB = await getUntil(b.url, "/api/v1/experiments", hasReport, "experiment reports from worker B");
    expect(reportsFromA.json.experiments.map((e: { experiment: string }) => e.experiment)).toEqual(["cart_nudge"]);
    expect(reportsFromA.json.experiments[0].report.time_ms).toBeLessThanOrEqual(reportsFromB.json.experiments[0].report.time_ms);
  }, 120_000);

  it("says which partitions are being taken over, with a Retry-After, when nobody holds them", async () => {
    const dir = tempDir("flusso-cluster-http-none-");
    const spec = specOf(dir, pipelineYaml("nobody", "INNONE", "OUTNONE", join(dir, "state")));
    // Queries of a group with no worker running.
    const queries = new ClusterQueries(spec);
    cleanups.push(() => queries.close());
    const http = await startHttpServer({ host: "127.0.0.1", port: 0 }, clusterRoutesFor(queries, { spec }));
    cleanups.push(() => http.close());
    const key = await get(http.url, "/api/v1/keys/u1");
    expect(key.status).toBe(503);
    expect(key.json.error).toBe(`partition ${partitionOf("u1", PARTITIONS)} is being taken over; try again`);
    expect(key.retryAfter).toBe("2");
    const segments = await get(http.url, "/api/v1/segments");
    expect(segments.status).toBe(503);
    expect(segments.json.missingPartitions).toEqual([0, 1, 2, 3]);
    const pipeline = await get(http.url, "/api/v1/pipeline");
    expect(pipeline.json.cluster).toMatchObject({ group: "nobody", partitions: [] });
    expect(pipeline.json.status.phase).toBe("starting");
    expect((await get(http.url, "/readyz")).status).toBe(503);
  }, 30_000);
});
