// The NATS plumbing the JetStream source and sink stand on, against a private nats-server: a stream
// made or widened as needed, a stream read back exactly up to its end as of now, a publisher that
// has every message acked once (and can be paused while a caller reads back), and a first
// connection that waits, says so, and can be given up. A read that does not end fails in 15 s.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AckedPublisher, connectNats, ensureStream, readStreamSince, streamInfo } from "../../engine/nats.ts";
import { isSubjectWithin, subjectsOverlap } from "../../engine/natsSubjects.ts";
import { freePort, startNatsServer, type NatsServer } from "../natsServer.ts";

const MINUTE_NS = 60_000_000_000;

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
}, 30_000);
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** A new stream `name` with `bodies` published in order to `subjectOf(i)`: message i has sequence i + 1. */
async function streamWith(name: string, subjects: string[], bodies: string[], subjectOf: (i: number) => string = () => subjects[0]): Promise<void> {
  await jsm.streams.add({ name, subjects });
  const js = jetstream(nc);
  for (let i = 0; i < bodies.length; i++) await js.publish(subjectOf(i), bodies[i]);
}

/** What `readStreamSince` calls back with, as `seq subject body`. */
async function readSince(stream: string, afterSeq: number, subject?: string): Promise<string[]> {
  const read: string[] = [];
  await readStreamSince(nc, stream, { afterSeq, subject }, (msg) => read.push(`${msg.seq} ${msg.subject} ${msg.string()}`));
  return read;
}

/** Waits (real time, `limitMs` at most) until `check` holds. */
async function until(check: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("ensureStream", { timeout: 15_000 }, () => {
  it("makes a missing stream with the subjects and duplicate window asked for", async () => {
    expect(await streamInfo(jsm, "MADE")).toBeUndefined();
    const info = await ensureStream(jsm, { name: "MADE", subjects: ["made.a", "made.b"], duplicateWindowMs: 5 * 60_000 });
    expect(info.config).toMatchObject({ name: "MADE", subjects: ["made.a", "made.b"], duplicate_window: 5 * MINUTE_NS });
    expect((await streamInfo(jsm, "MADE"))?.config.subjects).toEqual(["made.a", "made.b"]);
  });

  it("adds the subjects an existing stream lacks, keeping its own and its messages", async () => {
    await streamWith("WIDENED", ["widened.a"], ["kept"]);
    const created = (await jsm.streams.info("WIDENED")).created;
    const info = await ensureStream(jsm, { name: "WIDENED", subjects: ["widened.b", "widened.a", "widened.c"] });
    expect(info.config.subjects).toEqual(["widened.a", "widened.b", "widened.c"]);
    expect(info.state.messages).toBe(1);
    expect(info.created).toBe(created); // updated, not made again
  });

  it("raises a duplicate window shorter than asked for", async () => {
    await jsm.streams.add({ name: "RAISED", subjects: ["raised.a"], duplicate_window: 1_000_000_000 });
    const info = await ensureStream(jsm, { name: "RAISED", subjects: ["raised.a"], duplicateWindowMs: 2 * 60_000 });
    expect(info.config.duplicate_window).toBe(2 * MINUTE_NS);
    expect((await jsm.streams.info("RAISED")).config.duplicate_window).toBe(2 * MINUTE_NS);
  });

  it("leaves alone a stream with the subjects and a window as long or longer", async () => {
    await jsm.streams.add({ name: "GOOD", subjects: ["good.b", "good.a"], duplicate_window: 10 * MINUTE_NS, max_msgs: 50 });
    const before = await jsm.streams.info("GOOD");
    for (const duplicateWindowMs of [2 * 60_000, 10 * 60_000, undefined]) {
      const info = await ensureStream(jsm, { name: "GOOD", subjects: ["good.a"], duplicateWindowMs });
      expect(info.config).toEqual(before.config);
    }
    expect((await jsm.streams.info("GOOD")).config).toEqual(before.config);
  });
});

describe("subjects", () => {
  it("says whether a pattern covers every subject another one matches", () => {
    expect(isSubjectWithin("out.results", "out.>")).toBe(true);
    expect(isSubjectWithin("out.a.b", "out.>")).toBe(true);
    expect(isSubjectWithin("out", "out.>")).toBe(false);
    expect(isSubjectWithin("out.results", "out.*")).toBe(true);
    expect(isSubjectWithin("out.a.b", "out.*")).toBe(false);
    expect(isSubjectWithin("out.*", "out.*")).toBe(true);
    expect(isSubjectWithin("out.*", "out.results")).toBe(false);
    expect(isSubjectWithin("events.>", "events.>")).toBe(true);
    expect(isSubjectWithin("events.>", "events.*")).toBe(false);
  });

  it("says whether two patterns share a subject", () => {
    expect(subjectsOverlap("events.>", "events.dead")).toBe(true);
    expect(subjectsOverlap("events.*", "events.a.b")).toBe(false);
    expect(subjectsOverlap("events.*.x", "events.a.*")).toBe(true);
    expect(subjectsOverlap("out.a", "out.b")).toBe(false);
    expect(subjectsOverlap("out.a", "out.a")).toBe(true);
    expect(subjectsOverlap("a.>", "b.>")).toBe(false);
  });
});

describe("ensureStream and wildcards", { timeout: 15_000 }, () => {
  it("takes a subject that a wildcard of the stream already covers as it is (the server refuses to add an overlap)", async () => {
    await jsm.streams.add({ name: "WILD", subjects: ["wild.>"] });
    const info = await ensureStream(jsm, { name: "WILD", subjects: ["wild.results"] });
    expect(info.config.subjects).toEqual(["wild.>"]);
  });
});

describe("streamInfo", { timeout: 15_000 }, () => {
  it("is undefined for a stream that does not exist, and the stream's info for one that does", async () => {
    expect(await streamInfo(jsm, "NO_SUCH_STREAM")).toBeUndefined();
    await streamWith("INFO", ["info.a"], ["x", "y"]);
    expect((await streamInfo(jsm, "INFO"))?.state).toMatchObject({ messages: 2, first_seq: 1, last_seq: 2 });
  });
});

describe("readStreamSince", { timeout: 15_000 }, () => {
  const bodies = Array.from({ length: 10 }, (_, i) => `m${i + 1}`);
  /** Message i on `<stream>.a` when i is even, `.b` when odd: sequences 1, 3, 5... are on `.a`. */
  const mixed = (stream: string) => streamWith(stream.toUpperCase(), [`${stream}.a`, `${stream}.b`], bodies, (i) => `${stream}.${i % 2 === 0 ? "a" : "b"}`);
  beforeAll(() => mixed("mixed"));

  it("calls back with every message after the sequence, oldest first", async () => {
    expect(await readSince("MIXED", 0)).toEqual(bodies.map((b, i) => `${i + 1} mixed.${i % 2 === 0 ? "a" : "b"} ${b}`));
    expect(await readSince("MIXED", 6)).toEqual(["7 mixed.a m7", "8 mixed.b m8", "9 mixed.a m9", "10 mixed.b m10"]);
  });

  it("with a subject, calls back with that subject's messages only, where the stream holds others", async () => {
    expect(await readSince("MIXED", 4, "mixed.a")).toEqual(["5 mixed.a m5", "7 mixed.a m7", "9 mixed.a m9"]);
    expect(await readSince("MIXED", 9, "mixed.b")).toEqual(["10 mixed.b m10"]);
    expect(await readSince("MIXED", 10, "mixed.a")).toEqual([]);
  });

  it("with the subject of a stream that holds only it, calls back with the messages after the sequence", async () => {
    await streamWith("SOLE", ["sole.a"], bodies);
    expect(await readSince("SOLE", 8, "sole.a")).toEqual(["9 sole.a m9", "10 sole.a m10"]);
  });

  it("calls back with nothing, and returns, for an empty stream, a sequence at or past the end, or a subject with no messages", async () => {
    await jsm.streams.add({ name: "EMPTY", subjects: ["empty.a", "empty.b"] });
    expect(await readSince("EMPTY", 0)).toEqual([]);
    expect(await readSince("EMPTY", 0, "empty.a")).toEqual([]);
    expect(await readSince("MIXED", 10)).toEqual([]);
    expect(await readSince("MIXED", 1000)).toEqual([]);
    await streamWith("ONLY_B", ["onlyb.a", "onlyb.b"], ["b1"], () => "onlyb.b");
    expect(await readSince("ONLY_B", 0, "onlyb.a")).toEqual([]);
  });

  it("returns when the stream's last message was deleted (its last sequence names a message no longer there)", async () => {
    await streamWith("TAILLESS", ["tailless.a"], ["m1", "m2", "m3", "m4", "m5"]);
    await jsm.streams.deleteMessage("TAILLESS", 5);
    expect((await jsm.streams.info("TAILLESS")).state.last_seq).toBe(5);
    expect(await readSince("TAILLESS", 1)).toEqual(["2 tailless.a m2", "3 tailless.a m3", "4 tailless.a m4"]);
  });

  it("starts at the stream's first message when the messages after the sequence were discarded", async () => {
    await jsm.streams.add({ name: "CAPPED", subjects: ["capped.a"], max_msgs: 4 });
    const js = jetstream(nc);
    for (const b of bodies) await js.publish("capped.a", b);
    expect(await readSince("CAPPED", 2)).toEqual(["7 capped.a m7", "8 capped.a m8", "9 capped.a m9", "10 capped.a m10"]);
  });

  it.each([
    ["", undefined, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
    [" of its subject", "growing.a", [1, 3, 5, 7, 9]],
  ])("leaves out the messages%s published while it reads", async (_name, subject, seqs) => {
    const stream = subject === undefined ? "grown" : "growing";
    await mixed(stream);
    const read: number[] = [];
    await readStreamSince(nc, stream.toUpperCase(), { afterSeq: 0, subject }, (msg) => {
      if (read.length === 0) for (let i = 0; i < 5; i++) nc.publish(`${stream}.a`, `late${i}`);
      read.push(msg.seq);
    });
    expect(read).toEqual(seqs);
    // They are in the stream, after what was read.
    await vi.waitFor(async () => expect((await jsm.streams.info(stream.toUpperCase())).state.messages).toBe(15));
  });
});

describe("AckedPublisher", { timeout: 15_000 }, () => {
  it("has every message acked once, in the order published, and names the highest sequence acked", async () => {
    await jsm.streams.add({ name: "ACKED", subjects: ["acked.>"] });
    const publisher = new AckedPublisher(nc);
    const seqs: number[][] = Array.from({ length: 3000 }, () => []);
    try {
      for (let i = 0; i < 3000; i++) publisher.publish(`acked.${i % 3}`, `m${i}`, i % 2 === 0 ? `id-${i}` : undefined, (seq) => seqs[i].push(seq));
      await publisher.settle(1000);
      expect(publisher.pending).toBeLessThanOrEqual(1000);
      await publisher.settle();
      expect(publisher.pending).toBe(0);
      expect(publisher.acked).toBe(3000);
      expect(seqs).toEqual(seqs.map((_, i) => [i + 1]));
      expect(publisher.maxAckedSeq).toBe(3000);
      expect(publisher.failure).toBeUndefined();
      expect((await jsm.streams.info("ACKED")).state.messages).toBe(3000);
    } finally {
      publisher.close();
    }
  });

  it("lets a waiting settle return once it is closed, whatever is still unacked", async () => {
    const publisher = new AckedPublisher(nc);
    publisher.publish("nobody.takes.this", "m"); // no stream: never acked
    const settled = publisher.settle();
    publisher.close();
    await settled;
    expect(publisher.pending).toBe(1);
  });

  it("sends nothing while paused; `drop` forgets what the stream has, and `resume` sends the rest", async () => {
    await jsm.streams.add({ name: "PAUSED", subjects: ["paused.>"] });
    const publisher = new AckedPublisher(nc);
    const acks: Array<[string, number]> = [];
    try {
      publisher.pause();
      for (let n = 1; n <= 5; n++) publisher.publish("paused.out", `m${n}`, `id-${n}`, (seq) => acks.push([`m${n}`, seq]));
      await nc.flush();
      // Stored in order: a marker that gets sequence 1 shows nothing was sent before it.
      expect((await jetstream(nc).publish("paused.marker", "marker")).seq).toBe(1);
      expect(publisher.pending).toBe(5);

      publisher.drop((id) => id === "id-2" || id === "id-4");
      expect(acks).toEqual([["m2", 0], ["m4", 0]]);
      expect([publisher.pending, publisher.acked, publisher.maxAckedSeq]).toEqual([3, 2, 0]);

      publisher.resume();
      await publisher.settle();
      expect(acks.slice(2)).toEqual([["m1", 2], ["m3", 3], ["m5", 4]]);
      expect(publisher.maxAckedSeq).toBe(4);
      expect((await readSince("PAUSED", 1)).map((m) => m.split(" ")[2])).toEqual(["m1", "m3", "m5"]);
    } finally {
      publisher.close();
    }
  });

  it("reports a message to a subject no stream takes in `failure`, and delivers it once, when a stream takes it", async () => {
    const publisher = new AckedPublisher(nc);
    const acks: number[] = [];
    try {
      publisher.publish("nowhere.x", "waiting", "id-1", (seq) => acks.push(seq));
      await until(() => publisher.failure !== undefined, "the publish to fail");
      expect(publisher.failure).toEqual({ reason: expect.stringMatching(/^503\b/), sinceMs: expect.any(Number) });
      expect([publisher.pending, publisher.acked]).toEqual([1, 0]);
      const firstFailure = publisher.failure;
      await new Promise((r) => setTimeout(r, 600)); // sent again and failed again: still the first failure
      expect(publisher.failure).toBe(firstFailure);

      await jsm.streams.add({ name: "NOWHERE", subjects: ["nowhere.>"] });
      await publisher.settle();
      expect(acks).toEqual([1]);
      expect(publisher.failure).toBeUndefined();
      expect(await readSince("NOWHERE", 0)).toEqual(["1 nowhere.x waiting"]);
    } finally {
      publisher.close();
    }
  });
});

describe("connectNats", { timeout: 15_000 }, () => {
  it("says that no server can be reached, again only after 5 s, and an abort ends the wait", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    // Virtual time: the clock that spaces the notices is set by the test; retries still run every 500 ms.
    vi.useFakeTimers({ toFake: ["Date"], now: Date.UTC(2024, 4, 20) });
    const notices: string[] = [];
    const controller = new AbortController();
    const waiting = connectNats({ servers: url, client: "test", signal: controller.signal, onEvent: (e) => e.event === "retrying" && notices.push(`NATS at ${e.address} cannot be reached (${e.reason}); retrying until it can`) }).then(
      (connection) => connection,
      (error: unknown) => error,
    );
    try {
      await vi.waitFor(() => expect(notices).toHaveLength(1), { timeout: 5_000 });
      expect(notices[0]).toMatch(new RegExp(`^NATS at ${url} cannot be reached \\(.+\\); retrying until it can$`));
      vi.setSystemTime(Date.now() + 4_900);
      await new Promise((r) => setTimeout(r, 600)); // a retry (500 ms after the last) fails unsaid
      expect(notices).toHaveLength(1);
      vi.setSystemTime(Date.now() + 100);
      await vi.waitFor(() => expect(notices).toHaveLength(2), { timeout: 5_000 });
      controller.abort();
      expect(((await waiting) as Error).name).toBe("AbortError");
    } finally {
      vi.useRealTimers();
      controller.abort();
    }
  });

  it("connects once a server comes up, after saying it is waiting", async () => {
    const later = await startNatsServer();
    await later.stop();
    const notices: string[] = [];
    const connecting = connectNats({ servers: later.url, client: "test", onEvent: (e) => e.event === "retrying" && notices.push(e.reason) });
    try {
      await until(() => notices.length === 1, "a notice");
      await later.restart();
      const connection = await connecting;
      expect(connection.getServer()).toBe(`127.0.0.1:${later.port}`);
      await connection.close();
    } finally {
      await later.stop();
    }
  });
});
