// Reads `sequences:` (name: steps, each a CEL condition, optionally within a time of the step before
// it, the last one optionally absent) into the sequences stage.
import { EVENT_TYPE_FIELD, PAGE_FIELD } from "../../operators/eventFields.ts";
import { SEQUENCE_OUTPUT, sequences, type SequenceSpec, type SequenceStep } from "../../operators/sequences.ts";
import type { StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

const NAME = /^[A-Za-z0-9_-]+$/;
const SEQUENCE_FIELDS = ["steps", "matched_at"];
const STEP_FIELDS = ["name", "when", "within", "absent"];

/**
 * Steps of one sequence. A user may hold a partial match waiting at each step, each with the steps
 * it matched, so memory per user grows with the square of the steps; 32 is far beyond any funnel.
 */
export const MAX_SEQUENCE_STEPS = 32;

/**
 * ```yaml
 * sequences:
 *   cart_abandoned:                      # home page, cart within 5 min, then no purchase within 2 h
 *     steps:
 *       - { name: home, when: 'page == "/"' }
 *       - { name: cart, when: 'event_type == "add_to_cart"', within: 5m }
 *       - { name: purchase, when: 'event_type == "purchase"', within: 2h, absent: true }
 *   pricing_then_demo:
 *     matched_at: pricing_demo_at        # optional: a double variable, time of the latest match
 *     steps:
 *       - { name: pricing, when: 'page.startsWith("/pricing")' }
 *       - { name: demo, when: 'event_type == "form_submission"', within: 7d }
 * ```
 * `within` is measured from the step before (less than, not equal); only the last step may be
 * `absent`, and then it needs `within`: the sequence completes when that time passes without it.
 */
export const readSequences: StageReader = (r, path, value, scope) => {
  // Read off the event directly (matching by type, what the outputs show; eventFields.ts): privacy.keep must keep them.
  for (const field of [EVENT_TYPE_FIELD, PAGE_FIELD]) if (scope.fields().includes(field)) scope.useField(field);
  const entries = r.entries(path, value, "sequence, like cart_abandoned: { steps: [...] }");
  if (!entries) return undefined;
  const specs: SequenceSpec[] = [];
  for (const [name, body] of entries) {
    const spec = readSequence(r, joinPath(path, name), name, body, scope);
    if (spec) specs.push(spec);
  }
  return { definition: sequences({ sequences: specs }), outputs: [SEQUENCE_OUTPUT] };
};

function readSequence(r: Reader, path: string, name: string, value: unknown, scope: Scope): SequenceSpec | undefined {
  const isNamed = r.string(path, name, NAME) !== undefined;
  const obj = r.object(path, value, SEQUENCE_FIELDS, ["steps"]);
  if (!obj || obj.steps === undefined) return undefined;
  const list = r.list(joinPath(path, "steps"), obj.steps);
  if (!list) return undefined;
  if (list.length < 2) return r.fail(joinPath(path, "steps"), `expected at least two steps (a sequence is "A then B"), got ${list.length}`);
  if (list.length > MAX_SEQUENCE_STEPS) return r.fail(joinPath(path, "steps"), `expected at most ${MAX_SEQUENCE_STEPS} steps, got ${list.length}`);
  const steps: SequenceStep[] = [];
  const stepNames = new Set<string>();
  let isValid = isNamed;
  list.forEach((item, k) => {
    const step = readStep(r, joinPath(joinPath(path, "steps"), k), item, k, k === list.length - 1, stepNames, scope);
    if (step) steps.push(step);
    else isValid = false;
  });
  let matchedAtVar: string | undefined;
  if (obj.matched_at !== undefined) {
    const at = joinPath(path, "matched_at");
    matchedAtVar = r.string(at, obj.matched_at);
    // Declared after the steps: a step's condition cannot read its own sequence's result.
    if (matchedAtVar === undefined || !scope.declare(r, at, matchedAtVar, "double")) isValid = false;
  }
  return isValid ? { name, steps, matchedAtVar } : undefined;
}

function readStep(r: Reader, path: string, value: unknown, k: number, isLast: boolean, names: Set<string>, scope: Scope): SequenceStep | undefined {
  const obj = r.object(path, value, STEP_FIELDS, ["name", "when"]);
  if (!obj) return undefined;
  let isValid = true;
  const refuse = (field: string, detail: string) => {
    r.fail(joinPath(path, field), detail);
    isValid = false;
  };
  const name = obj.name === undefined ? undefined : r.string(joinPath(path, "name"), obj.name);
  if (name !== undefined && names.has(name)) refuse("name", `"${name}" names an earlier step of this sequence`);
  if (name !== undefined) names.add(name);
  const compiled = obj.when === undefined ? undefined : scope.compile(r, joinPath(path, "when"), obj.when, ["bool"]);
  let withinMs: number | undefined;
  if (obj.within !== undefined) {
    if (k === 0) refuse("within", "the first step has no step before it to be within a time of");
    else withinMs = r.duration(joinPath(path, "within"), obj.within, "2h", { positive: true });
    if (withinMs === undefined) isValid = false;
  }
  const isAbsent = obj.absent === undefined ? false : r.boolean(joinPath(path, "absent"), obj.absent);
  if (isAbsent === undefined) isValid = false;
  else if (isAbsent && !isLast) refuse("absent", "only the last step can be absent");
  else if (isAbsent && obj.within === undefined) refuse("within", "an absent step needs within: the time by which its absence counts");
  if (!isValid || name === undefined || !compiled) return undefined;
  return { name, matches: (vars) => compiled.evaluate(vars) === true, withinMs, isAbsent };
}
