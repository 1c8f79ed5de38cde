// Privacy as the pipeline file asks for it: `privacy:` read and checked against the schema and the
// stages.
import { MIN_KEY_BYTES, pseudonymiser } from "../operators/pseudonymise.ts";
import type { Reader } from "./reader.ts";
import type { EventSchema } from "./schema.ts";
import { fieldsNamedIn, type Scope } from "./scope.ts";
import type { WindowSpec } from "./sections/windows.ts";
import { STAGE_SECTION_NAMES } from "./stages/registry.ts";

/**
 * Privacy at ingestion: ids replaced by a keyed hash (HMAC-SHA-256, key from an environment
 * variable) before anything keys or stores them, and fields no stage uses dropped.
 */
export type PrivacySpec = {
  pseudonymise: { fields: string[]; keyEnv: string; pseudonym: (id: string) => string } | undefined;
  /** The event fields kept; everything else is dropped at decoding. Undefined: all kept. */
  keep: string[] | undefined;
};

/**
 * ```yaml
 * privacy:
 *   pseudonymise: { fields: [user_id], keyEnv: FLUSSO_PSEUDONYM_KEY }
 *   keep: used          # or a list of fields; default: keep all
 * ```
 */
export function readPrivacy(
  r: Reader,
  value: unknown,
  schema: EventSchema | undefined,
  [key, time]: [string | undefined, string | undefined],
  windows: WindowSpec[] | undefined,
  scope: Scope | undefined,
): PrivacySpec | undefined {
  const p = r.object("privacy", value, ["pseudonymise", "keep", "erase"]);
  if (!p || !schema) return undefined;
  // Read with the behaviour sections (readErasure): only their state is erased per user.
  if (p.erase !== undefined && !scope) r.fail("privacy.erase", `needs behaviour sections (${STAGE_SECTION_NAMES.join(", ")}): window state is not kept per user, so it cannot be erased per user`);
  const fieldList = (path: string, list: unknown): string[] | undefined => {
    const names = r.list(path, list, { nonEmpty: true })?.map((f, i) => r.string(`${path}[${i}]`, f));
    names?.forEach((f, i) => {
      if (f !== undefined && !schema[f]) r.fail(`${path}[${i}]`, `"${f}" is not a field of the schema (${Object.keys(schema).join(", ")})`);
    });
    return names && !names.some((f) => f === undefined || !schema[f]) ? (names as string[]) : undefined;
  };
  let pseudonymise: PrivacySpec["pseudonymise"];
  if (p.pseudonymise !== undefined) {
    const ps = r.object("privacy.pseudonymise", p.pseudonymise, ["fields", "keyEnv"], ["keyEnv"]);
    const fields = ps && (ps.fields === undefined ? (key ? [key] : undefined) : fieldList("privacy.pseudonymise.fields", ps.fields));
    fields?.forEach((f, i) => {
      if (schema[f].type !== "string") r.fail(`privacy.pseudonymise.fields[${i}]`, `"${f}" is a ${schema[f].type}; only string fields can be pseudonymised`);
    });
    const keyEnv = ps?.keyEnv === undefined ? undefined : r.string("privacy.pseudonymise.keyEnv", ps.keyEnv);
    const secret = keyEnv === undefined ? undefined : process.env[keyEnv];
    if (keyEnv !== undefined && (secret === undefined || Buffer.byteLength(secret) < MIN_KEY_BYTES)) {
      r.fail(
        "privacy.pseudonymise.keyEnv",
        `the environment variable ${keyEnv} must hold the pseudonymisation key, at least ${MIN_KEY_BYTES} bytes (${secret === undefined ? "it is not set" : "it is shorter"})`,
      );
    } else if (fields && keyEnv && secret !== undefined) {
      pseudonymise = { fields, keyEnv, pseudonym: pseudonymiser(secret, { source: `environment variable ${keyEnv}` }) };
    }
  }
  let keep: string[] | undefined;
  if (p.keep === "used") keep = usedFields(schema, windows ?? [], scope);
  else if (p.keep !== undefined) keep = fieldList("privacy.keep", p.keep);
  for (const needed of [key, time]) if (keep && needed && !keep.includes(needed)) keep.push(needed);
  return { pseudonymise, keep };
}

/** The event fields the windows' aggregates and the behaviour stages read. */
function usedFields(schema: EventSchema, windows: WindowSpec[], scope: Scope | undefined): string[] {
  const fields = new Set(Object.keys(schema));
  const used = new Set(scope?.usedEventFields() ?? []);
  for (const w of windows) {
    for (const a of w.aggregates) for (const e of [a.value, a.where]) if (e) for (const f of fieldsNamedIn(e.source, fields)) used.add(f);
  }
  return [...used];
}
