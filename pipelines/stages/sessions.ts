// Reads `sessions:` (the inactivity gap that ends a session) into the sessions stage, and
// declares the session values it writes for later stages.
import { DEFAULT_GAP_MS, SESSION_OUTPUT, SESSION_VARS, sessions } from "../../operators/sessions.ts";
import type { StageReader } from "./stage.ts";

/**
 * ```yaml
 * sessions: { gap: 30m, emit: true }
 * ```
 * Both optional: `gap` defaults to 30m; `emit: false` keeps the "session" outputs back. Declares
 * session_is_new (bool) and session_pages, session_elapsed_sec, session_avg_gap_sec,
 * session_max_gap_sec (double).
 */
export const readSessions: StageReader = (r, path, value, scope) => {
  const errorsBefore = r.errors.length;
  const obj = r.object(path, value ?? {}, ["gap", "emit"]);
  if (!obj) return undefined;
  const gapMs = obj.gap === undefined ? DEFAULT_GAP_MS : r.duration(`${path}.gap`, obj.gap, "30m", { positive: true });
  const emitSessions = obj.emit === undefined ? true : r.boolean(`${path}.emit`, obj.emit);
  scope.declare(r, path, SESSION_VARS.isNew, "bool");
  for (const name of [SESSION_VARS.pages, SESSION_VARS.elapsedSec, SESSION_VARS.avgGapSec, SESSION_VARS.maxGapSec]) scope.declare(r, path, name, "double");
  if (r.errors.length > errorsBefore || gapMs === undefined || emitSessions === undefined) return undefined;
  return { definition: sessions({ gapMs, emitSessions }), outputs: emitSessions ? [SESSION_OUTPUT] : [] };
};
