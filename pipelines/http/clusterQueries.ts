// State queries on a cluster worker, answered for the whole group: a key's state by the worker that
// holds its partition, segment counts and members gathered from every partition. Each worker answers
// its own partitions' queries over core NATS request-reply, on `flusso.<group>.query.<partition>`,
// subscribed (no queue group: only the holder may answer) for as long as it runs the partition.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { ConnectionEvent, JobEvent } from "../../engine/jobEvents.ts";
import type { JobView } from "../../engine/jobView.ts";
import { connectNats } from "../../engine/nats.ts";
import { partitionOf } from "../../engine/partitioning.ts";
import { DEFAULT_PAGE_KEYS } from "../../operators/keyPages.ts";
import type { PipelineSpec } from "../validate.ts";
import { ClusterView } from "./clusterView.ts";
import { experimentsReply, keyReply, membersReply, operatorViewsOf, pageLimitError, segmentsReply, stateKeyOf } from "./queries.ts";
import type { HttpContext } from "./routes.ts";
import type { Reply, Route } from "./server.ts";

/** How long a worker waits for another's answer before saying the partition is being taken over. */
export const ASK_TIMEOUT_MS = 2_000;

/** What a worker asks the holder of a partition: a query path, as the HTTP API names it. */
type QueryRequest = { path: string };
/** What the holder answers: the reply's status and JSON, as it would answer over HTTP. */
type QueryReply = { status: number; json: unknown };

/** What /api/v1/pipeline says of the worker: its group, its id (once it joined) and the partitions it holds now. */
export type ClusterDescription = { group: string; workerId: string | null; partitions: number[]; ofPartitions: number };

/**
 * The HTTP side of a cluster worker: the combined view of the partitions it runs, and the NATS
 * connection (its own) that answers their queries and asks other workers for theirs. Feed it
 * runClusterPipeline's `onPartitionView` and `onEvent`.
 */
export class ClusterQueries {
  readonly view: ClusterView;
  private readonly group: string;
  private readonly partitions: number;
  private readonly retryAfterS: number;
  private readonly subscriptions = new Map<number, Subscription>();
  private nc?: NatsConnection;
  private workerId?: string;
  private isClosed = false;
  private readonly connected: Promise<void>;

  constructor(
    private readonly spec: PipelineSpec,
    { signal, onEvent }: { signal?: AbortSignal; onEvent?(event: ConnectionEvent): void } = {},
  ) {
    if (spec.cluster === undefined || !("nats" in spec.source)) throw new Error("cluster queries need a pipeline with a cluster: section and a NATS source");
    const nats = spec.source.nats;
    this.group = spec.cluster.group;
    this.partitions = nats.partitions;
    // A partition whose holder is gone is taken over about a lease later.
    this.retryAfterS = Math.max(1, Math.ceil(spec.cluster.leaseTtlMs / 1000));
    this.view = new ClusterView(nats.partitions, `nats stream ${nats.stream}`, spec.http?.latencyStampField !== undefined);
    this.connected = connectNats({ servers: nats.servers, client: `queries ${this.group}`, signal, onEvent }).then(
      (nc) => {
        if (this.isClosed) return void nc.close();
        this.nc = nc;
        for (const partition of this.view.heldPartitions()) this.subscribe(partition);
      },
      // A stop while no server could be reached: nothing to answer, nobody to ask.
      () => undefined,
    );
  }

  /** runClusterPipeline's `onPartitionView`: a partition's job appeared on this worker, or (undefined) left it. */
  onPartitionView(partition: number, view: JobView | undefined): void {
    this.view.setPartition(partition, view);
    if (view === undefined) this.unsubscribe(partition);
    else this.subscribe(partition);
  }

  /** runClusterPipeline's `onEvent`: the worker's id comes with its joining. */
  onEvent(event: JobEvent): void {
    if (event.event === "worker-joined") this.workerId = event.workerId;
  }

  describe(): ClusterDescription {
    return { group: this.group, workerId: this.workerId ?? null, partitions: this.view.heldPartitions(), ofPartitions: this.partitions };
  }

  /** The partition that holds `key`'s state: by the raw id, as events are published. */
  partitionOfKey(key: string): number {
    return partitionOf(key, this.partitions);
  }

  /** `partition`'s answer to `path`: from its job when this worker runs it, else from its holder; undefined when nobody answered in time. */
  async ask(partition: number, path: string): Promise<Reply | undefined> {
    const local = this.view.partitionView(partition);
    if (local !== undefined) return answerFromPartition(local, this.spec, path);
    if (this.nc === undefined) return undefined;
    try {
      const message = await this.nc.request(this.subjectOf(partition), JSON.stringify({ path } satisfies QueryRequest), { timeout: ASK_TIMEOUT_MS });
      const reply = message.json<QueryReply>();
      // The holder let the partition go between the ask and the answer.
      return reply.status === 503 ? undefined : { status: reply.status, json: reply.json };
    } catch {
      // No responders (nobody holds it now), a timeout (its holder is stuck or gone), a connection lost.
      return undefined;
    }
  }

  /** What a client is told when `partitions` did not answer: try again once they are taken over. */
  takingOver(partitions: readonly number[]): Reply {
    const which = partitions.length === 1 ? `partition ${partitions[0]} is` : `partitions ${partitions.join(", ")} are`;
    return { status: 503, json: { error: `${which} being taken over; try again`, missingPartitions: partitions }, headers: { "retry-after": String(this.retryAfterS) } };
  }

  async close(): Promise<void> {
    this.isClosed = true;
    for (const partition of [...this.subscriptions.keys()]) this.unsubscribe(partition);
    await this.connected;
    await this.nc?.close().catch(() => undefined);
  }

  private subjectOf(partition: number): string {
    return `flusso.${this.group}.query.${partition}`;
  }

  private subscribe(partition: number): void {
    if (this.nc === undefined || this.isClosed || this.subscriptions.has(partition)) return;
    const subscription = this.nc.subscribe(this.subjectOf(partition), {
      callback: (error, message) => {
        if (error !== null) return;
        const view = this.view.partitionView(partition);
        let reply: Reply;
        try {
          reply = view === undefined ? { status: 503 } : answerFromPartition(view, this.spec, message.json<QueryRequest>().path);
        } catch (failure) {
          reply = { status: 500, json: { error: String((failure as Error)?.message ?? failure).split("\n")[0] } };
        }
        message.respond(JSON.stringify({ status: reply.status ?? 200, json: reply.json ?? null } satisfies QueryReply));
      },
    });
    this.subscriptions.set(partition, subscription);
  }

  private unsubscribe(partition: number): void {
    this.subscriptions.get(partition)?.unsubscribe();
    this.subscriptions.delete(partition);
  }
}

/**
 * One partition's answer to a state query path, from its job's operators: `/api/v1/keys/<raw id>`,
 * `/api/v1/segments`, `/api/v1/segments/<group>/<segment>?limit=&cursor=`, `/api/v1/experiments`.
 */
export function answerFromPartition(view: JobView, spec: PipelineSpec, path: string): Reply {
  const url = new URL(path, "http://flusso");
  let parts: string[];
  try {
    parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    return { status: 400, json: { error: "a path part is not valid percent-encoding" } };
  }
  const [api, version, what, ...rest] = parts;
  if (api !== "api" || version !== "v1") return { status: 404, json: { error: `nothing at ${url.pathname}` } };
  const views = operatorViewsOf(view);
  if (what === "keys" && rest.length === 1) return keyReply(views, stateKeyOf(spec)(rest[0]));
  if (what === "segments" && rest.length === 0) return segmentsReply(views);
  if (what === "experiments" && rest.length === 0) return experimentsReply(views);
  if (what === "segments" && rest.length === 2) {
    const limit = url.searchParams.get("limit") ?? undefined;
    return pageLimitError(limit) ?? membersReply(views, { group: rest[0], segment: rest[1], limit, cursor: url.searchParams.get("cursor") ?? undefined });
  }
  return { status: 404, json: { error: `nothing at ${url.pathname}` } };
}

/** The query routes of a cluster worker: the same paths as a single job's (queries.ts), answered for the group. */
export function clusterQueryRoutes({ cluster }: HttpContext & { cluster: ClusterQueries }): Route[] {
  return [
    {
      method: "GET",
      path: "/api/v1/keys/:key",
      handle: async ({ params }) => {
        const partition = cluster.partitionOfKey(params.key);
        return (await cluster.ask(partition, `/api/v1/keys/${encodeURIComponent(params.key)}`)) ?? cluster.takingOver([partition]);
      },
    },
    {
      method: "GET",
      path: "/api/v1/segments",
      handle: async () => {
        const gathered = await gather(cluster, "/api/v1/segments");
        if (!("replies" in gathered)) return gathered;
        const counts = {};
        for (const reply of gathered.replies) addCounts(counts, reply.json as Counts);
        return { json: counts };
      },
    },
    {
      method: "GET",
      path: "/api/v1/experiments",
      // The group's reports are written, and kept, by partition 0's job.
      handle: async () => (await cluster.ask(0, "/api/v1/experiments")) ?? cluster.takingOver([0]),
    },
    {
      method: "GET",
      path: "/api/v1/segments/:group/:segment",
      handle: async ({ params, query }) => {
        const limit = query.get("limit") ?? undefined;
        const limitError = pageLimitError(limit);
        if (limitError !== undefined) return limitError;
        const cursor = query.get("cursor");
        const pageKeys = limit === undefined ? DEFAULT_PAGE_KEYS : Number(limit);
        // Every partition's first page after the same cursor: a member's key is in one partition only,
        // so the group's page is the first `pageKeys` of their union, and its last key the next cursor.
        const search = new URLSearchParams({ limit: String(pageKeys), ...(cursor === null ? {} : { cursor }) });
        const gathered = await gather(cluster, `/api/v1/segments/${encodeURIComponent(params.group)}/${encodeURIComponent(params.segment)}?${search}`);
        if (!("replies" in gathered)) return gathered;
        const pages = gathered.replies.map((reply) => reply.json as { keys: string[]; nextCursor: string | null });
        const all = pages.flatMap((page) => page.keys).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        const keys = all.slice(0, pageKeys);
        const hasMore = all.length > pageKeys || pages.some((page) => page.nextCursor !== null);
        return { json: { group: params.group, segment: params.segment, keys, nextCursor: hasMore && keys.length > 0 ? keys[keys.length - 1] : null } };
      },
    },
  ];
}

/**
 * Every partition's answer to `path` (this worker's from their jobs, the others' over NATS, all at
 * once): their replies, or the reply to give instead: 503 naming the partitions that did not answer
 * (never a part presented as the whole), or a partition's own error (e.g. 404: no such segment).
 */
async function gather(cluster: ClusterQueries, path: string): Promise<{ replies: Reply[] } | Reply> {
  const partitions = Array.from({ length: cluster.describe().ofPartitions }, (_, p) => p);
  const replies = await Promise.all(partitions.map((p) => cluster.ask(p, path)));
  const missing = partitions.filter((p) => replies[p] === undefined);
  if (missing.length > 0) return cluster.takingOver(missing);
  const failed = replies.find((reply) => (reply!.status ?? 200) !== 200);
  return failed ?? { replies: replies as Reply[] };
}

/** Segment counts: `{ groups: { value: { vip: 12 } }, tags: { top: 3 } }`, nested to any depth. */
type Counts = { [name: string]: number | Counts };

/** Adds `from`'s counts into `into`, name by name. */
function addCounts(into: Counts, from: Counts): void {
  for (const [name, value] of Object.entries(from)) {
    if (typeof value === "number") into[name] = ((into[name] as number | undefined) ?? 0) + value;
    else addCounts((into[name] ??= {}) as Counts, value);
  }
}
