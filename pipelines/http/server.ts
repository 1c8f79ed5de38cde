// The job's HTTP server: a small router over node:http with bearer-token auth. It runs on the job's
// own thread, so a handler reads the job between two batches (never a half-applied step); handlers
// must be quick, since the job waits while one runs. Routes come from the modules that format them
// (api.ts, metrics, the dashboard): this file only routes, authorises and writes.
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** What a handler returns: JSON by default. */
export type Reply = { status?: number; json?: unknown; text?: string; body?: string | Buffer; contentType?: string; headers?: Record<string, string> };

export type Route = {
  method: "GET";
  /** `/api/v1/keys/:key`: `:name` parts are captured into `params`, decoded. */
  path: string;
  /**
   * Who may call it when the server has a token. By default only a request with `Authorization:
   * Bearer <token>`; "public": anyone (static files holding nothing of the job, so a browser can
   * load the dashboard page from a plain link); "headerOrQuery": also `?access_token=<token>`, for
   * a browser's EventSource, which cannot set headers.
   */
  access?: "public" | "headerOrQuery";
  /** A reply, or nothing when the handler writes the response itself (server-sent events). */
  handle(request: { params: Record<string, string>; query: URLSearchParams; raw: IncomingMessage; response: ServerResponse }): Reply | void | Promise<Reply | void>;
};

export type HttpServer = { url: string; close(): Promise<void> };

type CompiledRoute = Route & { pattern: RegExp; names: string[] };

function compile(route: Route): CompiledRoute {
  const names: string[] = [];
  const source = route.path
    .split("/")
    .map((part) => {
      if (!part.startsWith(":")) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      names.push(part.slice(1));
      return "([^/]+)";
    })
    .join("/");
  return { ...route, pattern: new RegExp(`^${source}$`), names };
}

/**
 * What answers one request: routing, the token check and the reply, written to `response`. The
 * request and response may be node:http's or stand-ins that forward to another thread (forwarded.ts).
 */
export function requestHandler(routes: readonly Route[], token: string | undefined): (request: IncomingMessage, response: ServerResponse) => void {
  const compiled = routes.map(compile);
  const expected = token === undefined ? undefined : Buffer.from(`Bearer ${token}`);
  return (request, response) => {
    void serve(compiled, expected, request, response).catch((error) => {
      if (!response.headersSent) write(response, { status: 500, json: { error: String((error as Error)?.message ?? error).split("\n")[0] } });
      else response.destroy();
    });
  };
}

/** Starts serving `routes` on host:port; with `token`, every request must carry `Authorization: Bearer <token>`. */
export async function startHttpServer({ host, port, token }: { host: string; port: number; token?: string }, routes: readonly Route[]): Promise<HttpServer> {
  return listen({ host, port }, requestHandler(routes, token));
}

/** A node:http server on host:port answering with `handle`; its URL, and a close that drops open connections. */
export async function listen({ host, port }: { host: string; port: number }, handle: (request: IncomingMessage, response: ServerResponse) => void): Promise<HttpServer> {
  const server = createServer(handle);
  // Keep-alive sockets must not keep a stopping process up.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function serve(routes: CompiledRoute[], expected: Buffer | undefined, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = new URL(request.url ?? "/", "http://flusso");
  if (expected !== undefined && !isAuthorised(request, url, routes.find((r) => r.pattern.test(url.pathname))?.access, expected)) {
    return write(response, { status: 401, json: { error: "a bearer token is required (Authorization: Bearer <token>)" }, headers: { "www-authenticate": "Bearer" } });
  }
  for (const route of routes) {
    const match = route.pattern.exec(url.pathname);
    if (!match) continue;
    if (request.method !== route.method && !(request.method === "HEAD" && route.method === "GET")) {
      return write(response, { status: 405, json: { error: `${request.method} is not allowed here` }, headers: { allow: route.method } });
    }
    const params: Record<string, string> = {};
    try {
      route.names.forEach((name, i) => (params[name] = decodeURIComponent(match[i + 1])));
    } catch {
      return write(response, { status: 400, json: { error: "a path part is not valid percent-encoding" } });
    }
    const reply = await route.handle({ params, query: url.searchParams, raw: request, response });
    if (reply !== undefined) write(response, reply);
    return;
  }
  write(response, { status: 404, json: { error: `nothing at ${url.pathname}` } });
}

function isAuthorised(request: IncomingMessage, url: URL, access: Route["access"], expected: Buffer): boolean {
  if (access === "public" || isToken(request.headers.authorization ?? "", expected)) return true;
  const queryToken = access === "headerOrQuery" ? url.searchParams.get("access_token") : null;
  return queryToken !== null && isToken(`Bearer ${queryToken}`, expected);
}

function isToken(authorization: string, expected: Buffer): boolean {
  const given = Buffer.from(authorization);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function write(response: ServerResponse, reply: Reply): void {
  const body = reply.body ?? reply.text ?? `${JSON.stringify(reply.json ?? null)}\n`;
  const contentType = reply.contentType ?? (reply.body !== undefined || reply.text !== undefined ? "text/plain; charset=utf-8" : "application/json");
  response.writeHead(reply.status ?? 200, { "content-type": contentType, "cache-control": "no-store", ...reply.headers });
  response.end(body);
}
