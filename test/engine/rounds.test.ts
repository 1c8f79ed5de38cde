// A group's rounds (engine/rounds.ts): the leader's book makes rounds in order once every partition
// stands for them; a job waits at each round's boundary for its model, and a job stopped while it
// waits resumes from its last checkpoint to the same outputs.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, record } from "../../engine/elements.ts";
import { runJob, type JobOptions } from "../../engine/job.ts";
import { multiplesIn, RoundBook, type RoundMerger } from "../../engine/rounds.ts";
import type { Sink } from "../../engine/sinks/sink.ts";
import { boundedOutOfOrderness } from "../../engine/watermarks.ts";
import { behaviour, behaviourMerger, type BehaviourOutput } from "../../operators/behaviour.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { MemorySource } from "../../bench/memorySource.ts";
import { MemoryGroup } from "../fixtures/memoryRounds.ts";

const EVERY_MS = 10;
/** Sums the partials: what a round's model is in these tests. */
const summing: RoundMerger = {
  boundariesIn: (afterMs, toMs) => multiplesIn(afterMs, toMs, EVERY_MS),
  merge: (roundMs, previous, partials) => ({ roundMs, sum: partials.reduce<number>((sum, p) => sum + ((p as number | undefined) ?? 0), 0), previous: (previous as { roundMs: number } | undefined)?.roundMs }),
};

describe("multiplesIn", () => {
  it("lists the multiples in (after, to], shifted by an offset, and none with an open end", () => {
    expect(multiplesIn(0, 30, 10)).toEqual([10, 20, 30]);
    expect(multiplesIn(5, 29, 10)).toEqual([10, 20]);
    expect(multiplesIn(5, 29, 10, 3)).toEqual([13, 23]);
    expect(multiplesIn(-Infinity, 30, 10)).toEqual([]);
    expect(multiplesIn(30, 30, 10)).toEqual([]);
  });
});

describe("the leader's book", () => {
  it("makes each round once every partition stands for it, in order, with the offer whose range holds it", () => {
    const book = new RoundBook(2, summing);
    book.offer(0, 0, 25, 1, 1);
    expect(book.makeNext()).toBeUndefined();
    book.offer(1, 0, 15, 10, 2);
    const first = book.makeNext()!;
    expect(first).toMatchObject({ roundMs: 10, firstRoundMs: 10, model: { sum: 11 } });
    book.made(first);
    // Round 20 lies beyond partition 1's offer: it is waited for.
    expect(book.makeNext()).toBeUndefined();
    book.offer(1, 15, 30, 100, 3);
    const second = book.makeNext()!;
    expect(second).toMatchObject({ roundMs: 20, previousRoundMs: 10, model: { sum: 101, previous: 10 } });
  });

  it("counts a partition not yet started by a round as absent, and its end as standing for every later round", () => {
    const book = new RoundBook(3, summing);
    book.offer(0, 0, 30, 1, 1);
    book.start(1, 15);
    book.end(2, 5, 100);
    const ten = book.makeNext()!;
    expect(ten.model).toMatchObject({ sum: 101 });
    book.made(ten);
    // Partition 1 started at 15: it must speak for 20.
    expect(book.makeNext()).toBeUndefined();
    book.offer(1, 15, 25, 10, 2);
    const twenty = book.makeNext()!;
    expect(twenty.model).toMatchObject({ sum: 111 });
    book.made(twenty);
    book.end(1, 25, 10);
    const thirty = book.makeNext()!;
    expect(thirty.roundMs).toBe(30);
    book.made(thirty);
    // The end comes once every partition has ended, after the last round.
    expect(book.makeNext()).toBeUndefined();
    book.end(0, 30, 1);
    const end = book.makeNext()!;
    expect(end).toMatchObject({ roundMs: END_OF_TIME, firstRoundMs: 10, previousRoundMs: 30, model: { sum: 111 } });
    book.made(end);
    expect(book.hasEnded).toBe(true);
    expect(book.makeNext()).toBeUndefined();
  });

  it("lets a replay's offer stand only for the rounds after those already offered or made", () => {
    const book = new RoundBook(1, summing);
    book.offer(0, 0, 15, 1, 1);
    book.made(book.makeNext()!);
    // Replayed from a checkpoint at 0: the same range again, then one reaching further.
    book.offer(0, 0, 15, 999, 2);
    expect(book.makeNext()).toBeUndefined();
    book.offer(0, 0, 25, 7, 3);
    const twenty = book.makeNext()!;
    expect(twenty).toMatchObject({ roundMs: 20, model: { sum: 7 } });
    book.made(twenty);
    // The first offer is used up; the replay's stands for 25 and before.
    expect(book.firstTagOf(0)).toBe(3);
  });
});

// --- Jobs in a group: a stage that counts the users of every partition at each round. ---

type Ev = { user: string; t: number };

/** Each partition's users seen; at each round the group's count, written once; every event carries the count it saw. */
const userCount: StageDefinition = {
  name: "users",
  rounds: {
    boundariesIn: (afterMs, toMs) => multiplesIn(afterMs, toMs, 100),
    merge: (roundMs, _previous, partials) => ({ roundMs, users: partials.reduce<number>((sum, p) => sum + ((p as number | undefined) ?? 0), 0) }),
  },
  build(ctx) {
    const seen = ctx.userState<boolean>("seen");
    const group = ctx.valueState<number>("group");
    return {
      step(view, out) {
        if (view.event !== undefined && seen.get(view.user) === undefined) seen.set(view.user, true);
        out.emit("event", view.user, view.timeMs, { user: view.user, t: view.timeMs, groupUsers: group.get("*") ?? 0 });
      },
      offer: () => [...seen.entries()].length,
      accept(roundMs, model, reports, out) {
        const { users } = model as { users: number };
        group.set("*", users);
        if (reports && roundMs !== END_OF_TIME) out.emit("round", "*", roundMs, { round: roundMs, users });
      },
    };
  },
};

/** A sink that goes back to a checkpoint's position on recovery, as a file sink does. */
class ListSink implements Sink {
  readonly description = "list";
  lines: object[] = [];
  async recover(position: unknown): Promise<void> {
    this.lines = this.lines.slice(0, typeof position === "number" ? position : 0);
  }
  write(value: object): void {
    this.lines.push(value);
  }
  async flush(): Promise<number> {
    return this.lines.length;
  }
  async close(): Promise<void> {}
}

function jobOf(dir: string, events: Ev[], sink: ListSink, group: MemoryGroup, partition: number, signal?: AbortSignal): JobOptions<EventFields> {
  return {
    shape: "users-v1",
    source: new MemorySource(events),
    decode: (v) => record((v as Ev).user, (v as Ev).t, v as EventFields),
    newWatermarkGenerator: () => boundedOutOfOrderness(0),
    idlenessMs: 0,
    stateDir: dir,
    checkpointIntervalMs: 0,
    deadLetter: new ListSink(),
    batchSize: 3,
    rounds: group.exchange(partition, signal),
    signal,
    build(events$, graph) {
      const results = events$.pipe(graph.operator(behaviour({ name: "users", stages: [userCount], isGrouped: true })));
      graph.routeTo(results as never, [{ name: "out", sink }]);
    },
  };
}

/** Partition 0: users a..e over 0-450; partition 1: users x, y, late, over 0-450. */
const EVENTS: Ev[][] = [
  [
    { user: "a", t: 10 },
    { user: "b", t: 60 },
    { user: "c", t: 120 },
    { user: "a", t: 180 },
    { user: "d", t: 250 },
    { user: "e", t: 330 },
    { user: "b", t: 450 },
  ],
  [
    { user: "x", t: 20 },
    { user: "y", t: 210 },
    { user: "x", t: 290 },
    { user: "z", t: 305 },
    { user: "y", t: 440 },
  ],
];

async function runGroup(stopPartition1AfterRounds?: number): Promise<object[][]> {
  const group = new MemoryGroup(2, behaviourMerger([userCount])!);
  const dirs = EVENTS.map(() => mkdtempSync(join(tmpdir(), "flusso-rounds-")));
  const sinks = EVENTS.map(() => new ListSink());
  const runs: Array<Promise<unknown>> = [runJob(jobOf(dirs[0], EVENTS[0], sinks[0], group, 0))];
  if (stopPartition1AfterRounds === undefined) runs.push(runJob(jobOf(dirs[1], EVENTS[1], sinks[1], group, 1)));
  else {
    // Partition 1 is stopped while it waits for a round, then run again from its state dir.
    const stop = new AbortController();
    const job = jobOf(dirs[1], EVENTS[1], sinks[1], group, 1, stop.signal);
    const rounds = job.rounds!;
    let seen = 0;
    const model = rounds.model.bind(rounds);
    const events: string[] = [];
    const stopped = runJob({
      ...job,
      onEvent: (e) => events.push(e.event),
      rounds: { ...rounds, reports: rounds.reports, model: (roundMs) => (++seen > stopPartition1AfterRounds ? (stop.abort(), model(roundMs)) : model(roundMs)) },
    });
    runs.push(
      stopped.then(async (result) => {
        expect(result.isComplete).toBe(false);
        expect(events).toContain("stopped-in-round");
        return runJob(jobOf(dirs[1], EVENTS[1], sinks[1], group, 1));
      }),
    );
  }
  await Promise.all(runs);
  return sinks.map((s) => s.lines);
}

describe("jobs in a group", () => {
  it("reach each round with the group's model: the events after it see the count of every partition's users", async () => {
    const [zero, one] = await runGroup();
    const rounds = zero.filter((o) => "round" in o);
    // Round 100: a, b, c (partition 0's watermark passed it after c) and x, y (partition 1's, after
    // y, which it passed 200 with too: that offer stands for both); 200: a-d and x, y; 300: a-e, x-z.
    expect(rounds).toEqual([
      { round: 100, users: 5 },
      { round: 200, users: 6 },
      { round: 300, users: 8 },
      { round: 400, users: 8 },
    ]);
    // Partition 1 writes no round: one partition reports for the group.
    expect(one.filter((o) => "round" in o)).toEqual([]);
    // An event sees the model of the last round its partition reached before it.
    expect(one).toEqual([
      { user: "x", t: 20, groupUsers: 0 },
      { user: "y", t: 210, groupUsers: 0 },
      { user: "x", t: 290, groupUsers: 6 },
      { user: "z", t: 305, groupUsers: 6 },
      { user: "y", t: 440, groupUsers: 8 },
    ]);
    expect(zero).toContainEqual({ user: "a", t: 180, groupUsers: 5 });
  });

  it("resume a job stopped while it waited for a round from its last checkpoint, to the same outputs", async () => {
    const whole = await runGroup();
    const resumed = await runGroup(1);
    expect(resumed).toEqual(whole);
  });
});
