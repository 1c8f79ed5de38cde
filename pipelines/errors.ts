// Errors of pipeline files: each names the path of the bad value and what was expected.

/** One bad value in a pipeline file, e.g. `windows[0].size: expected a duration like "15m", got "fast"`. */
export class ConfigError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(path ? `${path}: ${detail}` : detail);
    this.name = "ConfigError";
  }
}

/** Every bad value found in one pipeline file; the job does not start. */
export class PipelineInvalid extends Error {
  constructor(
    readonly file: string,
    readonly errors: ConfigError[],
  ) {
    super(`${file}: invalid pipeline\n${errors.map((e) => `  ${e.message}`).join("\n")}`);
    this.name = "PipelineInvalid";
  }
}

/** The pseudonymisation key is missing or too short; says which variable and what is wrong. */
export class PseudonymKeyInvalid extends Error {
  constructor(
    readonly source: string,
    readonly detail: string,
  ) {
    super(`${source}: ${detail}`);
    this.name = "PseudonymKeyInvalid";
  }
}

/** Formats a path like `windows[0].aggregate.carts` from its segments. */
export function joinPath(base: string, segment: string | number): string {
  if (typeof segment === "number") return `${base}[${segment}]`;
  return base ? `${base}.${segment}` : segment;
}

/** Characters of a value or an expression an error message quotes at most. */
const QUOTED_CHARS = 120;

/**
 * `text` as a JSON string for an error message, cut to its first ~120 characters: a message names
 * the bad value, it does not repeat a value of megabytes.
 */
export function quote(text: string): string {
  if (text.length <= QUOTED_CHARS) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, QUOTED_CHARS - 3))}... (${text.length} characters)`;
}

/** `--reset-stage` names no stage or window of the pipeline (or one of each): nothing ran. */
export class ResetStageUnknown extends Error {
  constructor(
    readonly stage: string,
    readonly detail: string,
    readonly known: readonly string[],
  ) {
    super(`--reset-stage ${stage}: ${detail}; ${known.length === 0 ? "it has none" : `its stages and windows are ${known.join(", ")}`}`);
    this.name = "ResetStageUnknown";
  }
}
