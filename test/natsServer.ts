// A private nats-server with JetStream for tests: a free port, a temporary store, stopped by its pid;
// a three-node cluster of them for tests that kill a server mid-stream; and reading a stream back.
// Tests that need one fail with a clear message when none can be started; they are never skipped.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer, connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";

export type NatsServer = { url: string; port: number; storeDir: string; pid: number; stop(): Promise<void>; restart(): Promise<void> };

/** A port nothing listens on (a moment ago): for a private server, or for a client that must find none. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

const running = new Set<ChildProcess>();
// A test that fails or times out must not leave servers behind: whatever is still running goes with the process.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Starts `nats-server -js` on a free port; `restart` stops it and starts it again on the same port and store. */
export async function startNatsServer(): Promise<NatsServer> {
  if (spawnSync("nats-server", ["--version"]).error) {
    throw new Error("nats-server is not installed: these tests need it (apt-get install nats-server)");
  }
  const port = await freePort();
  const storeDir = mkdtempSync(join(tmpdir(), "flusso-nats-"));
  let child: ChildProcess;
  const start = async () => {
    child = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], { stdio: "ignore" });
    const started = child;
    running.add(started);
    started.once("exit", () => running.delete(started));
    await waitFor(() => isListening(port), `nats-server on port ${port}`);
  };
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    get pid() {
      return child.pid!;
    },
    stop,
    restart: async () => {
      await stop();
      await start();
    },
  };
}

export type NatsCluster = {
  /** `nats://127.0.0.1:<client port>` of each node, in node order. */
  urls: string[];
  servers: Array<{ url: string; pid: number; port: number; storeDir: string }>;
  /** Sends `signal` (SIGKILL unless told) to node `index` and resolves once that process has exited. */
  kill(index: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts node `index` again (stopping it first if it still runs) on the same ports and store. */
  restart(index: number): Promise<void>;
  /** Stops every node that still runs with SIGTERM, by its pid. */
  stop(): Promise<void>;
};

/** Waits (`limitMs` at most) until `attempt` resolves; rethrows its last error, named after `what`, when it never does. */
async function retryUntil<T>(attempt: () => Promise<T>, what: string, limitMs: number): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() >= deadline) throw new Error(`timed out after ${limitMs} ms waiting for ${what}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** `count` distinct free ports: two calls to freePort may hand out the same one, so repeats are drawn again. */
async function freePorts(count: number, taken: Set<number>): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < count) {
    const port = await freePort();
    if (taken.has(port)) continue;
    taken.add(port);
    ports.push(port);
  }
  return ports;
}

/**
 * Starts `size` nats-servers with JetStream, routed to each other as one cluster (names node0, node1, ...),
 * each on its own free client and cluster port with its own store. Resolves once JetStream has a meta leader
 * and a stream replicated on every node can be created, so a test can create R3 streams straight away.
 */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  if (spawnSync("nats-server", ["--version"]).error) {
    throw new Error("nats-server is not installed: these tests need it (apt-get install nats-server)");
  }
  const taken = new Set<number>();
  const clientPorts = await freePorts(size, taken);
  const clusterPorts = await freePorts(size, taken);
  // Every node is given every route, its own included: nats-server drops the route to itself, and the list
  // stays the same for all nodes, so a restarted node finds the others however the cluster has changed.
  const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
  const nodes = clientPorts.map((port, i) => ({
    name: `node${i}`,
    port,
    clusterPort: clusterPorts[i],
    url: `nats://127.0.0.1:${port}`,
    storeDir: mkdtempSync(join(tmpdir(), `flusso-nats-node${i}-`)),
    child: undefined as ChildProcess | undefined,
  }));

  const start = async (i: number) => {
    const node = nodes[i];
    // The log goes beside the JetStream data (nats-server keeps that under <storeDir>/jetstream), so a failed
    // run can be read afterwards; the server name is what JetStream's clustering and `cluster.leader` go by.
    const args = [
      "-js",
      "-a", "127.0.0.1",
      "-p", String(node.port),
      "-sd", node.storeDir,
      "-n", node.name,
      "--cluster_name", "flusso-test",
      "--cluster", `nats://127.0.0.1:${node.clusterPort}`,
      "--routes", routes,
      "-l", join(node.storeDir, "nats-server.log"),
    ];
    const child = spawn("nats-server", args, { stdio: "ignore" });
    node.child = child;
    running.add(child);
    child.once("exit", () => running.delete(child));
    await waitFor(() => isListening(node.port), `nats-server ${node.name} on port ${node.port}`);
  };

  const kill = async (i: number, signal: NodeJS.Signals = "SIGKILL") => {
    const child = nodes[i].child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    process.kill(child.pid!, signal);
    await exited;
  };

  // Asks JetStream, through `servers`, for the account's info and then creates and deletes a stream on every
  // node: the first needs a meta leader, the second every node known to it as a JetStream peer.
  const jetStreamReady = async (servers: string[], probeReplicas: boolean) => {
    const nc = await connect({ servers, maxReconnectAttempts: 0 });
    try {
      // A request sent before the meta leader is elected is never answered: a short timeout asks again soon
      // instead of waiting out the client's default 5 s.
      const jsm = await jetstreamManager(nc, { timeout: 1_000 });
      await jsm.getAccountInfo();
      if (!probeReplicas) return;
      const probe = "flusso_cluster_probe";
      await jsm.streams.add({ name: probe, subjects: ["_flusso_cluster_probe.>"], num_replicas: size });
      await jsm.streams.delete(probe);
    } finally {
      await nc.close();
    }
  };

  // A cluster that cannot elect a leader must fail the test, not hang it: 20 s is far above a normal election.
  const clusterReadyLimitMs = 20_000;
  try {
    await Promise.all(nodes.map((_, i) => start(i)));
    await retryUntil(() => jetStreamReady(nodes.map((n) => n.url), true), `JetStream on ${size} nodes`, clusterReadyLimitMs);
  } catch (err) {
    await Promise.all(nodes.map((_, i) => kill(i)));
    throw err;
  }

  return {
    urls: nodes.map((n) => n.url),
    servers: nodes.map((node) => ({
      url: node.url,
      port: node.port,
      storeDir: node.storeDir,
      get pid() {
        return node.child!.pid!;
      },
    })),
    kill,
    restart: async (i: number) => {
      await kill(i, "SIGTERM");
      await start(i);
      // Back once this node itself answers for JetStream: its routes are up and it knows the meta leader.
      await retryUntil(() => jetStreamReady([nodes[i].url], false), `${nodes[i].name} to rejoin JetStream`, clusterReadyLimitMs);
    },
    stop: async () => {
      await Promise.all(nodes.map((_, i) => kill(i, "SIGTERM")));
    },
  };
}

/** Every message body of a stream, oldest first. */
export async function readStream(url: string, stream: string): Promise<string[]> {
  const nc = await connect({ servers: url });
  try {
    const lastSeq = (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
    if (lastSeq === 0) return [];
    const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
    const bodies: string[] = [];
    const messages = await consumer.consume();
    for await (const m of messages) {
      bodies.push(m.string());
      if (m.seq >= lastSeq) break;
    }
    return bodies;
  } finally {
    await nc.close();
  }
}

/** Waits (4 s at most) until `stream` holds a message: the job has written its first results. */
export function firstMessageIn(url: string, stream: string): Promise<boolean> {
  // Generous: a job starting on a loaded machine (CI runs test files side by side) takes seconds.
  return messagesIn(url, stream, 1, 60_000);
}

/** Waits (`limitMs` at most) until `stream` holds at least `count` messages; says whether it does. */
export async function messagesIn(url: string, stream: string, count: number, limitMs = 20_000): Promise<boolean> {
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + limitMs;
  try {
    while (Date.now() < deadline) {
      const info = await jsm.streams.info(stream).catch(() => undefined);
      if ((info?.state.messages ?? 0) >= count) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return false;
  } finally {
    await nc.close();
  }
}

/** Waits (`limitMs` at most) until `stream` exists (a job has set up its sink); says whether it does. */
export async function streamExists(url: string, stream: string, limitMs = 20_000): Promise<boolean> {
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + limitMs;
  try {
    while (Date.now() < deadline) {
      if ((await jsm.streams.info(stream).catch(() => undefined)) !== undefined) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return false;
  } finally {
    await nc.close();
  }
}
