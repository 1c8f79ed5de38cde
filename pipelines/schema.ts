// The declared event schema: turns a decoded source value into a keyed, timed event of only the
// declared fields, or says exactly why it cannot (which goes to the dead-letter output).
import { record } from "../engine/elements.ts";
import { zoneOffsetMinutes } from "../operators/localTime.ts";
import type { Decoded } from "../engine/job.ts";

export type FieldType = "string" | "number" | "boolean" | "timestamp" | "object" | "list";
export const FIELD_TYPES: readonly FieldType[] = ["string", "number", "boolean", "timestamp", "object", "list"];

export type FieldSpec = {
  type: FieldType;
  /** An event without it is dead-lettered. Default false. */
  required: boolean;
  /** For numeric timestamps: epoch milliseconds (default) or seconds. */
  unit: "ms" | "s";
};

export type EventSchema = Record<string, FieldSpec>;
export type Event = Record<string, unknown>;

/** Timestamps outside [1990, 2100) are taken for corrupt data rather than history or the far future. */
export const MIN_TIMESTAMP_MS = Date.UTC(1990, 0, 1);
export const MAX_TIMESTAMP_MS = Date.UTC(2100, 0, 1);

/** The CEL type each field has in expressions. Timestamps are epoch milliseconds (double). */
export const CEL_TYPE: Record<FieldType, string> = {
  string: "string",
  number: "double",
  boolean: "bool",
  timestamp: "double",
  object: "map",
  list: "list",
};

/** ISO-8601 and its common log variants: `2019-10-01 00:00:00 UTC`, `2024-05-20T10:30:00.5+02:00`, `2024-05-20`. */
const ISO_LIKE = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})?$/i;

/**
 * Epoch ms of an ISO-like time, or NaN. Written out rather than left to Date.parse, whose lenient
 * fallback reads "garbage 12" as December 2001; a time without a zone is UTC; impossible dates
 * ("2024-02-30") and offsets ("+99:99", "+24:00", "-00:75": they would shift an event by days)
 * are refused rather than rolled over.
 */
export function parseIsoTimeMs(text: string): number {
  const m = ISO_LIKE.exec(text.trim());
  if (!m) return NaN;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((x) => Number(x ?? 0));
  const fractionMs = m[7] ? Math.floor(Number(`0.${m[7]}`) * 1000) : 0;
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return NaN;
  const ms = Date.UTC(year, month - 1, day, hour, minute, second, fractionMs);
  if (new Date(ms).getUTCDate() !== day) return NaN;
  const zone = m[8]?.toUpperCase();
  if (!zone || zone === "Z" || zone === "UTC" || zone === "GMT") return ms;
  const digits = zone.slice(1).replace(":", "");
  const offsetMinutes = zoneOffsetMinutes(zone[0] as "+" | "-", Number(digits.slice(0, 2)), Number(digits.slice(2)));
  return offsetMinutes === undefined ? NaN : ms - offsetMinutes * 60_000;
}

/** A value that failed its field's type; the only allocation decoding makes, and only for bad events. */
class Invalid {
  constructor(readonly reason: string) {}
}

/** Whether a field decoder's result is a value that failed its check. */
export function isInvalid(coerced: unknown): boolean {
  return coerced instanceof Invalid;
}

type Coercer = (raw: unknown) => unknown;

/** How a reason shows the value that failed: quoted, or (privacy) not at all. */
type Quote = (raw: unknown) => string;

const QUOTE: Quote = (raw) => JSON.stringify(raw) ?? String(raw);
const QUOTE_NOTHING: Quote = () => "";

function coerceTimestamp(raw: unknown, unit: "ms" | "s", quote: Quote): unknown {
  let ms: number;
  if (typeof raw === "number") ms = unit === "s" ? raw * 1000 : raw;
  else if (typeof raw === "string" && /^-?\d+(\.\d+)?$/.test(raw.trim())) ms = Number(raw) * (unit === "s" ? 1000 : 1);
  else if (typeof raw === "string") ms = parseIsoTimeMs(raw);
  else return new Invalid(`expected a timestamp, got ${typeOf(raw)}`);
  if (!Number.isFinite(ms)) return new Invalid(`expected a timestamp (epoch ${unit} or ISO-8601), got ${quote(raw) || `a ${typeOf(raw)} that is no timestamp`}`);
  if (ms < MIN_TIMESTAMP_MS || ms >= MAX_TIMESTAMP_MS) {
    const isNumeric = typeof raw === "number" || !Number.isNaN(Number(raw));
    return new Invalid(`timestamp ${quote(raw) && `${quote(raw)} `}is outside 1990-01-01..2100-01-01${isNumeric ? otherUnitHint(ms, unit, quote(raw) !== "") : ""}`);
  }
  return Math.floor(ms);
}

/**
 * Epoch seconds read as milliseconds fall in January 1970, and milliseconds read as seconds tens of
 * thousands of years ahead: when the other unit would put a numeric timestamp in range, say so.
 * `quotesValues`: whether the reason may show the date, which is the value again.
 */
function otherUnitHint(ms: number, unit: "ms" | "s", quotesValues: boolean): string {
  const other = unit === "ms" ? ms * 1000 : ms / 1000;
  if (!(other >= MIN_TIMESTAMP_MS && other < MAX_TIMESTAMP_MS)) return "";
  const date = quotesValues ? ` (${new Date(Math.floor(other)).toISOString()})` : "";
  return unit === "ms"
    ? `; as epoch seconds it would be inside${date}: declare the field with \`unit: s\``
    : `; as epoch milliseconds it would be inside${date}: declare the field without \`unit: s\``;
}

/** The coercer of one field type: the value as the event keeps it, or Invalid. */
function coercer(spec: Pick<FieldSpec, "type" | "unit">, quote: Quote = QUOTE): Coercer {
  switch (spec.type) {
    case "string":
      // Ids are often numeric in the data; a number is a fine string, an object is not.
      return (raw) =>
        typeof raw === "string" ? raw : typeof raw === "number" && Number.isFinite(raw) ? String(raw) : new Invalid(`expected a string, got ${typeOf(raw)}`);
    case "number":
      return (raw) => {
        if (typeof raw === "number" && Number.isFinite(raw)) return raw;
        const n = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
        return Number.isFinite(n) ? n : new Invalid(`expected a number, got ${typeOf(raw)}${quote(raw) && ` ${quote(raw).slice(0, 40)}`}`);
      };
    case "boolean":
      return (raw) =>
        typeof raw === "boolean" ? raw : raw === "true" || raw === "false" ? raw === "true" : new Invalid(`expected a boolean, got ${typeOf(raw)}`);
    case "timestamp":
      return (raw) => coerceTimestamp(raw, spec.unit, quote);
    case "object":
      return (raw) => (raw !== null && typeof raw === "object" && !Array.isArray(raw) ? raw : new Invalid(`expected an object, got ${typeOf(raw)}`));
    case "list":
      return (raw) => (Array.isArray(raw) ? raw : new Invalid(`expected a list, got ${typeOf(raw)}`));
  }
}

function withPseudonym(value: unknown, pseudonym: (id: string) => string): unknown {
  return value instanceof Invalid ? value : pseudonym(value as string);
}

function typeOf(raw: unknown): string {
  if (raw === null) return "null";
  if (Array.isArray(raw)) return "a list";
  return typeof raw;
}

/** Privacy at decoding: which fields are kept, and which are replaced by a pseudonym. */
export type DecoderPrivacy = {
  /** Fields kept in the event (all are still checked); default all declared fields. */
  keep?: readonly string[];
  /** Fields whose (string) value is replaced by `pseudonym(value)` before anything keys or stores it. */
  pseudonymise?: { fields: readonly string[]; pseudonym: (id: string) => string };
  /**
   * Whether the reason for a refused event quotes the value that failed (`expected a number, got
   * string "abc"`); without, it names the field and the expected type only, so a dead letter
   * carries no input. Default true.
   */
  quotesValues?: boolean;
};

export type FieldDecoder = { name: string; isRequired: boolean; isKept: boolean; coerce: Coercer };

/** Each declared field's check: coerced, pseudonymised if it is an id, kept or only checked. */
export function fieldDecoders(schema: EventSchema, privacy: DecoderPrivacy): FieldDecoder[] {
  const kept = privacy.keep && new Set(privacy.keep);
  const hashed = new Set(privacy.pseudonymise?.fields ?? []);
  const pseudonym = privacy.pseudonymise?.pseudonym;
  const quote = privacy.quotesValues === false ? QUOTE_NOTHING : QUOTE;
  return Object.entries(schema).map(([name, spec]) => {
    const check = coercer(spec, quote);
    const isHashed = hashed.has(name) && pseudonym !== undefined;
    return {
      name,
      isRequired: spec.required,
      isKept: kept === undefined || kept.has(name),
      coerce: isHashed ? (raw: unknown) => withPseudonym(check(raw), pseudonym) : check,
    };
  });
}

/**
 * Builds the decoder of a schema: the declared fields only, coerced, with key and event time taken
 * out. With `privacy`, fields not kept are checked but dropped, and ids are pseudonymised.
 */
export function eventDecoder(schema: EventSchema, keyField: string, timeField: string, privacy: DecoderPrivacy = {}): (value: unknown) => Decoded<Event> {
  const fields = fieldDecoders(schema, privacy);
  return (value) => {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: `expected an object event, got ${typeOf(value)}` };
    }
    const input = value as Record<string, unknown>;
    const event: Event = {};
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i];
      const raw = input[field.name];
      if (raw === undefined || raw === null || raw === "") {
        if (field.isRequired) return { error: `missing required field "${field.name}"` };
        continue;
      }
      const coerced = field.coerce(raw);
      if (coerced instanceof Invalid) return { error: `field "${field.name}": ${coerced.reason}` };
      if (field.isKept) event[field.name] = coerced;
    }
    return record(String(event[keyField]), event[timeField] as number, event);
  };
}
