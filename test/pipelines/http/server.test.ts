// The job's HTTP server and who may ask it: an address other machines can reach is refused without
// a bearer token (at load, exit 2 naming the path); with one, a request without it gets 401.
import { afterAll, describe, expect, it } from "vitest";
import { runPipeline } from "../../../pipelines/compile.ts";
import { routesFor } from "../../../pipelines/http/routes.ts";
import { startHttpServer, type HttpServer } from "../../../pipelines/http/server.ts";
import { loadPipeline } from "../../../pipelines/load.ts";
import { removeTempDirs, runCli, tempDir } from "../pipelineFiles.ts";
import { shippedVariant } from "../shipped.ts";

afterAll(removeTempDirs);

const TOKEN_ENV = "FLUSSO_TEST_HTTP_TOKEN";
const TOKEN = "a-bearer-token-of-32-characters!";

describe("the HTTP server's bearer token", () => {
  it("refuses a non-loopback address without a token at load, naming the flag or the field", () => {
    const dir = tempDir("flusso-http-auth-");
    const file = shippedVariant("segments", dir, { users: 20, eventCount: 200 });
    const viaFlag = runCli(["run", file, "--http", "0.0.0.0:0", "--quiet"]);
    expect(viaFlag.status).toBe(2);
    expect(viaFlag.stderr).toContain("--http");
    expect(viaFlag.stderr).toContain("needs a bearer token");
    const inFile = shippedVariant("segments", dir, { users: 20, eventCount: 200, edit: (p) => (p.http = { listen: "0.0.0.0:0" }) });
    const viaField = runCli(["run", inFile, "--quiet"]);
    expect(viaField.status).toBe(2);
    expect(viaField.stderr).toContain("http.listen");
    expect(viaField.stderr).toContain("needs a bearer token");
  }, 60_000);

  it("answers 401 to a request without the token or with another, and 200 with it", async () => {
    process.env[TOKEN_ENV] = TOKEN;
    const dir = tempDir("flusso-http-token-");
    const file = shippedVariant("segments", dir, { users: 50, eventCount: 1000, edit: (p) => (p.http = { listen: "127.0.0.1:0", tokenEnv: TOKEN_ENV }) });
    const spec = loadPipeline(file);
    expect(spec.http?.token).toBe(TOKEN);
    let server: Promise<HttpServer> | undefined;
    await runPipeline(spec, { reset: true, onView: (view) => (server = startHttpServer(spec.http!, routesFor({ view, spec }))) });
    const { url, close } = await server!;
    try {
      for (const path of ["healthz", "api/v1/segments", "api/v1/keys/u000001"]) {
        const without = await fetch(`${url}${path}`);
        expect(without.status, path).toBe(401);
        expect(without.headers.get("www-authenticate")).toBe("Bearer");
        expect((await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN.replace("!", "?")}` } })).status, path).toBe(401);
        expect((await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, path).toBe(200);
      }
    } finally {
      await close();
      delete process.env[TOKEN_ENV];
    }
  }, 30_000);
});
