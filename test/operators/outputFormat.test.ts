import { describe, expect, it } from "vitest";
import { isoTime, toDigits, withoutNoise } from "../../operators/outputFormat.ts";
import { isoInZone, timeZone, UTC } from "../../operators/localTime.ts";

describe("how outputs show times and numbers", () => {
  it("writes an instant as Date's toISOString does, to the millisecond, whatever the day", () => {
    const instants = [0, 1, 999, 1000, -1, -86_400_000, -86_400_001, 1716200000250, 1716249599999, 1716249600000, 4102444800000, 631152000000, 1716200000250.7, -1716200000250.2, 253402300799999, 253402300800000, -62198755200000];
    let seed = 7;
    for (let i = 0; i < 2000; i++) instants.push(((seed = (seed * 1103515245 + 12345) % 2 ** 31) - 2 ** 30) * 3000.5);
    for (const ms of instants) expect(isoTime(ms), String(ms)).toBe(new Date(Math.floor(ms)).toISOString());
  });

  it("writes an instant in a user's zone with the zone's offset at that instant, and UTC with Z", () => {
    const at = Date.UTC(2024, 4, 20, 7, 0, 0, 250);
    expect(isoInZone(timeZone("Europe/Rome")!, at)).toBe("2024-05-20T09:00:00.250+02:00");
    expect(isoInZone(timeZone("Europe/Rome")!, Date.UTC(2024, 11, 20, 7))).toBe("2024-12-20T08:00:00.000+01:00");
    expect(isoInZone(timeZone("America/St_Johns")!, at)).toBe("2024-05-20T04:30:00.250-02:30");
    expect(isoInZone(timeZone("-05:00")!, at)).toBe("2024-05-20T02:00:00.250-05:00");
    expect(isoInZone(UTC, at)).toBe("2024-05-20T07:00:00.250Z");
    for (const zone of ["Europe/Rome", "America/St_Johns", "-05:00", "Asia/Kolkata"]) expect(Date.parse(isoInZone(timeZone(zone)!, at))).toBe(at);
  });

  it("shows sums without binary noise, to 12 significant digits, and leaves 10^12 and more alone", () => {
    expect(withoutNoise(0.1 + 0.2)).toBe(0.3);
    expect(withoutNoise(2341.7000000000003)).toBe(2341.7);
    expect(withoutNoise(1 / 3)).toBe(0.333333333333);
    expect(withoutNoise(1e12 + 0.5)).toBe(1e12 + 0.5);
  });

  it("rounds scores to significant digits, never below their integer part", () => {
    expect(toDigits(81.23456789, 6)).toBe(81.2346);
    expect(toDigits(0.000123456789, 3)).toBe(0.000123);
    expect(toDigits(1234567.8, 6)).toBe(1234568);
    expect(toDigits(-2.5e-17, 6)).toBe(-2.5e-17);
    expect(toDigits(0, 6)).toBe(0);
    expect(toDigits(Number.NaN, 6)).toBeNaN();
  });
});
