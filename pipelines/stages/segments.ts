// Reads `segments:` (exclusive groups of prioritised rules with a default, and non-exclusive tags)
// into the segments stage.
import { DEFAULT_TAGS_VAR, MAX_TAGS, SEGMENT_OUTPUT, segments, type SegmentGroup, type SegmentRule } from "../../operators/segments.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";
import type { StageReader } from "./stage.ts";
import { namesNeeded } from "../celNeeds.ts";

const SEGMENT_NAME = /^[A-Za-z0-9_-]+$/;

/**
 * ```yaml
 * segments:
 *   groups:
 *     lifecycle:                       # a "string" var: the user's segment in this group
 *       rules:                         # priority order: the first that holds wins
 *         - { name: vip, when: 'avg_order_90d > 200.0 && since_purchase_ms < 30.0 * 86400000.0' }
 *         - { name: churned, when: 'since_purchase_ms > 90.0 * 86400000.0' }
 *       default: new_customer          # no rule holds, or a rule's data is missing
 *   tags:                              # non-exclusive: a "list" var of the tags that hold
 *     - { name: hot_lead, when: 'email_opens_5d >= 1.0 && cta_clicks_5d >= 1.0' }
 *   tags_var: tags                     # optional, the default
 * ```
 * Groups are decided in order, then tags: each rule may use the event's fields, earlier stages'
 * values and the groups above it.
 */
export const readSegments: StageReader = (r, path, value, scope) => {
  const errorsBefore = r.errors.length;
  const obj = r.object(path, value, ["groups", "tags", "tags_var"]);
  if (!obj) return undefined;
  if (obj.groups === undefined && obj.tags === undefined) return r.fail(path, "expected groups, tags or both");
  const groups = obj.groups === undefined ? [] : readGroups(r, joinPath(path, "groups"), obj.groups, scope);
  let tags: SegmentRule[] = [];
  let tagsVar = DEFAULT_TAGS_VAR;
  if (obj.tags === undefined) {
    if (obj.tags_var !== undefined) r.fail(joinPath(path, "tags_var"), "names the list of tags, but there are no tags");
  } else {
    tags = readRules(r, joinPath(path, "tags"), obj.tags, scope, MAX_TAGS);
    // Declared after the tags are compiled: a tag cannot refer to the list it is part of.
    const at = obj.tags_var === undefined ? joinPath(path, "tags") : joinPath(path, "tags_var");
    tagsVar = (obj.tags_var === undefined ? DEFAULT_TAGS_VAR : r.string(at, obj.tags_var)) ?? DEFAULT_TAGS_VAR;
    scope.declare(r, at, tagsVar, "list");
  }
  if (r.errors.length > errorsBefore) return undefined;
  return { definition: segments({ groups, tags, tagsVar }), outputs: [SEGMENT_OUTPUT] };
};

function readGroups(r: Reader, path: string, value: unknown, scope: Scope): SegmentGroup[] {
  const entries = r.entries(path, value, "group, like lifecycle: { rules: [...], default: new_customer }");
  if (!entries) return [];
  const groups: SegmentGroup[] = [];
  for (const [name, spec] of entries) {
    const at = joinPath(path, name);
    const group = readGroup(r, at, name, spec, scope);
    // Declared after its rules are compiled: a group's rules cannot read the group itself.
    if (scope.declare(r, at, name, "string") && group) groups.push(group);
  }
  return groups;
}

function readGroup(r: Reader, path: string, name: string, value: unknown, scope: Scope): SegmentGroup | undefined {
  const obj = r.object(path, value, ["rules", "default"], ["rules", "default"]);
  if (!obj) return undefined;
  const rules = obj.rules === undefined ? [] : readRules(r, joinPath(path, "rules"), obj.rules, scope, Infinity);
  if (obj.default === undefined) return undefined;
  const defaultPath = joinPath(path, "default");
  const defaultSegment = r.string(defaultPath, obj.default, SEGMENT_NAME);
  if (defaultSegment === undefined) return undefined;
  if (rules.some((rule) => rule.name === defaultSegment)) {
    return r.fail(defaultPath, `"${defaultSegment}" is already a rule's segment; the default must be a segment of its own`);
  }
  return { name, rules, defaultSegment };
}

/** `[{ name, when }, ...]`: names unique within the list, `when` a bool CEL expression. */
function readRules(r: Reader, path: string, value: unknown, scope: Scope, maxRules: number): SegmentRule[] {
  const list = r.list(path, value, { nonEmpty: true });
  if (!list) return [];
  if (list.length > maxRules) r.fail(path, `expected at most ${maxRules} entries, got ${list.length}`);
  const rules: SegmentRule[] = [];
  const seen = new Set<string>();
  list.forEach((item, i) => {
    const at = joinPath(path, i);
    const obj = r.object(at, item, ["name", "when"], ["name", "when"]);
    if (!obj) return;
    const name = obj.name === undefined ? undefined : r.string(joinPath(at, "name"), obj.name, SEGMENT_NAME);
    const isRepeated = name !== undefined && seen.has(name);
    if (isRepeated) r.fail(joinPath(at, "name"), `"${name}" is already named above in this list`);
    if (name !== undefined) seen.add(name);
    const compiled = obj.when === undefined ? undefined : scope.compile(r, joinPath(at, "when"), obj.when, ["bool"]);
    if (name === undefined || isRepeated || !compiled) return;
    rules.push({ name, when: compiled.evaluate, needs: namesNeeded(compiled.source).filter((n) => scope.has(n) && !ALWAYS_SET.has(n)) });
  });
  return rules;
}

/** Vars every step has. */
const ALWAYS_SET = new Set(["user", "now"]);
