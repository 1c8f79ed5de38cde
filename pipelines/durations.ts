// Durations as written in pipeline files: "500ms", "5s", "15m", "1h", "7d"; a bare 0 means none.

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;

/**
 * The longest duration any setting takes: 100 years (36,525 days). Event times are 1990..2100, so
 * no window, lookback or timer needs more, and times plus durations stay exact integers of ms.
 */
export const MAX_DURATION_MS = 36_525 * UNIT_MS.d;

/** MAX_DURATION_MS as the pipeline file would write it. */
export const MAX_DURATION_TEXT = "36525d";

/**
 * Milliseconds of a duration, or undefined when `text` is not one, or is one longer than
 * MAX_DURATION_MS (a 400-digit number of days would otherwise be Infinity, and every window's end
 * with it): see `isTooLong` for which.
 */
export function parseDurationMs(text: unknown): number | undefined {
  const ms = durationMs(text);
  return ms !== undefined && ms <= MAX_DURATION_MS ? ms : undefined;
}

/** Whether `text` is written as a duration but is longer than MAX_DURATION_MS (Infinity included). */
export function isTooLong(text: unknown): boolean {
  const ms = durationMs(text);
  return ms !== undefined && !(ms <= MAX_DURATION_MS);
}

/** The value of a duration as written, however large; undefined when `text` is not one. */
function durationMs(text: unknown): number | undefined {
  if (text === 0 || text === "0") return 0;
  if (typeof text !== "string") return undefined;
  const match = DURATION.exec(text.trim());
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2]]);
}
