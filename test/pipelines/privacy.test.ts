// Privacy at ingestion, through a whole pipeline: ids pseudonymised before anything keys or stores
// them (outputs, state, dead letters), and only the fields some stage reads kept.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readPipeline } from "../../pipelines/cli.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { pseudonymiser } from "../../operators/pseudonymise.ts";
import { eventDecoder, type EventSchema } from "../../pipelines/schema.ts";
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
schema:
  user_id: { type: string, required: true }
  timestamp: { type: timestamp, required: true }
  event_type: { type: string, required: true }
  page: { type: string }
  referrer: { type: string }
key: user_id
time: timestamp
${state}privacy:
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
    const spec = readPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_PSEUDONYM_KEY }"));
    await runPipeline(spec, { reset: true });
    const results = readFileSync(join(dir, "out/results.jsonl"), "utf8");
    const dead = readFileSync(join(dir, "out/dead.jsonl"), "utf8");
    const alice = pseudonymiser(KEY)("alice");
    expect(results + dead).not.toMatch(/alice|bob/);
    expect(results).toContain(`"user_id":"${alice}"`);
    const deadLetters = dead.trim().split("\n").map((l) => JSON.parse(l));
    expect(deadLetters.map((d) => d.reason)).toEqual([expect.stringMatching(/JSON|json/), 'missing required field "timestamp"']);
    expect(deadLetters[0].raw).toBe("(withheld: ids are pseudonymised)");
    expect(deadLetters[1].event.user_id).toBe(alice);
  });

  it("refuses a key that is missing or shorter than 16 bytes, naming privacy.pseudonymise.keyEnv", () => {
    const dir = tempDir("flusso-privacy-");
    delete process.env.FLUSSO_TEST_NO_KEY;
    expect(() => readPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_NO_KEY }"))).toThrow(/privacy\.pseudonymise\.keyEnv: the environment variable FLUSSO_TEST_NO_KEY must hold/);
    process.env.FLUSSO_TEST_SHORT_KEY = "short";
    expect(() => readPipeline(pipelineFile(dir, "  pseudonymise: { keyEnv: FLUSSO_TEST_SHORT_KEY }"))).toThrow(/it is shorter/);
  });

  it("encrypts the state at rest with the key from state.encryptionKeyEnv, and refuses the dir without that key", async () => {
    /** Whether any file of the state dir holds the id or the page in clear. */
    const isReadable = (stateDir: string) =>
      readdirSync(stateDir).some((f) => /alice|whitepaper/.test(readFileSync(join(stateDir, f)).toString("latin1")));
    const plainDir = tempDir("flusso-privacy-");
    await runPipeline(readPipeline(pipelineFile(plainDir, "  keep: used", "state: { dir: state }\n")), { reset: true });
    expect(isReadable(join(plainDir, "state"))).toBe(true);

    process.env.FLUSSO_TEST_STATE_KEY = "k".repeat(32);
    const dir = tempDir("flusso-privacy-");
    const encrypted = (keyEnv: string) => readPipeline(pipelineFile(dir, "  keep: used", `state: { dir: state, encryptionKeyEnv: ${keyEnv} }\n`));
    const first = await runPipeline(encrypted("FLUSSO_TEST_STATE_KEY"), { reset: true });
    expect(first.counters.checkpoints).toBeGreaterThan(0);
    expect(isReadable(join(dir, "state"))).toBe(false);
    // The same key reads the checkpoint back (the input is done: nothing more to do).
    expect((await runPipeline(encrypted("FLUSSO_TEST_STATE_KEY"))).restoredFromCheckpoint).toBe(first.counters.checkpoints);
    process.env.FLUSSO_TEST_OTHER_KEY = "o".repeat(32);
    await expect(runPipeline(encrypted("FLUSSO_TEST_OTHER_KEY"))).rejects.toThrow(/ cannot be read with the encryption key given/);
    await expect(runPipeline(readPipeline(pipelineFile(dir, "  keep: used", "state: { dir: state }\n")))).rejects.toThrow(/ without an encryption key/);
  });

  it("refuses a state key that is missing or not 32 bytes, naming state.encryptionKeyEnv", () => {
    const dir = tempDir("flusso-privacy-");
    const withKey = (keyEnv: string) => () => readPipeline(pipelineFile(dir, "  keep: used", `state: { encryptionKeyEnv: ${keyEnv} }\n`));
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
    const spec = readPipeline(file);
    // The fields the erasure condition reads are kept with `keep: used`.
    expect(spec.privacy!.keep).toContain("referrer");
    const result = await runPipeline(spec, { reset: true });
    expect(result.counters.erasures).toBe(1);
    const alice = pseudonymiser(KEY)("alice");
    const outputs = readFileSync(join(dir, "out/results.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(outputs.map((o) => [o.output, o.time])).toEqual([["alert", T0], ["erasure", T0 + 1000], ["alert", T0 + 2000]]);
    expect(outputs[1]).toEqual({ output: "erasure", user_id: alice, time: T0 + 1000, stages: ["scores"], wake_ups_withdrawn: 0 });
    // Afresh: the score after the erasure holds only the second download.
    expect(outputs[2].score).toBe(outputs[0].score);
  });

  it("refuses privacy.erase without a sink for its audit records, or with a condition on more than the event, at its path", () => {
    const dir = tempDir("flusso-privacy-");
    const file = pipelineFile(dir, "  erase: { when: 'event_type == \"erasure_request\"' }");
    const withSinks = (text: string, erase = "") => {
      const yaml = readFileSync(file, "utf8").replace(/sinks:\n  - file: \{ path: out\/results.jsonl \}\n/, text);
      writeFileSync(join(dir, "other.yaml"), erase ? yaml.replace(/  erase: .*\n/, `  erase: ${erase}\n`) : yaml);
      return () => readPipeline(join(dir, "other.yaml"));
    };
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n    outputs: [alert]\n")).toThrow(/privacy\.erase: no sink takes "erasure" outputs/);
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n", "{ when: 'user == \"x\"' }")).toThrow(/privacy\.erase\.when: CEL type error/);
    expect(withSinks("sinks:\n  - file: { path: out/results.jsonl }\n", "{ if: 'true' }")).toThrow(/privacy\.erase\.if: unknown field/);
  });

  it("keeps only the fields some stage reads with keep: used (a score matches on event_type and shows the page)", () => {
    const dir = tempDir("flusso-privacy-");
    const spec = readPipeline(pipelineFile(dir, "  keep: used"));
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
