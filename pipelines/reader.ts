// Reads values out of a loaded pipeline file, collecting every mistake as a ConfigError that names
// the path of the bad value; each reader returns undefined for a bad value.
import { isAbsolute, resolve } from "node:path";
import { isTooLong, MAX_DURATION_TEXT, parseDurationMs } from "./durations.ts";
import { ConfigError, joinPath, quote } from "./errors.ts";

/** What a name in a list may be made of (a phase, a channel). */
const ENTRY_NAME = /^[A-Za-z0-9_-]+$/;

/** What the pipeline's name and its windows' names may be made of. */
export const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

export type Obj = Record<string, unknown>;

/** Bounds of a duration beyond the global maximum: [ms, as written]. */
export type DurationBounds = { positive?: boolean; atLeast?: readonly [number, string]; atMost?: readonly [number, string] };

/** Collects errors while reading values; each reader returns undefined for a bad value. */
export class Reader {
  readonly errors: ConfigError[] = [];

  constructor(private readonly baseDir: string) {}

  fail(path: string, detail: string): undefined {
    this.errors.push(new ConfigError(path, detail));
    return undefined;
  }

  object(path: string, value: unknown, allowed: readonly string[], required: readonly string[] = []): Obj | undefined {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return this.fail(path, `expected a mapping with ${allowed.join(", ")}, got ${describe(value)}`);
    }
    const obj = value as Obj;
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) this.fail(joinPath(path, key), `unknown field (expected one of ${allowed.join(", ")})`);
    }
    for (const key of required) if (obj[key] === undefined) this.fail(joinPath(path, key), "is required");
    return obj;
  }

  /**
   * A mapping of entries the user names (features, rules, fields...), at least one: its entries,
   * or undefined (error recorded). `what` says what one entry is, e.g. "feature, like a: b / 7.0".
   */
  entries(path: string, value: unknown, what: string): Array<[string, unknown]> | undefined {
    const obj = this.object(path, value, Object.keys((value as Obj) ?? {}));
    if (!obj) return undefined;
    if (Object.keys(obj).length === 0) return this.fail(path, `expected at least one ${what}`);
    return Object.entries(obj);
  }

  /** A mapping with exactly one of `kinds` as its key, e.g. `{ file: {...} }`. */
  oneOf(path: string, value: unknown, kinds: readonly string[]): [string, unknown] | undefined {
    const obj = this.object(path, value, kinds);
    if (!obj) return undefined;
    const keys = Object.keys(obj).filter((k) => kinds.includes(k));
    if (keys.length !== 1) return this.fail(path, `expected exactly one of ${kinds.join(", ")}, got ${keys.length === 0 ? "none" : keys.join(" and ")}`);
    return [keys[0], obj[keys[0]]];
  }

  string(path: string, value: unknown, pattern?: RegExp): string | undefined {
    if (typeof value !== "string" || value === "") return this.fail(path, `expected a non-empty string, got ${describe(value)}`);
    if (pattern && !pattern.test(value)) return this.fail(path, `expected a name of letters, digits, _ and -, got ${JSON.stringify(value)}`);
    return value;
  }

  choice<T extends string>(path: string, value: unknown, choices: readonly T[]): T | undefined {
    if (typeof value === "string" && (choices as readonly string[]).includes(value)) return value as T;
    return this.fail(path, `expected one of ${choices.join(", ")}, got ${describe(value)}`);
  }

  number(path: string, value: unknown, { min = -Infinity, max = Infinity, integer = false } = {}): number | undefined {
    if (typeof value !== "number" || !Number.isFinite(value)) return this.fail(path, `expected a number, got ${describe(value)}`);
    if (integer && !Number.isInteger(value)) return this.fail(path, `expected a whole number, got ${value}`);
    if (value < min || value > max) return this.fail(path, `expected a number from ${min} to ${max}, got ${value}`);
    return value;
  }

  boolean(path: string, value: unknown): boolean | undefined {
    if (typeof value !== "boolean") return this.fail(path, `expected true or false, got ${describe(value)}`);
    return value;
  }

  /**
   * A duration in ms, at most MAX_DURATION_MS. `atLeast` and `atMost` bound it further, each as
   * [ms, the same as written], e.g. [60_000, "1m"].
   */
  duration(path: string, value: unknown, example: string, { positive = false, atLeast, atMost }: DurationBounds = {}): number | undefined {
    const ms = parseDurationMs(value);
    if (isTooLong(value)) return this.fail(path, `expected a duration of at most 100 years (${MAX_DURATION_TEXT}), got ${describe(value)}`);
    if (ms === undefined) return this.fail(path, `expected a duration like "${example}", got ${describe(value)}`);
    if (positive && ms <= 0) return this.fail(path, `expected a duration above zero, got ${describe(value)}`);
    if (atLeast && ms < atLeast[0]) return this.fail(path, `expected at least ${atLeast[1]}, got ${describe(value)}`);
    if (atMost && ms > atMost[0]) return this.fail(path, `expected at most ${atMost[1]}, got ${describe(value)}`);
    return ms;
  }

  path(path: string, value: unknown): string | undefined {
    const text = this.string(path, value);
    if (text === undefined) return undefined;
    return isAbsolute(text) ? text : resolve(this.baseDir, text);
  }

  list(path: string, value: unknown, { nonEmpty = false } = {}): unknown[] | undefined {
    if (!Array.isArray(value)) return this.fail(path, `expected a list, got ${describe(value)}`);
    if (nonEmpty && value.length === 0) return this.fail(path, "expected at least one entry");
    return value;
  }

  /** A non-empty list of distinct names of letters, digits, _ and - (phases, channels); undefined if bad. */
  nameList(path: string, value: unknown): string[] | undefined {
    const list = this.list(path, value, { nonEmpty: true });
    if (!list) return undefined;
    const names: string[] = [];
    list.forEach((item, i) => {
      const name = this.string(joinPath(path, i), item, ENTRY_NAME);
      if (name === undefined) return;
      if (names.includes(name)) this.fail(joinPath(path, i), `"${name}" is listed twice`);
      else names.push(name);
    });
    return names.length === list.length ? names : undefined;
  }

  /** Runs `compile`, turning a ConfigError into a collected error. */
  compiled<T>(compile: () => T): T | undefined {
    try {
      return compile();
    } catch (error) {
      if (error instanceof ConfigError) {
        this.errors.push(error);
        return undefined;
      }
      throw error;
    }
  }
}

export function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return typeof value === "string" ? quote(value) : JSON.stringify(value);
}

