// Reads `watermark:` (how far events may arrive out of order, and when a quiet partition stops
// holding the watermark back).
import type { Reader } from "../reader.ts";

export type WatermarkSpec = {
  maxOutOfOrdernessMs: number;
  idlenessMs: number;
  /** With every partition idle for `idlenessMs`, event time follows the clock. Default: for a live (unbounded NATS) source. */
  advancesWhenIdle: boolean;
};

/**
 * `maxOutOfOrderness` and `idleness` default to 0 (in order, never idle); `advanceWhenIdle` to whether
 * the source is live (`isLive`), since only a live source's event times follow the clock.
 */
export function readWatermark(r: Reader, value: unknown, isLive: boolean): WatermarkSpec | undefined {
  if (value === undefined) return { maxOutOfOrdernessMs: 0, idlenessMs: 0, advancesWhenIdle: isLive };
  const w = r.object("watermark", value, ["maxOutOfOrderness", "idleness", "advanceWhenIdle"]);
  if (!w) return undefined;
  const maxOutOfOrdernessMs = w.maxOutOfOrderness === undefined ? 0 : r.duration("watermark.maxOutOfOrderness", w.maxOutOfOrderness, "5s");
  const idlenessMs = w.idleness === undefined ? 0 : r.duration("watermark.idleness", w.idleness, "1m");
  const advancesWhenIdle = w.advanceWhenIdle === undefined ? isLive : r.boolean("watermark.advanceWhenIdle", w.advanceWhenIdle);
  if (w.advanceWhenIdle === true && idlenessMs === 0) {
    r.fail("watermark.advanceWhenIdle", "needs watermark.idleness: how long every partition must be quiet before event time follows the clock");
  }
  if (maxOutOfOrdernessMs === undefined || idlenessMs === undefined || advancesWhenIdle === undefined) return undefined;
  return { maxOutOfOrdernessMs, idlenessMs, advancesWhenIdle };
}
