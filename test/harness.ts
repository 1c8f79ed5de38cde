// Test helpers: run an operator's logic over a list of elements with in-memory state, no LMDB.
import { from, lastValueFrom, toArray } from "rxjs";
import type { Element } from "../engine/elements.ts";
import { KeyedMapState, KeyedValueState } from "../engine/keyedState.ts";
import { operate, type OperatorContext, type OperatorDefinition } from "../engine/operator.ts";
import { TimerService } from "../engine/timers.ts";

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
