// Shared pieces of the benchmarks: a seeded PRNG, the keyed event workload, timing and medians,
// a sink that only counts, machine info, and the table the results are printed as.
import { execFileSync } from "node:child_process";
import os from "node:os";
import type { Sink } from "../engine/sinks/sink.ts";
import { mulberry32 } from "../engine/random.ts";

export { mulberry32 };

/** One event of the in-memory workload. */
export type BenchEvent = { user: string; timeMs: number; amount: number };

export type WorkloadOptions = {
  events: number;
  keys: number;
  /** Event time of the first event; times then grow by `stepMs` per event. */
  startMs: number;
  stepMs: number;
  /** Each event time is moved back by up to this much (bounded disorder). */
  disorderMs: number;
  seed: number;
};

export const HOUR_MS = 3_600_000;

/**
 * The workload of benchmarks 1 and 2: 2,000,000 events over 100,000 keys, 5 ms apart in event time
 * (about 2.8 hours in all), each moved back by up to 1 s.
 */
export const ENGINE_WORKLOAD: WorkloadOptions = {
  events: 2_000_000,
  keys: 100_000,
  startMs: 1_700_000_000_000,
  stepMs: 5,
  disorderMs: 1000,
  seed: 42,
};

export function keyedEvents(options: WorkloadOptions): BenchEvent[] {
  const rnd = mulberry32(options.seed);
  const keys = Array.from({ length: options.keys }, (_, i) => `user-${i}`);
  const events = new Array<BenchEvent>(options.events);
  for (let i = 0; i < options.events; i++) {
    events[i] = {
      user: keys[Math.floor(rnd() * options.keys)],
      timeMs: options.startMs + i * options.stepMs - Math.floor(rnd() * options.disorderMs),
      amount: Math.floor(rnd() * 100),
    };
  }
  return events;
}

/** The start of the tumbling window of `sizeMs` holding `timeMs` (epoch-aligned, as the engine's). */
export function windowStartMs(timeMs: number, sizeMs: number): number {
  return timeMs - (((timeMs % sizeMs) + sizeMs) % sizeMs);
}

/** A sink that only counts what it is given. */
export class CountingSink implements Sink {
  readonly description = "counting";
  written = 0;

  async recover(): Promise<void> {}

  write(_value: object): void {
    this.written++;
  }

  async flush(): Promise<number> {
    return this.written;
  }

  async close(): Promise<void> {}
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Milliseconds `fn` takes, by performance.now(). */
export async function timeMs(fn: () => unknown): Promise<number> {
  const startedAtMs = performance.now();
  await fn();
  return performance.now() - startedAtMs;
}

export function gcIfExposed(): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return false;
  gc();
  gc();
  return true;
}

export type MachineInfo = {
  cpuModel: string;
  cores: number;
  totalMemoryBytes: number;
  node: string;
  platform: string;
  date: string;
  /** The commit measured, and whether the working tree differed from it. */
  gitCommit?: string;
  gitDirty?: boolean;
  loadAverage: number[];
};

/** The machine as a table's footer: CPU, cores, memory, Node, load average and the commit measured. */
export function machineLine(machine: MachineInfo): string {
  return (
    `${machine.cpuModel}, ${machine.cores} cores, ${fmt(machine.totalMemoryBytes / 2 ** 30, 0)} GiB, Node ${machine.node}, ` +
    `load ${machine.loadAverage.join(" ")}, commit ${machine.gitCommit?.slice(0, 10) ?? "?"}${machine.gitDirty ? " (dirty)" : ""}`
  );
}

export function machineInfo(cwd: string): MachineInfo {
  const git = (args: string[]) => execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  let gitCommit: string | undefined;
  let gitDirty: boolean | undefined;
  try {
    gitCommit = git(["rev-parse", "HEAD"]);
    gitDirty = git(["status", "--porcelain", "--untracked-files=no"]) !== "";
  } catch {
    // Not a git checkout: the figures stand without it.
  }
  return {
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    totalMemoryBytes: os.totalmem(),
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
    gitCommit,
    gitDirty,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Formats a number with thousands separators and at most `digits` decimals. */
export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return String(value);
  return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** A plain-text table: columns padded to their widest cell; those in `rightAligned` (by index) padded on the left. */
export function table(header: string[], rows: string[][], rightAligned: readonly number[] = []): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((cell, c) => (rightAligned.includes(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** PASS when `value` meets the target, MISS otherwise: a report, never an exception. */
export function verdict(isMet: boolean): "PASS" | "MISS" {
  return isMet ? "PASS" : "MISS";
}
