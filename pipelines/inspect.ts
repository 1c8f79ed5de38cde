// `flusso state`: what a pipeline's state dir holds, read without running the job: the last
// checkpoint, positions, the stored shape, keys per window and stage, and one key's values. It reads
// LMDB read-only, beside a job that may be running (readers see committed checkpoints only), and
// takes no lock.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { KeyedSlots } from "../engine/keyedSlots.ts";
import { KeyedValueState } from "../engine/keyedState.ts";
import { stateName } from "../engine/operatorContext.ts";
import { StateStore } from "../engine/store.ts";
import { behaviourOperatorName, SLOT_NAMES_STATE, USER_RECORDS_STATE } from "../operators/behaviour.ts";
import { WINDOW_STATE, windowOperatorName } from "../operators/keyedWindow.ts";
import type { StateShape } from "../operators/stateShape.ts";
import type { PipelineShape } from "./stateShape.ts";
import type { PipelineSpec } from "./validate.ts";

export type StateReport = {
  dir: string;
  /** Undefined when the dir holds no checkpoint (never run, or reset). */
  checkpoint?: {
    id: number;
    takenAt: string;
    runId?: string;
    sourcePosition: unknown;
    /** By sink name (see sinkIdentity): a file's committed length, a NATS sink's numbering. */
    sinkPositions: Record<string, unknown>;
    /** The shape the state was written under (see PipelineShape); undefined: an older flusso's. */
    shape: PipelineShape | undefined;
    counters: Record<string, number>;
  };
  /** Keys holding state, per window of the stored shape. */
  windows: Record<string, { keys: number; shape: StateShape }>;
  /** Users holding values, per behaviour stage of the stored shape. */
  stages: Record<string, { users: number; shape: StateShape }>;
  /** Users with a record (values of some stage). */
  users: number;
  /** Entries of the other states (those stages keep apart from users: a model, cohorts, digests). */
  otherStates: Record<string, number>;
  /** With a key: its values, per window and per stage (by the stage's state name), as stored. */
  key?: { key: string; stored: string; windows: Record<string, unknown>; stages: Record<string, Record<string, unknown>> };
};

/** Reads `spec`'s state dir; `key`: also that key's values (pseudonymised first when the pipeline pseudonymises its key). */
export async function inspectState(spec: PipelineSpec, { key }: { key?: string } = {}): Promise<StateReport> {
  const dir = spec.state.dir;
  const report: StateReport = { dir, windows: {}, stages: {}, users: 0, otherStates: {} };
  if (!existsSync(join(dir, "data.mdb"))) return report;
  const store = new StateStore(dir, undefined, { encryptionKey: spec.state.encryptionKey, readOnly: true });
  try {
    const meta = store.readMeta();
    if (meta === undefined) return report;
    const shape = meta.shape as PipelineShape | undefined;
    report.checkpoint = {
      id: meta.checkpointId,
      takenAt: new Date(meta.takenAtMs).toISOString(),
      runId: meta.runId,
      sourcePosition: meta.sourcePosition,
      sinkPositions: meta.sinkPositions,
      shape,
      counters: meta.counters,
    };
    const pseudonymise = spec.privacy?.pseudonymise;
    const stored = key !== undefined && pseudonymise?.fields.includes(spec.key) ? pseudonymise.pseudonym(key) : key;
    if (key !== undefined) report.key = { key, stored: stored!, windows: {}, stages: {} };
    const seen = new Set<string>();
    const read = <V>(name: string) => {
      seen.add(name);
      return new KeyedValueState<V>(name, {}, store.restored(name));
    };
    const names = new Set(store.stateNames());
    for (const [window, windowShape] of shape?.windows ?? []) {
      const name = stateName(windowOperatorName(window), WINDOW_STATE);
      const windows = names.has(name) ? read<unknown[]>(name) : undefined;
      report.windows[window] = { keys: windows?.size ?? 0, shape: windowShape };
      if (report.key && windows?.get(stored!) !== undefined) report.key.windows[window] = windows.get(stored!);
    }
    if (shape !== undefined && shape.stages.length > 0) {
      const operator = behaviourOperatorName(shape.name);
      const records = read<unknown[]>(stateName(operator, USER_RECORDS_STATE));
      const slots = new KeyedSlots(records, read<string[]>(stateName(operator, SLOT_NAMES_STATE)));
      report.users = records.size;
      const stageOf = (slot: string) => slot.slice(0, slot.indexOf("/"));
      const counts = new Map<string, number>();
      for (const [, record] of records.entries()) {
        const stages = new Set(slots.slotNames().filter((_, i) => record[i] !== undefined).map(stageOf));
        for (const stage of stages) counts.set(stage, (counts.get(stage) ?? 0) + 1);
      }
      for (const [stage, stageShape] of shape.stages) report.stages[stage] = { users: counts.get(stage) ?? 0, shape: stageShape };
      if (report.key) {
        // Stages' slots only: the operator keeps one of its own (the user's last event time).
        const stages = new Set(shape.stages.map(([stage]) => stage));
        for (const [slot, value] of Object.entries(slots.valuesOf(stored!) ?? {})) {
          if (stages.has(stageOf(slot))) (report.key.stages[stageOf(slot)] ??= {})[slot.slice(slot.indexOf("/") + 1)] = value;
        }
      }
    }
    for (const name of names) if (!seen.has(name)) report.otherStates[name] = read<unknown>(name).size;
    return report;
  } finally {
    await store.close();
  }
}

/** The report as lines for a person; the key's values as indented JSON. */
export function formatStateReport(report: StateReport): string {
  const lines = [`state dir: ${report.dir}`];
  const c = report.checkpoint;
  if (c === undefined) return [...lines, "no checkpoint: the pipeline has not run on this dir (or was reset)"].join("\n");
  const json = (value: unknown) => JSON.stringify(value, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
  lines.push(`checkpoint ${c.id}, taken ${c.takenAt}${c.runId ? ` (run ${c.runId})` : ""}`);
  lines.push(`source position: ${json(c.sourcePosition)}`);
  lines.push("sinks (committed positions):");
  for (const [sink, position] of Object.entries(c.sinkPositions)) lines.push(`  ${sink}: ${json(position)}`);
  if (c.shape === undefined) lines.push("shape: none recorded (written by an older flusso)");
  else {
    const key = c.shape.key.isPseudonymised ? `${c.shape.key.field} (pseudonymised)` : c.shape.key.field;
    lines.push(`shape: pipeline ${c.shape.name}, source ${json(c.shape.source)}, ${c.shape.partitions} partition(s), key ${key}, time ${c.shape.time} (layout ${c.shape.layout})`);
  }
  if (Object.keys(report.windows).length > 0) lines.push("windows:");
  for (const [name, { keys, shape }] of Object.entries(report.windows)) lines.push(`  ${name}: ${keys} keys; shape ${json(shape)}`);
  if (Object.keys(report.stages).length > 0) lines.push(`stages (${report.users} users with values):`);
  for (const [name, { users, shape }] of Object.entries(report.stages)) lines.push(`  ${name}: ${users} users; shape ${json(shape)}`);
  if (Object.keys(report.otherStates).length > 0) lines.push("other states (entries):");
  for (const [name, entries] of Object.entries(report.otherStates)) lines.push(`  ${name}: ${entries}`);
  if (report.key !== undefined) {
    const { key, stored, windows, stages } = report.key;
    lines.push(`key ${key}${stored === key ? "" : ` (stored as ${stored})`}:`);
    lines.push(JSON.stringify({ windows, stages }, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v), 2));
  }
  return lines.join("\n");
}
