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

/**
 * Why `value` is over the limits, or undefined when it is within them. Walks the value with an
 * explicit stack, never by recursion, so the check itself cannot overflow the call stack.
 */
export function valueLimitViolation(value: unknown, maxDepth = MAX_VALUE_DEPTH, maxEntries = MAX_COLLECTION_ENTRIES): string | undefined {
  if (value === null || typeof value !== "object" || ArrayBuffer.isView(value)) return undefined;
  const stack: Array<[object, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > maxDepth) return `nested deeper than ${maxDepth} levels`;
    const children = Array.isArray(node) ? node : Object.values(node);
    if (children.length > maxEntries) return `a ${Array.isArray(node) ? "list" : "mapping"} of ${children.length} entries, over the limit of ${maxEntries}`;
    for (let i = 0; i < children.length; i++) {
      const child = children[i];
      // Bytes (msgpack bin) are a leaf, however long.
      if (child !== null && typeof child === "object" && !ArrayBuffer.isView(child)) stack.push([child, depth + 1]);
    }
  }
  return undefined;
}
