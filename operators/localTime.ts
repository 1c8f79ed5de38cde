// Wall-clock time in a user's own time zone (an IANA name like "Europe/Rome" or an offset like
// "+02:00"): the time of day of an instant, and the next instant a given local time comes round.
// Built on Intl.DateTimeFormat, one formatter per zone, so daylight-saving changes come for free.
import { isoTime } from "./outputFormat.ts";

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;
/** The range of a JS Date: Intl refuses instants outside it (END_OF_TIME is one). */
const MAX_DATE_MS = 8.64e15;
const QUARTER_HOUR_MS = 15 * MINUTE_MS;
/** Zone names come from events: past this many distinct ones the cache starts over. */
const MAX_CACHED_ZONES = 10_000;
/** Offsets kept per zone (a month and a half of quarter hours) before its cache starts over. */
const MAX_CACHED_QUARTERS = 4096;
/** Days of offsets kept per zone (about ten years) before its cache starts over. */
const MAX_CACHED_DAYS = 4096;

/** A time zone: how far its wall clock is ahead of UTC at an instant. */
export type TimeZone = {
  /** As written in the event, e.g. "Europe/Rome", "+02:00". */
  readonly name: string;
  /** Local wall-clock time minus UTC at `utcMs`, in ms (Rome in summer: 7_200_000). */
  offsetMs(utcMs: number): number;
};

export const UTC: TimeZone = { name: "UTC", offsetMs: () => 0 };

const zones = new Map<string, TimeZone | null>();

/** The zone named by `text` (IANA name or UTC offset), or undefined if it is not one. Cached per text. */
export function timeZone(text: string): TimeZone | undefined {
  let zone = zones.get(text);
  if (zone === undefined) {
    if (zones.size >= MAX_CACHED_ZONES) zones.clear();
    zone = fixedOffsetZone(text) ?? intlZone(text);
    zones.set(text, zone);
  }
  return zone ?? undefined;
}

const OFFSET = /^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$/;

/** The widest offset of a real time zone (UTC+14, Kiribati; the lowest is UTC-12), in minutes. */
export const MAX_ZONE_OFFSET_MINUTES = 14 * 60;

/** Minutes east of UTC of an offset written as hours and minutes, or undefined when no zone has it ("+99:99", "-00:75"). */
export function zoneOffsetMinutes(sign: "+" | "-", hours: number, minutes: number): number | undefined {
  const total = hours * 60 + minutes;
  if (minutes > 59 || total > MAX_ZONE_OFFSET_MINUTES) return undefined;
  return sign === "-" ? -total : total;
}

/** "+02:00", "-0530", "UTC+2", "Z": Node 20's Intl does not take offsets as zones. */
function fixedOffsetZone(text: string): TimeZone | null {
  if (text === "Z") return { name: text, offsetMs: () => 0 };
  const match = OFFSET.exec(text);
  if (!match) return null;
  const offsetMinutes = zoneOffsetMinutes(match[1] as "+" | "-", Number(match[2]), Number(match[3] ?? 0));
  if (offsetMinutes === undefined) return null;
  const offsetMs = offsetMinutes * MINUTE_MS;
  return { name: text, offsetMs: () => offsetMs };
}

function intlZone(text: string): TimeZone | null {
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: text,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
  } catch {
    return null; // RangeError: not a zone Intl knows
  }
  // Intl is slow (microseconds a call): offsets are kept per UTC day, and within a day where the
  // offset changes, per quarter hour, where most changes of offset fall. A day whose ends agree is
  // taken as one offset: no zone has changed its offset and back within a day. A quarter with a
  // change inside (St John's changed at 00:01 local until 2011) has different offsets at its
  // ends: NaN is kept, and such instants ask Intl.
  const quarterOffsetMs = cachedPerSpan(format, QUARTER_HOUR_MS, MAX_CACHED_QUARTERS, (utcMs) => intlOffsetMs(format, utcMs));
  const offsetMs = cachedPerSpan(format, DAY_MS, MAX_CACHED_DAYS, quarterOffsetMs);
  return { name: text, offsetMs };
}

/**
 * Offsets kept per span of `spanMs` (from the epoch), at most `maxSpans` before the cache starts
 * over; within a span whose ends disagree, `within` says.
 */
function cachedPerSpan(format: Intl.DateTimeFormat, spanMs: number, maxSpans: number, within: (utcMs: number) => number): (utcMs: number) => number {
  const offsetsBySpan = new Map<number, number>();
  return (utcMs) => {
    const span = Math.floor(utcMs / spanMs);
    let offset = offsetsBySpan.get(span);
    if (offset === undefined) {
      if (offsetsBySpan.size >= maxSpans) offsetsBySpan.clear();
      offset = steadyOffsetMs(format, span * spanMs, spanMs);
      offsetsBySpan.set(span, offset);
    }
    return Number.isNaN(offset) ? within(utcMs) : offset;
  };
}

/** The offset over [startMs, startMs + spanMs) if its ends agree, else NaN. */
function steadyOffsetMs(format: Intl.DateTimeFormat, startMs: number, spanMs: number): number {
  const offset = intlOffsetMs(format, startMs);
  return intlOffsetMs(format, startMs + spanMs - 1) === offset ? offset : NaN;
}

function intlOffsetMs(format: Intl.DateTimeFormat, utcMs: number): number {
  const at = Math.max(-MAX_DATE_MS, Math.min(MAX_DATE_MS, utcMs));
  let year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  for (const part of format.formatToParts(at)) {
    switch (part.type) {
      case "year": year = Number(part.value); break;
      case "month": month = Number(part.value); break;
      case "day": day = Number(part.value); break;
      case "hour": hour = Number(part.value); break;
      case "minute": minute = Number(part.value); break;
      case "second": second = Number(part.value); break;
    }
  }
  // The formatter drops milliseconds: compare with the instant truncated to its second.
  return Date.UTC(year, month - 1, day, hour, minute, second) - (at - modulo(at, 1000));
}

/**
 * An instant as ISO-8601 in the zone's wall-clock time, to the millisecond, with the zone's offset
 * at that instant: "2024-05-20T09:00:00.000+02:00". UTC itself (no zone known) is "...Z"; so is an
 * offset that is not a whole minute (local mean time before 1900), which ISO-8601 cannot write.
 */
export function isoInZone(zone: TimeZone, utcMs: number): string {
  const offsetMs = zone === UTC ? 0 : zone.offsetMs(utcMs);
  if (zone === UTC || offsetMs % MINUTE_MS !== 0) return isoTime(utcMs);
  const minutes = Math.abs(offsetMs / MINUTE_MS);
  const offset = `${offsetMs < 0 ? "-" : "+"}${twoDigits(Math.floor(minutes / 60))}:${twoDigits(minutes % 60)}`;
  return isoTime(utcMs + offsetMs).slice(0, -1) + offset;
}

function twoDigits(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** Parses "HH:MM" (00:00 to 23:59) into ms after local midnight; undefined if it is not one. */
export function parseTimeOfDay(text: unknown): number | undefined {
  if (typeof text !== "string") return undefined;
  const match = /^(\d{1,2}):(\d{2})$/.exec(text.trim());
  if (!match) return undefined;
  const hours = Number(match[1]);
  const minutes = Number(match[2]);
  if (hours > 23 || minutes > 59) return undefined;
  return (hours * 60 + minutes) * MINUTE_MS;
}

/** Local time of day at `utcMs`, in ms after local midnight. */
export function localTimeOfDayMs(zone: TimeZone, utcMs: number): number {
  return modulo(utcMs + zone.offsetMs(utcMs), DAY_MS);
}

/**
 * Whether a local time of day falls in the daily window [fromMs, toMs); a window whose end is
 * before its start runs over midnight (21:00 to 08:00).
 */
export function isWithinDaily(timeOfDayMs: number, fromMs: number, toMs: number): boolean {
  return fromMs <= toMs ? timeOfDayMs >= fromMs && timeOfDayMs < toMs : timeOfDayMs >= fromMs || timeOfDayMs < toMs;
}

/**
 * The first instant after `afterMs` at which the local clock reads `timeOfDayMs`. A local time
 * that a daylight-saving change skips (02:30 on a spring-forward night) is taken as the instant
 * the clock jumps to plus the rest (03:30); one that happens twice (autumn) as its first occurrence.
 */
export function nextLocalTime(zone: TimeZone, afterMs: number, timeOfDayMs: number): number {
  const localDayStart = afterMs + zone.offsetMs(afterMs) - localTimeOfDayMs(zone, afterMs);
  // Today's, else tomorrow's; a day some zone skipped entirely (Samoa, 2011) needs one more.
  for (let day = 0; day < 3; day++) {
    const utcMs = localToUtc(zone, localDayStart + day * DAY_MS + timeOfDayMs);
    if (utcMs > afterMs) return utcMs;
  }
  return localToUtc(zone, localDayStart + 3 * DAY_MS + timeOfDayMs);
}

/**
 * The instant whose local wall-clock time is `wallMs` (a local time written as if it were UTC).
 * Tries the offsets in force a day before and a day after: a zone changes offset at most once
 * in between.
 */
export function localToUtc(zone: TimeZone, wallMs: number): number {
  const early = wallMs - zone.offsetMs(wallMs - DAY_MS);
  const late = wallMs - zone.offsetMs(wallMs + DAY_MS);
  const isEarlyRight = early + zone.offsetMs(early) === wallMs;
  const isLateRight = late + zone.offsetMs(late) === wallMs;
  if (isEarlyRight && isLateRight) return Math.min(early, late);
  if (isLateRight) return late;
  // Right, or the wall time does not exist: under the earlier offset it lands past the gap by
  // as much as it was into it.
  return early;
}

function modulo(a: number, b: number): number {
  return ((a % b) + b) % b;
}
