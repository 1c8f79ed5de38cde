// The behaviour sections of a pipeline file (dedup, sessions, aggregates, features, ... triggers):
// each is read by its stage's reader, in the order the stages run (stages/registry.ts), against a
// CEL scope that grows with every stage's declared values.
import { ERASURE_OUTPUT } from "../operators/behaviour.ts";
import type { StageDefinition } from "../operators/stage.ts";
import type { Variables } from "./expressions.ts";
import { readErasure } from "./privacy.ts";
import type { Obj, Reader } from "./reader.ts";
import { Scope } from "./scope.ts";
import { STAGE_SECTION_NAMES, STAGE_SECTIONS } from "./stages/registry.ts";
import type { Assignment } from "../engine/assignment.ts";
import type { ReadContext } from "./stages/stage.ts";

export type BehaviourSpec = {
  stages: StageDefinition[];
  outputs: string[];
  scope: Scope;
  /** `privacy.erase.when`, compiled: an event for which it holds erases its user. */
  erasesWhen?: (vars: Record<string, unknown>) => unknown;
  /** The trigger rules' experiments, as they assign users to arms. */
  experiments: readonly Assignment[];
};

/** What the readers are told of the pipeline: see ReadContext. */
export type PipelineContext = Omit<ReadContext, "segmentGroup">;

/** Reads every behaviour section present in `top`; undefined when none is. */
export function readBehaviour(r: Reader, top: Obj, eventFields: Variables, pipeline: PipelineContext): BehaviourSpec | undefined {
  if (!STAGE_SECTION_NAMES.some((name) => top[name] !== undefined)) return undefined;
  const scope = new Scope(eventFields);
  const context: ReadContext = { ...pipeline, segmentGroup: firstSegmentGroup(top.segments) };
  const stages: StageDefinition[] = [];
  const experiments: Assignment[] = [];
  const outputs = new Set<string>();
  for (const [section, read] of STAGE_SECTIONS) {
    if (top[section] === undefined) continue;
    const stage = read(r, section, top[section], scope, context);
    if (!stage) continue;
    stages.push(stage.definition);
    if (stage.then !== undefined) stages.push(stage.then);
    experiments.push(...(stage.experiments ?? []));
    for (const kind of stage.outputs) outputs.add(kind);
  }
  scope.quantile.check(r);
  const erasesWhen = readErasure(r, top.privacy, eventFields, scope);
  if (erasesWhen) outputs.add(ERASURE_OUTPUT);
  return { stages, outputs: [...outputs], scope, experiments, ...(erasesWhen ? { erasesWhen } : {}) };
}

/** The name of the first group of `segments:` as written (its reader checks it), if any. */
function firstSegmentGroup(segments: unknown): string | undefined {
  const groups = (segments as { groups?: unknown } | null | undefined)?.groups;
  if (groups === null || typeof groups !== "object" || Array.isArray(groups)) return undefined;
  return Object.keys(groups)[0];
}
