// Reads `http:` (where the job serves its state, metrics and dashboard, and the token it asks for);
// `--http` on the command line overrides `listen`. Off unless one of them is given.
import { isIP } from "node:net";
import type { Reader } from "../reader.ts";

export type HttpSpec = {
  host: string;
  port: number;
  /** The bearer token every request must carry; required when `host` is not a loopback address. */
  token?: string;
  /** The environment variable the token was read from (what the error messages name). */
  tokenEnv?: string;
  /** An event field holding the publisher's epoch-ms stamp: end-to-end latency is measured from it. */
  latencyStampField?: string;
};

/** Where `flusso run --http` listens when given only a port, and the port a bare `--http` uses. */
export const DEFAULT_HTTP_HOST = "127.0.0.1";
export const DEFAULT_HTTP_PORT = 9464;

/** `host:port`, `:port`, `port` or `[::1]:port`; undefined when it is none of them. */
export function parseListen(text: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text.trim()) ?? /^()()(\d+)$/.exec(text.trim());
  if (!match) return undefined;
  const host = match[1] || match[2] || DEFAULT_HTTP_HOST;
  const port = Number(match[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  if (host !== "localhost" && isIP(host) === 0 && !/^[A-Za-z0-9.-]+$/.test(host)) return undefined;
  return { host, port };
}

/** Whether `host` can only be reached from this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The section, with `listenOverride` (from `--http`, the path it is reported at) taking the place
 * of `http.listen`; `stampFields`: what `latencyStampField` may name (number or timestamp fields of the
 * schema). A non-loopback address without a token is refused: anyone on the network
 * could read every user's state.
 */
export function readHttp(r: Reader, value: unknown, stampFields: readonly string[], listenOverride?: { text: string; path: string }): HttpSpec | undefined {
  if (value === undefined && listenOverride === undefined) return undefined;
  const h = value === undefined ? {} : r.object("http", value, ["listen", "tokenEnv", "latencyStampField"]);
  if (!h) return undefined;
  const listenText = listenOverride?.text ?? (h.listen === undefined ? `${DEFAULT_HTTP_HOST}:${DEFAULT_HTTP_PORT}` : r.string("http.listen", h.listen));
  const listenPath = listenOverride?.path ?? "http.listen";
  if (listenText === undefined) return undefined;
  const listen = parseListen(listenText);
  if (listen === undefined) return r.fail(listenPath, `expected an address like "127.0.0.1:9464" or a port, got ${JSON.stringify(listenText)}`);
  let token: string | undefined;
  let tokenEnv: string | undefined;
  if (h.tokenEnv !== undefined) {
    tokenEnv = r.string("http.tokenEnv", h.tokenEnv);
    token = tokenEnv === undefined ? undefined : process.env[tokenEnv];
    if (tokenEnv !== undefined && (token === undefined || token.length < 16)) {
      return r.fail("http.tokenEnv", `the environment variable ${tokenEnv} must hold the bearer token, at least 16 characters (${token === undefined ? "it is not set" : "it is shorter"})`);
    }
  }
  if (!isLoopback(listen.host) && token === undefined) {
    return r.fail(listenPath, `listening on ${listen.host}, which other machines can reach, needs a bearer token: set http.tokenEnv to an environment variable that holds one`);
  }
  let latencyStampField: string | undefined;
  if (h.latencyStampField !== undefined) {
    latencyStampField = r.string("http.latencyStampField", h.latencyStampField);
    if (latencyStampField !== undefined && !stampFields.includes(latencyStampField)) {
      return r.fail("http.latencyStampField", `"${latencyStampField}" is not a number or timestamp field of the schema (${stampFields.join(", ") || "there is none"})`);
    }
  }
  return { ...listen, token, tokenEnv, latencyStampField };
}
