// How outputs show times and numbers, the same in every output kind: instants as ISO-8601 strings
// with their epoch ms beside them (`time` + `time_ms`), sums and averages without binary noise,
// scores and statistics to a set number of significant digits.

/** Significant digits of a sum or an average: enough for every digit the inputs carried, none of the noise. */
export const RESULT_SIGNIFICANT_DIGITS = 12;
const NOISELESS_BELOW = 10 ** RESULT_SIGNIFICANT_DIGITS;

/** Significant digits of scores, z-scores and statistics (centroids, quantiles, rates): `outputs.digits`. */
export const DEFAULT_OUTPUT_DIGITS = 6;

/** The range of a JS Date: an instant outside it (none an event can have) is shown at its edge. */
const MAX_DATE_MS = 8.64e15;

/**
 * A sum or an average as an output (or a value for expressions) shows it: rounded to 12 significant
 * digits, so the binary noise of adding decimals (`2341.7000000000003`) goes and the decimals the
 * inputs carried stay. A double holds 15-16 significant digits, and each addition can cost half a
 * unit in the last one: 12 leave room for thousands of additions before the noise reaches a digit
 * shown, and keep every digit of amounts up to 999,999,999.999 or durations to the microsecond over
 * 11 days. Values of 10^12 and more, where 12 digits would not reach the units, are left as they are.
 */
export function withoutNoise(x: number): number {
  return Math.abs(x) < NOISELESS_BELOW ? Number(x.toPrecision(RESULT_SIGNIFICANT_DIGITS)) : x;
}

/**
 * `x` to `digits` significant digits (a score of 81.2345678 to 6: 81.2346), but never fewer than
 * its integer part has: 1234567.8 to 6 digits is 1234568, not 1234570. Non-finite values pass.
 */
export function toDigits(x: number, digits: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const integerDigits = Math.floor(Math.log10(Math.abs(x))) + 1;
  return Number(x.toPrecision(Math.min(100, Math.max(digits, integerDigits))));
}

const DAY_MS = 86_400_000;
/** The day last formatted, and its "2024-05-20T": outputs come in time order, mostly from one day. */
let cachedDay = NaN;
let cachedDayPrefix = "";

/**
 * An instant as ISO-8601 in UTC to the millisecond: "2024-05-20T10:30:00.250Z", what
 * Date.prototype.toISOString writes (a fraction of a millisecond is dropped). Every output time
 * goes through here, a few hundred thousand a run: the date part is kept per day and the time of
 * day written by hand, about ten times faster than a Date per call.
 */
export function isoTime(timeMs: number): string {
  const ms = Math.floor(Math.max(-MAX_DATE_MS, Math.min(MAX_DATE_MS, timeMs)));
  if (Number.isNaN(ms)) return new Date(NaN).toISOString(); // throws, as a Date would
  const day = Math.floor(ms / DAY_MS);
  if (day !== cachedDay) {
    cachedDayPrefix = new Date(day * DAY_MS).toISOString().slice(0, -13);
    cachedDay = day;
  }
  let rest = ms - day * DAY_MS;
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  const millis = rest - seconds * 1000;
  return `${cachedDayPrefix}${pad2(hours)}:${pad2(minutes)}:${pad2(seconds)}.${millis < 10 ? "00" : millis < 100 ? "0" : ""}${millis}Z`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}
