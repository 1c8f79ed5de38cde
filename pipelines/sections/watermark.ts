// Reads `watermark:` (how far events may arrive out of order, and when a quiet partition stops
// holding the watermark back).
import type { Reader } from "../reader.ts";

export type WatermarkSpec = { maxOutOfOrdernessMs: number; idlenessMs: number };

/** Both default to 0: in order, and no idleness. */
export function readWatermark(r: Reader, value: unknown): WatermarkSpec | undefined {
  if (value === undefined) return { maxOutOfOrdernessMs: 0, idlenessMs: 0 };
  const w = r.object("watermark", value, ["maxOutOfOrderness", "idleness"]);
  if (!w) return undefined;
  const maxOutOfOrdernessMs = w.maxOutOfOrderness === undefined ? 0 : r.duration("watermark.maxOutOfOrderness", w.maxOutOfOrderness, "5s");
  const idlenessMs = w.idleness === undefined ? 0 : r.duration("watermark.idleness", w.idleness, "1m");
  if (maxOutOfOrdernessMs === undefined || idlenessMs === undefined) return undefined;
  return { maxOutOfOrdernessMs, idlenessMs };
}
