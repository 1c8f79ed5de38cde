// The query side of the state-query benchmark, in a process of its own (as a CRM or a marketing tool
// would be): GET /api/v1/keys/{key} at a fixed rate over keep-alive connections, for keys drawn from
// the generator's users with a seeded PRNG. Runs until SIGTERM or --seconds, then prints one JSON line
// to stdout: what it sent, what came back and how long each answer took.
// Run: node --import tsx bench/queryLoad.ts --url http://127.0.0.1:9464/ --rate 1000 --users 20000 --seconds 30
import { Agent, request } from "node:http";
import { parseArgs } from "node:util";
import { mulberry32 } from "../engine/random.ts";
import { summarizeLatencies, type LatencySummary } from "./natsConsumer.ts";

export type QueryLoadResult = {
  requestedRate: number;
  sent: number;
  /** Answers by HTTP status ("200", "404", ...) and requests that failed before an answer ("error"). */
  byStatus: Record<string, number>;
  elapsedMs: number;
  achievedRate: number;
  /** From the request's start to the end of its answer's body. */
  latency: LatencySummary;
  /** Requests that could not start on time because the previous ones had not answered (the load fell behind). */
  behindTicks: number;
  /** CPU this process used (user + system), in seconds: the load's own share of the machine. */
  cpuSeconds: number;
};

/** Ticks per second: each tick sends its share of the rate, so the load is smooth at 1,000/s. */
const TICKS_PER_SECOND = 100;
/** Concurrent connections: enough that one slow answer does not hold the next ones back. */
const MAX_SOCKETS = 32;
/** Requests in flight beyond which a tick is skipped: the server is not keeping up. */
const MAX_IN_FLIGHT = 256;

function userKey(index: number): string {
  return `u${String(index).padStart(6, "0")}`;
}

export async function runQueryLoad(options: { url: string; rate: number; users: number; seconds: number; seed: number; token?: string; signal?: AbortSignal }): Promise<QueryLoadResult> {
  const base = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_SOCKETS });
  const random = mulberry32(options.seed);
  const latenciesMs: number[] = [];
  const byStatus: Record<string, number> = {};
  let sent = 0;
  let inFlight = 0;
  let behindTicks = 0;
  const headers = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };

  const query = () => {
    const key = userKey(Math.floor(random() * options.users));
    const startedAt = performance.now();
    inFlight++;
    sent++;
    const req = request({ host: base.hostname, port: base.port, path: `/api/v1/keys/${encodeURIComponent(key)}`, agent, headers }, (res) => {
      res.resume();
      res.once("end", () => {
        inFlight--;
        latenciesMs.push(performance.now() - startedAt);
        byStatus[String(res.statusCode)] = (byStatus[String(res.statusCode)] ?? 0) + 1;
      });
    });
    req.once("error", () => {
      inFlight--;
      byStatus.error = (byStatus.error ?? 0) + 1;
    });
    req.end();
  };

  const startedAtMs = performance.now();
  const cpuBefore = process.cpuUsage();
  const perTick = options.rate / TICKS_PER_SECOND;
  let due = 0;
  await new Promise<void>((done) => {
    const finish = () => {
      clearInterval(timer);
      done();
    };
    const timer = setInterval(() => {
      const elapsedS = (performance.now() - startedAtMs) / 1000;
      if (elapsedS >= options.seconds || options.signal?.aborted) return finish();
      // Catch up to the schedule from the elapsed time, so timer jitter does not lower the rate.
      due = Math.floor(elapsedS * options.rate) + perTick;
      if (inFlight > MAX_IN_FLIGHT) {
        behindTicks++;
        return;
      }
      while (sent < due) query();
    }, 1000 / TICKS_PER_SECOND);
    options.signal?.addEventListener("abort", finish, { once: true });
  });
  const elapsedMs = performance.now() - startedAtMs;
  // Let the last answers come back (bounded).
  const deadline = Date.now() + 2_000;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  agent.destroy();
  const cpu = process.cpuUsage(cpuBefore);
  return { requestedRate: options.rate, sent, byStatus, elapsedMs, achievedRate: (sent * 1000) / elapsedMs, latency: summarizeLatencies(latenciesMs), behindTicks, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { url: { type: "string" }, rate: { type: "string", default: "1000" }, users: { type: "string", default: "20000" }, seconds: { type: "string", default: "3600" }, seed: { type: "string", default: "7" } },
  });
  if (values.url === undefined) throw new Error("--url is required");
  const stop = new AbortController();
  process.once("SIGTERM", () => stop.abort());
  process.once("SIGINT", () => stop.abort());
  const result = await runQueryLoad({
    url: values.url,
    rate: Number(values.rate),
    users: Number(values.users),
    seconds: Number(values.seconds),
    seed: Number(values.seed),
    token: process.env.FLUSSO_BENCH_TOKEN,
    signal: stop.signal,
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
