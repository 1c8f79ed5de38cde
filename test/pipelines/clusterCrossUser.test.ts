// The stages that look across users (k-means clusters, quantile digests) give one answer for the
// whole group, made in rounds (engine/rounds.ts), and the same outputs whether one worker runs every
// partition or three share them, with partitions moving between workers as they join: the results
// depend on the events and the partition count, not on the workers.
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readStream, startNatsServer, type NatsServer } from "../natsServer.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runClusterPipeline } from "../../pipelines/cluster.ts";
import { GeneratorSource } from "../../simulator/generatorSource.ts";
import { publishPartitioned } from "../fixtures/clusterEvents.ts";
import { expectOneAnswerForTheGroup } from "../fixtures/groupOutputs.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const CONFIG = resolve(import.meta.dirname, "../../config");
const PARTITIONS = 4;

let server: NatsServer;
beforeAll(async () => {
  server = await startNatsServer();
  // ~16 hours of event time: rounds of clusters (every 30 min) and quantiles (every hour).
  const generator = new GeneratorSource({ events: 30_000, users: 2_000, eventsPerSecond: 0.5, seed: 7, partitions: PARTITIONS });
  await generator.open(undefined);
  const events: object[] = [];
  for (let batch = generator.nextBatch(5_000); ; batch = generator.nextBatch(5_000)) {
    for (const item of batch.items) events.push((item as { value: object }).value);
    if (batch.isDone) break;
  }
  await publishPartitioned(server.url, "XU", events, PARTITIONS);
}, 60_000);
afterAll(async () => {
  await server?.stop();
  removeTempDirs();
});

/** A shipped pipeline read from the stream XU as a cluster, every output to the stream `output`. */
function clusterPipeline(shipped: string, group: string, output: string, dir: string): string {
  const spec = parse(readFileSync(join(CONFIG, shipped), "utf8")) as Record<string, unknown>;
  // The pipeline's name as shipped: triggers' message ids are made from it.
  spec.source = { nats: { servers: server.url, stream: "XU", subjects: ["xu.>"], partitions: PARTITIONS, bounded: true } };
  spec.state = { dir: join(dir, "state"), checkpointInterval: "200ms" };
  const subject = output.toLowerCase();
  spec.sinks = [{ nats: { servers: server.url, stream: output, subject: `${subject}.out` } }];
  spec.deadLetter = { nats: { servers: server.url, stream: output, subject: `${subject}.dead` } };
  delete spec.late;
  spec.cluster = { group, leaseTtl: "2s" };
  const file = join(dir, `${group}.yaml`);
  writeFileSync(file, stringify(spec));
  return file;
}

/** Runs `workers` workers of the pipeline in this process, each joining a little after the last, until the group is done. */
async function runWorkers(file: string, workers: number): Promise<void> {
  const runs: Array<Promise<unknown>> = [];
  for (let i = 0; i < workers; i++) {
    runs.push(runClusterPipeline(loadPipeline(file)));
    // Partitions move as workers join: the first takes them all, the next ones take their share over.
    await new Promise((r) => setTimeout(r, 300));
  }
  const results = (await Promise.all(runs)) as Array<{ isComplete: boolean }>;
  expect(results.every((r) => r.isComplete)).toBe(true);
}

async function outputsOfKinds(stream: string, kinds: readonly string[]): Promise<string[]> {
  return (await readStream(server.url, stream)).filter((body) => kinds.some((kind) => body.includes(`"${kind}"`))).sort();
}

describe("cross-user stages in a cluster", () => {
  it.each([
    ["segments.yaml", ["quantiles", "segment", "tag"]],
    ["retention.yaml", ["clusters", "cluster_retention", "segment"]],
  ])("%s: 1 and 3 workers write the same outputs", async (shipped, kinds) => {
    const dir = tempDir("flusso-cluster-xu-");
    const name = shipped.replace(".yaml", "");
    await runWorkers(clusterPipeline(shipped, `${name}1`, `${name.toUpperCase()}1`, dir), 1);
    await runWorkers(clusterPipeline(shipped, `${name}3`, `${name.toUpperCase()}3`, dir), 3);
    const one = await readStream(server.url, `${name.toUpperCase()}1`);
    const three = await readStream(server.url, `${name.toUpperCase()}3`);
    if (process.env.FLUSSO_TEST_LOGS) {
      writeFileSync(`${process.env.FLUSSO_TEST_LOGS}/${name}-1.txt`, [...one].sort().join("\n"));
      writeFileSync(`${process.env.FLUSSO_TEST_LOGS}/${name}-3.txt`, [...three].sort().join("\n"));
    }
    expect(three.length).toBe(one.length);
    expect([...three].sort()).toEqual([...one].sort());
    // The cross-user outputs are among them, not absent from both.
    const crossUser = await outputsOfKinds(`${name.toUpperCase()}1`, kinds);
    expect(crossUser.length).toBeGreaterThan(0);
    expectOneAnswerForTheGroup(one, PARTITIONS);
  }, 300_000);
});
