// Reads `features:` (name: CEL formula) into the features stage.
import { features } from "../../operators/features.ts";
import type { Obj } from "../reader.ts";
import type { StageReader } from "../behaviour.ts";

const NUMERIC = ["double", "int", "uint", "bool"];

/**
 * ```yaml
 * features:
 *   visit_frequency: visits_7d / 7.0
 *   p_exit: '(cart_visits < 2.0 ? 1.0 : 0.0) + (avg_seconds_without_click > 120.0 ? 0.7 : 0.0)'
 * ```
 * Each formula may use the event's fields, earlier stages' values and the features above it.
 */
export const readFeatures: StageReader = (r, path, value, scope) => {
  const obj = r.object(path, value, Object.keys((value as Obj) ?? {}));
  if (!obj) return undefined;
  if (Object.keys(obj).length === 0) return r.fail(path, "expected at least one feature, like visit_frequency: visits_7d / 7.0");
  const specs = [];
  for (const [name, source] of Object.entries(obj)) {
    const at = `${path}.${name}`;
    const compiled = scope.compile(r, at, source, NUMERIC);
    // Declared after compiling, so a formula cannot refer to itself.
    if (!scope.declare(r, at, name, "double") || !compiled) continue;
    specs.push({ name, value: (vars: Record<string, unknown>) => compiled.evaluate(vars) });
  }
  return { definition: features({ features: specs }), outputs: ["features"] };
};
