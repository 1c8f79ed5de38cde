// What the NATS source and sinks read alike: server URLs, stream names and subjects.
import type { Reader } from "../reader.ts";

const DEFAULT_NATS = "nats://127.0.0.1:4222";

/** A subject without wildcards, as a sink publishes to. */
export const SUBJECT = /^[^\s*>]+(\.[^\s*>]+)*$/;
/** A subject that may hold `*` tokens and end in `>`, as a stream takes. */
export const SUBJECT_PATTERN = /^([^\s.]+\.)*([^\s.]+|>)$/;
export const STREAM_NAME = /^[^\s.*>/\\]+$/;

/** `servers:` as a list or one comma-separated string; undefined if bad. */
export function readServers(r: Reader, path: string, value: unknown): string[] | undefined {
  if (value === undefined) return [DEFAULT_NATS];
  const list = typeof value === "string" ? value.split(",").map((s) => s.trim()) : r.list(path, value, { nonEmpty: true });
  const servers = list?.map((s, i) => r.string(Array.isArray(value) ? `${path}[${i}]` : path, s));
  if (!servers || servers.some((s) => s === undefined)) return undefined;
  for (const server of servers as string[]) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$|^[^\s/:]+:\d+$/.test(server)) return r.fail(path, `expected a server URL like "nats://127.0.0.1:4222", got ${JSON.stringify(server)}`);
  }
  return servers as string[];
}
