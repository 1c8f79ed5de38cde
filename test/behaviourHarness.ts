// Test helpers for behaviour stages: run stage definitions (usually one, or a small chain) through
// the behaviour operator over hand-built events and watermarks, with or without a restart midway.
import { record, watermark, type Element } from "../engine/elements.ts";
import { behaviour, type BehaviourOptions, type BehaviourOutput } from "../operators/behaviour.ts";
import type { EventFields, Signal, StageDefinition, UserView } from "../operators/stage.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lastValueFrom, Subject, toArray } from "rxjs";
import { expect } from "vitest";
import { parse as parseYaml } from "yaml";
import { operate } from "../engine/operator.ts";
import { storeOperatorContext } from "../engine/operatorContext.ts";
import { StateStore } from "../engine/store.ts";
import { readBehaviour } from "../pipelines/behaviour.ts";
import { readOutputs } from "../pipelines/sections/outputs.ts";
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

/**
 * Stands in for the stages that raise signals (segments, sequences, scores, phases): an event
 * with event_type "signal" and page "kind:name" raises that signal.
 */
export const signals: StageDefinition = {
  name: "signals",
  build: () => ({
    step(view) {
      const event = view.event;
      if (event?.event_type !== "signal") return;
      const [kind, name] = String(event.page).split(":");
      view.signals.push({ kind: kind as Signal["kind"], name, timeMs: view.timeMs });
    },
  }),
};

/** An output's time as outputs show it: ISO-8601 and epoch ms, `{ time, time_ms }`. */
export const outputTime = (timeMs: number): { time: string; time_ms: number } => ({ time: new Date(timeMs).toISOString(), time_ms: timeMs });

/**
 * A stage that asks for a wake-up at the time an event's field `timeOf` names holds (or that
 * `timeOf` gives for the step's event), as an expiring aggregate would. It keeps the times asked
 * for in its state, one wake-up pending at the earliest, so its wake-ups survive a restart as a
 * real stage's do.
 */
export function wakeUpAsker(timeOf: string | ((view: UserView) => unknown), name = "waker"): StageDefinition {
  const askedAt = typeof timeOf === "string" ? (view: UserView) => view.event?.[timeOf] : timeOf;
  return {
    name,
    build: (ctx) => {
      const asked = ctx.userState<number[]>("asked");
      return {
        step(view, out) {
          const before = asked.get(view.user) ?? [];
          // On a wake-up, what is due has fired; on an event, the watermark may not be there yet.
          let times = view.event === undefined ? before.filter((t) => t > view.timeMs) : [...before];
          const at = view.event === undefined ? undefined : askedAt(view);
          if (typeof at === "number" && !times.includes(at)) times = [...times, at].sort((a, b) => a - b);
          if (times[0] !== before[0]) {
            if (before[0] !== undefined && (view.event !== undefined || before[0] > view.timeMs)) out.cancelWake(view.user, before[0]);
            if (times[0] !== undefined) out.wakeAt(view.user, times[0]);
          }
          if (times.length === 0) asked.delete(view.user);
          else asked.set(view.user, times);
        },
        pendingWake: (user) => asked.get(user)?.[0],
      };
    },
  };
}

function collect(run: { outputs: Array<{ key: string; time: number; value: BehaviourOutput }>; counts: Record<string, number> }): BehaviourRun {
  const outputs = run.outputs.map((o) => ({ kind: o.value.kind, key: o.key, time: o.time, body: o.value.body as Record<string, unknown> }));
  return { outputs, counts: run.counts, byKind: (kind) => outputs.filter((o) => o.kind === kind) };
}

/** Operator options besides the stages (an erasure condition), for the runs below. */
export type RunOptions = Pick<BehaviourOptions, "erasesWhen" | "drainsAtEnd">;

export async function runStages(stages: StageDefinition[], elements: Element<EventFields>[], options: RunOptions = {}): Promise<BehaviourRun> {
  return collect(await runOperator(behaviour({ name: "test", stages, ...options }), elements));
}

/** The same run with a checkpoint after `cut` elements and a restored operator for the rest. */
export async function runStagesWithRestart(stages: StageDefinition[], elements: Element<EventFields>[], cut: number, options: RunOptions = {}): Promise<BehaviourRun> {
  return collect(await runWithRestart(behaviour({ name: "test", stages, ...options }), elements, cut));
}

/**
 * Runs `elements` through the stages in several lives: a checkpoint (of what changed only, never
 * compacted) after each element in `checkpointsAfter` (default: after every element) and at each
 * restart, and a new operator restored from the store after each index in `restartsAfter`, seeing
 * the last watermark again first, as the job does. A state mutated in place but not marked changed
 * is lost at a later restart, which the single checkpoint of runStagesWithRestart cannot show.
 */
export async function runStagesCheckpointed(
  stages: StageDefinition[],
  elements: Element<EventFields>[],
  { restartsAfter, checkpointsAfter }: { restartsAfter: number[]; checkpointsAfter?: number[] },
  options: RunOptions = {},
): Promise<Emitted[]> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-checkpoints-"));
  const definition = behaviour({ name: "test", stages, ...options });
  const commitAfter = (i: number) => checkpointsAfter === undefined || checkpointsAfter.includes(i) || restartsAfter.includes(i);
  const outputs: Emitted[] = [];
  let lastWatermark: Element<EventFields> | undefined;
  let checkpointId = 0;
  let start = 0;
  for (const end of [...restartsAfter.map((i) => i + 1), elements.length]) {
    // Never compacting: a compaction writes every entry, marked or not.
    const store = new StateStore(dir, Infinity);
    const ctx = storeOperatorContext(store, definition.name, () => {});
    const input = new Subject<Element<EventFields>>();
    const life = lastValueFrom(input.pipe(operate(definition.build(ctx), ctx.side), toArray()), { defaultValue: [] });
    const commits: Array<Promise<unknown>> = [];
    if (lastWatermark) input.next(lastWatermark);
    for (let i = start; i < end; i++) {
      input.next(elements[i]);
      if (elements[i].kind === "watermark") lastWatermark = elements[i];
      if (!commitAfter(i)) continue;
      checkpointId++;
      commits.push(store.commit({ shape: "t", sourcePosition: i, sinkPositions: {}, watermarks: null, counters: {}, checkpointId, takenAtMs: 0 }));
    }
    input.complete();
    for (const e of await life) if (e.kind === "record") outputs.push({ kind: e.value.kind, key: e.key, time: e.time, body: e.value.body as Record<string, unknown> });
    await Promise.all(commits);
    await store.close();
    start = end;
  }
  rmSync(dir, { recursive: true, force: true });
  return outputs;
}

/**
 * Checks that no pair of checkpoints changes an output: checkpoints after `first` and after `cut`
 * elements, a restart from the second, for every first <= cut. A change made between the two and
 * not marked for the checkpoint is lost at the restart.
 */
export async function expectTwoCheckpointRestartsChangeNothing(stages: StageDefinition[], elements: Element<EventFields>[], expected: Emitted[]): Promise<void> {
  for (let first = 0; first <= elements.length; first++) {
    for (let cut = first; cut <= elements.length; cut++) {
      expect(await runStagesCheckpointed(stages, elements, { checkpointsAfter: [first - 1], restartsAfter: [cut - 1] }), `checkpoints at ${first} and ${cut}`).toEqual(expected);
    }
  }
}

/**
 * The messages (`path: detail`) with which the behaviour sections of `yamlText` are refused, all
 * of them; empty when they are accepted. Anything but a refusal is rethrown.
 */
export function configErrors(yamlText: string, fields: Record<string, string> = TEST_FIELDS): string[] {
  try {
    stagesFromYaml(yamlText, fields);
    return [];
  } catch (error) {
    if (!(error instanceof PipelineInvalid)) throw error;
    return error.errors.map((e) => e.message);
  }
}

/**
 * Checks that restarts change no output: a restart after every cut (one checkpoint), a restart
 * after every element with a checkpoint after each one before it, and a restart after each element.
 */
export async function expectRestartsChangeNothing(stages: StageDefinition[], elements: Element<EventFields>[], expected: Emitted[], options: RunOptions = {}): Promise<void> {
  for (let cut = 0; cut <= elements.length; cut++) {
    const restarted = await runStagesWithRestart(stages, elements, cut, options);
    expect(restarted.outputs, `cut at ${cut}`).toEqual(expected);
  }
  for (let cut = 0; cut < elements.length; cut++) {
    expect(await runStagesCheckpointed(stages, elements, { restartsAfter: [cut] }, options), `checkpoints, restart after ${cut}`).toEqual(expected);
  }
  expect(await runStagesCheckpointed(stages, elements, { restartsAfter: elements.map((_, i) => i) }, options), "restart after each").toEqual(expected);
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
  const top = parseYaml(yamlText) as Obj;
  // As a pipeline named "test" keyed by user_id; `outputs:` in the text is read as in a pipeline file.
  const spec = readBehaviour(r, top, fields, { pipeline: "test", keyField: "user_id", digits: readOutputs(r, top.outputs).digits });
  if (r.errors.length > 0) throw new PipelineInvalid("test.yaml", r.errors);
  if (!spec) throw new Error("no behaviour section in the YAML");
  return spec.stages;
}
