// The body of a trigger message: the seed shape marketing automation expects by default
// ({ segmento, trigger, messaggio, timestamp_trigger, canali }), or a template of CEL expressions
// over the user's values and the trigger's own facts (`trigger.message`, `trigger.channels`, ...).
import { Environment } from "@marcbachmann/cel-js";

/** What one message is about; a template reads these as `trigger.<field>`. */
export type TriggerFacts = {
  /** The rule that fired. */
  rule: string;
  /** The "trigger" value: the rule's `trigger`, default its name. */
  name: string;
  message: string;
  /** The "segmento" value. */
  segment: string;
  /** Event time of the signal that fired the rule, and the same as "2024-05-20T10:30:00Z". */
  timeMs: number;
  time: string;
  /** When the message goes out (after quiet hours or a follow-up's wait), in ms and ISO-8601. */
  sentAtMs: number;
  sentAt: string;
  /** The channels this message goes out on (what consent, cooldowns and caps left). */
  channels: string[];
  /** Whether this is one of the rule's scheduled follow-ups rather than its first message. */
  followUp: boolean;
};

/** The default body, exactly the shape the receiving tools expect (Italian keys). */
export type SeedBody = { segmento: string; trigger: string; messaggio: string; timestamp_trigger: string; canali: string[] };

/** A configured body: one CEL expression per output key, in order. */
export type TriggerTemplate = {
  fields: ReadonlyArray<{ key: string; value: (vars: Record<string, unknown>) => unknown }>;
  /**
   * The variables the expressions read (besides `trigger`): a message that waits (quiet hours,
   * follow-ups) keeps their values from the moment of the trigger, not the whole view.
   */
  reads: readonly string[];
};

export function seedBody(facts: TriggerFacts): SeedBody {
  return {
    segmento: facts.segment,
    trigger: facts.name,
    messaggio: facts.message,
    timestamp_trigger: facts.time,
    canali: facts.channels,
  };
}

/** The template's body for `facts`, its expressions evaluated over `vars` plus `trigger`. */
export function renderTemplate(template: TriggerTemplate, vars: Record<string, unknown>, facts: TriggerFacts): Record<string, unknown> {
  const scope: Record<string, unknown> = Object.create(vars);
  scope.trigger = facts;
  const body: Record<string, unknown> = {};
  for (const field of template.fields) body[field.key] = jsonValue(field.value(scope));
  return body;
}

/** ISO-8601 UTC to the second, "2024-05-20T10:30:00Z", as the seed shape has it. */
export function isoSecondsUtc(timeMs: number): string {
  const clamped = Math.max(-8.64e15, Math.min(8.64e15, timeMs));
  return new Date(clamped - (((clamped % 1000) + 1000) % 1000)).toISOString().replace(".000Z", "Z");
}

/**
 * A CEL result as JSON can carry it: ints (bigint) become numbers, maps plain objects, and an
 * expression with no value (a missing field) null.
 */
export function jsonValue(value: unknown): unknown {
  if (value === undefined) return null;
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(jsonValue);
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [String(k), jsonValue(v)]));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonValue(v);
    return out;
  }
  return value;
}

/** The variable names a CEL expression reads (its identifiers; comprehension variables included). */
export function referencedNames(source: string): string[] {
  const names = new Set<string>();
  collectNames((PARSER.parse(source) as unknown as { ast: unknown }).ast, names);
  return [...names];
}

/** Parsing needs no declarations: the expressions were type-checked against the scope already. */
const PARSER = new Environment();

function collectNames(node: unknown, names: Set<string>): void {
  if (node === null || typeof node !== "object") return;
  if (Array.isArray(node)) {
    for (const item of node) collectNames(item, names);
    return;
  }
  const { op, args } = node as { op?: unknown; args?: unknown };
  if (op === "id" && typeof args === "string") names.add(args);
  else if (op !== "value") collectNames(args, names);
}
