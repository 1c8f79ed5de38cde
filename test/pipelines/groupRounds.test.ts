// A group's rounds in memory (test/fixtures/memoryRounds.ts): the shipped pipelines' stages that
// work across users (clusters, quantiles), run as partitions of a group, give one answer over every
// partition's users, and the same answer however the partitions' jobs interleave.
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { partitionOf } from "../../engine/partitioning.ts";
import { runJob } from "../../engine/job.ts";
import { GeneratorSource } from "../../simulator/generatorSource.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { jobOptions } from "../../pipelines/compile.ts";
import { behaviourMerger } from "../../operators/behaviour.ts";
import { mulberry32 } from "../harness.ts";
import { MemoryGroup } from "../fixtures/memoryRounds.ts";
import { expectOneAnswerForTheGroup } from "../fixtures/groupOutputs.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const CONFIG = resolve(import.meta.dirname, "../../config");
const PARTITIONS = 4;

afterAll(() => removeTempDirs());

/** ~16 hours of generated events (clusters every 30 min, quantiles every hour), by partition. */
function eventsByPartition(): object[][] {
  const generator = new GeneratorSource({ events: 20_000, users: 1_500, eventsPerSecond: 0.4, seed: 11, partitions: PARTITIONS });
  void generator.open(undefined);
  const byPartition: object[][] = Array.from({ length: PARTITIONS }, () => []);
  for (let batch = generator.nextBatch(5_000); ; batch = generator.nextBatch(5_000)) {
    for (const item of batch.items) {
      const event = (item as { value: { user_id: string } }).value;
      byPartition[partitionOf(event.user_id, PARTITIONS)].push(event);
    }
    if (batch.isDone) break;
  }
  return byPartition;
}

/**
 * Runs the shipped pipeline as the partitions of one group, each job reading its partition's events
 * from a file, the jobs started in an order drawn from `seed` and each yielding between batches a
 * number of times drawn from it too: returns every output, sorted.
 */
async function runGroup(shipped: string, byPartition: object[][], seed: number): Promise<string[]> {
  const dir = tempDir("flusso-group-rounds-");
  const rnd = mulberry32(seed);
  const specs = byPartition.map((events, p) => {
    const input = join(dir, `in-${p}.jsonl`);
    writeFileSync(input, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const pipeline = parse(readFileSync(join(CONFIG, shipped), "utf8")) as Record<string, unknown>;
    pipeline.source = { file: { path: input, format: "jsonl" } };
    pipeline.state = { dir: join(dir, `state-${p}`), checkpointInterval: "1h" };
    pipeline.sinks = [{ file: { path: join(dir, `out-${p}.jsonl`) } }];
    pipeline.deadLetter = { file: { path: join(dir, `dead-${p}.jsonl`) } };
    delete pipeline.late;
    const file = join(dir, `p${p}.yaml`);
    writeFileSync(file, stringify(pipeline));
    const spec = loadPipeline(file);
    // The group's own: the jobs' stages that work across users do so in rounds.
    return { ...spec, cluster: { group: "g", leaseTtlMs: 10_000, replicas: 1 } };
  });
  const group = new MemoryGroup(PARTITIONS, behaviourMerger(specs[0].behaviour!.stages)!);
  const order = [...specs.keys()].sort(() => rnd() - 0.5);
  await Promise.all(
    order.map(async (p) => {
      const options = jobOptions(specs[p]);
      const source = options.source;
      const pauses = Math.floor(rnd() * 4);
      const nextBatch = source.nextBatch.bind(source);
      source.nextBatch = async (max) => {
        for (let i = 0; i < pauses; i++) await new Promise((r) => setImmediate(r));
        return nextBatch(max);
      };
      await runJob({ ...options, rounds: group.exchange(p) });
    }),
  );
  return byPartition.flatMap((_, p) => readFileSync(join(dir, `out-${p}.jsonl`), "utf8").split("\n").filter((line) => line !== "")).sort();
}

describe("a group's rounds", () => {
  const byPartition = eventsByPartition();

  it.each([["retention.yaml"], ["segments.yaml"]])("%s: one answer over every partition's users, whatever the jobs' interleaving", async (shipped) => {
    const first = await runGroup(shipped, byPartition, 1);
    const second = await runGroup(shipped, byPartition, 2);
    expect(second).toEqual(first);
    expectOneAnswerForTheGroup(first, PARTITIONS);
  }, 120_000);
});
