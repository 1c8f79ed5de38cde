// Test helpers: run an operator's logic over a list of elements with in-memory state, no LMDB.
import { from, lastValueFrom, toArray } from "rxjs";
import type { Element } from "../engine/elements.ts";
import { KeyedMapState, KeyedValueState } from "../engine/keyedState.ts";
import { operate, type OperatorContext, type OperatorDefinition } from "../engine/operator.ts";
import { TimerService } from "../engine/timers.ts";
import { StateStore, type Checkpointable } from "../engine/store.ts";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type Run<O> = { outputs: Array<{ key: string; time: number; value: O }>; sides: Record<string, unknown[]> };

export function memoryContext(sides: Record<string, unknown[]>): OperatorContext {
  const side = (tag: string, value: unknown) => (sides[tag] ??= []).push(value);
  return {
    valueState: (name, options) => new KeyedValueState(name, options),
    mapState: (name, options) => new KeyedMapState(name, options),
    eventTimers: (name) => new TimerService(name),
    processingTimers: (name) => new TimerService(name),
    side,
  };
}

/** Feeds `elements` in order through the operator and collects its records and side outputs. */
export async function runOperator<I, O>(definition: OperatorDefinition<I, O>, elements: Element<I>[]): Promise<Run<O>> {
  const sides: Record<string, unknown[]> = {};
  const ctx = memoryContext(sides);
  const logic = definition.build(ctx);
  const out = await lastValueFrom(from(elements).pipe(operate(logic, ctx.side), toArray()));
  const outputs = out.flatMap((e) => (e.kind === "record" ? [{ key: e.key, time: e.time, value: e.value }] : []));
  return { outputs, sides };
}

/** An operator context over a real StateStore, named as the job names states, to checkpoint and restore. */
export function storeContext(store: StateStore, operatorName: string, sides: Record<string, unknown[]>): OperatorContext {
  const stateName = (name: string) => `${operatorName}/${name}`;
  const registered = <T extends Checkpointable>(member: T): T => {
    store.register(member);
    return member;
  };
  return {
    valueState: (name, options) => registered(new KeyedValueState(stateName(name), options, store.restored(stateName(name)))),
    mapState: (name, options) => registered(new KeyedMapState(stateName(name), options, store.restored(stateName(name)))),
    eventTimers: (name, options) =>
      options?.isCheckpointed === false
        ? new TimerService(stateName(name))
        : registered(new TimerService(stateName(name), store.restored(stateName(name)))),
    processingTimers: (name) => registered(new TimerService(stateName(`p/${name}`), store.restored(stateName(`p/${name}`)))),
    side: (tag, value) => (sides[tag] ??= []).push(value),
  };
}

/**
 * Runs `elements` through the operator in two lives: up to `cut`, a checkpoint into a fresh store,
 * then a new operator restored from it (after the last watermark, as the job replays it) for the rest.
 */
export async function runWithRestart<I, O>(definition: OperatorDefinition<I, O>, elements: Element<I>[], cut: number): Promise<Run<O>> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-restart-"));
  const sides: Record<string, unknown[]> = {};
  const outputs: Run<O>["outputs"] = [];
  const collect = (els: Element<O>[]) => {
    for (const e of els) if (e.kind === "record") outputs.push({ key: e.key, time: e.time, value: e.value });
  };
  const before = elements.slice(0, cut);
  const first = new StateStore(dir);
  const ctx1 = storeContext(first, definition.name, sides);
  collect(await lastValueFrom(from(before).pipe(operate(definition.build(ctx1), ctx1.side), toArray()), { defaultValue: [] }));
  await first.commit({ fingerprint: "t", sourcePosition: cut, sinkPositions: {}, watermarks: null, counters: {}, checkpointId: 1, takenAtMs: 0 });
  await first.close();
  const lastWatermark = before.filter((e) => e.kind === "watermark").at(-1);
  const second = new StateStore(dir);
  const ctx2 = storeContext(second, definition.name, sides);
  const rest = [...(lastWatermark ? [lastWatermark] : []), ...elements.slice(cut)];
  collect(await lastValueFrom(from(rest).pipe(operate(definition.build(ctx2), ctx2.side), toArray()), { defaultValue: [] }));
  await second.close();
  return { outputs, sides };
}
