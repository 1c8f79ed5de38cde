// Reads `state:` (where the state dir is, how often it checkpoints, the key it is encrypted with, and
// the heap its users' records and windows may take); the checkpoint interval's default depends on the sinks.
import type { Reader } from "../reader.ts";
import type { SinkSpec } from "./sinks.ts";

export type StateSpec = {
  dir: string;
  checkpointIntervalMs: number;
  /** Read from the environment variable `state.encryptionKeyEnv` names. */
  encryptionKey?: string;
  /** `state.memoryBudget`: the heap past which users' records and keys' windows leave memory (engine/memoryBudget.ts). Default: none. */
  memoryBudgetBytes?: number;
};

/** Bytes per unit of `state.memoryBudget`: binary multiples, as heap sizes are read (1GB = 1024³ bytes). */
const SIZE_UNIT_BYTES: Readonly<Record<string, number>> = { KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };
/** A size as `state.memoryBudget` takes it: a number and a unit, e.g. 512MB, 1.5GB. */
const SIZE_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB)\s*$/;
/** Less than this leaves no room for the job itself; a budget is meant to keep the heap in bounds, not at zero. */
const MIN_MEMORY_BUDGET_BYTES = 1024 ** 2;

/** Bytes of a state encryption key (LMDB's ChaCha8 key). */
const STATE_KEY_BYTES = 32;

/** Between checkpoints by default: each costs a flush and a commit, and recovery replays at most this much. */
const CHECKPOINT_INTERVAL_MS = 10_000;
/**
 * Between checkpoints by default when a sink is NATS: its outputs leave only once the checkpoint
 * that made them has committed, so this is most of their latency (the promise is 500 ms).
 */
const HOLDING_CHECKPOINT_INTERVAL_MS = 100;
/**
 * Between checkpoints by default when the source is live (unbounded): a file sink's lines become
 * visible when their checkpoint commits, so this is how late a tailing reader sees them.
 */
const LIVE_CHECKPOINT_INTERVAL_MS = 1_000;

/** The state settings; `checkpointIntervalMs` is left unset when not given: its default depends on the sinks. */
export function readState(r: Reader, value: unknown, name: string | undefined): (Omit<StateSpec, "checkpointIntervalMs"> & { checkpointIntervalMs?: number }) | undefined {
  const s = value === undefined ? {} : r.object("state", value, ["dir", "checkpointInterval", "encryptionKeyEnv", "memoryBudget"]);
  if (!s) return undefined;
  const dir = s.dir === undefined ? r.path("state.dir", `./state/${name ?? "pipeline"}`) : r.path("state.dir", s.dir);
  const checkpointIntervalMs = s.checkpointInterval === undefined ? undefined : r.duration("state.checkpointInterval", s.checkpointInterval, "2s", { positive: true });
  const encryptionKey = s.encryptionKeyEnv === undefined ? undefined : readStateKey(r, s.encryptionKeyEnv);
  const memoryBudgetBytes = s.memoryBudget === undefined ? undefined : readSize(r, "state.memoryBudget", s.memoryBudget);
  if (dir === undefined || (s.checkpointInterval !== undefined && checkpointIntervalMs === undefined) || encryptionKey === null || memoryBudgetBytes === null) return undefined;
  return { dir, checkpointIntervalMs, ...(encryptionKey === undefined ? {} : { encryptionKey }), ...(memoryBudgetBytes === undefined ? {} : { memoryBudgetBytes }) };
}

/** A size like 512MB or 1GB in bytes; null (and the path failed) otherwise. */
function readSize(r: Reader, path: string, value: unknown): number | null {
  const match = typeof value === "string" ? SIZE_PATTERN.exec(value) : null;
  if (match === null) {
    r.fail(path, `expected a size like 512MB or 1GB, got ${JSON.stringify(value)}`);
    return null;
  }
  const bytes = Math.floor(Number(match[1]) * SIZE_UNIT_BYTES[match[2]]);
  if (bytes < MIN_MEMORY_BUDGET_BYTES) {
    r.fail(path, `expected at least 1MB, got ${JSON.stringify(value)}`);
    return null;
  }
  return bytes;
}

/**
 * The checkpoint interval when `state.checkpointInterval` is not given. Every sink shows outputs only
 * once their checkpoint commits: short with a NATS sink (latency), short enough with a live source
 * that files are seen within a second, long for a bounded input (everything is there at its end).
 */
export function defaultCheckpointIntervalMs(sinks: ReadonlyArray<SinkSpec | undefined>, isLive: boolean): number {
  if (sinks.some((s) => s !== undefined && "nats" in s)) return HOLDING_CHECKPOINT_INTERVAL_MS;
  return isLive ? LIVE_CHECKPOINT_INTERVAL_MS : CHECKPOINT_INTERVAL_MS;
}

/** The state encryption key from the environment variable named at state.encryptionKeyEnv; null if refused. */
function readStateKey(r: Reader, value: unknown): string | null {
  const keyEnv = r.string("state.encryptionKeyEnv", value);
  if (keyEnv === undefined) return null;
  const key = process.env[keyEnv];
  // LMDB's cipher takes exactly 32 bytes: a key of another length is refused rather than padded or cut.
  if (key !== undefined && Buffer.byteLength(key) === STATE_KEY_BYTES) return key;
  r.fail("state.encryptionKeyEnv", `the environment variable ${keyEnv} must hold the state encryption key, exactly ${STATE_KEY_BYTES} bytes (${key === undefined ? "it is not set" : `it has ${Buffer.byteLength(key)}`})`);
  return null;
}
