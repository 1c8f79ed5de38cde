// Turns a validated PipelineSpec into a runnable job: source, decoder, watermarks, the operator
// graph and its sinks. The only place where configuration meets the engine.
import { createHash } from "node:crypto";
import { relative, sep } from "node:path";
import { map, merge } from "rxjs";
import { record, type Element } from "../engine/elements.ts";
import { runJob, type JobOptions, type JobResult } from "../engine/job.ts";
import { FileSink } from "../engine/sinks/fileSink.ts";
import type { Sink } from "../engine/sinks/sink.ts";
import { StdoutSink } from "../engine/sinks/stdoutSink.ts";
import { FileSource } from "../engine/sources/fileSource.ts";
import { GeneratorSource } from "../simulator/generatorSource.ts";
import { NatsSource } from "../engine/sources/natsSource.ts";
import { NatsSink } from "../engine/sinks/natsSink.ts";
import type { Source } from "../engine/sources/source.ts";
import { boundedOutOfOrderness } from "../engine/watermarks.ts";
import type { AggregateSpec } from "../operators/aggregations.ts";
import { keyedWindow, LATE, WINDOW_OUTPUT } from "../operators/keyedWindow.ts";
import { behaviour, type BehaviourOutput } from "../operators/behaviour.ts";
import { isoTime } from "../operators/outputFormat.ts";
import { jobPrivacy } from "./privacy.ts";
import { eventDecoder, type Event } from "./schema.ts";
import type { SinkSpec } from "./sections/sinks.ts";
import type { SourceSpec } from "./sections/source.ts";
import type { AggregateDef } from "./sections/windows.ts";
import type { PipelineSpec } from "./validate.ts";

export type RunOptions = Pick<JobOptions<Event>, "reset" | "onProgress" | "onCheckpoint" | "onFinalCheckpoint" | "signal" | "batchSize" | "progressIntervalMs"> & {
  /** Told what the job is waiting for (a NATS server out of reach), as lines for a person. */
  log?(message: string): void;
};

/** What sources and sinks that talk to servers are given: a stop ends their waits, and they say what they wait for. */
type Connection = Pick<RunOptions, "signal" | "log">;

export function buildSource(spec: SourceSpec, connection: Connection = {}): Source {
  if ("generator" in spec) return new GeneratorSource(spec.generator);
  if ("nats" in spec) return new NatsSource({ ...spec.nats, ...connection });
  return new FileSource(spec.file);
}

export function buildSink(spec: SinkSpec, pipeline: string, connection: Connection = {}): Sink {
  if ("stdout" in spec) return new StdoutSink();
  if ("nats" in spec) return new NatsSink({ ...spec.nats, pipeline, ...connection });
  return new FileSink(spec.file.path);
}

/**
 * How the behaviour operator lays its state out. A state dir written under another layout is
 * refused (as a changed pipeline is) rather than read wrongly. 2: one record per user.
 */
const BEHAVIOUR_STATE_LAYOUT = 2;

/**
 * Identifies what the state dir holds: what the job computes, and nothing of where it runs, so a
 * state dir can be moved and a project folder copied with its state. Left out: the state settings
 * (dir, checkpoint interval, encryption key), NATS servers, buffer and duplicate window; file paths
 * count relative to the pipeline file's folder.
 */
export function fingerprint(spec: PipelineSpec): string {
  const { state: _state, file: _file, baseDir, behaviour, source, sinks, late, deadLetter, ...rest } = spec;
  const stateLayout = behaviour && BEHAVIOUR_STATE_LAYOUT;
  const placeless = {
    ...rest,
    source: placelessSource(source, baseDir),
    sinks: sinks.map((s) => ({ ...s, sink: placelessSink(s.sink, baseDir) })),
    late: late && placelessSink(late, baseDir),
    deadLetter: placelessSink(deadLetter, baseDir),
    behaviour: behaviour?.source,
    stateLayout,
  };
  const normal = JSON.stringify(placeless, (_key, value) => (value && typeof value === "object" && "evaluate" in value ? value.source : value));
  return createHash("sha256").update(normal).digest("hex").slice(0, 16);
}

/** A source as the fingerprint sees it: file paths relative to `baseDir`, no NATS servers or buffer. */
function placelessSource(source: SourceSpec, baseDir: string): unknown {
  if ("file" in source) return { file: { ...source.file, paths: source.file.paths.map((p) => relativePath(baseDir, p)) } };
  if ("nats" in source) {
    const { servers: _servers, bufferMessages: _bufferMessages, ...nats } = source.nats;
    return { nats };
  }
  return source;
}

/** A sink as the fingerprint sees it: a file path relative to `baseDir`, no NATS servers or duplicate window. */
function placelessSink(sink: SinkSpec, baseDir: string): unknown {
  if ("file" in sink) return { file: { path: relativePath(baseDir, sink.file.path) } };
  if ("nats" in sink) {
    const { servers: _servers, duplicateWindowMs: _duplicateWindowMs, ...nats } = sink.nats;
    return { nats };
  }
  return sink;
}

/** `path` from `baseDir`, with / separators: the same on every machine the folder is copied to. */
function relativePath(baseDir: string, path: string): string {
  return relative(baseDir, path).split(sep).join("/");
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

export function jobOptions(spec: PipelineSpec, run: RunOptions = {}): JobOptions<Event> {
  const privacy = jobPrivacy(spec.schema, spec.privacy);
  const connection: Connection = { signal: run.signal, log: run.log };
  const deadLetterSink = withTimesShown(buildSink(spec.deadLetter, spec.name, connection));
  const { log, ...jobRun } = run;
  return {
    ...jobRun,
    fingerprint: fingerprint(spec),
    source: buildSource(spec.source, connection),
    decode: eventDecoder(spec.schema, spec.key, spec.time, privacy.decoder),
    newWatermarkGenerator: () => boundedOutOfOrderness(spec.watermark.maxOutOfOrdernessMs),
    idlenessMs: spec.watermark.idlenessMs,
    stateDir: spec.state.dir,
    stateEncryptionKey: spec.state.encryptionKey,
    keyChecks: privacy.keyChecks,
    checkpointIntervalMs: spec.state.checkpointIntervalMs,
    deadLetter: deadLetterSink,
    shapeRefused: privacy.shapeRefused,
    build(events, graph) {
      const windowResults = spec.windows.map((w) =>
        events.pipe(
          graph.operator(
            keyedWindow<Event>({ name: w.name, assigner: w.assigner, allowedLatenessMs: w.allowedLatenessMs, aggregates: w.aggregates.map(aggregateSpec) }),
          ),
          map((e): Element<BehaviourOutput> => (e.kind === "record" ? record(e.key, e.time, { kind: WINDOW_OUTPUT, body: e.value }) : e)),
        ),
      );
      const behaviourResults = spec.behaviour ? [events.pipe(graph.operator(behaviour({ name: spec.name, ...spec.behaviour, wantedOutputs: wantedOutputs(spec) })))] : [];
      const routes = spec.sinks.map((s, i) => ({ name: `sinks[${i}]`, sink: buildSink(s.sink, spec.name, connection), kinds: s.outputs }));
      graph.routeTo(merge(...windowResults, ...behaviourResults), routes);
      if (spec.late) graph.sideTo(LATE, "late", buildSink(spec.late, spec.name, connection), "late");
      else graph.sideTo(LATE, "deadLetter", deadLetterSink, "late", (late) => ({ reason: "late", ...(late as object) }));
    },
  };
}

/**
 * The dead-letter sink, writing the epoch-ms `time` of a dead letter (an event an operator failed
 * on: the job writes `{ reason, key, time, event }`) as every output shows times: ISO-8601 `time`
 * with `time_ms` beside it. Everything else is the sink's own.
 */
function withTimesShown(sink: Sink): Sink {
  const shown: Sink = {
    get description() {
      return sink.description;
    },
    recover: (position, recovery) => sink.recover(position, recovery),
    write: (value) => sink.write(timeShown(value)),
    flush: () => sink.flush(),
    close: () => sink.close(),
  };
  if (sink.hold) {
    shown.hold = (checkpointId) => sink.hold!(checkpointId);
    shown.release = (checkpointId) => sink.release!(checkpointId);
    shown.deliveredThrough = () => sink.deliveredThrough!();
    shown.delivered = () => sink.delivered!();
  }
  return shown;
}

function timeShown(value: object): object {
  const time = (value as { time?: unknown }).time;
  if (typeof time !== "number") return value;
  const shown: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(value)) {
    if (field !== "time") shown[field] = v;
    else {
      shown.time = isoTime(time);
      shown.time_ms = time;
    }
  }
  return shown;
}

/** The output kinds some sink takes; undefined when one takes them all. */
function wantedOutputs(spec: PipelineSpec): string[] | undefined {
  if (spec.sinks.some((s) => s.outputs === undefined)) return undefined;
  return spec.sinks.flatMap((s) => s.outputs!);
}

export function runPipeline(spec: PipelineSpec, run: RunOptions = {}): Promise<JobResult> {
  return runJob(jobOptions(spec, run));
}
