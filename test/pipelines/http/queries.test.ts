// State queries over HTTP on a shipped pipeline run in-process: after the input ends every user's
// /api/v1/keys answer holds the last values the outputs gave (features, KBI labels, segments,
// phase) and /api/v1/segments the counts a recount of the enter/exit outputs gives; while the job
// runs, no answer is torn; pseudonymised ids are queried by the raw id and never shown.
import { afterAll, describe, expect, it } from "vitest";
import type { JobResult } from "../../../engine/job.ts";
import type { JobView } from "../../../engine/jobView.ts";
import { runPipeline } from "../../../pipelines/compile.ts";
import { routesFor } from "../../../pipelines/http/routes.ts";
import { startHttpServer, type HttpServer } from "../../../pipelines/http/server.ts";
import { loadPipeline } from "../../../pipelines/load.ts";
import { removeTempDirs, tempDir } from "../pipelineFiles.ts";
import { shippedVariant, variantOutput } from "../shipped.ts";

type Obj = Record<string, any>;

afterAll(removeTempDirs);

/** Runs the pipeline in `file` with its HTTP server on a free port; `done` settles when the input has ended. */
async function runServed(file: string, batchSize?: number): Promise<{ url: string; view: JobView; done: Promise<JobResult>; isDone: () => boolean; close: () => Promise<void> }> {
  const spec = loadPipeline(file);
  let serverStarted!: (server: Promise<HttpServer>) => void;
  const server = new Promise<Promise<HttpServer>>((resolve) => (serverStarted = resolve));
  let hasEnded = false;
  let jobView: JobView | undefined;
  const done = runPipeline(spec, {
    reset: true,
    ...(batchSize === undefined ? {} : { batchSize }),
    onView: (view) => {
      jobView = view;
      serverStarted(startHttpServer({ host: "127.0.0.1", port: 0 }, routesFor({ view, spec })));
    },
  }).finally(() => (hasEnded = true));
  const started = await Promise.race([server.then((s) => s), done.then(() => undefined)]);
  if (started === undefined) throw new Error("the job ended before it offered its view");
  const s = await started;
  return { url: s.url.replace(/\/$/, ""), view: jobView!, done, isDone: () => hasEnded, close: () => s.close() };
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Obj }> {
  const response = await fetch(url, { headers });
  return { status: response.status, body: (await response.json()) as Obj };
}

/** The last value each user had in `outputs`, as `pick` reads it (outputs are in emission order). */
function lastBy<T>(outputs: Obj[], pick: (o: Obj) => [string, T] | undefined): Map<string, Map<string, T>> {
  const last = new Map<string, Map<string, T>>();
  for (const o of outputs) {
    const picked = pick(o);
    if (picked === undefined) continue;
    const byUser = last.get(o.user_id) ?? new Map<string, T>();
    byUser.set(picked[0], picked[1]);
    last.set(o.user_id, byUser);
  }
  return last;
}

/** Users per group and segment from the enter/exit outputs alone. */
function recount(segmentOutputs: Obj[]): Record<string, Record<string, number>> {
  const counts: Record<string, Record<string, number>> = {};
  for (const o of segmentOutputs) {
    counts[o.group] ??= {};
    counts[o.group][o.segment] = (counts[o.group][o.segment] ?? 0) + (o.change === "enter" ? 1 : -1);
  }
  return counts;
}

/** The counts without the segments nobody is in (the recount never names those). */
function withoutZeros(counts: Record<string, Record<string, number>>): Record<string, Record<string, number>> {
  return Object.fromEntries(Object.entries(counts).map(([g, bySegment]) => [g, Object.fromEntries(Object.entries(bySegment).filter(([, n]) => n !== 0))]));
}

/** The label the retention KBIs give these features (config/retention.yaml): what one step always writes together. */
function expectedKbis(features: Obj): Obj {
  const above = (x: number | null, t: number) => x !== null && x > t;
  // visit_frequency is visits / 7, shown to 12 digits: compared as the count of visits it is.
  const visits = features.visit_frequency === null ? null : Math.round(features.visit_frequency * 7);
  return {
    frequency_kbi: above(visits, 3) ? "active" : visits !== null && visits < 1 ? "occasional" : "regular",
    abandonment_kbi: above(features.cart_abandonment, 0.4) ? "high_risk" : "normal",
    content_kbi: above(features.content_interaction, 0.5) ? "engaged" : "not_engaged",
  };
}

describe("state queries on config/retention.yaml", () => {
  it("answers every user with the last values of the outputs, counts segments, clusters and triggers as the outputs do, and is never torn while the job runs", async () => {
    const dir = tempDir("flusso-queries-retention-");
    const file = shippedVariant("retention", dir, {
      users: 600,
      eventCount: 15_000,
      edit: (p) => {
        // Erasures remove members without an exit output: kept out here, so the outputs alone recount.
        delete p.privacy.erase;
        p.sinks = p.sinks.filter((s: Obj) => !s.outputs.includes("erasure"));
        p.sinks.push({ file: { path: `${dir}/out/features.jsonl` }, outputs: ["features", "phase", "cluster"] });
      },
    });
    const job = await runServed(file, 100);
    // 1. While the job runs: every answer is a cut between two steps.
    let answersWhileRunning = 0;
    const sampleUsers = ["u000001", "u000002", "u000003"];
    const behaviourView = job.view.operators().find((op) => op.view?.views?.clusters !== undefined)!.view!;
    while (!job.isDone()) {
      // Counted from the first query on, then kept up to date as the job goes: checked at the end.
      for (const size of Object.values(behaviourView.views!.clusters({}) as Record<string, number>)) expect(size).toBeGreaterThanOrEqual(0);
      const [segments, ...users] = await Promise.all([get(`${job.url}/api/v1/segments`), ...sampleUsers.map((u) => get(`${job.url}/api/v1/keys/${u}`))]);
      if (job.isDone()) break;
      answersWhileRunning++;
      expect(segments.status).toBe(200);
      for (const n of Object.values(segments.body.groups.lifecycle as Record<string, number>)) expect(n).toBeGreaterThanOrEqual(0);
      for (const user of users) {
        if (user.status === 404) continue;
        const { features, kbis } = user.body.stages;
        if (features !== undefined && kbis !== undefined) expect({ frequency_kbi: kbis.frequency_kbi, abandonment_kbi: kbis.abandonment_kbi, content_kbi: kbis.content_kbi }, JSON.stringify(user.body)).toEqual(expectedKbis(features));
      }
    }
    const result = await job.done;
    expect(result.isComplete).toBe(true);
    expect(answersWhileRunning).toBeGreaterThan(3);

    // 2. After the end: every user, against the outputs.
    try {
      const featureOutputs = variantOutput(dir, "features.jsonl");
      const segmentOutputs = variantOutput(dir, "segments.jsonl");
      const lastFeatures = lastBy(featureOutputs, (o) => (o.output === "features" ? ["vector", o] : undefined));
      const lastPhase = lastBy(featureOutputs, (o) => (o.output === "phase" ? ["phase", o.phase as string] : undefined));
      const lastLabels = lastBy(variantOutput(dir, "kbis.jsonl"), (o) => [o.kbi as string, o.label as string | null]);
      const lastSegments = lastBy(segmentOutputs, (o) => (o.change === "enter" ? [o.group as string, o.segment as string] : undefined));
      const users = new Set([...lastFeatures.keys(), ...lastPhase.keys(), ...lastLabels.keys(), ...lastSegments.keys()]);
      expect(users.size).toBeGreaterThan(300);
      for (const user of users) {
        const { status, body } = await get(`${job.url}/api/v1/keys/${encodeURIComponent(user)}`);
        expect(status, user).toBe(200);
        expect(body.key).toBe(user);
        const stages = body.stages;
        const vector = lastFeatures.get(user)?.get("vector");
        if (vector !== undefined) {
          const { output, user_id, time, time_ms, ...values } = vector;
          expect(stages.features, user).toEqual(values);
        }
        expect(stages.kbis, user).toMatchObject(Object.fromEntries(lastLabels.get(user) ?? []));
        expect(stages.segments.groups, user).toEqual(Object.fromEntries(lastSegments.get(user) ?? []));
        expect(stages.phases?.phase, user).toBe(lastPhase.get(user)?.get("phase"));
        expect(body.last_event_ms, user).toBeTypeOf("number");
        for (const w of body.wake_ups) expect(w.time).toBe(new Date(w.time_ms).toISOString());
      }
      // An unknown key.
      expect((await get(`${job.url}/api/v1/keys/nobody`)).status).toBe(404);

      const counts = await get(`${job.url}/api/v1/segments`);
      expect(counts.status).toBe(200);
      expect(withoutZeros(counts.body.groups)).toEqual(withoutZeros(recount(segmentOutputs)));
      expect(counts.body.tags).toEqual({});

      // 3. Members, page by page, are the users whose last lifecycle segment it is, each once, in key order.
      for (const [segment, n] of Object.entries(counts.body.groups.lifecycle as Record<string, number>)) {
        const members: string[] = [];
        let cursor: string | null = null;
        do {
          const page: { status: number; body: Obj } = await get(`${job.url}/api/v1/segments/lifecycle/${segment}?limit=37${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`);
          expect(page.status).toBe(200);
          expect(page.body.keys.length).toBeLessThanOrEqual(37);
          members.push(...page.body.keys);
          cursor = page.body.nextCursor;
        } while (cursor !== null);
        expect(members).toHaveLength(n);
        expect(members).toEqual([...members].sort());
        expect(members).toEqual([...users].filter((u) => lastSegments.get(u)?.get("lifecycle") === segment).sort());
      }
      expect((await get(`${job.url}/api/v1/segments/lifecycle/vip?limit=0`)).status).toBe(400);
      expect((await get(`${job.url}/api/v1/segments/lifecycle/vip?limit=1001`)).status).toBe(400);
      expect((await get(`${job.url}/api/v1/segments/lifecycle/vip?limit=ten`)).status).toBe(400);
      expect((await get(`${job.url}/api/v1/segments/lifecycle/nobody`)).status).toBe(404);
      expect((await get(`${job.url}/api/v1/segments/nogroup/vip`)).status).toBe(404);

      // 4. The views the dashboard reads: users per cluster now, triggers per channel so far.
      const lastCluster = lastBy(featureOutputs, (o) => (o.output === "cluster" ? ["cluster", o.cluster as string] : undefined));
      const clusterSizes: Record<string, number> = {};
      for (const byUser of lastCluster.values()) clusterSizes[byUser.get("cluster")!] = (clusterSizes[byUser.get("cluster")!] ?? 0) + 1;
      expect(withoutZeros({ c: behaviourView.views!.clusters({}) as Record<string, number> })).toEqual({ c: clusterSizes });
      expect(Object.keys(clusterSizes).length).toBeGreaterThan(1);
      const sentByChannel: Record<string, number> = {};
      for (const t of variantOutput(dir, "triggers.jsonl")) for (const channel of (t.channels ?? t.canali) as string[]) sentByChannel[channel] = (sentByChannel[channel] ?? 0) + 1;
      expect(withoutZeros({ c: behaviourView.views!.triggersByChannel({}) as Record<string, number> })).toEqual({ c: sentByChannel });
      expect(Object.keys(sentByChannel).length).toBeGreaterThan(0);
    } finally {
      await job.close();
    }
  }, 60_000);
});

describe("state queries on config/segments.yaml", () => {
  it("keeps every group's counts summing to the same users in every answer while the job runs, and ends with the recount of the outputs", async () => {
    const dir = tempDir("flusso-queries-segments-");
    const file = shippedVariant("segments", dir, { users: 800, eventCount: 15_000 });
    const job = await runServed(file, 100);
    let answersWhileRunning = 0;
    try {
      while (!job.isDone()) {
        const { status, body } = await get(`${job.url}/api/v1/segments`);
        if (job.isDone()) break;
        answersWhileRunning++;
        expect(status).toBe(200);
        // Every user in one group's segment is in exactly one segment of the other: equal sums.
        const sums = Object.values(body.groups as Record<string, Record<string, number>>).map((bySegment) => Object.values(bySegment).reduce((a, b) => a + b, 0));
        expect(new Set(sums).size).toBe(1);
        for (const n of Object.values(body.tags as Record<string, number>)) expect(n).toBeLessThanOrEqual(sums[0]);
      }
      expect((await job.done).isComplete).toBe(true);
    expect(answersWhileRunning).toBeGreaterThan(3);
      const { body } = await get(`${job.url}/api/v1/segments`);
      const segmentOutputs = variantOutput(dir, "segments.jsonl");
      const expected = recount(segmentOutputs);
      const tagsGroup = Object.keys(body.tags).length > 0 ? "tags" : undefined;
      expect(withoutZeros(body.groups)).toEqual(withoutZeros(Object.fromEntries(Object.entries(expected).filter(([g]) => g !== tagsGroup))));
      if (tagsGroup !== undefined) expect(withoutZeros({ tags: body.tags })).toEqual(withoutZeros({ tags: expected.tags ?? {} }));
    } finally {
      await job.close();
    }
  }, 60_000);
});

describe("state queries with pseudonymised ids", () => {
  const KEY_ENV = "FLUSSO_TEST_QUERY_PSEUDONYM_KEY";

  it("takes the raw id, answers under its pseudonym, never shows the raw id or a dropped field, and forgets an erased user", async () => {
    process.env[KEY_ENV] = "a test key that is long enough to be accepted";
    const dir = tempDir("flusso-queries-privacy-");
    const at = (minute: number) => new Date(Date.UTC(2024, 4, 20, 10, minute)).toISOString();
    const event = (user: string, minute: number, event_type: string, page: string) => ({ user_id: user, timestamp: at(minute), event_type, page, session_duration_sec: 12, scroll_depth: 0.8125 });
    const file = shippedVariant("retention", dir, {
      events: [
        event("alice.rossi@example.com", 0, "page_view", "/home"),
        event("bruno.bianchi@example.com", 1, "page_view", "/home"),
        event("alice.rossi@example.com", 2, "add_to_cart", "/product/7"),
        event("bruno.bianchi@example.com", 3, "erasure_request", "/privacy"),
        event("carla.verdi@example.com", 60, "page_view", "/home"),
      ],
      edit: (p) => {
        p.privacy.pseudonymise = { fields: ["user_id"], keyEnv: KEY_ENV };
        p.sinks.push({ file: { path: `${dir}/out/features.jsonl` }, outputs: ["features", "phase"] });
      },
    });
    const job = await runServed(file);
    try {
      expect((await job.done).isComplete).toBe(true);
      const phases = variantOutput(dir, "features.jsonl").filter((o) => o.output === "phase");
      const { status, body } = await get(`${job.url}/api/v1/keys/${encodeURIComponent("alice.rossi@example.com")}`);
      expect(status).toBe(200);
      const pseudonym = body.key as string;
      expect(pseudonym).not.toBe("alice.rossi@example.com");
      expect(body.user_id).toBe(pseudonym);
      // The outputs know alice only by the same pseudonym.
      expect(phases.filter((o) => o.user_id === pseudonym).at(-1)!.phase).toBe(body.stages.phases.phase);
      const text = JSON.stringify(body);
      expect(text).not.toContain("alice");
      // `keep: used`: scroll_depth is read by no stage, so it was dropped at decoding.
      expect(text).not.toContain("scroll_depth");
      expect(text).not.toContain("0.8125");
      // A pseudonym is not a raw id: asked for, it is pseudonymised again, and unknown.
      expect((await get(`${job.url}/api/v1/keys/${encodeURIComponent(pseudonym)}`)).status).toBe(404);
      // Bruno asked to be erased: unknown, as one never seen.
      const erased = await get(`${job.url}/api/v1/keys/${encodeURIComponent("bruno.bianchi@example.com")}`);
      expect(erased.status).toBe(404);
      expect(JSON.stringify(erased.body)).not.toContain("bruno");
      expect((await get(`${job.url}/api/v1/keys/${encodeURIComponent("carla.verdi@example.com")}`)).status).toBe(200);
    } finally {
      await job.close();
      delete process.env[KEY_ENV];
    }
  }, 30_000);
});
