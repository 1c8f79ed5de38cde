// Reads `schema:` (the declared event fields and their types) and the `key:` and `time:` fields
// picked from it.
import type { Reader } from "../reader.ts";
import { FIELD_TYPES, type EventSchema, type FieldType } from "../schema.ts";

export function readSchema(r: Reader, value: unknown): EventSchema | undefined {
  const entries = r.entries("schema", value, "field");
  if (!entries) return undefined;
  const schema: EventSchema = {};
  for (const [name, spec] of entries) {
    const path = `schema.${name}`;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      r.fail(path, "a field name must be letters, digits and _ (it is a CEL identifier)");
      continue;
    }
    const s = r.object(path, spec, ["type", "required", "unit"], ["type"]);
    if (!s || s.type === undefined) continue;
    const type = r.choice<FieldType>(`${path}.type`, s.type, FIELD_TYPES);
    const required = s.required === undefined ? false : r.boolean(`${path}.required`, s.required);
    const unit = s.unit === undefined ? "ms" : r.choice(`${path}.unit`, s.unit, ["ms", "s"] as const);
    if (s.unit !== undefined && type !== "timestamp") r.fail(`${path}.unit`, "only a timestamp field has a unit");
    if (type && required !== undefined && unit) schema[name] = { type, required, unit };
  }
  return schema;
}

/** `key:` or `time:`: a required field of the schema, of one of `types`. */
export function readField(r: Reader, path: string, value: unknown, schema: EventSchema | undefined, types: FieldType[]): string | undefined {
  const field = r.string(path, value);
  if (field === undefined || schema === undefined) return field;
  const spec = schema[field];
  if (!spec) return r.fail(path, `"${field}" is not a field of the schema (${Object.keys(schema).join(", ")})`);
  if (!types.includes(spec.type)) return r.fail(path, `"${field}" is a ${spec.type}, expected a ${types.join(" or ")} field`);
  if (!spec.required) return r.fail(path, `"${field}" must be declared required: true, since every event needs it`);
  return field;
}
