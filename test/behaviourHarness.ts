// Test helpers for behaviour stages: run stage definitions (usually one, or a small chain) through
// the behaviour operator over hand-built events and watermarks, with or without a restart midway.
import { record, watermark, type Element } from "../engine/elements.ts";
import { behaviour, type BehaviourOutput } from "../operators/behaviour.ts";
import type { EventFields, StageDefinition } from "../operators/stage.ts";
import { parse as parseYaml } from "yaml";
import { readBehaviour } from "../pipelines/behaviour.ts";
import { PipelineInvalid } from "../pipelines/errors.ts";
import { Reader, type Obj } from "../pipelines/reader.ts";
import { runOperator, runWithRestart } from "./harness.ts";

/** An output as the sinks would see it, with the record's key and time. */
export type Emitted = { kind: string; key: string; time: number; body: Record<string, unknown> };

export type BehaviourRun = { outputs: Emitted[]; counts: Record<string, number>; byKind(kind: string): Emitted[] };

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;
export const MINUTE_MS = 60_000;
/** 2024-05-20T00:00:00Z, a Monday: the generator's default start. */
export const T0 = Date.UTC(2024, 4, 20);

/** An event of `user` at `timeMs` (its `timestamp` field set to the same time). */
export function ev(user: string, timeMs: number, fields: Record<string, unknown>): Element<EventFields> {
  return record(user, timeMs, { user_id: user, timestamp: timeMs, ...fields });
}

export const wm = (timeMs: number): Element<EventFields> => watermark(timeMs);

function collect(run: { outputs: Array<{ key: string; time: number; value: BehaviourOutput }>; counts: Record<string, number> }): BehaviourRun {
  const outputs = run.outputs.map((o) => ({ kind: o.value.kind, key: o.key, time: o.time, body: o.value.body as Record<string, unknown> }));
  return { outputs, counts: run.counts, byKind: (kind) => outputs.filter((o) => o.kind === kind) };
}

export async function runStages(stages: StageDefinition[], elements: Element<EventFields>[]): Promise<BehaviourRun> {
  return collect(await runOperator(behaviour({ name: "test", stages }), elements));
}

/** The same run with a checkpoint after `cut` elements and a restored operator for the rest. */
export async function runStagesWithRestart(stages: StageDefinition[], elements: Element<EventFields>[], cut: number): Promise<BehaviourRun> {
  return collect(await runWithRestart(behaviour({ name: "test", stages }), elements, cut));
}

/** The CEL types of the event fields the behaviour tests use (a superset of the shipped schema). */
export const TEST_FIELDS: Record<string, string> = {
  user_id: "string",
  timestamp: "double",
  event_type: "string",
  page: "string",
  session_duration_sec: "double",
  scroll_depth: "double",
  search_query: "string",
  session_id: "string",
  order_value: "double",
  seconds_watched: "double",
  tz: "string",
  consent: "map",
  props: "map",
};

/**
 * Reads behaviour sections from YAML text the way a pipeline file is read (same readers, same
 * scope rules) and returns the stage definitions; throws PipelineInvalid listing bad values.
 */
export function stagesFromYaml(yamlText: string, fields: Record<string, string> = TEST_FIELDS): StageDefinition[] {
  const r = new Reader("/");
  const spec = readBehaviour(r, parseYaml(yamlText) as Obj, fields);
  if (r.errors.length > 0) throw new PipelineInvalid("test.yaml", r.errors);
  if (!spec) throw new Error("no behaviour section in the YAML");
  return spec.stages;
}
