// Reading a pipeline file's YAML: one syntax error, where the mistake is, and how to mend the common one.
import { describe, expect, it } from "vitest";
import { PipelineInvalid } from "../../pipelines/errors.ts";
import { parsePipelineText } from "../../pipelines/load.ts";

function syntaxErrors(text: string): string[] {
  try {
    parsePipelineText(text, "pipeline.yaml", {});
  } catch (error) {
    if (error instanceof PipelineInvalid) return error.errors.map((e) => e.message);
    throw error;
  }
  return [];
}

describe("a YAML syntax error", () => {
  it("is reported once, at the first bad position, with how to quote a ${...} inside a { } map", () => {
    const text = [
      "name: out",
      "sinks:",
      "  - nats: { servers: ${NATS_URL:-nats://127.0.0.1:4222}, stream: OUT, subject: out.hourly, format: json, duplicateWindow: 2m }",
      "deadLetter: { nats: { stream: DEAD, subject: events.dead } }",
    ].join("\n");
    expect(syntaxErrors(text)).toEqual([
      'YAML syntax error at line 3, column 23: Unexpected flow-map-start at node end; a plain ${...} cannot stand inside { } or [ ]: quote the value: servers: "${NATS_URL:-nats://127.0.0.1:4222}"',
    ]);
  });

  it("gives the hint in a [ ] list too, and not for a ${...} in block style, which YAML reads as text", () => {
    expect(syntaxErrors("name: x\nsinks: [ ${OUT} ]\n")).toEqual([expect.stringMatching(/cannot stand inside \{ \} or \[ \]: quote the value: "\$\{OUT\}"$/)]);
    expect(syntaxErrors("name: x\nsource:\n  nats:\n    servers: ${NATS_URL:-nats://127.0.0.1:4222}\n")).toEqual([]);
  });

  it("gives no hint for a mistake of another kind", () => {
    expect(syntaxErrors('name: x\nsource: { file: { path: "a }\n')).toEqual([expect.not.stringMatching(/quote the value/)]);
  });

  it("takes the quoted value, with its ${...} replaced from the environment", () => {
    const text = 'name: out\nsinks:\n  - nats: { servers: "${NATS_URL:-nats://127.0.0.1:4222}", stream: OUT, subject: out.hourly }\n';
    expect(parsePipelineText(text, "pipeline.yaml", {})).toEqual({ name: "out", sinks: [{ nats: { servers: "nats://127.0.0.1:4222", stream: "OUT", subject: "out.hourly" } }] });
    expect(parsePipelineText(text, "pipeline.yaml", { NATS_URL: "nats://n1:4222" })).toMatchObject({ sinks: [{ nats: { servers: "nats://n1:4222" } }] });
  });
});
