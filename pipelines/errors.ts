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

/** Formats a path like `windows[0].aggregate.carts` from its segments. */
export function joinPath(base: string, segment: string | number): string {
  if (typeof segment === "number") return `${base}[${segment}]`;
  return base ? `${base}.${segment}` : segment;
}
