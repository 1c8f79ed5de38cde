// Exactly once on the NATS path where it used to break: outputs with equal bodies, crashes where the
// replay would decide lateness differently, downtime past the duplicate window, streams deleted or
// made again, and a stop while the source is behind.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../harness.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { messagesIn, readStream, startNatsServer, streamExists, type NatsServer } from "../natsServer.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { removeTempDirs, readJsonLines, tempDir } from "./pipelineFiles.ts";

const CLI = resolve(import.meta.dirname, "../../bin/flusso.js");
const T0 = Date.UTC(2024, 4, 20);

let server: NatsServer;
beforeAll(async () => {
  server = await startNatsServer();
}, 30_000);
afterAll(async () => {
  await server?.stop();
  removeTempDirs();
});

type Ev = { user_id: string; timestamp: number; event_type: string };

/** Events of `users` users, `disorderMs` out of order at most, event time advancing ~50 ms an event. */
function events(count: number, seed: number, { users = 200, disorderMs = 2000 } = {}): Ev[] {
  const rnd = mulberry32(seed);
  let clockMs = T0;
  return Array.from({ length: count }, () => {
    clockMs += Math.floor(rnd() * 100);
    return { user_id: `u${Math.floor(rnd() * users)}`, timestamp: clockMs - Math.floor(rnd() * disorderMs), event_type: rnd() < 0.2 ? "purchase" : "view" };
  });
}

async function publishTo(stream: string, subjectOf: (e: Ev, i: number) => string, all: Ev[]): Promise<void> {
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: stream, subjects: [`${stream.toLowerCase()}.>`] });
  const js = jetstream(nc);
  for (let at = 0; at < all.length; at += 5000) {
    await Promise.all(all.slice(at, at + 5000).map((e, i) => js.publish(`${stream.toLowerCase()}.${subjectOf(e, at + i)}`, JSON.stringify(e))));
  }
  await nc.close();
}

const SCHEMA = eventSchemaYaml();

function natsSource(stream: string, partitions: number, bounded = true): string {
  return `{ nats: { servers: "${server.url}", stream: ${stream}, subjects: ["${stream.toLowerCase()}.>"], partitions: ${partitions}, bounded: ${bounded} } }`;
}

function natsSink(stream: string, extra = ""): string {
  return `{ nats: { servers: "${server.url}", stream: ${stream}, subject: ${stream.toLowerCase()}.out${extra} } }`;
}

/**
 * Runs the CLI to its end, SIGKILLing it whenever `isTimeToKill` says so (at most `kills` times) and
 * starting it again `downtimeMs` later.
 */
async function runKilledAndResumed(file: string, kills: number, isTimeToKill: (killsSoFar: number) => Promise<boolean>, downtimeMs = 0): Promise<number> {
  let killed = 0;
  for (;;) {
    const child = spawn(process.execPath, [CLI, "run", file, "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    if (killed < kills && (await isTimeToKill(killed))) {
      child.kill("SIGKILL");
      await exited;
      killed++;
      await new Promise((r) => setTimeout(r, downtimeMs));
      continue;
    }
    const code = await exited;
    expect(code, stderr).toBe(0);
    return killed;
  }
}

describe("NATS outputs exactly once", () => {
  it("delivers every output under the id of its number, not of its body", async () => {
    const dir = tempDir("flusso-equal-bodies-");
    const all = events(3000, 21, { users: 300 });
    writeFileSync(join(dir, "events.jsonl"), all.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const pipeline = (sink: string) => `name: equal-bodies
source: { file: { path: events.jsonl, format: jsonl } }
${SCHEMA}sequences:
  bought: { steps: [{ name: view, when: 'event_type == "view"' }, { name: buy, when: 'event_type == "purchase"', within: 1h }] }
triggers:
  rules:
    thanks: { on: { sequence: bought }, message: "grazie", channels: [email] }
  template: { trigger: trigger.name }
sinks:
  - { ${sink}, outputs: [trigger] }
deadLetter: { file: { path: out/dead.jsonl } }
`;
    writeFileSync(join(dir, "file.yaml"), pipeline("file: { path: out/triggers.jsonl }").replace("equal-bodies", "equal-bodies-file"));
    await runPipeline(loadPipeline(join(dir, "file.yaml")));
    const expected = readJsonLines(join(dir, "out/triggers.jsonl"));
    expect(expected.length).toBeGreaterThan(100);
    // Each body names its user and message (triggers used to be equal bodies: the template's seed shape).
    expect(new Set(expected.map((t) => JSON.stringify(t))).size).toBe(expected.length);
    writeFileSync(join(dir, "nats.yaml"), pipeline(`nats: { servers: "${server.url}", stream: EQUAL, subject: equal.out }`));
    await runPipeline(loadPipeline(join(dir, "nats.yaml")));
    expect((await readStream(server.url, "EQUAL")).length).toBe(expected.length);
  });

  it("publishes one result per window, whatever the crashes, with events disordered by ten times the bound over 4 partitions and arriving live", async () => {
    const all = events(60_000, 22, { disorderMs: 20_000 });
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "DISORDER", subjects: ["disorder.>"] });
    const dir = tempDir("flusso-disorder-");
    const file = join(dir, "disorder.yaml");
    writeFileSync(
      file,
      `name: disorder
source: ${natsSource("DISORDER", 4, false)}
${SCHEMA}watermark: { maxOutOfOrderness: 2s }
state: { dir: state, checkpointInterval: 30ms }
windows:
  - { name: tumbling, type: tumbling, size: 10s, aggregate: { events: count } }
sinks:
  - ${natsSink("DISORDER_OUT")}
late: ${natsSink("DISORDER_LATE")}
deadLetter: { file: { path: out/dead.jsonl } }
`,
    );
    // Events arrive while the job runs (batches are cut by arrival), then one far ahead on every
    // partition closes every window.
    const js = jetstream(nc);
    const published = (async () => {
      for (let at = 0; at < all.length; at += 500) {
        await Promise.all(all.slice(at, at + 500).map((e, i) => js.publish(`disorder.${(at + i) % 4}`, JSON.stringify(e))));
        await new Promise((r) => setTimeout(r, 20));
      }
      for (let p = 0; p < 4; p++) await js.publish(`disorder.${p}`, JSON.stringify({ user_id: "zz-end", timestamp: T0 + 86_400_000, event_type: "view" }));
    })();
    let counted = 0;
    const isAllCounted = async () => {
      const results = (await readStream(server.url, "DISORDER_OUT")).map((l) => JSON.parse(l) as { events: number });
      counted = results.reduce((sum, r) => sum + r.events, 0) + (await readStream(server.url, "DISORDER_LATE")).length;
      return counted >= all.length;
    };
    let kills = 0;
    for (;;) {
      const child = spawn(process.execPath, [CLI, "run", file, "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
      if (kills < 6 && (await messagesIn(server.url, "DISORDER_OUT", kills * 1500 + 1))) {
        child.kill("SIGKILL");
        await exited;
        kills++;
        continue;
      }
      await published;
      for (let waited = 0; !(await isAllCounted()) && waited < 100; waited++) await new Promise((r) => setTimeout(r, 200));
      child.kill("SIGTERM");
      expect(await exited, stderr).toBe(0);
      break;
    }
    await nc.close();
    expect(kills).toBeGreaterThanOrEqual(3);
    const results = (await readStream(server.url, "DISORDER_OUT")).map((l) => JSON.parse(l) as { key: string; start_ms: number; events: number });
    const late = await readStream(server.url, "DISORDER_LATE");
    const windows = results.map((r) => `${r.key}@${r.start_ms}`);
    expect(windows.length - new Set(windows).size, "windows published more than once").toBe(0);
    expect(results.reduce((sum, r) => sum + r.events, 0) + late.length, "events counted once: in a window or late").toBe(all.length);
    expect(late.length).toBeGreaterThan(0);
  });

  it("stays exactly once when the job is down longer than the stream's duplicate window", async () => {
    const all = events(30_000, 23);
    await publishTo("DOWNTIME", (e, i) => String(i % 2), all);
    const dir = tempDir("flusso-downtime-");
    const pipeline = (name: string, sink: string) => `name: ${name}
source: ${natsSource("DOWNTIME", 2)}
${SCHEMA}watermark: { maxOutOfOrderness: 3s }
state: { dir: state-${name}, checkpointInterval: 1s }
windows:
  - { name: minute, type: tumbling, size: 1m, aggregate: { events: count, purchases: { count: 'event_type == "purchase"' } } }
sinks:
  - ${sink}
deadLetter: { file: { path: out-${name}/dead.jsonl } }
`;
    writeFileSync(join(dir, "reference.yaml"), pipeline("reference", "file: { path: out-reference/results.jsonl }"));
    await runPipeline(loadPipeline(join(dir, "reference.yaml")));
    const expected = readJsonLines(join(dir, "out-reference/results.jsonl")).map((r) => JSON.stringify(r)).sort();
    const file = join(dir, "downtime.yaml");
    writeFileSync(file, pipeline("downtime", natsSink("DOWNTIME_OUT", ", duplicateWindow: 5s")));
    // Killed mid-stream, and down for longer than the 5 s duplicate window.
    const kills = await runKilledAndResumed(file, 1, () => messagesIn(server.url, "DOWNTIME_OUT", 1000), 6_000);
    expect(kills).toBe(1);
    expect((await readStream(server.url, "DOWNTIME_OUT")).map((l) => JSON.stringify(JSON.parse(l))).sort()).toEqual(expected);
  });
});

describe("NATS streams that are not what the checkpoint saw", () => {
  const pipelineOn = (dir: string, stream: string, sink: string) => {
    const file = join(dir, `${stream.toLowerCase()}.yaml`);
    writeFileSync(
      file,
      `name: ${stream.toLowerCase()}
source: ${natsSource(stream, 1)}
${SCHEMA}state: { dir: state }
windows: [{ name: m, type: tumbling, size: 1m, aggregate: { events: count } }]
sinks: [${sink}]
deadLetter: { file: { path: out/dead.jsonl } }
`,
    );
    return file;
  };

  it("refuses a source stream deleted and made again, instead of skipping its first messages", async () => {
    const dir = tempDir("flusso-recreated-");
    await publishTo("REMADE", () => "0", events(100, 24));
    const file = pipelineOn(dir, "REMADE", "{ file: { path: out/results.jsonl } }");
    await runPipeline(loadPipeline(file));
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.delete("REMADE");
    await nc.close();
    await publishTo("REMADE", () => "0", events(150, 25));
    await expect(runPipeline(loadPipeline(file))).rejects.toThrow(/nats:REMADE: the stream was deleted and made again since the last checkpoint .* its sequence 100 means nothing in the new one/);
  });

  it("refuses a source stream whose unread messages were removed", async () => {
    const dir = tempDir("flusso-purged-");
    await publishTo("PURGED", () => "0", events(100, 26));
    const file = pipelineOn(dir, "PURGED", "{ file: { path: out/results.jsonl } }");
    await runPipeline(loadPipeline(file));
    const nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    for (const e of events(50, 27)) await js.publish("purged.0", JSON.stringify(e));
    await (await jetstreamManager(nc)).streams.purge("PURGED");
    await nc.close();
    await expect(runPipeline(loadPipeline(file))).rejects.toThrow(/messages 101\.\.150 were removed from the stream .* before the job read them/);
  });

  it("fails with the reason when its output stream is deleted while it runs, instead of stalling", async () => {
    const dir = tempDir("flusso-sink-gone-");
    const nc = await connect({ servers: server.url });
    await (await jetstreamManager(nc)).streams.add({ name: "LIVE", subjects: ["live.>"] });
    const file = join(dir, "live.yaml");
    writeFileSync(
      file,
      `name: live
source: ${natsSource("LIVE", 1, false)}
${SCHEMA}state: { dir: state }
windows: [{ name: s, type: tumbling, size: 1s, aggregate: { events: count } }]
sinks: [${natsSink("GONE")}]
deadLetter: { file: { path: out/dead.jsonl } }
`,
    );
    const child = spawn(process.execPath, [CLI, "run", file], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    const js = jetstream(nc);
    let clockMs = T0;
    const feeding = setInterval(() => {
      for (let i = 0; i < 20; i++) void js.publish("live.0", JSON.stringify({ user_id: `u${i}`, timestamp: (clockMs += 100), event_type: "view" })).catch(() => undefined);
    }, 20);
    try {
      expect(await messagesIn(server.url, "GONE", 1)).toBe(true);
      await (await jetstreamManager(nc)).streams.delete("GONE");
      const limit = setTimeout(() => child.kill("SIGKILL"), 60_000);
      expect(await exited, stderr).toBe(1);
      clearTimeout(limit);
    } finally {
      clearInterval(feeding);
      child.kill("SIGKILL");
      await nc.close();
    }
    expect(stderr).toMatch(/SinkLost: nats:GONE\/gone\.out: the stream GONE was deleted while the job ran .* Run with --reset/);
  });
});

describe("stopping with NATS", () => {
  it("stops cleanly (exit 0, within the timeout) while its source is behind, the consumer parked on a full buffer", async () => {
    await publishTo("BEHIND", (e, i) => String(i % 2), events(100_000, 28));
    const dir = tempDir("flusso-behind-");
    const file = join(dir, "behind.yaml");
    writeFileSync(
      file,
      `name: behind
source: { nats: { servers: "${server.url}", stream: BEHIND, subjects: ["behind.>"], partitions: 2, bufferMessages: 100 } }
${SCHEMA}state: { dir: state }
windows:
  - { name: hopping, type: hopping, size: 10m, slide: 10s, aggregate: { events: count } }
sinks: [{ file: { path: out/results.jsonl } }]
deadLetter: { file: { path: out/dead.jsonl } }
`,
    );
    const child = spawn(process.execPath, [CLI, "run", file, "--log", "text"], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, FLUSSO_STOP_TIMEOUT_MS: "15000" } });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    const limit = setTimeout(() => child.kill("SIGKILL"), 120_000);
    // Started (its signal handlers set: a loaded machine can take seconds to load the CLI), then behind.
    const startedBy = Date.now() + 60_000;
    while (!/^flusso: started: /m.test(stderr) && Date.now() < startedBy) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1500));
    child.kill("SIGTERM");
    expect(await exited, stderr).toBe(0);
    clearTimeout(limit);
    expect(stderr).toMatch(/^stopped: \d+ events/m);
    expect(stderr).not.toMatch(/stopping now/);
  });
});

describe("a live NATS source going quiet", () => {
  it("fires 'cart and no purchase within 2 s' on time after one event and silence, when event time follows the clock", async () => {
    const dir = tempDir("flusso-quiet-");
    const pipelineFor = (name: string, advanceWhenIdle: boolean) => {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(
        file,
        `name: ${name}
source: ${natsSource(name.toUpperCase(), 1, false)}
${SCHEMA}watermark: { idleness: 300ms, advanceWhenIdle: ${advanceWhenIdle} }
state: { dir: state-${name} }
sequences:
  abandoned:
    steps:
      - { name: cart, when: 'event_type == "add_to_cart"' }
      - { name: purchase, when: 'event_type == "purchase"', within: 2s, absent: true }
triggers:
  rules:
    cart_recovery: { on: { sequence: abandoned }, message: "ancora nel carrello", channels: [email] }
sinks:
  - { nats: { servers: "${server.url}", stream: ${name.toUpperCase()}_OUT, subject: out.${name} }, outputs: [trigger] }
deadLetter: { file: { path: out-${name}/dead.jsonl } }
`,
      );
      return file;
    };
    const start = (file: string) => {
      const child = spawn(process.execPath, [CLI, "run", file, "--quiet"], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      return { child, stderr: () => stderr, exited: new Promise<number | null>((done) => child.on("exit", (code) => done(code))) };
    };
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    for (const stream of ["FOLLOWS", "STANDS"]) await jsm.streams.add({ name: stream, subjects: [`${stream.toLowerCase()}.>`] });
    const follows = start(pipelineFor("follows", true));
    const stands = start(pipelineFor("stands", false));
    try {
      // Both jobs listening: each has made its output stream.
      expect(await streamExists(server.url, "FOLLOWS_OUT")).toBe(true);
      expect(await streamExists(server.url, "STANDS_OUT")).toBe(true);
      const cartAtMs = Date.now();
      const js = jetstream(nc);
      for (const stream of ["follows", "stands"]) await js.publish(`${stream}.0`, JSON.stringify({ user_id: "u1", timestamp: cartAtMs, event_type: "add_to_cart" }));
      // Then nothing more arrives: the deadline passes in the quiet.
      expect(await messagesIn(server.url, "FOLLOWS_OUT", 1, 20_000), follows.stderr()).toBe(true);
      const arrivedAtMs = Date.now();
      expect(arrivedAtMs).toBeGreaterThanOrEqual(cartAtMs + 2_000); // not before the deadline
      await new Promise((r) => setTimeout(r, 1_500));
      // Without advanceWhenIdle the watermark waits for the next event: nothing yet.
      expect((await jsm.streams.info("STANDS_OUT")).state.messages).toBe(0);
      expect((await readStream(server.url, "FOLLOWS_OUT")).length).toBe(1);
    } finally {
      follows.child.kill("SIGTERM");
      stands.child.kill("SIGTERM");
      await Promise.all([follows.exited, stands.exited]);
      await nc.close();
    }
  });
});
