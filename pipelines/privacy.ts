// Privacy, the config side in one place: the `privacy:` section (pseudonymised ids, fields kept,
// erasure on request) read and checked against the schema and the stages, the keyed-hash pseudonyms,
// and what the job is given of it: the decoder's privacy, minimised dead letters, the key check.
// (Erasing a user's stage values is the behaviour operator's work: operators/behaviour.ts.)
import { createHmac } from "node:crypto";
import type { DeadLetter } from "../engine/job.ts";
import { ERASURE_OUTPUT } from "../operators/behaviour.ts";
import { PseudonymKeyInvalid } from "./errors.ts";
import { celEnvironment, compileExpression, type Variables } from "./expressions.ts";
import type { Obj, Reader } from "./reader.ts";
import { fieldDecoders, isInvalid, type DecoderPrivacy, type Event, type EventSchema } from "./schema.ts";
import { fieldsNamedIn, type Scope } from "./scope.ts";
import type { RoutedSinkSpec } from "./sections/sinks.ts";
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

/**
 * ```yaml
 * privacy:
 *   erase: { when: 'event_type == "erasure_request"' }
 * ```
 * A condition on the event's own fields (no stage has run on it): the request erases its user. Read
 * with the behaviour sections, since only their state is erased per user.
 */
export function readErasure(r: Reader, privacy: unknown, eventFields: Variables, scope: Scope): ((vars: Record<string, unknown>) => unknown) | undefined {
  if (privacy === null || typeof privacy !== "object" || (privacy as Obj).erase === undefined) return undefined;
  const erase = r.object("privacy.erase", (privacy as Obj).erase, ["when"], ["when"]);
  if (!erase) return undefined;
  const when = r.compiled(() => compileExpression(celEnvironment(eventFields), erase.when, "privacy.erase.when", ["bool"]));
  if (!when) return undefined;
  for (const field of fieldsNamedIn(when.source, new Set(Object.keys(eventFields)))) scope.useField(field);
  return when.evaluate;
}

/** Erasures leave an audit trail, the "erasure" outputs: a pipeline that erases must route them to a sink. */
export function checkErasureRouted(r: Reader, sinks: Array<RoutedSinkSpec | undefined> | undefined): void {
  if (sinks?.every((s) => s?.outputs !== undefined && !s.outputs.includes(ERASURE_OUTPUT))) {
    r.fail("privacy.erase", `no sink takes "${ERASURE_OUTPUT}" outputs, the audit trail of erasures: add it to a sink's outputs`);
  }
}

/** What a dead letter shows instead of input that privacy options keep out of it. */
export const WITHHELD = "(withheld: privacy)";

/** What the job is given of the pipeline's privacy. */
export type JobPrivacy = {
  /** How events are decoded: fields dropped, ids pseudonymised, reasons that quote no value. */
  decoder: DecoderPrivacy;
  /** How a refused item is dead-lettered: undefined, as it is. */
  shapeRefused?: (refused: DeadLetter) => DeadLetter;
  /** The pseudonymisation key's check value, so another key is refused on resume. */
  keyChecks?: Record<string, string>;
};

/** What the state records of the pseudonymisation key, so another key is refused on resume. */
const PSEUDONYM_KEY_CHECK = "privacy.pseudonymise key";
/** The key check is the pseudonym of this (no id starts with a NUL): keyed, and it says nothing of the key. */
const PSEUDONYM_KEY_CHECK_INPUT = "\u0000flusso pseudonymisation key check";

/**
 * Pseudonymisation and field dropping applied while events are decoded. With either, reasons quote
 * no value and dead letters are minimised too: late events and events an operator failed on were
 * decoded (minimised, ids pseudonymised); what failed decoding is minimised here.
 */
export function jobPrivacy(schema: EventSchema, privacy: PrivacySpec | undefined): JobPrivacy {
  if (!privacy || (privacy.keep === undefined && privacy.pseudonymise === undefined)) return { decoder: {} };
  const ps = privacy.pseudonymise;
  const decoder: DecoderPrivacy = {
    keep: privacy.keep,
    pseudonymise: ps && { fields: ps.fields, pseudonym: ps.pseudonym },
    quotesValues: false,
  };
  return {
    decoder,
    shapeRefused: minimisedRefusal(minimisedEvent(schema, decoder)),
    keyChecks: ps && { [PSEUDONYM_KEY_CHECK]: ps.pseudonym(PSEUDONYM_KEY_CHECK_INPUT) },
  };
}

/**
 * How a pipeline that keeps fields out or pseudonymises ids dead-letters what it could not decode: the
 * reason (which quotes no value) and origin stay, raw text (which holds real ids and undeclared fields)
 * is withheld and a refused event is `minimise`d, so no more reaches storage than a decoded event would.
 */
function minimisedRefusal(minimise: (event: unknown) => unknown): (refused: DeadLetter) => DeadLetter {
  return ({ raw, event, ...rest }) => ({
    ...rest,
    ...(event === undefined ? {} : { event: minimise(event) }),
    ...(raw === undefined ? {} : { raw: WITHHELD }),
  });
}

/**
 * What a dead letter keeps of a value the decoder refused, under privacy options: no more than a
 * decoded event would hold. The declared fields that are kept and pass their check, as decoded
 * (ids pseudonymised); one that fails it is withheld, as is a value that is no object.
 */
export function minimisedEvent(schema: EventSchema, privacy: DecoderPrivacy): (value: unknown) => unknown {
  const fields = fieldDecoders(schema, privacy).filter((field) => field.isKept);
  return (value) => {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return WITHHELD;
    const input = value as Record<string, unknown>;
    const kept: Event = {};
    for (const field of fields) {
      const raw = input[field.name];
      if (raw === undefined || raw === null || raw === "") continue;
      const coerced = field.coerce(raw);
      kept[field.name] = isInvalid(coerced) ? WITHHELD : coerced;
    }
    return kept;
  };
}

/** Shorter keys are refused: 16 bytes (128 bits) keep the pseudonyms out of reach of guessing. */
export const MIN_KEY_BYTES = 16;

/** base64url characters kept of the HMAC-SHA-256: 22 characters = 132 bits. */
export const PSEUDONYM_CHARS = 22;

export type PseudonymiserOptions = {
  /** Pseudonyms of this many recent ids are kept, so a returning user costs a lookup, not an HMAC (~2.5 µs). 0 disables. Default 65536. */
  cacheSize?: number;
  /** Names the key's origin in errors, e.g. "environment variable FLUSSO_PSEUDONYM_KEY". Default "pseudonymisation key". */
  source?: string;
};

/**
 * `id -> base64url(HMAC-SHA-256(key, id))` truncated to PSEUDONYM_CHARS: the same id and key give
 * the same pseudonym, so a user keeps one key across events and restarts; without the key the id
 * cannot be recovered or checked by hashing guesses. Throws PseudonymKeyInvalid for a key under
 * MIN_KEY_BYTES (UTF-8 bytes).
 */
export function pseudonymiser(key: string, options: PseudonymiserOptions = {}): (id: string) => string {
  checkKey(key, options.source ?? "pseudonymisation key");
  const cacheSize = options.cacheSize ?? 65_536;
  const hash = (id: string) => createHmac("sha256", key).update(id).digest("base64url").slice(0, PSEUDONYM_CHARS);
  if (cacheSize <= 0) return hash;
  // Insertion order is eviction order: the oldest id goes first. Raw ids stay in memory only.
  const recent = new Map<string, string>();
  return (id) => {
    let pseudonym = recent.get(id);
    if (pseudonym !== undefined) return pseudonym;
    pseudonym = hash(id);
    if (recent.size >= cacheSize) recent.delete(recent.keys().next().value!);
    recent.set(id, pseudonym);
    return pseudonym;
  };
}

function checkKey(key: string, source: string): void {
  if (typeof key !== "string" || key === "") throw new PseudonymKeyInvalid(source, `is empty; expected at least ${MIN_KEY_BYTES} bytes`);
  const bytes = Buffer.byteLength(key, "utf8");
  if (bytes < MIN_KEY_BYTES) throw new PseudonymKeyInvalid(source, `is ${bytes} bytes long; expected at least ${MIN_KEY_BYTES}`);
}
