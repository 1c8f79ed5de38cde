// The file sink's part in exactly once: the named file only ever holds committed lines (they wait in
// a part file until their checkpoint commits), recovery completes an append a crash interrupted and
// drops what no checkpoint covered, and a file that lost committed bytes is refused.
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SinkPositionLost } from "../../../engine/errors.ts";
import { FileSink } from "../../../engine/sinks/fileSink.ts";
import { mulberry32 } from "../../harness.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

type Position = { committedBytes: number; partNo: number };

/** A sink on `path` put back at `position`. */
async function recovered(path: string, position: unknown): Promise<FileSink> {
  const sink = new FileSink(path);
  await sink.recover(position);
  return sink;
}

/** A cut for checkpoint `checkpointId`: what the checkpoint records of the sink. */
async function cut(sink: FileSink, checkpointId: number): Promise<Position> {
  const position = (await sink.flush()) as Position;
  sink.hold(checkpointId);
  return position;
}

const text = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : "");
const lineOf = (n: number) => `${JSON.stringify({ n })}\n`;

describe("FileSink", () => {
  it("shows a line in the named file only once the checkpoint holding it has committed", async () => {
    const path = join(tempDir(), "out", "results.jsonl");
    const sink = await recovered(path, undefined);
    sink.write({ n: 1 });
    sink.write({ n: 2 });
    await cut(sink, 1);
    expect(text(path)).toBe("");
    sink.release(1);
    expect(text(path)).toBe(lineOf(1) + lineOf(2));
    expect(sink.deliveredThrough()).toBe(1);
    await sink.close();
  });

  it("drops on recovery what no committed checkpoint covers, and writes on from there", async () => {
    const path = join(tempDir(), "out", "results.jsonl");
    const first = await recovered(path, undefined);
    first.write({ n: 1 });
    const committed = await cut(first, 1);
    first.release(1);
    first.write({ n: 2 });
    await cut(first, 2); // checkpoint 2 never commits: the crash comes first
    first.write({ n: 3 });
    await first.close();

    const restored = await recovered(path, committed);
    expect(text(path)).toBe(lineOf(1));
    expect(readdirSync(dirname(path)).filter((f) => f.includes(".part-"))).toEqual([]);
    restored.write({ n: 2 });
    const next = await cut(restored, 2);
    restored.release(2);
    expect(next.committedBytes).toBe(Buffer.byteLength(lineOf(1) + lineOf(2)));
    expect(text(path)).toBe(lineOf(1) + lineOf(2));
    await restored.close();
  });

  it("completes on recovery the append of a committed checkpoint that a crash interrupted", async () => {
    const path = join(tempDir(), "out", "results.jsonl");
    const first = await recovered(path, undefined);
    first.write({ n: 1 });
    first.release((await cut(first, 1), 1));
    for (let n = 2; n <= 5; n++) first.write({ n });
    const committed = await cut(first, 2);
    // Checkpoint 2 committed; its append stopped half way (the crash), leaving the named file short.
    writeFileSync(path, lineOf(1) + lineOf(2) + lineOf(3).slice(0, 4));
    await first.close();

    const restored = await recovered(path, committed);
    expect(text(path)).toBe([1, 2, 3, 4, 5].map(lineOf).join(""));
    expect(statSync(path).size).toBe(committed.committedBytes);
    await restored.close();
  });

  it("refuses a named file that lost committed bytes its part file cannot give back, naming the path and both lengths", async () => {
    const path = join(tempDir(), "out", "results.jsonl");
    const first = await recovered(path, undefined);
    first.write({ n: 1 });
    first.release((await cut(first, 1), 1));
    await first.close();
    const committed = { committedBytes: statSync(path).size, partNo: 1 };
    writeFileSync(path, "{");
    const restoring = recovered(path, committed);
    await expect(restoring).rejects.toThrow(SinkPositionLost);
    await expect(recovered(path, committed)).rejects.toThrow(`${path} has 1 bytes but the checkpoint committed ${committed.committedBytes}`);
  });

  it("cuts back a named file that grew past its committed length outside flusso", async () => {
    const path = join(tempDir(), "results.jsonl");
    writeFileSync(path, lineOf(1) + "appended by hand\n");
    const sink = await recovered(path, { committedBytes: Buffer.byteLength(lineOf(1)), partNo: 4 });
    expect(text(path)).toBe(lineOf(1));
    await sink.close();
  });

  it("reads a position written before part files (a plain length) as the committed length", async () => {
    const path = join(tempDir(), "results.jsonl");
    writeFileSync(path, lineOf(1) + lineOf(2));
    const sink = await recovered(path, Buffer.byteLength(lineOf(1)));
    expect(text(path)).toBe(lineOf(1));
    await sink.close();
  });

  it.each([
    ["a committed position of 0", { committedBytes: 0, partNo: 0 }],
    ["no committed position", undefined],
  ])("starts an empty file, its folder made, where none exists and there is %s", async (_name, position) => {
    const path = join(tempDir(), "new", "folder", "results.jsonl");
    const sink = await recovered(path, position);
    expect(statSync(path).size).toBe(0);
    await sink.close();
    expect(readdirSync(dirname(path))).toEqual(["results.jsonl"]); // a clean close leaves no part file
  });

  it("counts bytes, not characters, in the committed length", async () => {
    const path = join(tempDir(), "results.jsonl");
    const sink = await recovered(path, undefined);
    sink.write({ name: "Zoë", price: "12€" });
    const position = await cut(sink, 1);
    expect(position.committedBytes).toBe(Buffer.byteLength('{"name":"Zoë","price":"12€"}\n'));
    await sink.close();
  });

  it("writes what it buffers past the flush threshold to the part file, in the order written", async () => {
    const dir = tempDir();
    const path = join(dir, "results.jsonl");
    const sink = await recovered(path, undefined);
    const rnd = mulberry32(3);
    const written = Array.from({ length: 3000 }, (_, n) => ({ n, pad: "x".repeat(Math.floor(rnd() * 300)) }));
    for (const value of written) sink.write(value);
    expect(statSync(`${path}.part`).size).toBeGreaterThan(0); // before any flush
    sink.release((await cut(sink, 1), 1));
    expect(text(path)).toBe(written.map((v) => `${JSON.stringify(v)}\n`).join(""));
    await sink.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
