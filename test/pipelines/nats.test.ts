// NATS JetStream in and out, through a private nats-server: results in OUT equal those of the same
// pipeline over a file; SIGKILLed and restarted, the job leaves every result in OUT exactly once;
// messages that cannot be read or fail the schema end in the dead-letter subject.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { unpack } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { partitionOf } from "../../engine/partitioning.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { eventSchemaYaml, SESSION_DURATION, windowPipelineYaml } from "../fixtures/pipelines.ts";
import { firstMessageIn, messagesIn, readStream, startNatsServer, streamExists, type NatsServer } from "../natsServer.ts";
import { startNetProxy } from "../netProxy.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const PARTITIONS = 3;

type Ev = { user_id: string; timestamp: number; event_type: string; session_duration_sec: number };

/** In-order-enough events: disorder within 2 s, so no event is late under a 3 s bound. */
function events(count: number, seed: number): Ev[] {
  const rnd = mulberry32(seed);
  let clockMs = Date.UTC(2024, 4, 20);
  return Array.from({ length: count }, () => {
    clockMs += Math.floor(rnd() * 60);
    return {
      user_id: `u${Math.floor(rnd() * 300)}`,
      timestamp: clockMs - Math.floor(rnd() * 2000),
      event_type: ["view", "add_to_cart", "purchase"][Math.floor(rnd() * 3)],
      session_duration_sec: Math.round(rnd() * 1000) / 10,
    };
  });
}

function pipelineYaml(name: string, source: string, sink: string, deadLetter: string): string {
  return windowPipelineYaml({
    name,
    source,
    schema: eventSchemaYaml({ fields: SESSION_DURATION }),
    watermark: "{ maxOutOfOrderness: 3s }",
    state: `{ dir: ./state-${name}, checkpointInterval: 40ms }`,
    windows: [
      `name: minute
type: tumbling
size: 1m
aggregate:
  events: count
  carts: { count: 'event_type == "add_to_cart"' }
  duration: { sum: session_duration_sec }`,
      `name: sessions
type: session
gap: 30s
aggregate:
  events: count
  last_type: { last: event_type }`,
    ],
    sinks: [sink],
    deadLetter,
  });
}

async function publish(url: string, subjectOf: (e: Ev) => string, all: Ev[], extra: Array<[string, string]>): Promise<void> {
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "EVENTS", subjects: ["events.>"] });
  const js = jetstream(nc);
  // In slices, each acked before the next, with time to spare: tens of thousands of publishes in
  // flight at once time out on a machine busy with other test files.
  const SLICE = 2_000;
  for (let at = 0; at < all.length; at += SLICE) {
    const acks: Promise<unknown>[] = [];
    for (let i = at; i < Math.min(at + SLICE, all.length); i++) {
      acks.push(js.publish(subjectOf(all[i]), JSON.stringify(all[i]), { timeout: 30_000 }));
      const bad = extra[i];
      if (bad) acks.push(js.publish(bad[0], bad[1], { timeout: 30_000 }));
    }
    await Promise.all(acks);
  }
  await nc.close();
}

function sorted(lines: string[]): string[] {
  return lines.map((l) => JSON.stringify(JSON.parse(l))).sort();
}

describe("NATS JetStream in and out", () => {
  let server: NatsServer;
  let dir: string;
  let expected: string[];
  const all = events(40_000, 3);
  const BAD: Array<[string, string]> = [
    ["events.0", "{not json"],
    ["events.1", JSON.stringify({ user_id: "u1", event_type: "view" })],
    ["events.2", JSON.stringify({ user_id: "u2", timestamp: "soon", event_type: "view" })],
  ];

  beforeAll(async () => {
    server = await startNatsServer();
    dir = mkdtempSync(join(tmpdir(), "flusso-nats-test-"));
    const badAt: Array<[string, string]> = [];
    BAD.forEach((b, i) => (badAt[(i + 1) * 9000] = b));
    await publish(server.url, (e) => `events.${partitionOf(e.user_id, PARTITIONS)}`, all, badAt);
    // The reference: the same pipeline over the same (good) events from a file.
    writeFileSync(join(dir, "events.jsonl"), all.map((e) => JSON.stringify(e)).join("\n") + "\n");
    writeFileSync(
      join(dir, "file.yaml"),
      pipelineYaml("file", "{ file: { path: events.jsonl, format: jsonl } }", "file: { path: out-file/results.jsonl }", "{ file: { path: out-file/dead.jsonl } }"),
    );
    const result = await runPipeline(loadPipeline(join(dir, "file.yaml")), { reset: true });
    expect(result.counters.late).toBe(0);
    expected = sorted(readFileSync(join(dir, "out-file/results.jsonl"), "utf8").trim().split("\n"));
    expect(expected.length).toBeGreaterThan(1000);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
  });

  const natsSource = () => `{ nats: { servers: "${server.url}", stream: EVENTS, subjects: ["events.>"], partitions: ${PARTITIONS}, bounded: true } }`;

  it("writes to OUT the results the same pipeline writes from a file", async () => {
    writeFileSync(
      join(dir, "nats.yaml"),
      pipelineYaml("nats", natsSource(), `nats: { servers: "${server.url}", stream: OUT, subject: out.results }`, `{ nats: { servers: "${server.url}", stream: DEAD, subject: dead.events } }`),
    );
    const result = await runPipeline(loadPipeline(join(dir, "nats.yaml")), { reset: true });
    expect(result.isComplete).toBe(true);
    expect(result.counters.read).toBe(all.length + BAD.length);
    expect(sorted(await readStream(server.url, "OUT"))).toEqual(expected);
  }, 60_000);

  it("sends messages that are not JSON or fail the schema to the dead-letter subject, with the reason", async () => {
    const dead = (await readStream(server.url, "DEAD")).map((l) => JSON.parse(l));
    expect(dead.map((d) => d.reason)).toEqual([
      expect.stringMatching(/^not JSON: /),
      'missing required field "timestamp"',
      expect.stringMatching(/^field "timestamp": expected a timestamp/),
    ]);
    expect(dead.every((d) => /^EVENTS#\d+/.test(d.origin))).toBe(true);
  });

  it("sends dead letters to the source's server when the dead-letter output names no servers", async () => {
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "FEW", subjects: ["few.>"] });
    const js = jetstream(nc);
    for (const e of events(20, 5)) await js.publish("few.0", JSON.stringify(e));
    await js.publish("few.0", "{not json");
    await nc.close();
    writeFileSync(
      join(dir, "few.yaml"),
      pipelineYaml(
        "few",
        `{ nats: { servers: "${server.url}", stream: FEW, subjects: ["few.>"], bounded: true } }`,
        "file: { path: out-few/results.jsonl }",
        "{ nats: { stream: DEADFEW, subject: dead.few } }",
      ),
    );
    // A $NATS_URL no server answers: a dead letter sent there, rather than to the source's server, would never arrive.
    const before = process.env.NATS_URL;
    process.env.NATS_URL = "nats://127.0.0.1:1";
    try {
      const spec = loadPipeline(join(dir, "few.yaml"));
      expect(spec.deadLetter).toMatchObject({ nats: { servers: [server.url] } });
      await runPipeline(spec, { reset: true });
    } finally {
      if (before === undefined) delete process.env.NATS_URL;
      else process.env.NATS_URL = before;
    }
    const dead = (await readStream(server.url, "DEADFEW")).map((l) => JSON.parse(l));
    expect(dead.map((d) => d.reason)).toEqual([expect.stringMatching(/^not JSON: /)]);
  }, 30_000);

  it("pauses while nats-server is stopped and restarted, then ends with every result exactly once", async () => {
    writeFileSync(
      join(dir, "restart.yaml"),
      pipelineYaml("restart", natsSource(), `nats: { servers: "${server.url}", stream: OUT3, subject: out.restart }`, `{ file: { path: out-restart/dead.jsonl } }`),
    );
    const child = spawn(process.execPath, [CLI, "run", join(dir, "restart.yaml"), "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", done));
    try {
    // Stop the server as soon as the job has written its first results.
    expect(await firstMessageIn(server.url, "OUT3"), "the job wrote a first result").toBe(true);
    expect(child.exitCode, "the job ended before the server went away").toBeNull();
    await server.stop();
    await new Promise((r) => setTimeout(r, 1500));
    expect(child.exitCode, "the job gave up while the server was away").toBeNull();
    await server.restart();
    expect(await exited, stderr).toBe(0);
    } finally {
      child.kill("SIGKILL"); // a no-op once it has exited; never leave a job behind
    }
    expect(sorted(await readStream(server.url, "OUT3"))).toEqual(expected);
  }, 120_000);

  it("pauses while the network to the server is cut (packets dropped, server up), then ends with every result exactly once", async () => {
    const proxy = await startNetProxy(Number(new URL(server.url).port));
    const viaProxy = `{ nats: { servers: "${proxy.url}", stream: EVENTS, subjects: ["events.>"], partitions: ${PARTITIONS}, bounded: true } }`;
    writeFileSync(
      join(dir, "cut.yaml"),
      pipelineYaml("cut", viaProxy, `nats: { servers: "${proxy.url}", stream: OUT5, subject: out.cut }`, `{ file: { path: out-cut/dead.jsonl } }`),
    );
    // Pings every 300 ms, two unanswered: the cut is noticed in about a second (5 s by default).
    const child = spawn(process.execPath, [CLI, "run", join(dir, "cut.yaml"), "--quiet"], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, FLUSSO_NATS_PING_INTERVAL_MS: "300" },
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", done));
    try {
      expect(await firstMessageIn(server.url, "OUT5"), "the job wrote a first result").toBe(true);
      const nc = await connect({ servers: server.url });
      const jsm = await jetstreamManager(nc);
      expect(child.exitCode, "the job ended before the cut").toBeNull();
      const connectionsBefore = proxy.connections;
      proxy.blackhole();
      await new Promise((r) => setTimeout(r, 2500));
      expect(child.exitCode, "the job gave up during the cut").toBeNull();
      // Its pings went unanswered: it gave the link up and is trying new ones.
      expect(proxy.connections).toBeGreaterThan(connectionsBefore);
      const during = (await jsm.streams.info("OUT5")).state.messages;
      proxy.heal();
      await nc.close();
      expect(await exited, stderr).toBe(0);
      expect(during).toBeLessThan(expected.length);
    } finally {
      child.kill("SIGKILL");
      await proxy.close();
    }
    expect(sorted(await readStream(server.url, "OUT5"))).toEqual(expected);
  }, 120_000);

  it("stops within its stop timeout when the last checkpoint cannot reach the server, and the next run ends exactly once", async () => {
    const proxy = await startNetProxy(Number(new URL(server.url).port));
    // The first run reads the stream as a live source, so it cannot end on its own before the stop.
    const stopYaml = (source: string) =>
      writeFileSync(join(dir, "stop.yaml"), pipelineYaml("stop", source, `nats: { servers: "${proxy.url}", stream: OUT6, subject: out.stop }`, `{ file: { path: out-stop/dead.jsonl } }`));
    stopYaml(natsSource().replace("bounded: true", "bounded: false"));
    try {
      const child = spawn(process.execPath, [CLI, "run", join(dir, "stop.yaml")], {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, FLUSSO_STOP_TIMEOUT_MS: "1500" },
      });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((done) => child.on("exit", done));
      // Cut off as soon as the sink has set up its stream: from then on nothing it holds can be
      // delivered, so the job cannot finish; a second later it holds results, and the stop comes.
      expect(await streamExists(server.url, "OUT6"), stderr).toBe(true);
      // The stream exists before the answer to its creation is back through the proxy: the source
      // connects once the sink is set up, so its line says the sink's answers all came back.
      const deadline = Date.now() + 20_000;
      while (!/"event":"connected","client":"source /.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      proxy.blackhole();
      await new Promise((r) => setTimeout(r, 1_000));
      child.kill("SIGTERM");
      expect(await exited, stderr).toBe(130);
      expect(stderr).toMatch(/not stopped within 1\.5 s: stopping now, after its last checkpoint \(\d+\), which is durable/);
      proxy.heal();
      stopYaml(natsSource());
      // Not spawnSync: the proxy runs in this process and must keep forwarding.
      const again = spawn(process.execPath, [CLI, "run", join(dir, "stop.yaml"), "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
      let againStderr = "";
      again.stderr.on("data", (d) => (againStderr += d));
      expect(await new Promise((done) => again.on("exit", done)), againStderr).toBe(0);
    } finally {
      await proxy.close();
    }
    expect(sorted(await readStream(server.url, "OUT6"))).toEqual(expected);
  }, 120_000);

  it("publishes a file with `flusso publish`, each event to the subject of its key's partition", async () => {
    const sample = all.slice(0, 2000);
    writeFileSync(join(dir, "sample.jsonl"), sample.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const run = spawnSync(process.execPath, [CLI, "publish", join(dir, "sample.jsonl"), "--servers", server.url, "--stream", "PUB", "--subject", "pub", "--partitions", "3", "--rate", "20000", "--log", "text"], { encoding: "utf8" });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^published: 2000 events in [\d.]+ s \(\d+ events\/s\) to pub\.0\.\.pub\.2$/m);
    const nc = await connect({ servers: server.url });
    const consumer = await jetstream(nc).consumers.get("PUB", { deliver_policy: DeliverPolicy.All });
    const messages = await consumer.consume();
    const received: Array<[string, Ev]> = [];
    for await (const m of messages) {
      received.push([m.subject, m.json<Ev>()]);
      if (received.length === sample.length) break;
    }
    await nc.close();
    expect(received.map(([, e]) => e)).toEqual(sample);
    expect(received.every(([subject, e]) => subject === `pub.${partitionOf(e.user_id, 3)}`)).toBe(true);
  }, 60_000);

  it("reads and writes msgpack as it does JSON", async () => {
    writeFileSync(join(dir, "all.jsonl"), all.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const published = spawnSync(
      process.execPath,
      [CLI, "publish", join(dir, "all.jsonl"), "--servers", server.url, "--stream", "EVENTSMP", "--subject", "mp", "--partitions", String(PARTITIONS), "--format", "msgpack", "--quiet"],
      { encoding: "utf8" },
    );
    expect(published.status, published.stderr).toBe(0);
    writeFileSync(
      join(dir, "msgpack.yaml"),
      pipelineYaml(
        "msgpack",
        `{ nats: { servers: "${server.url}", stream: EVENTSMP, subjects: ["mp.>"], partitions: ${PARTITIONS}, bounded: true, format: msgpack } }`,
        `nats: { servers: "${server.url}", stream: OUTMP, subject: out.mp, format: msgpack }`,
        `{ file: { path: out-msgpack/dead.jsonl } }`,
      ),
    );
    const result = await runPipeline(loadPipeline(join(dir, "msgpack.yaml")), { reset: true });
    expect(result.counters.deadLettered).toBe(0);
    const nc = await connect({ servers: server.url });
    const consumer = await jetstream(nc).consumers.get("OUTMP", { deliver_policy: DeliverPolicy.All });
    const bodies: string[] = [];
    for await (const m of await consumer.consume()) {
      bodies.push(JSON.stringify(unpack(m.data)));
      if (bodies.length === expected.length) break;
    }
    await nc.close();
    expect(sorted(bodies)).toEqual(expected);
  }, 60_000);

  it("leaves every result in OUT exactly once after SIGKILLs as the results arrive", async () => {
    writeFileSync(
      join(dir, "crash.yaml"),
      pipelineYaml("crash", natsSource(), `nats: { servers: "${server.url}", stream: OUT2, subject: out.crash, duplicateWindow: 5m }`, `{ file: { path: out-crash/dead.jsonl } }`),
    );
    let kills = 0;
    for (let attempt = 0; attempt < 40; attempt++) {
      const child = spawn(process.execPath, [CLI, "run", join(dir, "crash.yaml"), "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
      // Killed by progress, not by time (a fast machine would finish first): as OUT2 passes each sixth.
      const killAt = Math.floor((expected.length * (kills + 1)) / 6);
      const isTimeToKill = kills < 5 && (await Promise.race([messagesIn(server.url, "OUT2", killAt, 60_000), exited.then(() => false)]));
      if (isTimeToKill && child.exitCode === null) {
        child.kill("SIGKILL");
        await exited;
        kills++;
        continue;
      }
      expect(await exited, stderr).toBe(0);
      break;
    }
    expect(kills).toBeGreaterThanOrEqual(2);
    expect(sorted(await readStream(server.url, "OUT2"))).toEqual(expected);
  }, 120_000);
});
