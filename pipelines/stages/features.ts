// Reads `features:` (name: CEL formula) into the features stage.
import { FEATURE_VECTOR_FIELDS, features, FEATURES_OUTPUT } from "../../operators/features.ts";
import type { StageReader } from "./stage.ts";

const NUMERIC = ["double", "int", "uint", "bool"];

/**
 * ```yaml
 * features:
 *   visit_frequency: visits_7d / 7.0
 *   p_exit: '(cart_visits < 2.0 ? 1.0 : 0.0) + (avg_seconds_without_click > 120.0 ? 0.7 : 0.0)'
 * ```
 * Each formula may use the event's fields, earlier stages' values and the features above it.
 */
export const readFeatures: StageReader = (r, path, value, scope, context) => {
  const entries = r.entries(path, value, "feature, like visit_frequency: visits_7d / 7.0");
  if (!entries) return undefined;
  const specs = [];
  for (const [name, source] of entries) {
    const at = `${path}.${name}`;
    if (FEATURE_VECTOR_FIELDS.includes(name)) {
      r.fail(at, `"${name}" is a field of every feature vector; choose another name`);
      continue;
    }
    const compiled = scope.compile(r, at, source, NUMERIC);
    // Declared after compiling, so a formula cannot refer to itself.
    if (!scope.declare(r, at, name, "double") || !compiled) continue;
    specs.push({ name, value: compiled.evaluate });
  }
  return { definition: features({ features: specs, keepsVectors: context.isQueried ?? false }), outputs: [FEATURES_OUTPUT] };
};
