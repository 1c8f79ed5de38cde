// The HTTP server as `flusso run` runs it: sockets on one side, answers on the other, joined by
// messages (here, calls a turn of the event loop apart, as between threads). What a client sees must
// be what the in-thread server gives: answers, the token check, streams, and a client going away.
import { afterEach, describe, expect, it } from "vitest";
import { answerForwarded, forwardingServer, type ForwardedReply, type ForwardedRequest } from "../../../pipelines/http/forwarded.ts";
import { requestHandler, type Route } from "../../../pipelines/http/server.ts";

const TOKEN = "a-token-of-sixteen-characters";
let server: Awaited<ReturnType<typeof forwardingServer>> | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** Both sides, with the routes on the answering one; what the answering side saw of a stream's client. */
async function serving(routes: Route[]): Promise<string> {
  const later = <T>(deliver: (message: T) => void) => (message: T) => setImmediate(() => deliver(message));
  const answer = answerForwarded(requestHandler(routes, TOKEN), later<ForwardedReply>((reply) => server!.reply(reply)));
  server = await forwardingServer({ host: "127.0.0.1", port: 0 }, later<ForwardedRequest>(answer));
  return server.url;
}

async function waitFor(check: () => boolean, limitMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return check();
}

describe("the HTTP server over two threads", () => {
  it("answers as the routes do, with the token checked where the routes are", async () => {
    const url = await serving([{ method: "GET", path: "/api/v1/keys/:key", handle: ({ params, query }) => ({ json: { key: params.key, limit: query.get("limit") } }) }]);
    const auth = { authorization: `Bearer ${TOKEN}` };
    const answered = await fetch(`${url}api/v1/keys/u%2042?limit=3`, { headers: auth });
    expect(answered.status).toBe(200);
    expect(answered.headers.get("content-type")).toBe("application/json");
    expect(await answered.json()).toEqual({ key: "u 42", limit: "3" });
    expect((await fetch(`${url}api/v1/keys/u1`)).status).toBe(401);
    expect((await fetch(`${url}nothing`, { headers: auth })).status).toBe(404);
    // Binary bodies pass as they are.
    await server!.close();
    const bytes = Buffer.from([0, 1, 2, 255]);
    const binary = await serving([{ method: "GET", path: "/bytes", access: "public", handle: () => ({ body: bytes, contentType: "application/octet-stream" }) }]);
    expect(Buffer.from(await (await fetch(`${binary}bytes`)).arrayBuffer())).toEqual(bytes);
  });

  it("streams parts as they are written, and tells the answering side when the client goes away", async () => {
    let isClosed = false;
    const url = await serving([
      {
        method: "GET",
        path: "/stream",
        access: "public",
        handle: ({ response }) => {
          response.writeHead(200, { "content-type": "text/event-stream" });
          response.write("event: first\n\n");
          const timer = setInterval(() => response.write("event: next\n\n"), 20);
          response.on("close", () => {
            clearInterval(timer);
            isClosed = true;
          });
        },
      },
    ]);
    const client = new AbortController();
    const answered = await fetch(`${url}stream`, { signal: client.signal });
    const reader = answered.body!.getReader();
    let text = "";
    while (!text.includes("event: next")) text += new TextDecoder().decode((await reader.read()).value);
    expect(text.startsWith("event: first\n\n")).toBe(true);
    client.abort();
    expect(await waitFor(() => isClosed)).toBe(true);
  });
});
