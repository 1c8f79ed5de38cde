// The baseline of benchmark 6: what `flusso run` does for one tumbling window, as a plain script:
// read JSON lines, JSON.parse, count and sum per (user, hour) in a Map, write the results as JSON lines.
// Usage: node --import tsx bench/plainJsonlAggregate.ts <events.jsonl> <results.jsonl> [readline|chunked]
// No event time, no checkpoints, no dead letters: the least a script doing this job has to do.
import { createReadStream, openSync, closeSync, readSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";

const HOUR_MS = 3_600_000;

type Totals = { events: number; duration: number };

const byUser = new Map<string, Map<number, Totals>>();

function add(line: string): void {
  if (line.length === 0) return;
  const e = JSON.parse(line) as { user_id: string; timestamp: number; session_duration_sec: number };
  const startMs = e.timestamp - (e.timestamp % HOUR_MS);
  let windows = byUser.get(e.user_id);
  if (windows === undefined) {
    windows = new Map();
    byUser.set(e.user_id, windows);
  }
  const totals = windows.get(startMs);
  if (totals === undefined) windows.set(startMs, { events: 1, duration: e.session_duration_sec });
  else {
    totals.events++;
    totals.duration += e.session_duration_sec;
  }
}

/** The idiomatic way: readline over a read stream. */
async function readWithReadline(path: string): Promise<void> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  for await (const line of lines) add(line);
}

/** 1 MiB synchronous reads, split on newlines (what flusso's LineReader does too). */
function readChunked(path: string): void {
  const fd = openSync(path, "r");
  const chunk = Buffer.alloc(1 << 20);
  let carry = "";
  for (;;) {
    const bytesRead = readSync(fd, chunk, 0, chunk.length, null);
    if (bytesRead === 0) break;
    const text = carry + chunk.toString("utf8", 0, bytesRead);
    let start = 0;
    for (let newlineAt = text.indexOf("\n"); newlineAt >= 0; newlineAt = text.indexOf("\n", start)) {
      add(text.slice(start, newlineAt));
      start = newlineAt + 1;
    }
    carry = text.slice(start);
  }
  add(carry);
  closeSync(fd);
}

const [input, output, mode = "readline"] = process.argv.slice(2);
if (!input || !output || (mode !== "readline" && mode !== "chunked")) {
  process.stderr.write("usage: plainJsonlAggregate.ts <events.jsonl> <results.jsonl> [readline|chunked]\n");
  process.exit(2);
}
if (mode === "readline") await readWithReadline(input);
else readChunked(input);
const out: string[] = [];
for (const [key, windows] of byUser) {
  for (const [start, { events, duration }] of windows) {
    out.push(JSON.stringify({ window: "hourly", key, start, end: start + HOUR_MS, events, duration }));
  }
}
writeFileSync(output, out.join("\n") + "\n");
