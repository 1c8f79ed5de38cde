// Turns a validated PipelineSpec into a runnable job: source, decoder, watermarks, the operator
// graph and its sinks. The only place where configuration meets the engine.
import { createHash } from "node:crypto";
import { map, merge } from "rxjs";
import { record, type Element } from "../engine/elements.ts";
import { runJob, type JobOptions, type JobResult } from "../engine/job.ts";
import { FileSink } from "../engine/sinks/fileSink.ts";
import type { Sink } from "../engine/sinks/sink.ts";
import { StdoutSink } from "../engine/sinks/stdoutSink.ts";
import { FileSource } from "../engine/sources/fileSource.ts";
import { GeneratorSource } from "../engine/sources/generatorSource.ts";
import { NatsSource } from "../engine/sources/natsSource.ts";
import { NatsSink } from "../engine/sinks/natsSink.ts";
import type { Source } from "../engine/sources/source.ts";
import { boundedOutOfOrderness } from "../engine/watermarks.ts";
import type { AggregateSpec } from "../operators/aggregations.ts";
import { keyedWindow, LATE } from "../operators/keyedWindow.ts";
import { behaviour, type BehaviourOutput } from "../operators/behaviour.ts";
import { eventDecoder, minimisedEvent, WITHHELD, type DecoderPrivacy, type Event } from "./schema.ts";
import { WINDOW_OUTPUT, type AggregateDef, type PipelineSpec, type SinkSpec, type SourceSpec } from "./validate.ts";

export type RunOptions = Pick<JobOptions<Event>, "reset" | "onProgress" | "signal" | "batchSize" | "progressIntervalMs">;

export function buildSource(spec: SourceSpec): Source {
  if ("generator" in spec) return new GeneratorSource(spec.generator);
  if ("nats" in spec) return new NatsSource(spec.nats);
  return new FileSource(spec.file);
}

export function buildSink(spec: SinkSpec, pipeline: string): Sink {
  if ("stdout" in spec) return new StdoutSink();
  if ("nats" in spec) return new NatsSink({ ...spec.nats, pipeline });
  return new FileSink(spec.file.path);
}

/**
 * How the behaviour operator lays its state out. A state dir written under another layout is
 * refused (as a changed pipeline is) rather than read wrongly. 2: one record per user.
 */
const BEHAVIOUR_STATE_LAYOUT = 2;

/** Identifies what the state dir holds; everything but how often checkpoints are taken. */
export function fingerprint(spec: PipelineSpec): string {
  const { state, file, baseDir, behaviour, ...rest } = spec;
  const stateLayout = behaviour && BEHAVIOUR_STATE_LAYOUT;
  const normal = JSON.stringify({ ...rest, behaviour: behaviour?.source, stateLayout }, (_key, value) =>
    value && typeof value === "object" && "evaluate" in value ? value.source : value,
  );
  return createHash("sha256").update(normal).update(state.dir).digest("hex").slice(0, 16);
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
  const privacy = decoderPrivacy(spec);
  const deadLetterSink = buildSink(spec.deadLetter, spec.name);
  // Late events were decoded (minimised, ids already pseudonymised); what failed decoding was not.
  const isMinimising = privacy.keep !== undefined || privacy.pseudonymise !== undefined;
  const deadLetter = isMinimising ? minimisedDeadLetters(deadLetterSink, minimisedEvent(spec.schema, privacy)) : deadLetterSink;
  return {
    ...run,
    fingerprint: fingerprint(spec),
    source: buildSource(spec.source),
    decode: eventDecoder(spec.schema, spec.key, spec.time, privacy),
    newWatermarkGenerator: () => boundedOutOfOrderness(spec.watermark.maxOutOfOrdernessMs),
    idlenessMs: spec.watermark.idlenessMs,
    stateDir: spec.state.dir,
    stateEncryptionKey: spec.state.encryptionKey,
    checkpointIntervalMs: spec.state.checkpointIntervalMs,
    deadLetter,
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
      const routes = spec.sinks.map((s, i) => ({ name: `sinks[${i}]`, sink: buildSink(s.sink, spec.name), kinds: s.outputs }));
      graph.routeTo(merge(...windowResults, ...behaviourResults), routes);
      if (spec.late) graph.sideTo(LATE, "late", buildSink(spec.late, spec.name), "late");
      else graph.sideTo(LATE, "deadLetter", deadLetterSink, "late", (late) => ({ reason: "late", ...(late as object) }));
    },
  };
}

/** The output kinds some sink takes; undefined when one takes them all. */
function wantedOutputs(spec: PipelineSpec): string[] | undefined {
  if (spec.sinks.some((s) => s.outputs === undefined)) return undefined;
  return spec.sinks.flatMap((s) => s.outputs!);
}

/**
 * The dead-letter sink of a pipeline that keeps fields out or pseudonymises ids: what could not be
 * decoded keeps its reason (which quotes no value) and origin, but raw text (which holds real ids
 * and undeclared fields) is withheld and a refused event is `minimise`d, so no more reaches
 * storage than a decoded event would bring.
 */
function minimisedDeadLetters(sink: Sink, minimise: (event: unknown) => unknown): Sink {
  return {
    description: sink.description,
    recover: (position) => sink.recover(position),
    flush: () => sink.flush(),
    close: () => sink.close(),
    write(value) {
      const { raw, event, ...rest } = value as { raw?: unknown; event?: unknown };
      sink.write({
        ...rest,
        ...(event === undefined ? {} : { event: minimise(event) }),
        ...(raw === undefined ? {} : { raw: WITHHELD }),
      });
    },
  };
}

/**
 * Pseudonymisation and field dropping applied while events are decoded. With either, reasons quote
 * no value and dead letters are minimised too.
 */
function decoderPrivacy(spec: PipelineSpec): DecoderPrivacy {
  const privacy = spec.privacy;
  if (!privacy || (privacy.keep === undefined && privacy.pseudonymise === undefined)) return {};
  const ps = privacy.pseudonymise;
  return {
    keep: privacy.keep,
    pseudonymise: ps && { fields: ps.fields, pseudonym: ps.pseudonym },
    quotesValues: false,
  };
}

export function runPipeline(spec: PipelineSpec, run: RunOptions = {}): Promise<JobResult> {
  return runJob(jobOptions(spec, run));
}
