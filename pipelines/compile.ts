// Turns a validated PipelineSpec into a runnable job: source, decoder, watermarks, the operator
// graph and its sinks. The only place where configuration meets the engine.
import { map, merge } from "rxjs";
import { record, type Element } from "../engine/elements.ts";
import type { ConnectionEvent } from "../engine/jobEvents.ts";
import { runJob, type JobOptions, type JobResult } from "../engine/job.ts";
import { FileSink } from "../engine/sinks/fileSink.ts";
import type { Sink } from "../engine/sinks/sink.ts";
import { StdoutSink } from "../engine/sinks/stdoutSink.ts";
import { FileSource } from "../engine/sources/fileSource.ts";
import { GeneratorSource } from "../simulator/generatorSource.ts";
import type { NatsSource } from "../engine/sources/natsSource.ts";
import type { NatsSink } from "../engine/sinks/natsSink.ts";
import type { Source } from "../engine/sources/source.ts";
import { boundedOutOfOrderness } from "../engine/watermarks.ts";
import type { AggregateSpec } from "../operators/aggregations.ts";
import { keyedWindow, LATE, WINDOW_OUTPUT } from "../operators/keyedWindow.ts";
import { behaviour, type BehaviourOutput } from "../operators/behaviour.ts";
import { jobPrivacy } from "./privacy.ts";
import { eventDecoder, type Event } from "./schema.ts";
import { pipelineShape, resolveResets, resumeState, sinkIdentity, sinkNames, type PipelineShape } from "./stateShape.ts";
import type { SinkSpec } from "./sections/sinks.ts";
import { DEFAULT_AT_END, type SourceSpec } from "./sections/source.ts";
import type { AggregateDef } from "./sections/windows.ts";
import { partOf } from "../operators/stateShape.ts";
import type { PipelineSpec } from "./validate.ts";

export type RunOptions = Pick<JobOptions<Event>, "reset" | "onProgress" | "onCheckpoint" | "onFinalCheckpoint" | "onView" | "signal" | "batchSize" | "progressIntervalMs" | "onEvent"> & {
  /**
   * Stages (by section name) and windows (by name) rebuilt from empty, the rest of the state kept:
   * their values and wake-ups are dropped. An unknown name throws ResetStageUnknown. Default none.
   */
  resetStages?: readonly string[];
};

/** What sources and sinks that talk to servers are given: a stop ends their waits, and they tell of their connections. */
type Connection = { signal?: AbortSignal; log?(event: ConnectionEvent): void; /** Copies of the streams it creates (a cluster's `replicas`). */ replicas?: number };

/**
 * The NATS source and sink, loaded (natsConnectors) only by a pipeline that reads or writes NATS:
 * their client library would slow the start of every other one.
 */
export type NatsConnectors = { NatsSource: typeof NatsSource; NatsSink: typeof NatsSink };

/** Every sink the pipeline writes: the dead letters first, then its outputs in order, then the late events' own, if any. */
function everySink(spec: PipelineSpec): SinkSpec[] {
  return [spec.deadLetter, ...spec.sinks.map((s) => s.sink), ...(spec.late ? [spec.late] : [])];
}

/** The NATS connectors when `spec` reads or writes NATS, loaded; undefined otherwise. */
export async function natsConnectors(spec: PipelineSpec): Promise<NatsConnectors | undefined> {
  if (!("nats" in spec.source) && !everySink(spec).some((s) => "nats" in s)) return undefined;
  const [{ NatsSource }, { NatsSink }] = await Promise.all([import("../engine/sources/natsSource.ts"), import("../engine/sinks/natsSink.ts")]);
  return { NatsSource, NatsSink };
}

function loaded(nats: NatsConnectors | undefined): NatsConnectors {
  if (nats === undefined) throw new Error("a NATS source or sink needs the NATS connectors: pass jobOptions what natsConnectors(spec) gives");
  return nats;
}

export function buildSource(spec: SourceSpec, connection: Connection = {}, nats?: NatsConnectors): Source {
  if ("generator" in spec) return new GeneratorSource(spec.generator);
  if ("nats" in spec) return new (loaded(nats).NatsSource)({ ...spec.nats, ...connection });
  return new FileSource(spec.file);
}

export function buildSink(spec: SinkSpec, pipeline: string, connection: Connection = {}, nats?: NatsConnectors): Sink {
  if ("stdout" in spec) return new StdoutSink();
  if ("nats" in spec) return new (loaded(nats).NatsSink)({ ...spec.nats, pipeline, ...connection });
  return new FileSink(spec.file.path);
}

function aggregateSpec(def: AggregateDef): AggregateSpec<Event> {
  const where = def.where;
  return {
    name: def.name,
    kind: def.kind,
    // A bare field name is read directly (see compileExpression): the common case, and the hot path.
    value: def.value?.evaluate,
    where: where && ((e) => where.evaluate(e) === true),
  };
}

/** The job `spec` compiles to; `nats`: what natsConnectors(spec) gives, for a pipeline that reads or writes NATS. */
export function jobOptions(spec: PipelineSpec, run: RunOptions = {}, nats?: NatsConnectors): JobOptions<Event> {
  const privacy = jobPrivacy(spec.schema, spec.privacy);
  const connection: Connection = { signal: run.signal, log: run.onEvent, replicas: spec.cluster?.replicas };
  const { resetStages, ...jobRun } = run;
  const resets = resolveResets(spec, resetStages ?? []);
  // As a checkpoint stores it and gives it back: plain JSON.
  const shape = JSON.parse(JSON.stringify(pipelineShape(spec))) as PipelineShape;
  // Sinks are named by what they write: a position follows its file wherever the sink moves in the list.
  const named = sinkNames(everySink(spec).map((s) => sinkIdentity(s, spec.baseDir)));
  const [deadLetterName, ...routeNames] = named.slice(0, spec.sinks.length + 1);
  const lateName = spec.late ? named.at(-1)! : deadLetterName;
  const deadLetterSink = buildSink(spec.deadLetter, spec.name, connection, nats);
  const atEnd = spec.source.atEnd ?? DEFAULT_AT_END;
  return {
    ...jobRun,
    shape,
    acceptState: (meta) => resumeState(spec, shape, meta, resets),
    source: buildSource(spec.source, connection, nats),
    decode: eventDecoder(spec.schema, spec.key, spec.time, privacy.decoder),
    stampOf: spec.http?.latencyStampField === undefined ? undefined : stampReader(spec.http.latencyStampField),
    newWatermarkGenerator: () => boundedOutOfOrderness(spec.watermark.maxOutOfOrdernessMs),
    idlenessMs: spec.watermark.idlenessMs,
    advancesWhenIdle: spec.watermark.advancesWhenIdle,
    // Only the behaviour stages stop at the horizon; windows alone fire at the end of time in one step, as they always did.
    atEnd: spec.behaviour ? atEnd : "drain",
    stateDir: spec.state.dir,
    stateEncryptionKey: spec.state.encryptionKey,
    memoryBudgetBytes: spec.state.memoryBudgetBytes,
    keyChecks: privacy.keyChecks,
    checkpointIntervalMs: spec.state.checkpointIntervalMs,
    deadLetter: deadLetterSink,
    deadLetterName,
    shapeRefused: privacy.shapeRefused,
    build(events, graph) {
      const restored = graph.restoredShape as PipelineShape | undefined;
      const windowResults = spec.windows.map((w) =>
        events.pipe(
          graph.operator(
            keyedWindow<Event>({
              name: w.name,
              assigner: w.assigner,
              allowedLatenessMs: w.allowedLatenessMs,
              aggregates: w.aggregates.map(aggregateSpec),
              restoredShape: restored && partOf({ parts: restored.windows }, w.name),
            }),
          ),
          map((e): Element<BehaviourOutput> => (e.kind === "record" ? record(e.key, e.time, { kind: WINDOW_OUTPUT, body: e.value }) : e)),
        ),
      );
      const restoredShapes = restored && Object.fromEntries(restored.stages);
      const behaviourResults = spec.behaviour ? [events.pipe(graph.operator(behaviour({ name: spec.name, ...spec.behaviour, wantedOutputs: wantedOutputs(spec), restoredShapes, drainsAtEnd: atEnd === "drain", isGrouped: spec.cluster !== undefined })))] : [];
      const routes = spec.sinks.map((s, i) => ({ name: routeNames[i], sink: buildSink(s.sink, spec.name, connection, nats), kinds: s.outputs }));
      graph.routeTo(merge(...windowResults, ...behaviourResults), routes);
      if (spec.late) graph.sideTo(LATE, lateName, buildSink(spec.late, spec.name, connection, nats), "late");
      else graph.sideTo(LATE, deadLetterName, deadLetterSink, "late", (late) => ({ reason: "late", ...(late as object) }));
    },
  };
}

/** Reads a publisher's epoch-ms stamp from an event field (a number or a timestamp, as validation checked). */
/**
 * Reads the publisher's stamp from an event as the source read it: epoch ms as a number or a numeric
 * string (CSV), or an ISO-8601 time. Anything else has no stamp.
 */
function stampReader(field: string): (raw: unknown) => number | undefined {
  return (raw) => {
    if (raw === null || typeof raw !== "object") return undefined;
    const stamp = (raw as Record<string, unknown>)[field];
    if (typeof stamp === "number") return Number.isFinite(stamp) ? stamp : undefined;
    if (typeof stamp !== "string") return undefined;
    const stampMs = stamp.trim() !== "" && Number.isFinite(Number(stamp)) ? Number(stamp) : Date.parse(stamp);
    return Number.isFinite(stampMs) ? stampMs : undefined;
  };
}

/** The output kinds some sink takes; undefined when one takes them all. */
function wantedOutputs(spec: PipelineSpec): string[] | undefined {
  if (spec.sinks.some((s) => s.outputs === undefined)) return undefined;
  return spec.sinks.flatMap((s) => s.outputs!);
}

export async function runPipeline(spec: PipelineSpec, run: RunOptions = {}): Promise<JobResult> {
  return runJob(jobOptions(spec, run, await natsConnectors(spec)));
}
