import { describe, expect, it } from "vitest";
import { isWithinDaily, localTimeOfDayMs, localToUtc, nextLocalTime, parseTimeOfDay, timeZone, UTC } from "../../operators/localTime.ts";

const HOUR_MS = 3_600_000;
const rome = timeZone("Europe/Rome")!;
const newYork = timeZone("America/New_York")!;
const at = (hh: number, mm = 0) => (hh * 60 + mm) * 60_000;

describe("localTime", () => {
  it("knows Rome is one hour ahead of UTC in winter and two in summer", () => {
    expect(rome.offsetMs(Date.UTC(2024, 0, 15, 12))).toBe(HOUR_MS);
    expect(rome.offsetMs(Date.UTC(2024, 6, 15, 12))).toBe(2 * HOUR_MS);
    expect(newYork.offsetMs(Date.UTC(2024, 4, 20, 12))).toBe(-4 * HOUR_MS);
  });

  it("switches Rome's offset at 01:00 UTC on the last Sunday of March and of October", () => {
    expect(rome.offsetMs(Date.UTC(2024, 2, 31, 0, 59, 59))).toBe(HOUR_MS);
    expect(rome.offsetMs(Date.UTC(2024, 2, 31, 1))).toBe(2 * HOUR_MS);
    expect(rome.offsetMs(Date.UTC(2024, 9, 27, 0, 59, 59))).toBe(2 * HOUR_MS);
    expect(rome.offsetMs(Date.UTC(2024, 9, 27, 1))).toBe(HOUR_MS);
  });

  it("changes offset at the exact second also where that is not on a quarter hour", () => {
    // St John's switched at 00:01 local (03:31 UTC in spring) until 2011.
    const stJohns = timeZone("America/St_Johns")!;
    expect(stJohns.offsetMs(Date.UTC(2010, 2, 14, 3, 30, 59))).toBe(-3.5 * HOUR_MS);
    expect(stJohns.offsetMs(Date.UTC(2010, 2, 14, 3, 31))).toBe(-2.5 * HOUR_MS);
    expect(stJohns.offsetMs(Date.UTC(2010, 2, 14, 3, 44))).toBe(-2.5 * HOUR_MS);
    expect(stJohns.offsetMs(Date.UTC(2010, 2, 14, 3, 29))).toBe(-3.5 * HOUR_MS);
  });

  it("gives Intl's offset at every 17 minutes of 2010, in zones with half-hour, odd and repeated changes", () => {
    const formats = new Map<string, Intl.DateTimeFormat>();
    /** The offset straight from Intl, no cache: local wall clock read back as UTC, minus the instant. */
    const intlOffsetMs = (zone: string, utcMs: number) => {
      if (!formats.has(zone)) formats.set(zone, new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" }));
      const parts = formats.get(zone)!.formatToParts(utcMs);
      const part = (type: string) => Number(parts.find((p) => p.type === type)!.value);
      return Date.UTC(part("year"), part("month") - 1, part("day"), part("hour"), part("minute"), part("second")) - (utcMs - (utcMs % 1000));
    };
    const zones = ["Europe/Rome", "Australia/Lord_Howe", "America/St_Johns", "Asia/Tehran", "Africa/Casablanca", "Pacific/Chatham"];
    const mismatches: string[] = [];
    for (const name of zones) {
      const zone = timeZone(name)!;
      for (let utcMs = Date.UTC(2010, 0, 1); utcMs < Date.UTC(2011, 0, 1); utcMs += 17 * 60_000) {
        if (zone.offsetMs(utcMs) !== intlOffsetMs(name, utcMs)) mismatches.push(`${name} ${new Date(utcMs).toISOString()}`);
      }
    }
    expect(mismatches).toEqual([]);
  });

  it("reads UTC offsets as fixed zones and refuses what is no zone", () => {
    expect(timeZone("+02:00")!.offsetMs(0)).toBe(2 * HOUR_MS);
    expect(timeZone("-05:30")!.offsetMs(0)).toBe(-5.5 * HOUR_MS);
    expect(timeZone("UTC+2")!.offsetMs(0)).toBe(2 * HOUR_MS);
    expect(timeZone("+0930")!.offsetMs(0)).toBe(9.5 * HOUR_MS);
    expect(timeZone("Z")!.offsetMs(0)).toBe(0);
    expect(timeZone("UTC")!.offsetMs(Date.UTC(2024, 6, 1))).toBe(0);
    expect(timeZone("Mars/Olympus_Mons")).toBeUndefined();
    expect(timeZone("+25:00")).toBeUndefined();
    // Offsets no zone has would move a message by up to a day: the widest real ones are -12:00 and +14:00.
    for (const noZone of ["+99:99", "+24:00", "-00:75", "+18:00", "-14:30", "+14:01"]) expect(timeZone(noZone), noZone).toBeUndefined();
    expect(timeZone("+14:00")!.offsetMs(0)).toBe(14 * HOUR_MS);
    expect(timeZone("-12:00")!.offsetMs(0)).toBe(-12 * HOUR_MS);
    expect(timeZone("")).toBeUndefined();
  });

  it("gives the local time of day", () => {
    expect(localTimeOfDayMs(rome, Date.UTC(2024, 4, 20, 20, 30))).toBe(at(22, 30));
    expect(localTimeOfDayMs(newYork, Date.UTC(2024, 4, 20, 2, 15))).toBe(at(22, 15));
    expect(localTimeOfDayMs(UTC, Date.UTC(2024, 4, 20, 23, 59, 59, 999))).toBe(at(24) - 1);
  });

  it("finds the next local time today if it is still ahead, else tomorrow, never the same instant", () => {
    expect(nextLocalTime(rome, Date.UTC(2024, 4, 20, 6, 30), at(9))).toBe(Date.UTC(2024, 4, 20, 7));
    expect(nextLocalTime(rome, Date.UTC(2024, 4, 20, 7), at(9))).toBe(Date.UTC(2024, 4, 21, 7));
    expect(nextLocalTime(rome, Date.UTC(2024, 4, 20, 20, 30), at(8))).toBe(Date.UTC(2024, 4, 21, 6));
    // 21:00 in New York is 01:00 UTC of the next UTC day: the local day counts, not the UTC one.
    expect(nextLocalTime(newYork, Date.UTC(2024, 4, 21, 1), at(8))).toBe(Date.UTC(2024, 4, 21, 12));
    expect(nextLocalTime(newYork, Date.UTC(2024, 4, 21, 1), at(23))).toBe(Date.UTC(2024, 4, 21, 3));
    expect(nextLocalTime(rome, Date.UTC(2024, 4, 20, 22, 30), at(1))).toBe(Date.UTC(2024, 4, 20, 23));
  });

  it("reaches 08:00 the morning after a spring-forward night one hour sooner in UTC", () => {
    // 22:30 in Rome on Saturday 30 March 2024 (CET) to 08:00 on Sunday 31 March (CEST).
    expect(nextLocalTime(rome, Date.UTC(2024, 2, 30, 21, 30), at(8))).toBe(Date.UTC(2024, 2, 31, 6));
    // And on the autumn night the hour comes back: 08:00 CET on 27 October is 07:00 UTC.
    expect(nextLocalTime(rome, Date.UTC(2024, 9, 26, 20, 30), at(8))).toBe(Date.UTC(2024, 9, 27, 7));
  });

  it("moves a local time a spring-forward skips by the gap, and takes the first of a repeated one", () => {
    expect(localToUtc(rome, Date.UTC(2024, 2, 31, 2, 30))).toBe(Date.UTC(2024, 2, 31, 1, 30)); // 03:30 CEST
    expect(localToUtc(rome, Date.UTC(2024, 9, 27, 2, 30))).toBe(Date.UTC(2024, 9, 27, 0, 30)); // 02:30 CEST
    expect(nextLocalTime(rome, Date.UTC(2024, 2, 30, 12), at(2, 30))).toBe(Date.UTC(2024, 2, 31, 1, 30));
  });

  it("tells whether a time of day is in a daily window, also one that runs over midnight", () => {
    expect(isWithinDaily(at(22, 30), at(21), at(8))).toBe(true);
    expect(isWithinDaily(at(7, 59), at(21), at(8))).toBe(true);
    expect(isWithinDaily(at(8), at(21), at(8))).toBe(false);
    expect(isWithinDaily(at(20, 59), at(21), at(8))).toBe(false);
    expect(isWithinDaily(at(13), at(13), at(14))).toBe(true);
    expect(isWithinDaily(at(14), at(13), at(14))).toBe(false);
  });

  it("parses times of day written HH:MM", () => {
    expect(parseTimeOfDay("08:00")).toBe(at(8));
    expect(parseTimeOfDay("9:05")).toBe(at(9, 5));
    expect(parseTimeOfDay("23:59")).toBe(at(23, 59));
    expect(parseTimeOfDay("24:00")).toBeUndefined();
    expect(parseTimeOfDay("08:60")).toBeUndefined();
    expect(parseTimeOfDay("8am")).toBeUndefined();
    expect(parseTimeOfDay(800)).toBeUndefined();
  });
});
