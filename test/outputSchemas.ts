// The JSON Schemas of the output kinds (schemas/<kind>.schema.json, draft 2020-12) compiled with
// ajv, offline: the draft's meta-schema ships with ajv, and the schemas refer to nothing outside
// themselves. Used by the tests that check real outputs against them.
import { CONVERSION_OUTPUT, EXPERIMENT_OUTPUT, EXPOSURE_OUTPUT } from "../operators/experiments.ts";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { WINDOW_OUTPUT, LATE } from "../operators/keyedWindow.ts";
import { ERASURE_OUTPUT } from "../operators/behaviour.ts";
import { SESSION_OUTPUT } from "../operators/sessions.ts";
import { FEATURES_OUTPUT } from "../operators/features.ts";
import { KBI_OUTPUT } from "../operators/kbis.ts";
import { ALERT_OUTPUT } from "../operators/scores.ts";
import { QUANTILES_OUTPUT } from "../operators/quantiles.ts";
import { SEQUENCE_OUTPUT } from "../operators/sequences.ts";
import { PHASE_OUTPUT, PHASE_WINDOW_OUTPUT } from "../operators/phases.ts";
import { CLUSTER_OUTPUT, CLUSTER_RETENTION_OUTPUT, CLUSTERS_OUTPUT } from "../operators/clusters.ts";
import { SEGMENT_OUTPUT } from "../operators/segments.ts";
import { TRIGGER_OUTPUT } from "../operators/triggers.ts";
import { PROJECT_ROOT } from "./pipelines/pipelineFiles.ts";

/** The dead-letter output's "kind" (it is no routed kind: every pipeline has one). */
export const DEAD_LETTER = "dead_letter";

/** Every kind of output a pipeline can write, each with its schema. */
export const OUTPUT_KINDS: readonly string[] = [
  WINDOW_OUTPUT, LATE, DEAD_LETTER, SESSION_OUTPUT, FEATURES_OUTPUT, KBI_OUTPUT, ALERT_OUTPUT, QUANTILES_OUTPUT, SEQUENCE_OUTPUT,
  PHASE_OUTPUT, PHASE_WINDOW_OUTPUT, CLUSTER_OUTPUT, CLUSTERS_OUTPUT, CLUSTER_RETENTION_OUTPUT, SEGMENT_OUTPUT, TRIGGER_OUTPUT, ERASURE_OUTPUT,
  EXPOSURE_OUTPUT, CONVERSION_OUTPUT, EXPERIMENT_OUTPUT,
];

export const SCHEMAS_DIR = join(PROJECT_ROOT, "schemas");

/** ajv-formats is CommonJS: its function is the module's default, or that default's. */
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => Ajv2020;

const ajv = addFormats(new Ajv2020({ allErrors: true, strict: true }));
const validators = new Map<string, ValidateFunction>();

/** The kinds there are schema files for, from the files' names. */
export function schemaKinds(): string[] {
  return readdirSync(SCHEMAS_DIR)
    .filter((f) => f.endsWith(".schema.json"))
    .map((f) => f.slice(0, -".schema.json".length))
    .sort();
}

export function schemaOf(kind: string): object {
  return JSON.parse(readFileSync(join(SCHEMAS_DIR, `${kind}.schema.json`), "utf8")) as object;
}

/** The errors of `value` against its kind's schema, as "path: message" lines; empty when it validates. */
export function schemaErrors(kind: string, value: unknown): string[] {
  let validate = validators.get(kind);
  if (validate === undefined) {
    validate = ajv.compile(schemaOf(kind));
    validators.set(kind, validate);
  }
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || "/"}: ${e.message}`);
}

/**
 * The places where an ISO-8601 time and its epoch-ms twin disagree (`time` vs `time_ms`, at any
 * depth): "/drivers/0/time". Every `<name>_ms` beside a string `<name>` is such a pair.
 */
export function timePairMismatches(value: unknown, path = ""): string[] {
  if (value === null || typeof value !== "object") return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => timePairMismatches(v, `${path}/${i}`));
  const record = value as Record<string, unknown>;
  const found: string[] = [];
  for (const [key, v] of Object.entries(record)) {
    const twin = key.endsWith("_ms") ? record[key.slice(0, -3)] : undefined;
    if (typeof twin === "string" && Date.parse(twin) !== v) found.push(`${path}/${key.slice(0, -3)}`);
    found.push(...timePairMismatches(v, `${path}/${key}`));
  }
  return found;
}
