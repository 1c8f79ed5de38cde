import { describe, expect, it } from "vitest";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { ev, runStages, stagesFromYaml, T0, wm, outputTime } from "../behaviourHarness.ts";

describe("features", () => {
  it("evaluates the formulas on every event and emits the vector when it changes", async () => {
    const stages = stagesFromYaml(`
features:
  depth: 'session_duration_sec / 10.0'
  long_visit: 'depth > 5.0'
`);
    const run = await runStages(stages, [
      ev("u1", T0, { event_type: "page_view", page: "/", session_duration_sec: 30 }),
      ev("u1", T0 + 1000, { event_type: "page_view", page: "/a", session_duration_sec: 30 }),
      ev("u1", T0 + 2000, { event_type: "page_view", page: "/b", session_duration_sec: 80 }),
      wm(T0 + 5000),
    ]);
    expect(run.byKind("features").map((o) => o.body)).toEqual([
      { output: "features", user_id: "u1", ...outputTime(T0), depth: 3, long_visit: 0 },
      { output: "features", user_id: "u1", ...outputTime(T0 + 2000), depth: 8, long_visit: 1 },
    ]);
  });

  it("gives a feature no value (null) when its formula has none, e.g. a missing optional field", async () => {
    const stages = stagesFromYaml(`features: { depth: 'scroll_depth * 100.0' }`);
    const run = await runStages(stages, [ev("u1", T0, { event_type: "page_view", page: "/" })]);
    expect(run.byKind("features")[0].body.depth).toBeNull();
  });

  it("refuses a formula that uses a feature declared below it, at its path", () => {
    expect(() => stagesFromYaml(`features: { a: 'b + 1.0', b: '2.0' }`)).toThrow(PipelineInvalid);
    expect(() => stagesFromYaml(`features: { a: 'b + 1.0', b: '2.0' }`)).toThrow(/features\.a: CEL type error/);
  });

  it("refuses a name that is already an event field", () => {
    expect(() => stagesFromYaml(`features: { page: '1.0' }`)).toThrow(/features\.page: "page" is already the name of schema\.page/);
  });

  it("refuses a name that is a field of every feature vector (time_ms, output)", () => {
    expect(() => stagesFromYaml(`features: { time_ms: '1.0' }`)).toThrow(/features\.time_ms: "time_ms" is a field of every feature vector; choose another name/);
    expect(() => stagesFromYaml(`features: { output: '1.0' }`)).toThrow(/features\.output: "output" is a field of every feature vector/);
  });

  it("shows values without the noise of decimal arithmetic", async () => {
    const stages = stagesFromYaml(`features: { share: '1.0 - 0.7', third: '1.0 / 3.0' }`);
    const run = await runStages(stages, [ev("u1", T0, { event_type: "page_view", page: "/" })]);
    // 1 - 0.7 is 0.30000000000000004 in binary; 1/3 keeps 12 significant digits.
    expect(run.byKind("features")[0].body).toMatchObject({ share: 0.3, third: 0.333333333333 });
  });
});
