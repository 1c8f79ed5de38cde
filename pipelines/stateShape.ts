// What a pipeline's state holds and what its layout and meaning depend on (its shape, stored with
// every checkpoint), and the decision at a restart: keep the state, lay parts of it out anew, start
// parts of it empty, or refuse it naming each change and the way forward. Nothing of where the job
// runs counts: file paths are relative to the pipeline's folder, servers and state settings are left out.
import { relative, sep } from "node:path";
import type { Resumption } from "../engine/job.ts";
import type { CheckpointMeta } from "../engine/store.ts";
import { StateMismatch } from "../engine/errors.ts";
import { behaviourOperatorName } from "../operators/behaviour.ts";
import { windowOperatorName, windowStateShape } from "../operators/keyedWindow.ts";
import { canonical, shapeChanges, type StateShape } from "../operators/stateShape.ts";
import { ResetStageUnknown } from "./errors.ts";
import type { SinkSpec } from "./sections/sinks.ts";
import type { SourceSpec } from "./sections/source.ts";
import type { PipelineSpec } from "./validate.ts";

/** How flusso lays a pipeline's state out (3: shapes, named slots, sinks named by what they write). */
export const STATE_LAYOUT = 3;

export type PipelineShape = {
  layout: number;
  /** The behaviour state and the ids of NATS outputs are kept under the pipeline's name. */
  name: string;
  /** What the source reads, which its position counts in: files (relative paths), a stream, the generator's settings. */
  source: unknown;
  /** Positions and watermarks are kept per partition. */
  partitions: number;
  /** The field state is keyed by, and whether its values are pseudonymised. */
  key: { field: string; isPseudonymised: boolean };
  time: string;
  /** Each window's shape (windowStateShape), by name, in the file's order. */
  windows: Array<[string, StateShape]>;
  /** Each behaviour stage's shape (StageDefinition.stateShape), in the order the stages run. */
  stages: Array<[string, StateShape]>;
};

export function pipelineShape(spec: PipelineSpec): PipelineShape {
  const [source, partitions] = sourceIdentity(spec.source, spec.baseDir);
  return {
    layout: STATE_LAYOUT,
    name: spec.name,
    source,
    partitions,
    key: { field: spec.key, isPseudonymised: spec.privacy?.pseudonymise?.fields.includes(spec.key) ?? false },
    time: spec.time,
    windows: spec.windows.map((w) => [w.name, windowStateShape(w)]),
    stages: (spec.behaviour?.stages ?? []).map((s) => [s.name, s.stateShape ?? {}]),
  };
}

/** What `--reset-stage` names: the windows and stages to start empty. */
export type Resets = { windows: ReadonlySet<string>; stages: ReadonlySet<string> };

/**
 * The windows and stages `names` pick: a stage by its section's name, a window by its own; a name
 * both a window and a stage have (a window called sessions) as `window:NAME` or `stage:NAME`.
 * Anything else is refused with the names there are.
 */
export function resolveResets(spec: PipelineSpec, names: readonly string[]): Resets {
  const windowNames = spec.windows.map((w) => w.name);
  const stageNames = (spec.behaviour?.stages ?? []).map((s) => s.name);
  const windows = new Set<string>();
  const stages = new Set<string>();
  const known = [...stageNames, ...windowNames.map((w) => (stageNames.includes(w) ? `window:${w}` : w))];
  for (const name of names) {
    const [kind, bare] = name.startsWith("window:") ? ["window", name.slice(7)] : name.startsWith("stage:") ? ["stage", name.slice(6)] : [undefined, name];
    const isWindow = kind !== "stage" && windowNames.includes(bare);
    const isStage = kind !== "window" && stageNames.includes(bare);
    if (isWindow && isStage) throw new ResetStageUnknown(name, `is both a window and a stage: say window:${bare} or stage:${bare}`, known);
    if (isWindow) windows.add(bare);
    else if (isStage) stages.add(bare);
    else throw new ResetStageUnknown(name, "names no stage or window of this pipeline", known);
  }
  return { windows, stages };
}

/**
 * Decides how a job of `spec` resumes the state of `meta`:
 * 1. refuses a state of another layout, or of an older flusso, that recorded no shape;
 * 2. refuses changes to what all the state depends on: the pipeline's name, the source, its
 *    partitions, the key and the time field;
 * 3. refuses a window or stage whose own shape changed (see shapeChanges), unless reset;
 * 4. resumes the rest: windows and stages reset or new start empty, those gone are dropped with
 *    the next checkpoint, and the others are told the shape their state was written under.
 */
export function resumeState(spec: PipelineSpec, now: PipelineShape, meta: CheckpointMeta, resets: Resets): Resumption {
  const dir = spec.state.dir;
  const old = meta.shape as PipelineShape | undefined;
  // 1.
  if (old === undefined || old.layout !== now.layout) {
    const by = old === undefined ? "an older flusso, which recorded no shape of it" : `a flusso that lays state out otherwise (layout ${old.layout}, this one ${now.layout})`;
    throw new StateMismatch(dir, [`the state was written by ${by}`], "finish it with the flusso that wrote it, or start over with --reset (the outputs are written again from the start)");
  }
  // 2.
  const whole: string[] = [];
  const differs = (a: unknown, b: unknown) => canonical(a) !== canonical(b);
  if (old.name !== now.name) whole.push(`name: ${JSON.stringify(old.name)} -> ${JSON.stringify(now.name)} (the state is kept under the pipeline's name)`);
  if (differs(old.source, now.source)) whole.push(`source: ${canonical(old.source)} -> ${canonical(now.source)} (the position recorded counts in what the source read)`);
  else if (old.partitions !== now.partitions) whole.push(`source partitions: ${old.partitions} -> ${now.partitions} (positions and watermarks are kept per partition)`);
  if (differs(old.key, now.key)) whole.push(`key: ${keyText(old.key)} -> ${keyText(now.key)} (every key's state would be another key's)`);
  if (old.time !== now.time) whole.push(`time: ${old.time} -> ${now.time} (windows, lookbacks and deadlines hold times of the old field)`);
  // 3.
  const parts: string[] = [];
  const changed: string[] = [];
  const compare = (what: string, olds: Array<[string, StateShape]>, nows: Array<[string, StateShape]>, reset: ReadonlySet<string>, qualified: (name: string) => string) => {
    const before = new Map(olds);
    for (const [name, shape] of nows) {
      const was = before.get(name);
      if (was === undefined || reset.has(name)) continue;
      const changes = shapeChanges(was, shape);
      if (changes.length === 0) continue;
      changed.push(qualified(name));
      parts.push(...changes.map((change) => `${what} ${name}: ${change}`));
    }
  };
  const stageNames = new Set(now.stages.map(([name]) => name));
  compare("window", old.windows, now.windows, resets.windows, (name) => (stageNames.has(name) ? `window:${name}` : name));
  compare("stage", old.stages, now.stages, resets.stages, (name) => name);
  if (whole.length > 0) throw new StateMismatch(dir, [...whole, ...parts], "use another state dir, or start over with --reset (the outputs are written again from the start)");
  if (parts.length > 0) {
    const them = changed.length === 1 ? "that stage" : "those stages";
    throw new StateMismatch(
      dir,
      parts,
      `run with ${changed.map((name) => `--reset-stage ${name}`).join(" ")} to rebuild ${them} from empty and keep the rest, or with --reset to start over`,
    );
  }
  // 4.
  const kept = <T>(list: Array<[string, T]>, reset: ReadonlySet<string>) => list.filter(([name]) => !reset.has(name));
  const restored: PipelineShape = { ...old, windows: kept(old.windows, resets.windows), stages: kept(old.stages, resets.stages) };
  const restoredWindows = new Set(restored.windows.map(([name]) => name));
  const restoredStages = new Set(restored.stages.map(([name]) => name));
  const behaviour = behaviourOperatorName(spec.name);
  const freshStates = [
    ...now.windows.filter(([name]) => !restoredWindows.has(name)).map(([name]) => `${windowOperatorName(name)}/`),
    ...now.stages.filter(([name]) => !restoredStages.has(name)).map(([name]) => `${behaviour}/${name}/`),
  ];
  return { restoredShape: restored, freshStates };
}

/**
 * A sink's name in checkpoints, by what it writes: `file:out/alerts.jsonl` (relative to the
 * pipeline's folder), `nats:OUT/out.hourly`, `stdout`. Its committed position follows it wherever
 * it moves in the file; a sink added starts from nothing, one removed is forgotten.
 */
export function sinkIdentity(sink: SinkSpec, baseDir: string): string {
  if ("file" in sink) return `file:${relativePath(baseDir, sink.file.path)}`;
  if ("nats" in sink) return `nats:${sink.nats.stream}/${sink.nats.subject}`;
  return "stdout";
}

/** The names of sinks written in this order: their identities, a repeated one numbered (`#2`). */
export function sinkNames(identities: readonly string[]): string[] {
  const seen = new Map<string, number>();
  return identities.map((identity) => {
    const n = (seen.get(identity) ?? 0) + 1;
    seen.set(identity, n);
    return n === 1 ? identity : `${identity}#${n}`;
  });
}

/** What a source reads, as its position counts in it, and its partitions. */
function sourceIdentity(source: SourceSpec, baseDir: string): [unknown, number] {
  if ("file" in source) return [{ file: { paths: source.file.paths.map((p) => relativePath(baseDir, p)), format: source.file.format } }, source.file.paths.length];
  if ("nats" in source) return [{ nats: { stream: source.nats.stream, subjects: source.nats.subjects } }, source.nats.partitions];
  return [{ generator: source.generator }, source.generator.partitions];
}

function keyText(key: PipelineShape["key"]): string {
  return key.isPseudonymised ? `${key.field} (pseudonymised)` : key.field;
}

/** `path` from `baseDir`, with / separators: the same on every machine the folder is copied to. */
function relativePath(baseDir: string, path: string): string {
  return relative(baseDir, path).split(sep).join("/");
}
