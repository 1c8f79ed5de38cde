// Tests of the file source over hostile input: values too deep, too wide or not UTF-8 are
// dead-lettered, and reading goes on.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FileSource, type FileFormat } from "../../../engine/sources/fileSource.ts";
import type { SourceItem } from "../../../engine/sources/source.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

const T0 = Date.UTC(2024, 4, 20);

type Ev = { user_id: string; ts: number; event_type: string; price: number; page: string };

function writeTemp(name: string, content: string | Buffer): string {
  const path = join(tempDir(), name);
  writeFileSync(path, content);
  return path;
}

type Read = { items: SourceItem[]; positionsAfterBatch: unknown[] };

/** Every item of `path` from `position`, in batches of `batchSize`, with the position after each batch. */
async function readAll(path: string, format: FileFormat, options: { batchSize?: number; position?: unknown; maxLineBytes?: number } = {}): Promise<Read> {
  const source = new FileSource({ paths: [path], format, maxLineBytes: options.maxLineBytes });
  await source.open(options.position);
  const items: SourceItem[] = [];
  const positionsAfterBatch: unknown[] = [];
  try {
    for (;;) {
      const batch = source.nextBatch(options.batchSize ?? 100);
      items.push(...batch.items);
      positionsAfterBatch.push(source.position());
      if (batch.isDone) return { items, positionsAfterBatch };
    }
  } finally {
    await source.close();
  }
}

const valuesOf = (items: SourceItem[]) => items.filter((i) => i.error === undefined).map((i) => i.value);
const errorsOf = (items: SourceItem[]) => items.filter((i) => i.error !== undefined) as Array<Extract<SourceItem, { error: string }>>;

describe("JSON lines and CSV", () => {
  const line = (e: Partial<Ev> & Record<string, unknown>) => JSON.stringify({ user_id: "u1", ts: T0, event_type: "view", ...e });

  it("skips a UTF-8 byte-order mark at the start of the file, and only there", async () => {
    const bom = "\uFEFF";
    const path = writeTemp("events.jsonl", `${bom}${line({ ts: T0 })}\n${bom}${line({ ts: T0 + 1 })}\n${line({ ts: T0 + 2 })}\n`);
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items).map((v) => (v as Ev).ts)).toEqual([T0, T0 + 2]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:2`, expect.stringMatching(/^not JSON: /)]]);
  });

  it("resumes after the first line of a file that starts with a byte-order mark", async () => {
    const path = writeTemp("events.jsonl", `\uFEFF${line({ ts: T0 })}\n${line({ ts: T0 + 1 })}\n`);
    const first = await readAll(path, "jsonl", { batchSize: 1 });
    const restored = await readAll(path, "jsonl", { position: first.positionsAfterBatch[0] });
    expect(valuesOf(restored.items).map((v) => (v as Ev).ts)).toEqual([T0 + 1]);
  });

  it("dead-letters a line that is not UTF-8 (which would decode to U+FFFD), saying where, and reads valid multi-byte lines", async () => {
    const good = (user: string) => Buffer.from(`${line({ user_id: user })}\n`);
    const bad = Buffer.concat([Buffer.from('{"user_id":"al'), Buffer.from([0xe9]), Buffer.from(`ce","ts":${T0},"event_type":"view"}\n`)]);
    const path = writeTemp("events.jsonl", Buffer.concat([good("zoë"), bad, good("中文"), good("😀"), good("u2")]));
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items).map((v) => (v as Ev).user_id)).toEqual(["zoë", "中文", "😀", "u2"]);
    expect(errorsOf(items)).toEqual([
      { partition: 0, error: "not UTF-8: an invalid byte sequence at byte 14 of the line", raw: bad.toString("utf8").trimEnd(), origin: `${path}:2` },
    ]);
  });

  it("checks lines whose multi-byte characters straddle two reads, and finds bad bytes in the second", async () => {
    // Lines of "é" (2 bytes) with odd lengths, so one falls across the 1 MiB boundary of a read.
    const good = Buffer.from(`${line({ page: "é".repeat(1000) })}\n`);
    const lines = Array.from({ length: Math.ceil((1.5 * (1 << 20)) / good.length) }, () => good);
    const bad = Buffer.concat([Buffer.from('{"page":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]);
    const path = writeTemp("events.jsonl", Buffer.concat([...lines, bad, good]));
    const { items } = await readAll(path, "jsonl");
    expect(valuesOf(items)).toHaveLength(lines.length + 1);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:${lines.length + 1}`, "not UTF-8: an invalid byte sequence at byte 9 of the line"]]);
  });

  it("dead-letters a CSV row that is not UTF-8", async () => {
    const path = writeTemp("events.csv", Buffer.concat([Buffer.from("user_id,ts\nu1,1\nu"), Buffer.from([0xff]), Buffer.from(",2\nu3,3\n")]));
    const { items } = await readAll(path, "csv");
    expect(valuesOf(items)).toEqual([{ user_id: "u1", ts: "1" }, { user_id: "u3", ts: "3" }]);
    expect(errorsOf(items).map((e) => [e.origin, e.error])).toEqual([[`${path}:3`, "not UTF-8: an invalid byte sequence at byte 1 of the line"]]);
  });

  it("dead-letters a JSON line nested 100,000 deep and a list of 20,000 entries with a short preview, and reads on", async () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const wide = line({ tags: Array.from({ length: 20_000 }, () => 1) });
    const path = writeTemp("events.jsonl", [line({ ts: T0 }), deep, line({ ts: T0 + 1 }), wide, line({ ts: T0 + 2 })].join("\n") + "\n");
    const { items } = await readAll(path, "jsonl", { maxLineBytes: 1 << 20 });
    expect(valuesOf(items).map((v) => (v as Ev).ts)).toEqual([T0, T0 + 1, T0 + 2]);
    expect(errorsOf(items)).toEqual([
      { partition: 0, error: "nested deeper than 64 levels", raw: "[".repeat(200), origin: `${path}:2` },
      { partition: 0, error: "a list of 20000 entries, over the limit of 10000", raw: wide.slice(0, 200), origin: `${path}:4` },
    ]);
  });

  it("quotes no input in the reason of a line that is not JSON", async () => {
    const path = writeTemp("events.jsonl", "bob@example.com\n");
    const [item] = (await readAll(path, "jsonl")).items;
    expect(item).toMatchObject({ error: "not JSON: Unexpected token (not valid JSON)", raw: "bob@example.com" });
  });
});
