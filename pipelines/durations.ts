// Durations as written in pipeline files: "500ms", "5s", "15m", "1h", "7d"; a bare 0 means none.

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;

/** Milliseconds of a duration, or undefined when `text` is not one. */
export function parseDurationMs(text: unknown): number | undefined {
  if (text === 0 || text === "0") return 0;
  if (typeof text !== "string") return undefined;
  const match = DURATION.exec(text.trim());
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2]]);
}
