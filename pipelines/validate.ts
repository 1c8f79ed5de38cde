// Checks a loaded pipeline file section by section (each read by its own reader in sections/, the
// behaviour sections by theirs in stages/) and assembles the PipelineSpec; every mistake is a
// ConfigError naming the path of the bad value, and all of them are reported together.
import { WINDOW_OUTPUT } from "../operators/keyedWindow.ts";
import type { StageDefinition } from "../operators/stage.ts";
import { readBehaviour } from "./behaviour.ts";
import { PipelineInvalid } from "./errors.ts";
import { celEnvironment } from "./expressions.ts";
import { checkErasureRouted, readPrivacy, type PrivacySpec } from "./privacy.ts";
import { NAME, Reader } from "./reader.ts";
import { CEL_TYPE, type EventSchema } from "./schema.ts";
import { readField, readSchema } from "./sections/schema.ts";
import { readOutputs } from "./sections/outputs.ts";
import { readSinks, type RoutedSinkSpec, type SinkSpec } from "./sections/sinks.ts";
import { linkEffects, readSource, type SourceSpec } from "./sections/source.ts";
import { defaultCheckpointIntervalMs, readState, type StateSpec } from "./sections/state.ts";
import { readHttp, type HttpSpec } from "./sections/http.ts";
import { readCluster, type ClusterSpec } from "./sections/cluster.ts";
import { readWatermark, type WatermarkSpec } from "./sections/watermark.ts";
import { readWindows, type WindowSpec } from "./sections/windows.ts";
import { STAGE_SECTION_NAMES } from "./stages/registry.ts";

export type PipelineSpec = {
  name: string;
  /** The pipeline file, and the folder relative paths resolve against. */
  file: string;
  baseDir: string;
  source: SourceSpec;
  schema: EventSchema;
  key: string;
  time: string;
  watermark: WatermarkSpec;
  state: StateSpec;
  /** Keyed event-time windows; empty when the pipeline has only behaviour stages. */
  windows: WindowSpec[];
  /** The behaviour stages, in the order they run, and the output kinds they can emit. */
  behaviour?: {
    stages: StageDefinition[];
    outputs: string[];
    varNames: string[];
    eventFields: string[];
    /** `privacy.erase.when`: an event it holds for erases its user. */
    erasesWhen?: (vars: Record<string, unknown>) => unknown;
  };
  privacy?: PrivacySpec;
  /** Where the job serves its state, metrics and dashboard; undefined: it does not. */
  http?: HttpSpec;
  /** Many workers share the source's partitions; undefined: one process reads them all. */
  cluster?: ClusterSpec;
  sinks: RoutedSinkSpec[];
  /** Where late events go; default: the dead-letter output. */
  late?: SinkSpec;
  deadLetter: SinkSpec;
};

export type ValidateOptions = {
  /**
   * Whether source files must exist and be readable now, as a run needs them. Default true; false
   * checks the definition alone (a pipeline file checked where its data is not).
   */
  checksFiles?: boolean;
  /** `--http [host:]port`: serve over HTTP there, whatever `http.listen` says. */
  httpListen?: string;
};

const TOP_LEVEL = [
  "name", "source", "schema", "key", "time", "watermark", "state", "privacy", "windows", ...STAGE_SECTION_NAMES, "outputs", "sinks", "late", "deadLetter", "http", "cluster",
] as const;

/** Validates a loaded pipeline file; throws PipelineInvalid listing every bad value. */
export function validatePipeline(raw: unknown, file: string, baseDir: string, { checksFiles = true, httpListen }: ValidateOptions = {}): PipelineSpec {
  const r = new Reader(baseDir);
  const top = r.object("", raw, TOP_LEVEL, ["name", "source", "schema", "key", "time", "sinks"]);
  if (!top) throw new PipelineInvalid(file, r.errors);
  const name = top.name === undefined ? undefined : r.string("name", top.name, NAME);
  const source = top.source === undefined ? undefined : readSource(r, top.source, checksFiles);
  const schema = top.schema === undefined ? undefined : readSchema(r, top.schema);
  const key = top.key === undefined ? undefined : readField(r, "key", top.key, schema, ["string"]);
  const time = top.time === undefined ? undefined : readField(r, "time", top.time, schema, ["timestamp"]);
  const isLive = source !== undefined && "nats" in source && !source.nats.bounded;
  const watermark = readWatermark(r, top.watermark, isLive);
  const state = readState(r, top.state, name);
  const fields = schema && Object.fromEntries(Object.entries(schema).map(([f, s]) => [f, CEL_TYPE[s.type]]));
  const env = fields && celEnvironment(fields);
  const windows = top.windows === undefined ? [] : readWindows(r, top.windows, env);
  // Not part of the spec (nor of the state's fingerprint): digits change how outputs look, not what is computed.
  const outputs = readOutputs(r, top.outputs);
  const isQueried = top.http !== undefined || httpListen !== undefined;
  const behaviour = fields ? readBehaviour(r, top, fields, { pipeline: name ?? "", keyField: key ?? "", digits: outputs.digits, isQueried }) : undefined;
  if (source !== undefined && "generator" in source) linkEffects(r, source.generator, behaviour?.experiments ?? []);
  if (top.windows === undefined && !STAGE_SECTION_NAMES.some((section) => top[section] !== undefined)) {
    r.fail("windows", `is required when the pipeline has none of ${STAGE_SECTION_NAMES.join(", ")}: there would be nothing to compute`);
  }
  const privacy = top.privacy === undefined ? undefined : readPrivacy(r, top.privacy, schema, [key, time], windows, behaviour?.scope);
  const outputKinds = [...(top.windows === undefined ? [] : [WINDOW_OUTPUT]), ...(behaviour?.outputs ?? [])];
  const { sinks, late, deadLetter } = readSinks(r, top, name, outputKinds, source);
  if (behaviour?.erasesWhen) checkErasureRouted(r, sinks);
  if (state && state.checkpointIntervalMs === undefined) {
    state.checkpointIntervalMs = defaultCheckpointIntervalMs([...(sinks ?? []).map((s) => s?.sink), late, deadLetter], isLive);
  }
  // The stamp is read before privacy minimises the event: a field `keep` drops can still be the stamp.
  const stampFields = Object.entries(schema ?? {}).flatMap(([f, s]) => (s.type === "number" || s.type === "timestamp" ? [f] : []));
  const http = readHttp(r, top.http, stampFields, httpListen === undefined ? undefined : { text: httpListen, path: "--http" });
  const cluster = readCluster(r, top.cluster, name, source, { sinks, late, deadLetter, isDeadLetterDefault: top.deadLetter === undefined });
  if (r.errors.length > 0) throw new PipelineInvalid(file, r.errors);
  return {
    name: name!,
    file,
    baseDir,
    source: source!,
    schema: schema!,
    key: key!,
    time: time!,
    watermark: watermark!,
    state: state as StateSpec,
    windows: windows!,
    behaviour: behaviour && {
      stages: behaviour.stages,
      outputs: behaviour.outputs,
      varNames: behaviour.scope.names(),
      eventFields: behaviour.scope.fields(),
      erasesWhen: behaviour.erasesWhen,
    },
    privacy,
    http,
    cluster,
    sinks: sinks as RoutedSinkSpec[],
    late,
    deadLetter: deadLetter!,
  };
}
