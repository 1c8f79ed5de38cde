// What a validated pipeline compiles to, as lines for a person (`flusso validate`): its source, key and
// time, watermark, windows and behaviour stages in the order they run, sinks with the outputs they take,
// state and HTTP. Read from the PipelineSpec alone: nothing is opened, created or connected.
import { relative } from "node:path";
import type { WindowAssigner } from "../operators/windowAssigners.ts";
import { duration } from "./jobLog.ts";
import type { SinkSpec } from "./sections/sinks.ts";
import type { SourceSpec } from "./sections/source.ts";
import type { PipelineSpec } from "./validate.ts";

export function describePipeline(spec: PipelineSpec): string[] {
  const path = (p: string) => relative(spec.baseDir, p) || ".";
  const lines = [
    `pipeline ${spec.name} (${spec.file})`,
    `  source:     ${sourceText(spec.source, path)}`,
    `  key:        ${spec.key}; time: ${spec.time}; ${Object.keys(spec.schema).length} schema fields`,
    `  watermark:  out of order by ${duration(spec.watermark.maxOutOfOrdernessMs)} at most; ` +
      `${spec.watermark.idlenessMs > 0 ? `idle after ${duration(spec.watermark.idlenessMs)}` : "never idle"}${spec.watermark.advancesWhenIdle ? ", then follows the clock" : ""}`,
  ];
  spec.windows.forEach((w, i) => lines.push(`  window ${i + 1}:   ${w.name}: ${assignerText(w.assigner)}, ${w.aggregates.map((a) => `${a.name} (${a.kind})`).join(", ")}`));
  spec.behaviour?.stages.forEach((s, i) => lines.push(`  stage ${i + 1}:    ${s.name}`));
  if (spec.behaviour) lines.push(`  outputs:    ${spec.behaviour.outputs.join(", ")}`);
  spec.sinks.forEach((s, i) => lines.push(`  sink ${i + 1}:     ${sinkText(s.sink, path)}${s.outputs ? ` <- ${s.outputs.join(", ")}` : " <- every output"}`));
  if (spec.late) lines.push(`  late:       ${sinkText(spec.late, path)}`);
  lines.push(`  deadLetter: ${sinkText(spec.deadLetter, path)}`);
  lines.push(`  state:      ${path(spec.state.dir)}, a checkpoint every ${duration(spec.state.checkpointIntervalMs)}${spec.state.encryptionKey ? ", encrypted" : ""}`);
  if (spec.privacy) lines.push("  privacy:    on");
  lines.push(`  http:       ${spec.http ? `http://${spec.http.host.includes(":") ? `[${spec.http.host}]` : spec.http.host}:${spec.http.port}${spec.http.token ? " (bearer token)" : ""}` : "off"}`);
  return lines;
}

function sourceText(source: SourceSpec, path: (p: string) => string): string {
  if ("file" in source) return `${source.file.format} file${source.file.paths.length > 1 ? "s" : ""} ${source.file.paths.map(path).join(", ")}`;
  if ("generator" in source) return `the generator: ${source.generator.events} events, seed ${source.generator.seed}, ${source.generator.partitions} partitions`;
  const n = source.nats;
  return `NATS stream ${n.stream} (${n.subjects.join(", ")}) at ${n.servers.join(", ")}, ${n.partitions} partitions, ${n.format}${n.bounded ? ", bounded" : ""}`;
}

function sinkText(sink: SinkSpec, path: (p: string) => string): string {
  if ("file" in sink) return `file ${path(sink.file.path)}`;
  if ("stdout" in sink) return "stdout";
  return `NATS ${sink.nats.subject} (stream ${sink.nats.stream}) at ${sink.nats.servers.join(", ")}`;
}

function assignerText(a: WindowAssigner): string {
  if (a.type === "tumbling") return `tumbling ${duration(a.sizeMs)}`;
  if (a.type === "hopping") return `hopping ${duration(a.sizeMs)} every ${duration(a.slideMs)}`;
  return `session, gap ${duration(a.gapMs)}`;
}
