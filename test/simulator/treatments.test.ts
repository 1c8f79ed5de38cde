// The generator's simulated users answer experiments' messages (GeneratorOptions.treatments): a
// treated user comes back for a cart left behind more often, the held-out users as before; and a
// pipeline's `effects` must name its own experiments and variants.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { armOf, HOLDOUT, type Assignment } from "../../engine/assignment.ts";
import type { GeneratedEvent } from "../../simulator/events.ts";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { removeTempDirs, tempDir } from "../pipelines/pipelineFiles.ts";
import { eventsOf, SMALL } from "./generated.ts";

afterAll(removeTempDirs);

const ASSIGNMENT: Assignment = { experiment: "cart_recovery", holdout: 0.5, variants: [{ name: "sconto", weight: 1 }] };

/** Per arm: the share of its users' sessions that open on the cart page. */
function cartReturns(events: GeneratedEvent[]): Record<string, number> {
  const sessions: Record<string, Set<string>> = {};
  const toCart: Record<string, Set<string>> = {};
  const seen = new Set<string>();
  for (const e of events) {
    const arm = armOf(ASSIGNMENT, e.user_id);
    const session = `${e.user_id}/${e.session_id}`;
    if (seen.has(session)) continue;
    seen.add(session);
    (sessions[arm] ??= new Set()).add(session);
    if (e.page === "/cart") (toCart[arm] ??= new Set()).add(session);
  }
  return Object.fromEntries(Object.keys(sessions).map((arm) => [arm, (toCart[arm]?.size ?? 0) / sessions[arm].size]));
}

describe("the generator's treatments", () => {
  const options = { ...SMALL, events: 40_000, users: 800, eventsPerSecond: 2 };

  it("bring treated users back to their carts more often than held-out ones, who are as without treatment", async () => {
    const without = await eventsOf(options);
    const treated = await eventsOf({ ...options, treatments: [{ assignment: ASSIGNMENT, uplifts: { sconto: 0.6 } }] });
    const before = cartReturns(without);
    const after = cartReturns(treated);
    // Without a treatment both arms land on their cart alike; with one, the treated arm does far more.
    expect(Math.abs(before.sconto - before[HOLDOUT])).toBeLessThan(0.02);
    expect(after.sconto - after[HOLDOUT]).toBeGreaterThan(0.03);
  });

  it("changes nothing without treatments (the same events as a generator that has none)", async () => {
    expect(JSON.stringify(await eventsOf({ ...SMALL, treatments: [] }))).toBe(JSON.stringify(await eventsOf(SMALL)));
  });

  it("refuses an uplift out of range", async () => {
    await expect(eventsOf({ ...SMALL, treatments: [{ assignment: ASSIGNMENT, uplifts: { sconto: 0.9 } }] })).rejects.toThrow(/uplift of cart_recovery\/sconto must be from 0 to 0.7/);
  });
});

describe("a pipeline's generator effects", () => {
  const pipeline = (effects: string) => `name: fx
source:
  generator: { events: 100, effects: ${effects} }
schema:
  user_id: { type: string, required: true }
  timestamp: { type: timestamp, required: true }
  event_type: { type: string, required: true }
key: user_id
time: timestamp
state: { dir: state }
sequences:
  cart_abandoned:
    steps:
      - { name: cart, when: 'event_type == "add_to_cart"' }
      - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
triggers:
  rules:
    cart_recovery:
      on: { sequence: cart_abandoned }
      message: "Torna"
      channels: [email]
      experiment: { holdout: 10%, variants: [{ name: sconto }], goal: 'event_type == "purchase"', within: 7d }
sinks: [{ file: { path: out.jsonl } }]
`;
  function errorsOf(text: string): string[] {
    const file = join(tempDir("flusso-effects-"), "fx.yaml");
    writeFileSync(file, text);
    try {
      loadPipeline(file, {});
      return [];
    } catch (error) {
      if (!(error instanceof PipelineInvalid)) throw error;
      return error.errors.map((e) => e.message);
    }
  }

  it("links an effect to the experiment and variant the pipeline runs", () => {
    expect(errorsOf(pipeline("{ cart_recovery: { sconto: 0.2 } }"))).toEqual([]);
    const file = join(tempDir("flusso-effects-"), "fx.yaml");
    writeFileSync(file, pipeline("{ cart_recovery: { sconto: 0.2 } }"));
    const spec = loadPipeline(file, {});
    expect("generator" in spec.source && spec.source.generator.treatments).toEqual([{ assignment: { experiment: "cart_recovery", holdout: 0.1, variants: [{ name: "sconto", weight: 1 }] }, uplifts: { sconto: 0.2 } }]);
  });

  it("refuses an effect on an experiment or a variant the pipeline does not run, or one out of range, naming it", () => {
    expect(errorsOf(pipeline("{ elsewhere: { sconto: 0.2 } }"))).toEqual([expect.stringContaining('source.generator.effects.elsewhere: no trigger rule runs an experiment named "elsewhere" (it has cart_recovery)')]);
    expect(errorsOf(pipeline("{ cart_recovery: { gratis: 0.2 } }"))).toEqual([expect.stringContaining('source.generator.effects.cart_recovery.gratis: the experiment has no variant "gratis" (it has sconto)')]);
    expect(errorsOf(pipeline("{ cart_recovery: { sconto: 2 } }"))).toEqual([expect.stringContaining("source.generator.effects.cart_recovery.sconto")]);
  });
});
