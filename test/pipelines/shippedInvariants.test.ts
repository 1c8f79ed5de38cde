// The shipped pipelines over generated clickstream: properties every run must keep, whatever the
// data — consent, cooldowns and caps of every trigger, segment membership, cluster reports.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { GeneratorSource } from "../../simulator/generatorSource.ts";
import { parseDurationMs } from "../../pipelines/durations.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import type { GeneratorSpec } from "../../pipelines/sections/source.ts";
import { PROJECT_ROOT, removeTempDirs, tempDir } from "./pipelineFiles.ts";
import { SHIPPED, shippedVariant, variantOutput, type Shipped } from "./shipped.ts";

const USERS = 1500;
const EVENTS = 25_000;

type Obj = Record<string, any>;
type Sent = { user_id: string; trigger: string; rule: string; canali: string[]; send_at_ms: number; follow_up: number };

/** Every user's channels with consent in at least one of their generated events. */
async function everConsented(name: Shipped): Promise<Map<string, Set<string>>> {
  const spec = loadPipeline(join(PROJECT_ROOT, "config", `${name}.yaml`));
  const generator = new GeneratorSource({ ...(spec.source as { generator: GeneratorSpec }).generator, users: USERS, events: EVENTS });
  await generator.open(undefined);
  const consented = new Map<string, Set<string>>();
  for (;;) {
    const batch = generator.nextBatch(10_000);
    for (const item of batch.items) {
      if (!("value" in item)) continue;
      const e = item.value as Obj;
      const channels = consented.get(e.user_id) ?? new Set<string>();
      for (const [channel, isGiven] of Object.entries(e.consent ?? {})) if (isGiven === true) channels.add(channel);
      consented.set(e.user_id, channels);
    }
    if (batch.isDone) break;
  }
  return consented;
}

describe.each(SHIPPED)("config/%s.yaml over generated data", (name) => {
  const config = parse(readFileSync(join(PROJECT_ROOT, "config", `${name}.yaml`), "utf8")) as Obj;
  let dir: string;
  let sent: Sent[];

  beforeAll(async () => {
    dir = tempDir(`flusso-invariants-${name}-`);
    const file = shippedVariant(name, dir, {
      users: USERS,
      eventCount: EVENTS,
      // Every pending deadline fires at the end, so that every rule gets its chance to fire.
      atEnd: "drain",
      // Every message says who, which rule, when and whether it is a follow-up (what the checks
      // below need); retention's cluster changes are written too.
      edit: (p) => {
        if (name === "retention") p.sinks.find((s: Obj) => s.outputs.includes("clusters")).outputs.push("cluster");
      },
    });
    const result = await runPipeline(loadPipeline(file), { reset: true });
    expect(result.isComplete).toBe(true);
    sent = variantOutput<Sent>(dir, "triggers.jsonl");
  }, 120_000);

  afterAll(removeTempDirs);

  it("fires every trigger rule at least once", () => {
    const rules = Object.keys(config.triggers.rules);
    expect(new Set(sent.map((t) => t.rule))).toEqual(new Set(rules));
  });

  it("never uses a channel the user never consented to", async () => {
    if (!config.triggers.consent) return;
    const consented = await everConsented(name);
    const offending = sent.filter((t) => t.canali.some((c) => !consented.get(t.user_id)?.has(c)));
    expect(offending).toEqual([]);
    expect(sent.length).toBeGreaterThan(0);
  });

  it("keeps every rule's cooldown per user and channel", () => {
    for (const [rule, spec] of Object.entries(config.triggers.rules as Record<string, Obj>)) {
      if (!spec.cooldown) continue;
      const cooldownMs = parseDurationMs(spec.cooldown)!;
      const last = new Map<string, number>();
      for (const t of [...sent].filter((s) => s.rule === rule && !s.follow_up).sort((a, b) => a.send_at_ms - b.send_at_ms)) {
        for (const channel of t.canali) {
          const key = `${t.user_id}/${channel}`;
          const previous = last.get(key);
          if (previous !== undefined) expect(t.send_at_ms - previous, `${rule} ${key}`).toBeGreaterThanOrEqual(cooldownMs);
          last.set(key, t.send_at_ms);
        }
      }
    }
  });

  it("keeps every capped rule within its cap per user and channel", () => {
    const byUserChannel = new Map<string, number[]>();
    for (const t of sent) for (const c of t.canali) byUserChannel.set(`${t.user_id}/${c}`, [...(byUserChannel.get(`${t.user_id}/${c}`) ?? []), t.send_at_ms]);
    for (const [rule, spec] of Object.entries(config.triggers.rules as Record<string, Obj>)) {
      if (!spec.cap) continue;
      const perMs = parseDurationMs(spec.cap.per)!;
      for (const t of sent.filter((s) => s.rule === rule)) {
        for (const c of t.canali) {
          const inWindow = byUserChannel.get(`${t.user_id}/${c}`)!.filter((at) => at > t.send_at_ms - perMs && at <= t.send_at_ms);
          expect(inWindow.length, `${rule} ${t.user_id}/${c}`).toBeLessThanOrEqual(spec.cap.max);
        }
      }
    }
  });

  it("keeps every user in exactly one segment per group, entering only after leaving the last, each change naming the other side", () => {
    if (!config.segments) return;
    const current = new Map<string, string>();
    const changes = variantOutput(dir, "segments.jsonl");
    expect(changes.length).toBeGreaterThan(0);
    const groups = Object.keys(config.segments.groups ?? {});
    const seen = new Set<string>();
    changes.forEach((o, i) => {
      const key = `${o.user_id}/${o.group}`;
      // A group's change names the other side; a tag's has none (tags are not exclusive).
      const isGroup = groups.includes(o.group);
      if (o.change === "exit") {
        expect(current.get(key), key).toBe(o.segment);
        // The enter that follows the exit, in the same step, is where the user goes.
        const next = changes[i + 1];
        if (isGroup) expect([next.user_id, next.group, next.change, next.segment, next.previous], key).toEqual([o.user_id, o.group, "enter", o.next, o.segment]);
        else expect(o.next, key).toBeNull();
        current.delete(key);
      } else {
        expect(current.has(key), key).toBe(false);
        if (isGroup && o.previous === null) expect(seen.has(key), key).toBe(false);
        if (!isGroup) expect(o.previous, key).toBeNull();
        current.set(key, o.segment);
      }
      seen.add(key);
    });
    const users = new Set(changes.map((o) => o.user_id));
    for (const user of users) for (const group of groups) expect(current.has(`${user}/${group}`), `${user}/${group}`).toBe(true);
  });

  it("names clusters uniquely in every run and assigns users only to clusters of the latest run", () => {
    if (!config.clusters) return;
    const outputs = variantOutput(dir, "clusters.jsonl");
    const runs = outputs.filter((o) => o.output === "clusters");
    expect(runs.length).toBeGreaterThan(1);
    let names = new Set<string>();
    for (const o of outputs) {
      if (o.output === "clusters") {
        names = new Set(o.centroids.map((c: Obj) => c.name));
        expect(names.size).toBe(config.clusters.k);
        expect(o.centroids.reduce((sum: number, c: Obj) => sum + c.size, 0)).toBe(o.users);
      } else if (o.output === "cluster") {
        expect(names.has(o.cluster), o.cluster).toBe(true);
      }
    }
  });
});

describe.each(SHIPPED)("config/%s.yaml ending as shipped (atEnd: stop)", (name) => {
  it("dates no output after the input's horizon (its newest event plus the out-of-orderness bound), and sends nothing later", async () => {
    const spec = loadPipeline(join(PROJECT_ROOT, "config", `${name}.yaml`));
    const generator = new GeneratorSource({ ...(spec.source as { generator: GeneratorSpec }).generator, users: USERS, events: EVENTS });
    await generator.open(undefined);
    let newestMs = -Infinity;
    for (;;) {
      const batch = generator.nextBatch(10_000);
      for (const item of batch.items) if ("value" in item) newestMs = Math.max(newestMs, (item.value as Obj).timestamp as number);
      if (batch.isDone) break;
    }
    const horizonMs = newestMs + spec.watermark.maxOutOfOrdernessMs;
    const dir = tempDir(`flusso-horizon-${name}-`);
    await runPipeline(loadPipeline(shippedVariant(name, dir, { users: USERS, eventCount: EVENTS })), { reset: true });
    const config = parse(readFileSync(join(PROJECT_ROOT, "config", `${name}.yaml`), "utf8")) as Obj;
    let dated = 0;
    for (const sink of config.sinks as Obj[]) {
      for (const o of variantOutput(dir, sink.file.path.split("/").at(-1))) {
        // Every time an output carries (when it happened, when it is to be sent), none past the horizon;
        // but an exposure's window_ends_ms, the deadline it announces, may be.
        for (const [field, value] of Object.entries(o)) {
          if (!field.endsWith("_ms") || typeof value !== "number" || field === "late_by_ms" || field === "window_ends_ms") continue;
          dated++;
          expect(value, `${JSON.stringify(o).slice(0, 200)}: ${field}`).toBeLessThanOrEqual(horizonMs);
        }
      }
    }
    expect(dated).toBeGreaterThan(0);
  });
});
