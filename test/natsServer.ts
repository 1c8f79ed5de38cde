// A private nats-server with JetStream for tests: a free port, a temporary store, stopped by its pid;
// and reading a stream back.
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
  return messagesIn(url, stream, 1, 4_000);
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
