// What the NATS source and sinks read alike: server URLs (and which servers one names when it names
// none), stream names and subjects.
import type { Reader } from "../reader.ts";

/** A local server on NATS's standard port: the servers of a source or sink that names none, without $NATS_URL. */
const LOCAL_NATS = "nats://127.0.0.1:4222";

/** A subject without wildcards, as a sink publishes to. */
export const SUBJECT = /^[^\s*>]+(\.[^\s*>]+)*$/;
/** A subject that may hold `*` tokens and end in `>`, as a stream takes. */
export const SUBJECT_PATTERN = /^([^\s.]+\.)*([^\s.]+|>)$/;
export const STREAM_NAME = /^[^\s.*>/\\]+$/;

const SERVER_URL = /^(nats|tls|ws|wss):\/\/[^\s]+$|^[^\s/:]+:\d+$/;

/**
 * `servers:` as a list or one comma-separated string; when not given, `otherwise` (a sink: the NATS
 * source's servers), else $NATS_URL (as the nats CLI reads it), else nats://127.0.0.1:4222.
 * Undefined if bad.
 */
export function readServers(r: Reader, path: string, value: unknown, otherwise?: string[]): string[] | undefined {
  if (value === undefined) return otherwise ?? serversFromEnv(r, path);
  const list = typeof value === "string" ? value.split(",").map((s) => s.trim()) : r.list(path, value, { nonEmpty: true });
  const servers = list?.map((s, i) => r.string(Array.isArray(value) ? `${path}[${i}]` : path, s));
  if (!servers || servers.some((s) => s === undefined)) return undefined;
  for (const server of servers as string[]) {
    if (!SERVER_URL.test(server)) return r.fail(path, `expected a server URL like "nats://127.0.0.1:4222", got ${JSON.stringify(server)}`);
  }
  return servers as string[];
}

/** $NATS_URL's servers, or the local server when it is not set; a bad $NATS_URL is reported at `path`, which would have used it. */
function serversFromEnv(r: Reader, path: string): string[] | undefined {
  const fromEnv = process.env.NATS_URL;
  if (fromEnv === undefined || fromEnv.trim() === "") return [LOCAL_NATS];
  const servers = fromEnv.split(",").map((s) => s.trim());
  if (servers.some((s) => !SERVER_URL.test(s))) {
    return r.fail(path, `is not given, so $NATS_URL is used, and it is no server URL like "nats://127.0.0.1:4222": ${JSON.stringify(fromEnv)}`);
  }
  return servers;
}

/**
 * Whether two server lists name a server in common (host and port; "localhost" is 127.0.0.1, the
 * port 4222 by default): then they are taken for one NATS system, whose streams must not overlap.
 */
export function isSameNats(a: readonly string[], b: readonly string[]): boolean {
  const named = new Set(a.map(hostAndPort));
  return b.some((server) => named.has(hostAndPort(server)));
}

function hostAndPort(server: string): string {
  const [, host = "", port = "4222"] = /^(?:[a-z]+:\/\/)?(?:[^@/]*@)?(\[[^\]]*\]|[^/:]*)(?::(\d+))?/i.exec(server) ?? [];
  const name = host.toLowerCase();
  return `${name === "localhost" ? "127.0.0.1" : name}:${port}`;
}
