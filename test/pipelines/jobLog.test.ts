// How `flusso run` and `flusso publish` speak on stderr: JSON lines with level, time, msg and the event's
// fields, or text lines; the progress line (a terminal only); the summary's two lines in a fixed order.
import { describe, expect, it } from "vitest";
import type { JobResult } from "../../engine/job.ts";
import { JobLog, progressLine, summaryLines, type LogEvent } from "../../pipelines/jobLog.ts";

function captured(format: "text" | "json", options: { isTerminal?: boolean; quiet?: boolean; isDebug?: boolean; columns?: number } = {}) {
  let text = "";
  const log = new JobLog(format, { isTerminal: options.isTerminal ?? false, quiet: options.quiet ?? false, isDebug: options.isDebug, columns: options.columns, write: (t) => (text += t) });
  return { log, text: () => text, lines: () => text.split("\n").filter((l) => l !== "") };
}

const RETRYING: LogEvent = { event: "retrying", client: "source EVENTS", address: "nats://127.0.0.1:4999", reason: "connection refused", retryMs: 500 };

function result(counters: Record<string, number>, extra: Partial<JobResult> = {}): JobResult {
  const c = { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 1, ...counters };
  return { counters: c, thisRun: c, elapsedMs: 2_000, isComplete: true, restoredFromCheckpoint: undefined, ...extra };
}

describe("JobLog", () => {
  it("writes JSON lines with level, time, msg and the event's fields", () => {
    const { log, lines } = captured("json");
    log.event(RETRYING);
    log.event({ event: "restored", checkpointId: 12, watermarkMs: Date.UTC(2024, 4, 20, 10) });
    const [retrying, restored] = lines().map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(retrying).toEqual({
      level: "warn",
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      event: "retrying",
      client: "source EVENTS",
      address: "nats://127.0.0.1:4999",
      reason: "connection refused",
      retryMs: 500,
      msg: "source EVENTS: NATS at nats://127.0.0.1:4999 cannot be reached (connection refused); retrying every 0.5 s until it can",
    });
    expect(restored).toMatchObject({ level: "info", event: "restored", checkpointId: 12, msg: "restored from checkpoint 12; event time resumes at 2024-05-20 10:00:00" });
  });

  it("writes a checkpoint's line only at the debug level (FLUSSO_LOG_LEVEL=debug), with its timings", () => {
    const checkpoint: LogEvent = { event: "checkpoint", checkpointId: 4, entries: 120, bytes: 9000, startedAtMs: 1_700_000_000_000, waitMs: 0, flushMs: 2, snapshotMs: 3, durableMs: 7, totalMs: 12 };
    for (const format of ["json", "text"] as const) {
      const quiet = captured(format);
      quiet.log.event(checkpoint);
      expect(quiet.text()).toBe("");
    }
    const { log, lines } = captured("json", { isDebug: true });
    log.event(checkpoint);
    expect(JSON.parse(lines()[0])).toMatchObject({
      level: "debug",
      event: "checkpoint",
      checkpointId: 4,
      startedAtMs: 1_700_000_000_000,
      totalMs: 12,
      msg: "checkpoint 4 durable after 12 ms (the job held 5 ms: 0 ms waiting for the previous one, 2 ms flushing sinks, 3 ms packing 120 entries), 9000 bytes",
    });
    const text = captured("text", { isDebug: true });
    text.log.event(checkpoint);
    expect(text.text()).toMatch(/^flusso: checkpoint 4 durable after 12 ms/);
  });

  it("keeps a failure's text in msg only, multi-line as it is", () => {
    const { log, lines } = captured("json");
    log.event({ event: "failed", error: "StateMismatch: a\n  - b" });
    expect(JSON.parse(lines()[0])).toEqual({ level: "error", time: expect.any(String), event: "failed", msg: "StateMismatch: a\n  - b" });
  });

  it("writes text lines prefixed with flusso:, and draws no progress line off a terminal", () => {
    const { log, text } = captured("text");
    log.progress("1 events");
    log.event(RETRYING);
    expect(text()).toBe("flusso: source EVENTS: NATS at nats://127.0.0.1:4999 cannot be reached (connection refused); retrying every 0.5 s until it can\n");
  });

  it("redraws the progress line on a terminal, clipped to its width, and clears it for a line", () => {
    const { log, text } = captured("text", { isTerminal: true, columns: 30 });
    log.progress("x".repeat(50));
    log.event({ event: "stopping", checkpointId: 3 });
    expect(text()).toBe(`\r\x1b[K${"x".repeat(29)}\r\x1b[Kflusso: stopping: taking a last checkpoint (3)\n`);
  });

  it("keeps only warnings and errors when quiet, and no summary", () => {
    const { log, lines } = captured("json", { quiet: true });
    log.event({ event: "fresh-start", wasReset: false });
    log.event(RETRYING);
    log.summary(result({ read: 5 }));
    expect(lines().map((l) => (JSON.parse(l) as { event: string }).event)).toEqual(["retrying"]);
  });

  it("ends with the summary as one JSON line: the engine's counters and the pipeline's under `pipeline`", () => {
    const { log, lines } = captured("json");
    log.summary(result({ read: 10, outputs: 4, duplicates: 2 }));
    expect(JSON.parse(lines()[0])).toMatchObject({ event: "done", read: 10, outputs: 4, late: 0, deadLettered: 0, checkpoints: 1, eventsPerSecond: 5, pipeline: { duplicates: 2 }, msg: expect.stringMatching(/^done: 10 events/) });
  });
});

describe("summaryLines", () => {
  it("puts the engine's counters in a fixed order on one line and the pipeline's, by name, on a second", () => {
    const lines = summaryLines(result({ triggers_sent: 7, read: 1000, duplicates: 3, deadLettered: 2, late: 1, outputs: 40 }));
    expect(lines).toEqual(["done: 1000 events in 2.0 s (500 events/s), 40 outputs, 1 late, 2 dead-lettered", "  pipeline: 3 duplicates, 7 triggers sent"]);
  });

  it("has one line when the pipeline keeps no counters of its own", () => {
    expect(summaryLines(result({ read: 3 }, { isComplete: false }))).toEqual(["stopped: 3 events in 2.0 s (2 events/s), 0 outputs, 0 late, 0 dead-lettered"]);
  });

  it("wraps the pipeline's counters to fit 100 columns", () => {
    const many = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`segment_enters_${String.fromCharCode(97 + i)}`, 123_456]));
    const lines = summaryLines(result({ read: 9_999_999, outputs: 9_999_999, ...many }));
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(100);
    expect(lines.slice(1).join(" ")).toContain("123456 segment enters a, 123456 segment enters b");
  });
});

describe("progressLine", () => {
  it("shows events, the percentage of a sized input, the rate since the last line, the watermark and the checkpoint age", () => {
    const previous = { counters: { read: 1_000, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 }, watermarkMs: 0, atMs: 10_000 };
    const now = { counters: { read: 3_000, outputs: 0, late: 0, deadLettered: 0, checkpoints: 1 }, watermarkMs: Date.UTC(2024, 4, 20, 10, 0, 5), lastCheckpointAtMs: 9_000, source: { done: 420, total: 1_000 }, atMs: 12_000 };
    expect(progressLine(now, previous, 0)).toBe("3000 events (42%), 1000/s, watermark 2024-05-20 10:00:05, checkpoint 3.0 s ago");
  });

  it("says so before the first event and the first checkpoint, and shows no percentage for an input of unknown size", () => {
    const now = { counters: { read: 0, outputs: 0, late: 0, deadLettered: 0, checkpoints: 0 }, watermarkMs: -Infinity, atMs: 1_000 };
    expect(progressLine(now, undefined, 0)).toBe("0 events, 0/s, watermark none yet, no checkpoint yet");
  });
});
