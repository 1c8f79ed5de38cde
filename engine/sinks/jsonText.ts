// Outputs as JSON text, the one encoding every text sink uses. Values a decoder can produce that
// JSON.stringify refuses (msgpack's 64-bit integers arrive as BigInt) are written, not fatal.

/** JSON of `value`; a BigInt becomes a number when it is exact as one, else its decimal digits as a string. */
export function jsonText(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    // A replacer slows every output down; only a value that needs one pays for it.
    if (error instanceof TypeError && /BigInt/.test(error.message)) return JSON.stringify(value, bigIntAsJson);
    throw error;
  }
}

function bigIntAsJson(_key: string, value: unknown): unknown {
  if (typeof value !== "bigint") return value;
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
}
