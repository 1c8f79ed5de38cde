// Golden outputs of the shipped pipelines: every config/*.yaml that runs without a server, on its
// own source cut to a few thousand events, must write byte for byte the files it wrote when the
// fixture was made. What the other tests check by rule, this one pins down exactly, so that work on
// how the engine and the behaviour stages compute (skipping work, fusing steps) cannot change a byte.
//
// After a change that is meant to change outputs, regenerate the fixture and review its diff:
//   UPDATE_GOLDEN=1 npx vitest run test/pipelines/shippedOutputs.test.ts
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { PROJECT_ROOT, readJsonLines, removeTempDirs, tempDir } from "./pipelineFiles.ts";
import { SHIPPED, SHIPPED_LOCAL, shippedVariant, type ShippedLocal, type VariantOptions } from "./shipped.ts";

const FIXTURE = join(PROJECT_ROOT, "test/fixtures/shippedOutputs.json");
const isUpdating = process.env.UPDATE_GOLDEN === "1";

/** Generated inputs: enough for cluster runs, sessions closing, follow-ups and an experiment report, in a few seconds. */
const SIZE = { users: 1500, eventCount: 25_000 };

/** The sink added to the `+all` variants: every output kind, whether the shipped sinks take it or not. */
const ALL_FILE = "all.jsonl";

/** What each `+all` run must show at least, so that the hashes stand for something. */
const EXPECTED_KINDS: Record<string, string[]> = {
  retention: ["features", "kbi", "sequence", "phase", "clusters", "cluster", "segment", "trigger", "exposure", "conversion", "experiment"],
  journey: ["phase", "phase_window", "sequence", "trigger"],
  "lead-scoring": ["alert", "trigger"],
  segments: ["segment", "quantiles", "sequence", "trigger", "exposure", "conversion", "experiment"],
};

type Obj = Record<string, any>;
type Variant = { id: string; name: ShippedLocal; options: VariantOptions; kinds?: string[] };

/** Adds a sink of every output kind, whether the shipped sinks take it or not. */
const allOutputs = (p: Obj) => p.sinks.push({ file: { path: `out/${ALL_FILE}` } });

const VARIANTS: Variant[] = [
  // As shipped: the sinks, and so the outputs the stages are asked for, as the files say.
  ...SHIPPED_LOCAL.map((name): Variant => ({ id: name, name, options: SIZE })),
  // Every output (feature vectors on every change, sessions, ...), and the end drained so that
  // every pending deadline fires.
  ...SHIPPED.map((name): Variant => ({ id: `${name}+all`, name, options: { ...SIZE, atEnd: "drain", edit: allOutputs }, kinds: EXPECTED_KINDS[name] })),
  // Two weeks of event time in as many events: 7-day lookbacks and inactivity timers expire while
  // events still come, and clusters' 7-day cohort retention is measured.
  {
    id: "retention+long",
    name: "retention",
    options: {
      ...SIZE,
      atEnd: "drain",
      edit: (p) => {
        p.source.generator.eventsPerSecond = 0.02;
        allOutputs(p);
      },
    },
    kinds: [...EXPECTED_KINDS.retention, "cluster_retention"],
  },
];

/** `{ file: { lines, sha256 } }` for every file the run wrote, in name order. */
type Digest = Record<string, { lines: number; sha256: string }>;

function digestOf(outDir: string): Digest {
  const digest: Digest = {};
  for (const file of readdirSync(outDir).sort()) {
    const bytes = readFileSync(join(outDir, file));
    digest[file] = { lines: bytes.toString("utf8").split("\n").filter((l) => l !== "").length, sha256: createHash("sha256").update(bytes).digest("hex") };
  }
  return digest;
}

const fixture: Record<string, Digest> = existsSync(FIXTURE) ? JSON.parse(readFileSync(FIXTURE, "utf8")) : {};
const made: Record<string, Digest> = {};

afterAll(() => {
  removeTempDirs();
  if (isUpdating) writeFileSync(FIXTURE, JSON.stringify(made, null, 2) + "\n");
});

describe("shipped pipelines' outputs, byte for byte", () => {
  it.each(VARIANTS.map((v) => [v.id, v] as const))("%s", async (id, variant) => {
    const dir = tempDir(`flusso-outputs-${variant.name}-`);
    const file = shippedVariant(variant.name, dir, variant.options);
    const result = await runPipeline(loadPipeline(file), { reset: true });
    expect(result.isComplete).toBe(true);
    const outDir = join(dir, "out");
    if (variant.kinds !== undefined) {
      const kinds = new Set(readJsonLines(join(outDir, ALL_FILE)).map((o) => o.output ?? "trigger"));
      expect([...kinds].sort()).toEqual(expect.arrayContaining(variant.kinds));
    }
    const digest = digestOf(outDir);
    made[id] = digest;
    if (isUpdating) return;
    expect(fixture[id], `no golden outputs for ${id}: UPDATE_GOLDEN=1 (see the file header)`).toBeDefined();
    expect(digest).toEqual(fixture[id]);
  });
});
