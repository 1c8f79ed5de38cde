// Reads `dedup:` (how close identical events are duplicates, and which fields make them identical)
// into the dedup stage.
import { DEFAULT_DEDUP_FIELDS, DEFAULT_WITHIN_MS, dedup } from "../../operators/dedup.ts";
import type { StageReader } from "./stage.ts";

/** Types whose values compare as equal when they are the same value (a map or list never would). */
const COMPARABLE = ["string", "double", "int", "uint", "bool"];

/**
 * The longest `within`: a user's distinct events of that long are kept and searched on each event.
 * Duplicates are retries and replays, seconds to minutes apart; a day is far beyond them.
 */
const MAX_WITHIN: readonly [number, string] = [86_400_000, "1d"];

/**
 * ```yaml
 * dedup: { within: 1m, fields: [event_type, page] }
 * ```
 * Both optional: `within` defaults to 1m, `fields` to [event_type, page]. Fields must be event
 * fields of the schema; the user is always part of what makes two events identical.
 */
export const readDedup: StageReader = (r, path, value, scope) => {
  const errorsBefore = r.errors.length;
  const obj = r.object(path, value ?? {}, ["within", "fields"]);
  if (!obj) return undefined;
  const withinMs = obj.within === undefined ? DEFAULT_WITHIN_MS : r.duration(`${path}.within`, obj.within, "1m", { positive: true, atMost: MAX_WITHIN });
  const listed = obj.fields === undefined ? DEFAULT_DEDUP_FIELDS : r.list(`${path}.fields`, obj.fields, { nonEmpty: true });
  const fields: string[] = [];
  listed?.forEach((field, i) => {
    const at = `${path}.fields[${i}]`;
    if (field === "user" || field === "now") return r.fail(at, `"${field}" is not an event field (the user is always compared)`);
    const name = r.string(at, field, /^[A-Za-z_][A-Za-z0-9_]*$/);
    // Compiling the bare name checks that the schema declares it, with a comparable type.
    if (name === undefined || !scope.compile(r, at, name, COMPARABLE)) return;
    if (fields.includes(name)) return r.fail(at, `"${name}" is listed twice`);
    fields.push(name);
  });
  if (r.errors.length > errorsBefore || withinMs === undefined) return undefined;
  return { definition: dedup({ withinMs, fields }), outputs: [] };
};
