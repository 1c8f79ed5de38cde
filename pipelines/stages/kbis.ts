// Reads `kbis:` (name: ordered threshold rules and a default label) into the KBIs stage.
import { KBI_OUTPUT, kbis, type KbiRule, type KbiSpec } from "../../operators/kbis.ts";
import type { StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

/**
 * ```yaml
 * kbis:
 *   frequency_kbi:
 *     rules:
 *       - { label: active, when: 'visit_frequency > 3.0' }
 *       - { label: occasional, when: 'visit_frequency < 1.0' }
 *     default: regular        # optional: without it, no rule holding means no label
 * ```
 * The first rule that holds gives the label. Each KBI is declared as a string variable, so later
 * rules may use it (`frequency_kbi == "active"`), including the rules of the KBIs below it.
 */
export const readKbis: StageReader = (r, path, value, scope) => {
  const entries = r.entries(path, value, "KBI, like frequency_kbi: { rules: [...], default: regular }");
  if (!entries) return undefined;
  const specs: KbiSpec[] = [];
  for (const [name, entry] of entries) {
    const at = joinPath(path, name);
    const spec = readKbi(r, at, name, entry, scope);
    // Declared after its rules, so a KBI cannot refer to itself.
    if (!scope.declare(r, at, name, "string") || !spec) continue;
    specs.push(spec);
  }
  return { definition: kbis({ kbis: specs }), outputs: [KBI_OUTPUT] };
};

function readKbi(r: Reader, path: string, name: string, value: unknown, scope: Scope): KbiSpec | undefined {
  const obj = r.object(path, value, ["rules", "default"], ["rules"]);
  if (!obj) return undefined;
  const defaultLabel = obj.default === undefined || obj.default === null ? null : r.string(joinPath(path, "default"), obj.default);
  const list = obj.rules === undefined ? undefined : r.list(joinPath(path, "rules"), obj.rules, { nonEmpty: true });
  const rules: KbiRule[] = [];
  let isValid = defaultLabel !== undefined && list !== undefined;
  for (const [i, entry] of (list ?? []).entries()) {
    const rule = readRule(r, joinPath(joinPath(path, "rules"), i), entry, scope);
    if (rule) rules.push(rule);
    else isValid = false;
  }
  return isValid ? { name, rules, defaultLabel } : undefined;
}

function readRule(r: Reader, path: string, value: unknown, scope: Scope): KbiRule | undefined {
  const obj = r.object(path, value, ["label", "when"], ["label", "when"]);
  if (!obj) return undefined;
  const label = obj.label === undefined ? undefined : r.string(joinPath(path, "label"), obj.label);
  const when = obj.when === undefined ? undefined : scope.compile(r, joinPath(path, "when"), obj.when, ["bool"]);
  if (label === undefined || !when) return undefined;
  return { label, holds: when.evaluate };
}
