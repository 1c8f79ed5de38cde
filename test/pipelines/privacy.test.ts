// Privacy at ingestion, through a whole pipeline: ids pseudonymised before anything keys or stores
// them (outputs, state, dead letters), and only the fields some stage reads kept; and its parts: what
// a dead letter keeps of a refused event, and the keyed pseudonyms.
import { createHmac } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";

/** HMACs computed by the code under test, to tell a cache hit from a computation. */
const hmacs = vi.hoisted(() => ({ count: 0 }));
vi.mock("node:crypto", async (importOriginal) => {
  const crypto = await importOriginal<typeof import("node:crypto")>();
  const createHmac = (...args: Parameters<typeof crypto.createHmac>) => {
    hmacs.count++;
    return crypto.createHmac(...args);
  };
  return { ...crypto, default: { ...crypto, createHmac }, createHmac };
});

import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { PseudonymKeyInvalid } from "../../pipelines/errors.ts";
import { minimisedEvent, pseudonymiser, WITHHELD } from "../../pipelines/privacy.ts";
import { eventDecoder, type EventSchema } from "../../pipelines/schema.ts";
import { eventSchemaYaml } from "../fixtures/pipelines.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";

const KEY = "a-test-key-of-32-bytes-0123456789";
const T0 = Date.UTC(2024, 4, 20, 9);

afterAll(removeTempDirs);

function pipelineFile(dir: string, privacy: string, state = ""): string {
  const events = [
    JSON.stringify({ user_id: "alice", timestamp: T0, event_type: "whitepaper_download", page: "/whitepaper/a", referrer: "x" }),
    `{"user_id": "alice", "not json`,
    JSON.stringify({ user_id: "alice", event_type: "page_view", page: "/" }),
    JSON.stringify({ user_id: "bob", timestamp: T0 + 1000, event_type: "page_view", page: "/pricing", referrer: "y" }),
  ];
  writeFileSync(join(dir, "events.jsonl"), events.join("\n") + "\n");
  const file = join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: private
source: { file: { path: events.jsonl, format: jsonl } }
${eventSchemaYaml({ fields: { page: "{ type: string }", referrer: "{ type: string }" } })}${state}privacy:
${privacy}
scores:
  interest: { halfLife: 7d, events: { whitepaper_download: 25 }, alert: { at: 20, message: "interested" } }
sinks:
  - file: { path: out/results.jsonl }
deadLetter: { file: { path: out/dead.jsonl } }
`,
  );
  return file;
}

describe("privacy", () => {
  it("writes no real id anywhere: outputs carry the keyed pseudonym, dead letters withhold the raw text", async () => {
    process.env.FLUSSO_TEST_PSEUDONYM_KEY = KEY;
    const dir = tempDir("flusso-privacy-");
    const spec = loadPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_PSEUDONYM_KEY }"));
    await runPipeline(spec, { reset: true });
    const results = readFileSync(join(dir, "out/results.jsonl"), "utf8");
    const dead = readFileSync(join(dir, "out/dead.jsonl"), "utf8");
    const alice = pseudonymiser(KEY)("alice");
    expect(results + dead).not.toMatch(/alice|bob/);
    expect(results).toContain(`"user_id":"${alice}"`);
    const deadLetters = dead.trim().split("\n").map((l) => JSON.parse(l));
    expect(deadLetters.map((d) => d.reason)).toEqual([expect.stringMatching(/JSON|json/), 'missing required field "timestamp"']);
    expect(deadLetters[0].raw).toBe(WITHHELD);
    expect(deadLetters[1].event.user_id).toBe(alice);
  });

  /** Runs the pipeline of `privacy` over `events` (JSON values, or lines as they are) and reads its dead letters. */
  async function deadLettersOf(privacy: string, events: unknown[]): Promise<{ text: string; deadLetters: Array<Record<string, any>> }> {
    const dir = tempDir("flusso-privacy-");
    const file = pipelineFile(dir, privacy);
    writeFileSync(join(dir, "events.jsonl"), events.map((e) => (typeof e === "string" ? e : JSON.stringify(e))).join("\n") + "\n");
    await runPipeline(loadPipeline(file), { reset: true });
    const text = readFileSync(join(dir, "out/dead.jsonl"), "utf8");
    return { text, deadLetters: text.trim().split("\n").map((l) => JSON.parse(l)) };
  }

  it("keeps in a dead letter only the declared fields, the id pseudonymised, and no value in its reason", async () => {
    process.env.FLUSSO_TEST_PSEUDONYM_KEY = KEY;
    const pseudonym = pseudonymiser(KEY);
    const { text, deadLetters } = await deadLettersOf("  pseudonymise: { keyEnv: FLUSSO_TEST_PSEUDONYM_KEY }", [
      { user_id: "bob", timestamp: "bob@x.com", event_type: "page_view", page: "/pricing", email: "bob@x.com" },
      { user_id: { name: "bob" }, timestamp: T0, event_type: "page_view", email: "bob@x.com" },
      { user_id: 12345, timestamp: T0 + 1000, event_type: { bob: "bob@x.com" } },
      [{ user_id: "bob", email: "bob@x.com" }],
      '{"user_id": "bob", "email": "bob@x.com", oops}',
    ]);
    expect(text).not.toMatch(/bob/);
    expect(deadLetters).toEqual([
      {
        reason: 'field "timestamp": expected a timestamp (epoch ms or ISO-8601), got a string that is no timestamp',
        origin: expect.stringMatching(/events\.jsonl:1$/),
        partition: 0,
        event: { user_id: pseudonym("bob"), timestamp: WITHHELD, event_type: "page_view", page: "/pricing" },
      },
      { reason: 'field "user_id": expected a string, got object', origin: expect.stringMatching(/:2$/), partition: 0, event: { user_id: WITHHELD, timestamp: T0, event_type: "page_view" } },
      // A numeric id gets the pseudonym the decoder gives it in events.
      { reason: 'field "event_type": expected a string, got object', origin: expect.stringMatching(/:3$/), partition: 0, event: { user_id: pseudonym("12345"), timestamp: T0 + 1000, event_type: WITHHELD } },
      { reason: "expected an object event, got a list", origin: expect.stringMatching(/:4$/), partition: 0, event: WITHHELD },
      { reason: expect.stringMatching(/^not JSON: /), origin: expect.stringMatching(/:5$/), partition: 0, raw: WITHHELD },
    ]);
  });

  it("minimises dead letters with keep alone: only kept fields, no raw text, no value in a reason", async () => {
    const { text, deadLetters } = await deadLettersOf("  keep: [event_type]", [
      { user_id: "carol", timestamp: T0, event_type: "page_view", page: "/secret", email: "carol@x.com", referrer: true },
      { user_id: "carol", timestamp: 1e20, event_type: "page_view", page: "/secret", email: "carol@x.com" },
      "carol@x.com",
    ]);
    expect(text).not.toMatch(/carol@|secret|1e\+?20|100000000000000000000/);
    expect(deadLetters.map((d) => [d.reason, d.event ?? d.raw])).toEqual([
      ['field "referrer": expected a string, got boolean', { user_id: "carol", timestamp: T0, event_type: "page_view" }],
      ['field "timestamp": timestamp is outside 1990-01-01..2100-01-01', { user_id: "carol", timestamp: WITHHELD, event_type: "page_view" }],
      ["not JSON: Unexpected token (not valid JSON)", WITHHELD],
    ]);
  });

  it("refuses a key that is missing or shorter than 16 bytes, naming privacy.pseudonymise.keyEnv", () => {
    const dir = tempDir("flusso-privacy-");
    delete process.env.FLUSSO_TEST_NO_KEY;
    expect(() => loadPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_NO_KEY }"))).toThrow(/privacy\.pseudonymise\.keyEnv: the environment variable FLUSSO_TEST_NO_KEY must hold/);
    process.env.FLUSSO_TEST_SHORT_KEY = "short";
    expect(() => loadPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_SHORT_KEY }"))).toThrow(/it is shorter/);
  });

  it("encrypts the state at rest with the key from state.encryptionKeyEnv, and refuses the dir without that key", async () => {
    /** Whether any file of the state dir holds the id or the page in clear. */
    const isReadable = (stateDir: string) =>
      readdirSync(stateDir).some((f) => /alice|whitepaper/.test(readFileSync(join(stateDir, f)).toString("latin1")));
    const plainDir = tempDir("flusso-privacy-");
    await runPipeline(loadPipeline(pipelineFile(plainDir, "  keep: used", "state: { dir: state }\n")), { reset: true });
    expect(isReadable(join(plainDir, "state"))).toBe(true);

    process.env.FLUSSO_TEST_STATE_KEY = "k".repeat(32);
    const dir = tempDir("flusso-privacy-");
    const encrypted = (keyEnv: string) => loadPipeline(pipelineFile(dir, "  keep: used", `state: { dir: state, encryptionKeyEnv: ${keyEnv} }\n`));
    const first = await runPipeline(encrypted("FLUSSO_TEST_STATE_KEY"), { reset: true });
    expect(first.counters.checkpoints).toBeGreaterThan(0);
    expect(isReadable(join(dir, "state"))).toBe(false);
    // The same key reads the checkpoint back (the input is done: nothing more to do).
    expect((await runPipeline(encrypted("FLUSSO_TEST_STATE_KEY"))).restoredFromCheckpoint).toBe(first.counters.checkpoints);
    process.env.FLUSSO_TEST_OTHER_KEY = "o".repeat(32);
    await expect(runPipeline(encrypted("FLUSSO_TEST_OTHER_KEY"))).rejects.toThrow(/ cannot be read with the encryption key given/);
    await expect(runPipeline(loadPipeline(pipelineFile(dir, "  keep: used", "state: { dir: state }\n")))).rejects.toThrow(/ without an encryption key/);
  });

  it("refuses a state key that is missing or not 32 bytes, naming state.encryptionKeyEnv", () => {
    const dir = tempDir("flusso-privacy-");
    const withKey = (keyEnv: string) => () => loadPipeline(pipelineFile(dir, "  keep: used", `state: { encryptionKeyEnv: ${keyEnv} }\n`));
    delete process.env.FLUSSO_TEST_NO_STATE_KEY;
    expect(withKey("FLUSSO_TEST_NO_STATE_KEY")).toThrow(/state\.encryptionKeyEnv: the environment variable FLUSSO_TEST_NO_STATE_KEY must hold the state encryption key, exactly 32 bytes \(it is not set\)/);
    process.env.FLUSSO_TEST_LONG_STATE_KEY = "k".repeat(33);
    expect(withKey("FLUSSO_TEST_LONG_STATE_KEY")).toThrow(/exactly 32 bytes \(it has 33\)/);
  });

  it("erases a user on request with privacy.erase: an audit record in the outputs, the user's score starting over", async () => {
    process.env.FLUSSO_TEST_PSEUDONYM_KEY = KEY;
    const dir = tempDir("flusso-privacy-");
    const file = pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_PSEUDONYM_KEY }\n  keep: used\n  erase: { when: 'event_type == \"erasure_request\" && referrer == \"privacy-form\"' }");
    writeFileSync(
      join(dir, "events.jsonl"),
      [
        { user_id: "alice", timestamp: T0, event_type: "whitepaper_download", page: "/whitepaper/a" },
        { user_id: "alice", timestamp: T0 + 1000, event_type: "erasure_request", page: "/account", referrer: "privacy-form" },
        { user_id: "alice", timestamp: T0 + 2000, event_type: "whitepaper_download", page: "/whitepaper/b" },
      ].map((e) => JSON.stringify(e)).join("\n") + "\n",
    );
    const spec = loadPipeline(file);
    // The fields the erasure condition reads are kept with `keep: used`.
    expect(spec.privacy!.keep).toContain("referrer");
    const result = await runPipeline(spec, { reset: true });
    expect(result.counters.erasures).toBe(1);
    const alice = pseudonymiser(KEY)("alice");
    const outputs = readFileSync(join(dir, "out/results.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(outputs.map((o) => [o.output, o.time_ms])).toEqual([["alert", T0], ["erasure", T0 + 1000], ["alert", T0 + 2000]]);
    expect(outputs[1]).toEqual({ output: "erasure", user_id: alice, time: new Date(T0 + 1000).toISOString(), time_ms: T0 + 1000, stages: ["scores"], wake_ups_withdrawn: 0 });
    // Afresh: the score after the erasure holds only the second download.
    expect(outputs[2].score).toBe(outputs[0].score);
  });

  it("refuses privacy.erase without a sink for its audit records, or with a condition on more than the event, at its path", () => {
    const dir = tempDir("flusso-privacy-");
    const file = pipelineFile(dir, "  erase: { when: 'event_type == \"erasure_request\"' }");
    const withSinks = (text: string, erase = "") => {
      const yaml = readFileSync(file, "utf8").replace(/sinks:\n  - file: \{ path: out\/results.jsonl \}\n/, text);
      writeFileSync(join(dir, "other.yaml"), erase ? yaml.replace(/  erase: .*\n/, `  erase: ${erase}\n`) : yaml);
      return () => loadPipeline(join(dir, "other.yaml"));
    };
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n    outputs: [alert]\n")).toThrow(/privacy\.erase: no sink takes "erasure" outputs/);
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n", "{ when: 'user == \"x\"' }")).toThrow(/privacy\.erase\.when: CEL type error/);
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n", "{ if: 'true' }")).toThrow(/privacy\.erase\.if: unknown field/);
  });

  it("keeps only the fields some stage reads with keep: used (a score matches on event_type and shows the page)", () => {
    const dir = tempDir("flusso-privacy-");
    const spec = loadPipeline(pipelineFile(dir, "  keep: used"));
    expect(new Set(spec.privacy!.keep)).toEqual(new Set(["user_id", "timestamp", "event_type", "page"]));
  });

  it("drops the fields not kept while decoding, keeps a kept map whole, and still checks a required field it drops", () => {
    const schema: EventSchema = {
      user_id: { type: "string", required: true, unit: "ms" },
      timestamp: { type: "timestamp", required: true, unit: "ms" },
      event_type: { type: "string", required: true, unit: "ms" },
      consent: { type: "object", required: false, unit: "ms" },
      page: { type: "string", required: false, unit: "ms" },
    };
    const decode = eventDecoder(schema, "user_id", "timestamp", { keep: ["user_id", "timestamp", "consent"] });
    const consent = { email: true, push: false };
    const decoded = decode({ user_id: "u1", timestamp: T0, event_type: "view", consent, page: "/", extra: 1 });
    expect(decoded).toEqual({ kind: "record", key: "u1", time: T0, value: { user_id: "u1", timestamp: T0, consent } });
    expect(decode({ user_id: "u1", timestamp: T0, page: "/" })).toEqual({ error: 'missing required field "event_type"' });
  });
});

const MINIMISED_SCHEMA: EventSchema = {
  user_id: { type: "string", required: true, unit: "ms" },
  ts: { type: "timestamp", required: true, unit: "ms" },
  price: { type: "number", required: false, unit: "ms" },
  page: { type: "string", required: false, unit: "ms" },
};

describe("minimisedEvent", () => {
  const pseudonym = (id: string) => `p(${id})`;

  it("keeps the declared fields that are kept, as decoded, pseudonymises ids and withholds what fails its check", () => {
    const minimise = minimisedEvent(MINIMISED_SCHEMA, { keep: ["user_id", "ts", "price"], pseudonymise: { fields: ["user_id"], pseudonym } });
    expect(minimise({ user_id: "bob", ts: "bob@x.com", price: "12.5", page: "/secret", email: "bob@x.com" })).toEqual({ user_id: "p(bob)", ts: WITHHELD, price: 12.5 });
    expect(minimise({ user_id: 42, ts: T0 })).toEqual({ user_id: "p(42)", ts: T0 });
    expect(minimise({ user_id: ["bob"], ts: T0 })).toEqual({ user_id: WITHHELD, ts: T0 });
    expect(minimise(["bob"])).toBe(WITHHELD);
  });
});

const OTHER_KEY = "fedcba9876543210-test-key";

describe("pseudonymiser", () => {
  it("is the base64url HMAC-SHA-256 of the id under the key, cut to 22 characters", () => {
    const expected = createHmac("sha256", KEY).update("user-42").digest("base64url").slice(0, 22);
    expect(pseudonymiser(KEY)("user-42")).toBe(expected);
    expect(expected).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("gives the same pseudonym for the same id and key, across pseudonymisers and cache hits", () => {
    const a = pseudonymiser(KEY);
    const b = pseudonymiser(KEY, { cacheSize: 0 });
    const first = a("user-42");
    expect(a("user-42")).toBe(first);
    expect(b("user-42")).toBe(first);
    expect(b("user-42")).toBe(first);
  });

  it("gives different pseudonyms for different ids, and for the same id under different keys", () => {
    const p = pseudonymiser(KEY);
    expect(p("user-1")).not.toBe(p("user-2"));
    expect(pseudonymiser(OTHER_KEY)("user-1")).not.toBe(p("user-1"));
  });

  it("never returns the raw id, nor a plain unkeyed hash of it", () => {
    const p = pseudonymiser(KEY);
    const ids = ["user-42", "mario.rossi@example.it", "", "a"];
    for (const id of ids) {
      const pseudonym = p(id);
      expect(pseudonym).not.toBe(id);
      if (id.length > 3) expect(pseudonym).not.toContain(id);
      expect(pseudonym).not.toBe(createHmac("sha256", "").update(id).digest("base64url").slice(0, 22));
    }
  });

  it("computes a returning id once, and again only after the oldest ids were evicted from its cache", () => {
    const p = pseudonymiser(KEY, { cacheSize: 2 });
    const before = hmacs.count;
    for (const id of ["a", "b", "a", "b"]) p(id);
    expect(hmacs.count - before).toBe(2);
    for (const id of ["c", "a"]) p(id);
    expect(hmacs.count - before).toBe(4);
  });

  it("keeps answering right when its cache is full and evicts", () => {
    const p = pseudonymiser(KEY, { cacheSize: 2 });
    const plain = pseudonymiser(KEY, { cacheSize: 0 });
    for (const id of ["a", "b", "c", "a", "d", "b", "a"]) expect(p(id)).toBe(plain(id));
  });

  it("refuses a key shorter than 16 bytes, counting UTF-8 bytes", () => {
    expect(() => pseudonymiser("")).toThrow(PseudonymKeyInvalid);
    expect(() => pseudonymiser("")).toThrow(/pseudonymisation key: is empty; expected at least 16 bytes/);
    expect(() => pseudonymiser("0123456789abcde")).toThrow(/pseudonymisation key: is 15 bytes long; expected at least 16/);
    expect(() => pseudonymiser("0123456789abcdef")).not.toThrow();
    // 8 characters, 16 bytes.
    expect(() => pseudonymiser("éééééééé")).not.toThrow();
  });
});
