// A TCP proxy for tests that must cut the network between a client and a server while both keep
// running: `blackhole()` stops carrying bytes both ways with every socket left open (packets
// dropped, no reset: only the client's pings can tell), `heal()` closes what was held and carries on.
import { createServer, connect, type Server, type Socket } from "node:net";

export type NetProxy = {
  url: string;
  /** Connections accepted so far: a client that found its link dead opens a new one. */
  readonly connections: number;
  blackhole(): void;
  heal(): void;
  close(): Promise<void>;
};

export async function startNetProxy(targetPort: number): Promise<NetProxy> {
  let isCut = false;
  let connections = 0;
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    connections++;
    const upstream = connect(targetPort, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    // Bytes that arrive during a cut are dropped, as a dead link would.
    client.on("data", (chunk) => isCut || upstream.write(chunk));
    upstream.on("data", (chunk) => isCut || client.write(chunk));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const port = (server.address() as { port: number }).port;
  return {
    url: `nats://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    blackhole: () => (isCut = true),
    heal() {
      // What was held across the cut is a broken stream: end it; clients reconnect afresh.
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      isCut = false;
    },
    close: () =>
      new Promise<void>((done) => {
        for (const [client, upstream] of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => done());
      }),
  };
}
