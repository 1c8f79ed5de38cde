// Test helpers: run an operator's logic over a list of elements with in-memory state, no LMDB.
import { from, lastValueFrom, toArray } from "rxjs";
import type { Element } from "../engine/elements.ts";
import { KeyedMapState, KeyedValueState } from "../engine/keyedState.ts";
import { KeyedSlots, type SlotState } from "../engine/keyedSlots.ts";
import type { StageContext } from "../operators/stage.ts";
import { operate, type OperatorContext, type OperatorDefinition } from "../engine/operator.ts";
import { TimerService } from "../engine/timers.ts";
import { StateStore } from "../engine/store.ts";
import { storeOperatorContext } from "../engine/operatorContext.ts";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Tests draw their random data from a seeded PRNG, so every run sees the same. */
export { mulberry32 } from "../engine/random.ts";

export type Run<O> = { outputs: Array<{ key: string; time: number; value: O }>; sides: Record<string, unknown[]>; counts: Record<string, number> };

export function memoryContext(sides: Record<string, unknown[]>, counts: Record<string, number> = {}): OperatorContext {
  const side = (tag: string, value: unknown) => (sides[tag] ??= []).push(value);
  return {
    valueState: (name, options) => new KeyedValueState(name, options),
    mapState: (name, options) => new KeyedMapState(name, options),
    eventTimers: (name, options) => new TimerService(name, [], options),
    processingTimers: (name) => new TimerService(name),
    side,
    count: (counter, by) => (counts[counter] = (counts[counter] ?? 0) + by),
  };
}

/**
 * A context to build one behaviour stage on its own, in memory: `records` is the state holding
 * every user's record (one slot per userState), `slots` the slots in the order the stage asked.
 */
export function stageContext(base: OperatorContext = memoryContext({})): StageContext & { records: KeyedValueState<unknown[]>; slots: Array<SlotState<unknown>> } {
  const records = base.valueState<unknown[]>("users");
  const keyedSlots = new KeyedSlots(records);
  const slots: Array<SlotState<unknown>> = [];
  return {
    ...base,
    records,
    slots,
    userState: <V>(name: string) => {
      const slot = keyedSlots.slot<V>(name);
      slots.push(slot as SlotState<unknown>);
      return slot;
    },
  };
}

/** Feeds `elements` in order through the operator and collects its records and side outputs. */
export async function runOperator<I, O>(definition: OperatorDefinition<I, O>, elements: Element<I>[]): Promise<Run<O>> {
  const sides: Record<string, unknown[]> = {};
  const counts: Record<string, number> = {};
  const ctx = memoryContext(sides, counts);
  const logic = definition.build(ctx);
  const out = await lastValueFrom(from(elements).pipe(operate(logic, ctx.side), toArray()));
  const outputs = out.flatMap((e) => (e.kind === "record" ? [{ key: e.key, time: e.time, value: e.value }] : []));
  return { outputs, sides, counts };
}

/**
 * Runs `elements` through the operator in two lives: up to `cut`, a checkpoint into a fresh store,
 * then a new operator restored from it (after the last watermark, as the job replays it) for the rest.
 */
export async function runWithRestart<I, O>(definition: OperatorDefinition<I, O>, elements: Element<I>[], cut: number): Promise<Run<O>> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-restart-"));
  const sides: Record<string, unknown[]> = {};
  const counts: Record<string, number> = {};
  const count = (counter: string, by: number) => (counts[counter] = (counts[counter] ?? 0) + by);
  const outputs: Run<O>["outputs"] = [];
  const collect = (els: Element<O>[]) => {
    for (const e of els) if (e.kind === "record") outputs.push({ key: e.key, time: e.time, value: e.value });
  };
  const before = elements.slice(0, cut);
  const first = new StateStore(dir);
  const ctx1 = storeOperatorContext(first, definition.name, (tag, value) => (sides[tag] ??= []).push(value), count);
  collect(await lastValueFrom(from(before).pipe(operate(definition.build(ctx1), ctx1.side), toArray()), { defaultValue: [] }));
  await first.commit({ shape: "t", sourcePosition: cut, sinkPositions: {}, watermarks: null, counters: {}, checkpointId: 1, takenAtMs: 0 });
  await first.close();
  const lastWatermark = before.filter((e) => e.kind === "watermark").at(-1);
  const second = new StateStore(dir);
  const ctx2 = storeOperatorContext(second, definition.name, (tag, value) => (sides[tag] ??= []).push(value), count);
  const rest = [...(lastWatermark ? [lastWatermark] : []), ...elements.slice(cut)];
  collect(await lastValueFrom(from(rest).pipe(operate(definition.build(ctx2), ctx2.side), toArray()), { defaultValue: [] }));
  await second.close();
  return { outputs, sides, counts };
}
