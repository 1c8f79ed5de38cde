// Workers on a three-node NATS cluster (routes on loopback ports; event, output and checkpoint
// streams and lease buckets with 3 replicas): a NATS server killed mid-stream costs no output and
// duplicates none.
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { readStream, startNatsCluster, type NatsCluster } from "../natsServer.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { partitionOf } from "../../engine/partitioning.ts";
import { checkpointStreamName } from "../../engine/cluster/checkpointLog.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const T0 = Date.UTC(2024, 4, 20);
const PARTITIONS = 6;

let nats: NatsCluster;
const children = new Set<ChildProcess>();
beforeAll(async () => {
  nats = await startNatsCluster(3);
}, 60_000);
afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await nats?.stop();
  removeTempDirs();
});

async function streamsOf(url: string) {
  const nc = await connect({ servers: url });
  return { nc, jsm: await jetstreamManager(nc), js: jetstream(nc) };
}

function pipelineYaml(name: string, stateDir: string, output: string, isCluster: boolean): string {
  const servers = JSON.stringify(nats.urls);
  return `name: ${name}
source: { nats: { servers: ${servers}, stream: REPIN, subjects: ["repin.>"], partitions: ${PARTITIONS}, bounded: true } }
${eventSchemaYaml()}watermark: { maxOutOfOrderness: 10s }
state: { dir: ${stateDir}, checkpointInterval: 100ms }
windows:
  - name: hourly
    type: tumbling
    size: 1h
    aggregate: { events: count, carts: { count: 'event_type == "cart"' } }
sinks:
  - { nats: { servers: ${servers}, stream: ${output}, subject: ${output.toLowerCase()}.out } }
deadLetter: { nats: { servers: ${servers}, stream: ${output}, subject: ${output.toLowerCase()}.dead } }
${isCluster ? `cluster: { group: ${name}, leaseTtl: 10s, replicas: 3 }\n` : ""}`;
}

describe("a cluster on a three-node NATS cluster", () => {
  it("delivers every output once although a NATS server is killed mid-stream", async () => {
    const { nc, jsm, js } = await streamsOf(nats.urls[0]);
    for (const [name, subjects] of [["REPIN", ["repin.>"]], ["REPOUTS", ["repouts.>"]], ["REPOUT", ["repout.>"]]] as const) {
      await jsm.streams.add({ name, subjects: [...subjects], num_replicas: 3, duplicate_window: 120_000_000_000 });
    }
    const rnd = mulberry32(4);
    let clockMs = T0;
    const all = Array.from({ length: 120_000 }, () => {
      clockMs += Math.floor(rnd() * 2000);
      return { user_id: `u${Math.floor(rnd() * 1500)}`, timestamp: clockMs - Math.floor(rnd() * 3000), event_type: rnd() < 0.3 ? "cart" : "view" };
    });
    for (let at = 0; at < all.length; at += 2000) {
      await Promise.all(all.slice(at, at + 2000).map((e) => js.publish(`repin.${partitionOf(e.user_id, PARTITIONS)}`, JSON.stringify(e))));
    }
    const dir = tempDir("flusso-cluster-replicated-");
    const file = join(dir, "p.yaml");
    writeFileSync(file, pipelineYaml("repsingle", join(dir, "state-single"), "REPOUTS", false));
    await runPipeline(loadPipeline(file));
    const expected = (await readStream(nats.urls[0], "REPOUTS")).sort();
    writeFileSync(file, pipelineYaml("replicated", join(dir, "state"), "REPOUT", true));
    const workers = [startWorker(file), startWorker(file)];
    // Mid-stream: outputs flow, the group's checkpoint stream exists.
    const deadline = Date.now() + 150_000;
    while (((await jsm.streams.info("REPOUT")).state.messages < expected.length * 0.2)) {
      expect(Date.now(), `outputs did not start:\n${workers.map((w) => w.stderr().slice(-3000)).join("\n")}`).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The node leading the checkpoint stream: its loss moves the leader of what the fence depends on.
    const leader = (await jsm.streams.info(checkpointStreamName("replicated"))).cluster?.leader;
    const victim = Math.max(0, nats.servers.findIndex((_, i) => `node${i}` === leader));
    const atKill = (await jsm.streams.info("REPOUT")).state.messages;
    await nc.close();
    await nats.kill(victim);
    for (const w of workers) {
      const { code, signal } = await w.exited;
      expect({ code, signal }, w.stderr().slice(-4000)).toEqual({ code: 0, signal: null });
    }
    const survivor = nats.urls[(victim + 1) % 3];
    // The output stream may still be electing its leader after the kill: read it once it answers.
    const delivered = (await retried(() => readStream(survivor, "REPOUT"))).sort();
    expect(atKill).toBeLessThan(expected.length);
    expect(delivered.length).toBe(expected.length);
    expect(delivered).toEqual(expected);
  }, 300_000);
});

/** `attempt` until it succeeds, for 60 s at most. */
async function retried<T>(attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function startWorker(file: string) {
  const child = spawn(process.execPath, [CLI, "run", file, "--log", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  if (process.env.FLUSSO_TEST_LOGS) child.on("exit", () => writeFileSync(`${process.env.FLUSSO_TEST_LOGS}/worker-${child.pid}.log`, stderr));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on("exit", (code, signal) => (children.delete(child), done({ code, signal }))));
  return { child, exited, stderr: () => stderr };
}
