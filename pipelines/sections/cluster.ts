// Reads `cluster:` (many workers share a NATS source's partitions): the group the workers form, how
// long a lease outlives a worker that stops renewing it, and how many copies NATS keeps of the
// group's leases and checkpoints. Cluster mode needs a NATS source and sinks that NATS dedups: a
// file or stdout written by several processes on several machines could not be exactly once.
import { NAME, type Reader } from "../reader.ts";
import type { RoutedSinkSpec, SinkSpec } from "./sinks.ts";
import type { SourceSpec } from "./source.ts";

export type ClusterSpec = {
  /** Workers of one group share its partitions; its leases and checkpoints are named after it. */
  group: string;
  /** A worker that stops renewing loses its partitions after this long. */
  leaseTtlMs: number;
  /** Copies NATS keeps of the group's leases and checkpoints (1, or up to the servers of a NATS cluster). */
  replicas: number;
};

/** The lease a worker holds unless it says otherwise: a takeover waits about this long after a crash. */
export const DEFAULT_LEASE_TTL_MS = 10_000;
const MIN_LEASE_TTL_MS = 1_000;
const MAX_LEASE_TTL_MS = 600_000;
/** JetStream replicates a stream to at most 5 servers. */
const MAX_REPLICAS = 5;

export function readCluster(
  r: Reader,
  value: unknown,
  name: string | undefined,
  source: SourceSpec | undefined,
  outputs: { sinks?: ReadonlyArray<RoutedSinkSpec | undefined>; late?: SinkSpec; deadLetter?: SinkSpec; isDeadLetterDefault: boolean },
): ClusterSpec | undefined {
  if (value === undefined) return undefined;
  const c = r.object("cluster", value ?? {}, ["group", "leaseTtl", "replicas"]);
  if (!c) return undefined;
  const group = c.group === undefined ? name : r.string("cluster.group", c.group, NAME);
  const leaseTtlMs = c.leaseTtl === undefined
    ? DEFAULT_LEASE_TTL_MS
    : r.duration("cluster.leaseTtl", c.leaseTtl, "10s", { atLeast: [MIN_LEASE_TTL_MS, "1s"], atMost: [MAX_LEASE_TTL_MS, "10m"] });
  const replicas = c.replicas === undefined ? 1 : r.number("cluster.replicas", c.replicas, { min: 1, max: MAX_REPLICAS, integer: true });
  if (source !== undefined && !("nats" in source)) {
    r.fail("cluster", "needs a NATS source (source.nats): its partitions are what the workers share");
  } else if (source !== undefined && (source.nats.subjects.length !== 1 || !source.nats.subjects[0].endsWith(".>"))) {
    // Each worker reads a partition through its own subject, `<prefix>.<n>`.
    r.fail("source.nats.subjects", `a cluster's source needs one subject of the form "<prefix>.>" (partition n is "<prefix>.n"), got ${source.nats.subjects.join(", ")}`);
  }
  outputs.sinks?.forEach((s, i) => s !== undefined && !("nats" in s.sink) && r.fail(`sinks[${i}]`, notNats("sink")));
  if (outputs.late !== undefined && !("nats" in outputs.late)) r.fail("late", notNats("late output"));
  if (outputs.deadLetter !== undefined && !("nats" in outputs.deadLetter)) {
    r.fail("deadLetter", `${outputs.isDeadLetterDefault ? "is not given, so it would be a file; " : ""}${notNats("dead-letter output")}`);
  }
  if (group === undefined || leaseTtlMs === undefined || replicas === undefined) return undefined;
  return { group, leaseTtlMs, replicas };
}

function notNats(what: string): string {
  return `a ${what} of a cluster must be NATS: a file or stdout written by several workers on several machines cannot be exactly once`;
}
