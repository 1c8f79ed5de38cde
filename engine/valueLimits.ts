// Bounds on one decoded input value (an event): how deep it may nest and how many entries a list or
// mapping in it may hold. Sources check them where they decode, so no event can make a later step
// (schema check, an expression, JSON encoding of a dead letter or an output) recurse or loop without
// bound; what is over them is dead-lettered with the reason.

/** Levels of nesting in one value: `{"a":{"b":1}}` has 2. Events are near flat; 64 is generous. */
export const MAX_VALUE_DEPTH = 64;

/** Entries in one list or mapping of a value (the event itself included). */
export const MAX_COLLECTION_ENTRIES = 10_000;

/** The longest line (or value) a file source reads by default: source.file.maxLineBytes. */
export const DEFAULT_MAX_LINE_BYTES = 1 << 20;

/**
 * The most source.file.maxLineBytes may be: a line is held whole in memory and decoded at once,
 * and 16 MiB is far above any event (NATS's default payload limit is 1 MiB). No string of an event
 * is longer, which bounds the cost of expressions that work on strings.
 */
export const MAX_LINE_BYTES = 16 << 20;

/** The reason for a value nested deeper than `maxDepth`; also said by checks on encoded bytes. */
export function tooDeepReason(maxDepth = MAX_VALUE_DEPTH): string {
  return `nested deeper than ${maxDepth} levels`;
}

/** The reason for a list or mapping of `entries` entries, over `maxEntries`. */
export function tooManyEntriesReason(isList: boolean, entries: number, maxEntries = MAX_COLLECTION_ENTRIES): string {
  return `a ${isList ? "list" : "mapping"} of ${entries} entries, over the limit of ${maxEntries}`;
}

/**
 * Why `value` is over the limits, or undefined when it is within them. Walks the value with an
 * explicit stack, never by recursion, so the check itself cannot overflow the call stack.
 */
export function valueLimitViolation(value: unknown, maxDepth = MAX_VALUE_DEPTH, maxEntries = MAX_COLLECTION_ENTRIES): string | undefined {
  if (!isBranch(value)) return undefined;
  // Most events are flat: one pass over the top level, allocating nothing, settles them.
  let entries = 0;
  let hasBranch = false;
  if (Array.isArray(value)) {
    entries = value.length;
    for (let i = 0; i < value.length && !hasBranch; i++) hasBranch = isBranch(value[i]);
  } else {
    for (const name in value) {
      entries++;
      if (!hasBranch && isBranch((value as Record<string, unknown>)[name])) hasBranch = true;
    }
  }
  if (entries > maxEntries) return tooManyEntriesReason(Array.isArray(value), entries, maxEntries);
  return hasBranch ? nestedViolation(value, maxDepth, maxEntries) : undefined;
}

/** The walk of a value with nested lists or mappings: two parallel stacks of nodes and their depths. */
function nestedViolation(value: object, maxDepth: number, maxEntries: number): string | undefined {
  const nodes: object[] = [value];
  const depths: number[] = [1];
  while (nodes.length > 0) {
    const node = nodes.pop()!;
    const depth = depths.pop()!;
    if (depth > maxDepth) return tooDeepReason(maxDepth);
    const children = Array.isArray(node) ? node : Object.values(node);
    if (children.length > maxEntries) return tooManyEntriesReason(Array.isArray(node), children.length, maxEntries);
    for (let i = 0; i < children.length; i++) {
      const child = children[i];
      if (isBranch(child)) {
        nodes.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return undefined;
}

/** A list or mapping; bytes (msgpack bin) are a leaf, however long. */
function isBranch(value: unknown): value is object {
  return value !== null && typeof value === "object" && !ArrayBuffer.isView(value);
}
