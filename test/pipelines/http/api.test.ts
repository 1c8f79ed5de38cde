// /readyz of a job reading NATS JetStream: ready once connected, 503 with the reason while the
// server is stopped, ready again once it is back. A private nats-server (test/natsServer.ts).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { runPipeline } from "../../../pipelines/compile.ts";
import { routesFor } from "../../../pipelines/http/routes.ts";
import { startHttpServer, type HttpServer } from "../../../pipelines/http/server.ts";
import { loadPipeline } from "../../../pipelines/load.ts";
import { eventSchemaYaml, FILE_OUTPUTS, hourlyWindow, windowPipelineYaml } from "../../fixtures/pipelines.ts";
import { startNatsServer } from "../../natsServer.ts";
import { removeTempDirs, tempDir } from "../pipelineFiles.ts";

afterAll(removeTempDirs);

/** Polls GET `url` until `isWanted` holds for its answer, at most `limitMs`; returns the last answer. */
async function pollUntil(url: string, isWanted: (status: number, body: Record<string, unknown>) => boolean, limitMs = 30_000): Promise<{ status: number; body: Record<string, unknown> }> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const response = await fetch(url);
    const answer = { status: response.status, body: (await response.json()) as Record<string, unknown> };
    if (isWanted(answer.status, answer.body) || Date.now() > deadline) return answer;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("/readyz", () => {
  it("goes 503 with the reason while the NATS server is stopped, and 200 again once it is back", async () => {
    const nats = await startNatsServer();
    const dir = tempDir("flusso-readyz-");
    const stop = new AbortController();
    let server: Promise<HttpServer> | undefined;
    let job: Promise<unknown> | undefined;
    try {
      const nc = await connect({ servers: nats.url });
      await (await jetstreamManager(nc)).streams.add({ name: "EVENTS", subjects: ["events.>"] });
      await jetstream(nc).publish("events.0", JSON.stringify({ user_id: "u1", timestamp: Date.UTC(2024, 4, 20), event_type: "view" }));
      await nc.close();
      const file = join(dir, "readyz.yaml");
      writeFileSync(
        file,
        windowPipelineYaml({
          name: "readyz",
          // Unbounded: the job waits for more, as a production one does.
          source: `{ nats: { servers: "${nats.url}", stream: EVENTS, subjects: ["events.>"], bounded: false } }`,
          schema: eventSchemaYaml(),
          state: "{ dir: ./state, checkpointInterval: 100ms }",
          windows: [hourlyWindow()],
          ...FILE_OUTPUTS,
        }),
      );
      const spec = loadPipeline(file);
      job = runPipeline(spec, { reset: true, signal: stop.signal, onView: (view) => (server = startHttpServer({ host: "127.0.0.1", port: 0 }, routesFor({ view, spec }))) }).catch((error) => error);
      while (server === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
      const readyz = `${(await server).url}readyz`;

      expect((await pollUntil(readyz, (status) => status === 200)).status).toBe(200);
      await nats.stop();
      const down = await pollUntil(readyz, (status) => status === 503);
      expect(down.status).toBe(503);
      expect(down.body.status).toBe("not ready");
      expect(down.body.reason).toBe(`source nats:EVENTS: NATS at ${nats.url} is out of reach; reconnecting`);
      await nats.restart();
      const back = await pollUntil(readyz, (status) => status === 200);
      expect(back.status).toBe(200);
      expect(back.body).toMatchObject({ status: "ready", phase: "running" });
    } finally {
      stop.abort(new Error("stopped"));
      await job;
      await (await server)?.close();
      await nats.stop();
    }
  }, 90_000);
});
