// A cluster worker's partitions' jobs as one job: counters added up, the slowest watermark with each
// partition under its own number, the latest checkpoint, and one latency recorder fed by them all.
import { describe, expect, it } from "vitest";
import type { JobView } from "../../../engine/jobView.ts";
import { ClusterView } from "../../../pipelines/http/clusterView.ts";
import { fakeJob } from "./fakeJobView.ts";

/** A partition's job: its one partition (its own 0) at `watermarkMs`. */
function partitionJob(watermarkMs: number) {
  const fake = fakeJob();
  fake.job.watermarkMs = watermarkMs;
  const view: JobView = { ...fake.view, watermarks: () => ({ watermarkMs, partitions: [{ watermarkMs, newestEventMs: watermarkMs, isIdle: false, isFinished: false }] }) };
  return { ...fake, view };
}

describe("ClusterView", () => {
  it("is starting, and not ready, before it holds a partition", () => {
    const view = new ClusterView(4, "nats stream IN", false);
    expect(view.status()).toEqual({ phase: "starting", notReady: "this worker holds no partition yet" });
    expect(view.watermarks()).toEqual({ watermarkMs: -Infinity, partitions: [] });
  });

  it("adds counters up and lists each partition's watermark under its number, the slowest the worker's", () => {
    const view = new ClusterView(4, "nats stream IN", false);
    const [one, three] = [partitionJob(2000), partitionJob(1000)];
    one.job.counters.read = 5;
    three.job.counters.read = 7;
    view.setPartition(1, one.view);
    view.setPartition(3, three.view);
    expect(view.counters().read).toBe(12);
    expect(view.watermarks().watermarkMs).toBe(1000);
    expect(view.watermarks().partitions.map((p) => p.partition)).toEqual([1, 3]);
    expect(view.heldPartitions()).toEqual([1, 3]);
    view.setPartition(1, undefined);
    expect(view.counters().read).toBe(7);
    expect(view.heldPartitions()).toEqual([3]);
  });

  it("is not ready while any partition is not, saying which", () => {
    const view = new ClusterView(4, "nats stream IN", false);
    const [zero, two] = [partitionJob(0), partitionJob(0)];
    view.setPartition(0, zero.view);
    view.setPartition(2, two.view);
    expect(view.status()).toEqual({ phase: "running" });
    two.job.phase = "restoring";
    two.job.notReady = "restoring the state of the last checkpoint";
    expect(view.status()).toEqual({ phase: "restoring", notReady: "partition 2: restoring the state of the last checkpoint" });
  });

  it("records every held partition's output latency and checkpoints, and no longer those of a partition it gave up", () => {
    const view = new ClusterView(4, "nats stream IN", false);
    const [zero, one] = [partitionJob(0), partitionJob(0)];
    view.setPartition(0, zero.view);
    view.setPartition(1, one.view);
    const checkpoints: number[] = [];
    view.onCheckpoint((c) => checkpoints.push(c.checkpointId));
    zero.job.latency.record(0.1, 2);
    one.job.latency.record(0.3);
    one.job.checkpoint = { checkpointId: 4, committedAtMs: 10 } as never;
    expect(view.latency().output.count).toBe(3);
    expect(view.lastCheckpoint()?.checkpointId).toBe(4);
    view.setPartition(1, undefined);
    one.job.latency.record(0.3);
    one.job.checkpoint = { checkpointId: 5, committedAtMs: 20 } as never;
    expect(view.latency().output.count).toBe(3);
    expect(checkpoints).toEqual([4]);
  });
});
