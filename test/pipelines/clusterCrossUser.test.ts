// The stages that look across users (k-means clusters, quantile digests, segment counts) give the
// same outputs whether one worker runs every partition or three share them, with partitions moving
// between workers as they join: the results depend on the events and the partition count, not on
// the workers. (Each partition computes them over its own users: see the README, "Running on many workers".)
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readStream, startNatsServer, type NatsServer } from "../natsServer.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runClusterPipeline } from "../../pipelines/cluster.ts";
import { publish } from "../../pipelines/publish.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const CONFIG = resolve(import.meta.dirname, "../../config");
const PARTITIONS = 4;

let server: NatsServer;
beforeAll(async () => {
  server = await startNatsServer();
  await publish({ input: "generator", servers: server.url, stream: "XU", subject: "xu", partitions: PARTITIONS, rate: 0, format: "json", key: "user_id", events: 60_000, seed: 7 });
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
  }, 300_000);
});
