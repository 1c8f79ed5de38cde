import { describe, expect, it } from "vitest";
import { LatencyRecorder } from "../../engine/latency.ts";
import { NO_STAMP, OutputCause, SinkLatency } from "../../engine/outputLatency.ts";

function setup(measuresEndToEnd = false) {
  const cause = new OutputCause();
  const recorders = { output: new LatencyRecorder(), endToEnd: measuresEndToEnd ? new LatencyRecorder() : undefined };
  const samples: Array<[number, number]> = [];
  recorders.output.onSample = (seconds, times) => samples.push([seconds, times]);
  return { cause, recorders, samples, sink: new SinkLatency(cause, recorders) };
}

describe("output latency", () => {
  it("charges outputs to the arrival of their batch and records them once, in groups, when they reach the sink", () => {
    const { cause, recorders, samples, sink } = setup();
    cause.arrived(1_000);
    sink.wrote();
    sink.wrote();
    cause.arrived(1_200);
    sink.wrote();
    sink.reached(1_500);
    expect(samples).toEqual([
      [0.5, 2],
      [0.3, 1],
    ]);
    sink.reached(9_000);
    expect(recorders.output.count).toBe(3);
  });

  it("records a holding sink's outputs when their checkpoint is delivered, not at the cut", () => {
    const { cause, recorders, samples, sink } = setup();
    cause.arrived(1_000);
    sink.wrote();
    sink.hold(1);
    cause.arrived(2_000);
    sink.wrote();
    sink.wrote();
    sink.hold(2);
    expect(recorders.output.count).toBe(0);
    sink.delivered(1, 2_100);
    expect(samples).toEqual([[1.1, 1]]);
    sink.delivered(2, 2_400);
    expect(samples).toEqual([
      [1.1, 1],
      [0.4, 2],
    ]);
    expect(recorders.output.count).toBe(3);
  });

  it("measures end to end from the publisher's stamp of the record being processed, clamped at zero", () => {
    const { cause, recorders, sink } = setup(true);
    const endToEnd: Array<[number, number]> = [];
    recorders.endToEnd!.onSample = (seconds, times) => endToEnd.push([seconds, times]);
    cause.arrived(10_000);
    cause.stampMs = 9_000;
    sink.wrote();
    cause.stampMs = 10_400; // a publisher's clock ahead of ours
    sink.wrote();
    cause.stampMs = NO_STAMP; // a wake-up: no publisher behind it
    sink.wrote();
    sink.reached(10_250);
    expect(endToEnd).toEqual([
      [1.25, 1],
      [0, 1],
    ]);
    expect(recorders.output.count).toBe(3);
  });
});
