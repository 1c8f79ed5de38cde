// The state dir as a place only one job may use at a time: an exclusive lock the operating system
// releases when the holding process dies, a marker saying flusso made the dir, and a reset that
// deletes only what flusso wrote there.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { StateDirForeign, StateDirLocked } from "./errors.ts";

/** The file that marks a dir as flusso's: only such a dir (or an empty one) is used, or reset. */
export const STATE_DIR_MARKER = "FLUSSO_STATE";
/** What LMDB writes in the dir. */
const STORE_FILES = ["data.mdb", "lock.mdb"];
/** The pid of the process holding the lock, for a second process to name it when the holder is too busy to answer. */
const HOLDER_FILE = "holder.pid";
const MARKER_TEXT = "This directory holds a flusso job's state (LMDB). `flusso run --reset` deletes what is in it.\n";

/** How long a second process waits for the holder to say its pid before reading it from the dir. */
const HOLDER_REPLY_MS = 300;

export type StateDirLock = { readonly dir: string; release(): Promise<void> };

/**
 * Takes the state dir for this process:
 * 1. creates it if missing; refuses a dir that holds files flusso did not write;
 * 2. takes the lock, or fails naming the process that holds it;
 * 3. with `reset`, deletes the state flusso wrote (only under the lock, so never under a running job);
 * 4. marks the dir as flusso's.
 *
 * The lock is a listening socket in Linux's abstract namespace, named after the dir's device and
 * inode: the kernel frees it the moment its process ends, however it ends, so a lock left by a dead
 * process never blocks, and a second process learns the holder's pid by connecting. Limits: Linux
 * only, and processes in different network namespaces (containers) do not see each other's locks.
 */
export async function lockStateDir(dir: string, { reset = false }: { reset?: boolean } = {}): Promise<StateDirLock> {
  // 1.
  mkdirSync(dir, { recursive: true });
  const foreign = readdirSync(dir).filter((f) => f !== STATE_DIR_MARKER && f !== HOLDER_FILE && !STORE_FILES.includes(f));
  if (foreign.length > 0 && !existsSync(join(dir, STATE_DIR_MARKER))) throw new StateDirForeign(dir, foreign);
  // 2.
  const { dev, ino } = statSync(dir);
  const name = `\0flusso-state-${createHash("sha256").update(`${dev}:${ino}`).digest("hex").slice(0, 32)}`;
  const server = await listenOrHolder(name, dir);
  writeFileSync(join(dir, HOLDER_FILE), `${process.pid}\n`);
  // 3. The dir itself stays: its inode names the lock.
  if (reset) removeStoreFiles(dir);
  // 4.
  if (!existsSync(join(dir, STATE_DIR_MARKER))) writeFileSync(join(dir, STATE_DIR_MARKER), MARKER_TEXT);
  return {
    dir,
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Deletes the state LMDB keeps in a dir, and only that: the caller holds the dir's lock. */
export function removeStoreFiles(dir: string): void {
  for (const file of STORE_FILES) rmSync(join(dir, file), { force: true });
}

async function listenOrHolder(name: string, dir: string): Promise<Server> {
  const server = createServer((socket) => {
    // A process asking who holds the lock may be gone before the answer is written (EPIPE): its loss.
    socket.on("error", () => undefined);
    socket.end(JSON.stringify({ pid: process.pid }));
  });
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    server.once("error", resolve);
    server.listen(name, () => resolve(undefined));
  });
  if (error === undefined) {
    // The lock must not keep a finished process alive.
    server.unref();
    return server;
  }
  if (error.code !== "EADDRINUSE") throw error;
  throw new StateDirLocked(dir, (await holderPid(name)) ?? pidInFile(join(dir, HOLDER_FILE)));
}

function pidInFile(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pid the holder of the lock says it has; undefined if it does not answer in time (busy). */
function holderPid(name: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = connect(name);
    let reply = "";
    const done = (pid: number | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(undefined), HOLDER_REPLY_MS);
    socket.on("data", (chunk) => (reply += chunk));
    socket.on("end", () => {
      const pid = Number(/"pid":(\d+)/.exec(reply)?.[1]);
      done(Number.isInteger(pid) ? pid : undefined);
    });
    socket.on("error", () => done(undefined));
  });
}
