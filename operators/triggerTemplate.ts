// The body of a trigger message: whom it is for and its message id, always; then by default the
// seed shape marketing automation expects ({ segmento, trigger, messaggio, timestamp_trigger,
// canali }) with what delivery needs besides (the rule, whether it is a follow-up, when to send
// it), or a template of CEL expressions over the user's values and the trigger's own facts
// (`trigger.message`, `trigger.sendAt`, ...).
import { Environment } from "@marcbachmann/cel-js";
import { withoutNoise } from "./outputFormat.ts";

/** What one message is about; a template reads these as `trigger.<field>`. */
export type TriggerFacts = {
  /** The message id: the same message, produced again after a crash, has the same one. */
  id: string;
  /** The rule that fired. */
  rule: string;
  /** The "trigger" value: the rule's `trigger`, default its name. */
  name: string;
  message: string;
  /** The "segmento" value. */
  segment: string;
  /** Event time of the signal that fired the rule, and the same as ISO-8601, "2024-05-20T10:30:00.000Z". */
  timeMs: number;
  time: string;
  /**
   * When the message is meant to be sent (after quiet hours, or a follow-up's wait), in ms and as
   * ISO-8601 in the user's zone, "2024-05-20T09:00:00.000+02:00".
   */
  sendAtMs: number;
  sendAt: string;
  /** The channels this message goes out on (what consent, cooldowns and caps left). */
  channels: string[];
  /** Whether this is one of the rule's scheduled follow-ups rather than its first message. */
  followUp: boolean;
  /** Which follow-up, in the rule's order from 1; 0 for the first message. */
  followUpNumber: number;
};

/** The seed's fields (Italian keys, what the receiving tools expect), then what delivery needs. */
export type SeedBody = {
  rule: string;
  segmento: string;
  trigger: string;
  messaggio: string;
  canali: string[];
  /** 0 for a rule's first message; n for its n-th follow-up (on the channel in `canali`). */
  follow_up: number;
  /** The signal's event time: when the behaviour that caused the message happened. */
  timestamp_trigger: string;
  timestamp_trigger_ms: number;
  /** When the message is meant to be sent, in the user's zone. */
  send_at: string;
  send_at_ms: number;
};

/** The key of the message id in every trigger body. */
export const MESSAGE_ID_FIELD = "message_id";

/** Names a template may not read: the facts they stood for were renamed. */
export const RENAMED_FACTS: Readonly<Record<string, string>> = { sentAt: "sendAt", sentAtMs: "sendAtMs" };

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
    rule: facts.rule,
    segmento: facts.segment,
    trigger: facts.name,
    messaggio: facts.message,
    canali: facts.channels,
    follow_up: facts.followUpNumber,
    timestamp_trigger: facts.time,
    timestamp_trigger_ms: facts.timeMs,
    send_at: facts.sendAt,
    send_at_ms: facts.sendAtMs,
  };
}

/**
 * The body of a message: its recipient (under `recipientField`, the pipeline's key field) and its
 * id, then the seed shape, or the template's fields evaluated over `vars` plus `trigger`.
 */
export function triggerBody(recipientField: string, user: string, facts: TriggerFacts, template: TriggerTemplate | undefined, vars: Record<string, unknown>): Record<string, unknown> {
  const body: Record<string, unknown> = { [recipientField]: user, [MESSAGE_ID_FIELD]: facts.id };
  if (template === undefined) return Object.assign(body, seedBody(facts));
  const scope: Record<string, unknown> = Object.create(vars);
  scope.trigger = facts;
  for (const field of template.fields) body[field.key] = jsonValue(field.value(scope));
  return body;
}

/**
 * A CEL result as JSON can carry it: ints (bigint) become numbers, maps plain objects, an
 * expression with no value (a missing field) null, and numbers lose the noise of binary arithmetic
 * (12 significant digits, as sums in every output).
 */
export function jsonValue(value: unknown): unknown {
  if (value === undefined) return null;
  if (typeof value === "bigint") return Number(value);
  if (typeof value === "number") return withoutNoise(value);
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
