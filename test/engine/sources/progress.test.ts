// Source.progress(): how far a bounded source has read, in its own units (bytes of files, events of
// the generator, messages of a bounded stream), from 0 to all of it, continuing from a checkpoint's
// position after a restore; a live stream's size is unknown.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pack } from "msgpackr";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { FileSource, type FileFormat } from "../../../engine/sources/fileSource.ts";
import { NatsSource } from "../../../engine/sources/natsSource.ts";
import { startNatsServer } from "../../natsServer.ts";
import { GeneratorSource } from "../../../simulator/generatorSource.ts";
import { removeTempDirs, tempDir } from "../../pipelines/pipelineFiles.ts";

afterAll(removeTempDirs);

const EVENTS = Array.from({ length: 300 }, (_, i) => ({ user_id: `u${i % 7}`, ts: 1_716_163_200_000 + i * 1000, page: `/p/${i}` }));

function files(format: FileFormat): string[] {
  const dir = tempDir("flusso-progress-");
  const halves = [EVENTS.slice(0, 100), EVENTS.slice(100)];
  return halves.map((events, i) => {
    const path = join(dir, `events${i}.${format}`);
    if (format === "jsonl") writeFileSync(path, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    else if (format === "csv") writeFileSync(path, ["user_id,ts,page", ...events.map((e) => `${e.user_id},${e.ts},${e.page}`)].join("\n") + "\n");
    else writeFileSync(path, Buffer.concat(events.map((e) => pack(e))));
    return path;
  });
}

describe("FileSource.progress", () => {
  it.each(["jsonl", "csv", "msgpack"] as const)("counts the bytes read of both %s files' sizes, from 0 to all of them", async (format) => {
    const paths = files(format);
    const source = new FileSource({ paths, format });
    await source.open(undefined);
    const { total } = source.progress();
    expect(total).toBeGreaterThan(0);
    // A CSV file's header is read when it opens: that much is done before the first event.
    expect(source.progress().done).toBe(format === "csv" ? 2 * "user_id,ts,page\n".length : 0);
    const seen: number[] = [];
    for (;;) {
      const batch = source.nextBatch(50);
      seen.push(source.progress().done);
      if (batch.isDone) break;
    }
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(seen.some((done) => done > 0 && done < total)).toBe(true);
    expect(seen.at(-1)).toBe(total);
    await source.close();
  });

  it("goes on from a checkpoint's position after a restore", async () => {
    const paths = files("jsonl");
    const first = new FileSource({ paths, format: "jsonl" });
    await first.open(undefined);
    first.nextBatch(60);
    const position = first.position();
    const done = first.progress().done;
    await first.close();
    const second = new FileSource({ paths, format: "jsonl" });
    await second.open(position);
    expect(second.progress()).toEqual({ done, total: first.progress().total });
    await second.close();
  });
});

describe("GeneratorSource.progress", () => {
  it("counts the events emitted of those asked for", async () => {
    const source = new GeneratorSource({ events: 1_000, seed: 7, partitions: 2 });
    await source.open(undefined);
    expect(source.progress()).toEqual({ done: 0, total: 1_000 });
    source.nextBatch(300);
    expect(source.progress()).toEqual({ done: 300, total: 1_000 });
  });
});

describe("NatsSource.progress", { timeout: 30_000 }, () => {
  it("counts a bounded stream's messages read of those it held at start-up, and has none for a live stream", async () => {
    const server = await startNatsServer();
    try {
      const nc = await connect({ servers: server.url });
      await (await jetstreamManager(nc)).streams.add({ name: "PROG", subjects: ["prog.>"] });
      const js = jetstream(nc);
      for (const e of EVENTS.slice(0, 40)) await js.publish("prog.0", JSON.stringify(e));
      await nc.close();
      const options = { servers: server.url, stream: "PROG", subjects: ["prog.>"], format: "json" as const };
      const bounded = new NatsSource({ ...options, bounded: true });
      await bounded.open(undefined);
      expect(bounded.progress()).toEqual({ done: 0, total: 40 });
      let read = 0;
      while (read < 15) read += (await bounded.nextBatch(15 - read)).items.length;
      expect(bounded.progress()).toEqual({ done: 15, total: 40 });
      const position = bounded.position();
      await bounded.close();
      // Restored from sequence 15: the share goes on from there, as a file's does.
      const resumed = new NatsSource({ ...options, bounded: true });
      await resumed.open(position);
      expect(resumed.progress()).toEqual({ done: 15, total: 40 });
      await resumed.close();
      const live = new NatsSource(options);
      await live.open(undefined);
      expect(live.progress()).toBeUndefined();
      await live.close();
    } finally {
      await server.stop();
    }
  });
});
