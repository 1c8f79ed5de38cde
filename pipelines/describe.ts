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
  const lines = [`pipeline ${spec.name} (${spec.file})`];
  const row = (label: string, text: string) => lines.push(`  ${`${label}:`.padEnd(12)}${text}`);
  row("source", sourceText(spec.source, path));
  row("key", `${spec.key}; time: ${spec.time}; ${Object.keys(spec.schema).length} schema fields`);
  const { maxOutOfOrdernessMs, idlenessMs, advancesWhenIdle } = spec.watermark;
  row("watermark", `out of order by ${duration(maxOutOfOrdernessMs)} at most; ${idlenessMs > 0 ? `idle after ${duration(idlenessMs)}` : "never idle"}${advancesWhenIdle ? ", then follows the clock" : ""}`);
  spec.windows.forEach((w, i) => row(`window ${i + 1}`, `${w.name}: ${assignerText(w.assigner)}, ${w.aggregates.map((a) => `${a.name} (${a.kind})`).join(", ")}`));
  spec.behaviour?.stages.forEach((s, i) => row(`stage ${i + 1}`, s.name));
  if (spec.behaviour) row("outputs", spec.behaviour.outputs.join(", "));
  spec.sinks.forEach((s, i) => row(`sink ${i + 1}`, `${sinkText(s.sink, path)} <- ${s.outputs ? s.outputs.join(", ") : "every output"}`));
  if (spec.late) row("late", sinkText(spec.late, path));
  row("deadLetter", sinkText(spec.deadLetter, path));
  row("state", `${path(spec.state.dir)}, a checkpoint every ${duration(spec.state.checkpointIntervalMs)}${spec.state.encryptionKey ? ", encrypted" : ""}${spec.state.memoryBudgetBytes === undefined ? "" : `, users' records and windows past ${Math.round(spec.state.memoryBudgetBytes / 1024 ** 2)} MB of heap on disk`}`);
  if (spec.privacy) row("privacy", "on");
  if (spec.cluster) {
    const { group, leaseTtlMs, replicas } = spec.cluster;
    row("cluster", `workers of group ${group} share the partitions; leases of ${leaseTtlMs / 1000} s; checkpoints in NATS (${replicas} ${replicas === 1 ? "replica" : "replicas"})`);
  }
  const http = spec.http;
  row("http", http ? `http://${http.host.includes(":") ? `[${http.host}]` : http.host}:${http.port}${http.token ? " (bearer token)" : ""}` : "off");
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
