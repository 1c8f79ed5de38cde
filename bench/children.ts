// The child processes a benchmark starts (flusso commands, a query load) and the waits around them:
// every child is SIGKILLed by killChildren() whatever happens, so none outlives its benchmark.
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import type { JetStreamManager } from "@nats-io/jetstream";
import { startNatsServer, type NatsServer } from "../test/natsServer.ts";

const ROOT = resolve(import.meta.dirname, "..");
const live = new Set<ChildProcess>();
/** What a run keeps of a child's stderr (the tail), to explain a failure. */
const STDERR_KEPT = 64 * 1024;

export type Exit = { code: number | null; signal: NodeJS.Signals | null };
export type ChildRun = { child: ChildProcess; exited: Promise<Exit>; stdout(): string; stderr(): string };

/**
 * `node <args>` in the project's folder, its stdout kept whole and the tail of its stderr; `env`: added
 * to this process's; `onStderrLine`: every whole line of stderr as it comes (the tail keeps only the end).
 */
export function spawnNode(args: string[], options: { env?: Record<string, string>; onStderrLine?(line: string): void } = {}): ChildRun {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } });
  live.add(child);
  let stdout = "";
  let stderr = "";
  let partialLine = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEPT);
    if (options.onStderrLine === undefined) return;
    const lines = (partialLine + chunk).split("\n");
    partialLine = lines.pop()!;
    for (const line of lines) options.onStderrLine(line);
  });
  const exited = new Promise<Exit>((done) => {
    child.once("exit", (code, signal) => {
      live.delete(child);
      done({ code, signal });
    });
    child.once("error", (error) => {
      live.delete(child);
      stderr += String(error);
      done({ code: -1, signal: null });
    });
  });
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

/** SIGTERM (flusso checkpoints and exits; the query load prints its figures), then SIGKILL after `graceMs`. */
export async function stopChild(run: ChildRun, graceMs = 10_000): Promise<Exit & { isKilled: boolean }> {
  if (run.child.exitCode !== null || run.child.signalCode !== null) return { ...(await run.exited), isKilled: false };
  run.child.kill("SIGTERM");
  const timer = setTimeout(() => run.child.kill("SIGKILL"), graceMs);
  const exit = await run.exited;
  clearTimeout(timer);
  return { ...exit, isKilled: exit.signal === "SIGKILL" };
}

/** SIGKILLs every child still running: on errors, signals and exit. */
export function killChildren(): void {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** Polls `check` every `pollMs` until it holds or `timeoutMs` has passed; whether it held at the end. */
/**
 * Starts the bench's own nats-server and stops it with every child (SIGKILL) however the bench ends:
 * its end, an error, SIGINT or SIGTERM (then exit 130).
 */
export async function privateNatsServer(): Promise<NatsServer> {
  let server: NatsServer | undefined;
  const stopAll = () => {
    killChildren();
    try {
      if (server?.pid) process.kill(server.pid, "SIGKILL");
    } catch {
      // already stopped
    }
  };
  process.once("SIGINT", () => (stopAll(), process.exit(130)));
  process.once("SIGTERM", () => (stopAll(), process.exit(130)));
  process.once("exit", stopAll);
  server = await startNatsServer();
  return server;
}

export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, pollMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, pollMs));
  }
  return check();
}

/** The stream, emptied: deleted when it exists, then created with `subjects`. */
export async function freshStream(jsm: JetStreamManager, name: string, subjects: string[], duplicateWindowMs?: number): Promise<void> {
  await jsm.streams.delete(name).catch(() => false);
  await jsm.streams.add({ name, subjects, ...(duplicateWindowMs ? { duplicate_window: duplicateWindowMs * 1_000_000 } : {}) });
}
