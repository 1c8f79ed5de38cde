// The file sink's part in exactly once: recovery cuts the file back to the length the checkpoint
// committed (and refuses one that lost bytes), and flush returns the length it made durable.
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SinkPositionLost } from "../../../engine/errors.ts";
import { FileSink } from "../../../engine/sinks/fileSink.ts";
import { mulberry32 } from "../../harness.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

/** A sink on `path` put back at `position`. */
async function recovered(path: string, position: unknown): Promise<FileSink> {
  const sink = new FileSink(path);
  await sink.recover(position);
  return sink;
}

const lines = (path: string) => readFileSync(path, "utf8").split("\n").filter((l) => l !== "");

describe("FileSink recovery", () => {
  it("cuts what was written after the last checkpoint, and writes on from the committed length", async () => {
    const path = join(tempDir(), "out", "results.jsonl");
    const first = await recovered(path, undefined);
    first.write({ n: 1 });
    first.write({ n: 2 });
    const committed = await first.flush();
    // Written after the checkpoint, then a crash: longer than what the restored job writes again,
    // so a sink that only wrote over it would leave its tail behind.
    first.write({ n: 3, note: "x".repeat(100) });
    first.write({ n: 4 });
    await first.close();
    expect(statSync(path).size).toBeGreaterThan(committed as number);

    const restored = await recovered(path, committed);
    expect(statSync(path).size).toBe(committed);
    restored.write({ n: 3 });
    expect(await restored.flush()).toBe((committed as number) + Buffer.byteLength('{"n":3}\n'));
    await restored.close();
    expect(lines(path)).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
  });

  it("refuses a file shorter than its checkpoint with SinkPositionLost, naming the path and both lengths", async () => {
    const path = join(tempDir(), "results.jsonl");
    writeFileSync(path, '{"n":1}\n');
    const error = await new FileSink(path).recover(100).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SinkPositionLost);
    expect(error).toMatchObject({ path, committedBytes: 100, actualBytes: 8 });
    expect((error as Error).message).toBe(`${path} has 8 bytes but the checkpoint committed 100; the output was truncated or replaced outside flusso`);
    expect(readFileSync(path, "utf8")).toBe('{"n":1}\n'); // refused, not cut
  });

  it.each([
    ["a committed position of 0", 0],
    ["no committed position", undefined],
  ])("starts an empty file, its folder made, where none exists and there is %s", async (_name, position) => {
    const path = join(tempDir(), "new", "folder", "results.jsonl");
    const sink = await recovered(path, position);
    expect(existsSync(path)).toBe(true);
    expect(statSync(path).size).toBe(0);
    sink.write({ n: 1 });
    expect(await sink.flush()).toBe(8);
    await sink.close();
    expect(readFileSync(path, "utf8")).toBe('{"n":1}\n');
  });
});

describe("FileSink writing", () => {
  it("returns from flush the length in bytes it made durable, multi-byte characters counted as bytes", async () => {
    const path = join(tempDir(), "results.jsonl");
    const sink = await recovered(path, undefined);
    expect(await sink.flush()).toBe(0);
    sink.write({ user: "zoë", city: "東京" });
    const afterOne = await sink.flush();
    expect(afterOne).toBe(statSync(path).size);
    expect(afterOne).toBe(Buffer.byteLength('{"user":"zoë","city":"東京"}\n'));
    sink.write({ emoji: "😀" });
    expect(await sink.flush()).toBe(statSync(path).size);
    await sink.close();
  });

  it("writes what it buffers once past the flush threshold, before any flush, in the order written", async () => {
    const path = join(tempDir(), "results.jsonl");
    const sink = await recovered(path, undefined);
    const rnd = mulberry32(3);
    // ~600 KiB of lines of random lengths: past the 256 KiB threshold twice.
    const values = Array.from({ length: 3000 }, (_, i) => ({ i, pad: "p".repeat(Math.floor(rnd() * 400)) }));
    values.slice(0, 10).forEach((v) => sink.write(v));
    expect(statSync(path).size).toBe(0); // below the threshold: held
    values.slice(10).forEach((v) => sink.write(v));
    const writtenBeforeFlush = statSync(path).size;
    expect(writtenBeforeFlush).toBeGreaterThan(256 * 1024);
    // Whole lines, the oldest first: what is written before a flush is a prefix of the values.
    const prefix = lines(path).map((l) => JSON.parse(l));
    expect(prefix).toEqual(values.slice(0, prefix.length));
    const total = await sink.flush();
    await sink.close();
    expect(total).toBeGreaterThan(writtenBeforeFlush);
    expect(lines(path).map((l) => JSON.parse(l))).toEqual(values);
  });
});
