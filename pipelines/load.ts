// Reads a pipeline file: YAML (syntax errors name their line), then `${VAR}` and `${VAR:-default}`
// replaced from the environment in string values (never in the YAML text, so a value cannot inject
// structure). Every problem, aliases that expand without bound included, is a PipelineInvalid.
import { readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { valueLimitViolation } from "../engine/valueLimits.ts";
import { ConfigError, PipelineInvalid, quote } from "./errors.ts";
import { validatePipeline, type PipelineSpec, type ValidateOptions } from "./validate.ts";

/** Bytes of a pipeline file: the shipped ones are under 10 KB; a megabyte is no hand-written pipeline. */
export const MAX_PIPELINE_BYTES = 1 << 20;

/**
 * Alias nodes the YAML may resolve (yaml's own guard, here explicit): anchors reused a few times
 * are fine, while aliases of aliases ("billion laughs") would expand exponentially.
 */
const MAX_ALIAS_COUNT = 100;

/** `${` inside the default of a `${` ...: three levels is more than a path needs. */
const MAX_VARIABLE_NESTING = 8;

const VARIABLE_START = /\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|\})/y;

/**
 * Reads and validates a pipeline file: the spec `runPipeline` runs. Throws PipelineInvalid naming
 * every bad value. `env`: where `${VAR}` in the file's values is read from (default process.env);
 * relative paths in the file count from its folder.
 */
export function loadPipeline(file: string, env: NodeJS.ProcessEnv = process.env, options: Pick<ValidateOptions, "httpListen"> = {}): PipelineSpec {
  const path = resolve(file);
  return validatePipeline(loadPipelineFile(path, env), path, dirname(path), options);
}

/** A pipeline file's YAML with `${VAR}` replaced, not yet validated. */
export function loadPipelineFile(file: string, env: NodeJS.ProcessEnv = process.env): unknown {
  let text: string;
  try {
    const sizeBytes = statSync(file).size;
    if (sizeBytes > MAX_PIPELINE_BYTES) {
      throw new PipelineInvalid(file, [new ConfigError("", `the pipeline file has ${sizeBytes} bytes, over the limit of ${MAX_PIPELINE_BYTES}`)]);
    }
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (error instanceof PipelineInvalid) throw error;
    throw new PipelineInvalid(file, [new ConfigError("", `cannot read the pipeline file: ${(error as Error).message}`)]);
  }
  return parsePipelineText(text, file, env);
}

export function parsePipelineText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): unknown {
  if (text.length > MAX_PIPELINE_BYTES) {
    throw new PipelineInvalid(file, [new ConfigError("", `the pipeline has ${text.length} characters, over the limit of ${MAX_PIPELINE_BYTES}`)]);
  }
  const lines = new LineCounter();
  let raw: unknown;
  try {
    const document = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lines });
    if (document.errors.length > 0) {
      // The parser goes on after the first error and reports what follows from it too (35 lines for
      // one `${` in a `{ }` map): the first position is the mistake, the rest its echo.
      const first = document.errors.reduce((a, b) => (b.pos[0] < a.pos[0] ? b : a));
      const at = lines.linePos(first.pos[0]);
      const lineText = text.slice(lines.lineStarts[at.line - 1], lines.lineStarts[at.line] ?? text.length);
      const hint = flowVariableHint(lineText);
      throw new PipelineInvalid(file, [
        new ConfigError("", `YAML syntax error at line ${at.line}, column ${at.col}: ${first.message.split("\n")[0]}${hint ? `; ${hint}` : ""}`),
      ]);
    }
    raw = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    if (error instanceof PipelineInvalid) throw error;
    // The yaml library throws (rather than reporting) on aliases past maxAliasCount and on
    // nesting too deep for the stack: a bad file all the same.
    const reason = error instanceof RangeError ? "it nests too deeply" : String((error as Error)?.message ?? error).split("\n")[0];
    throw new PipelineInvalid(file, [new ConfigError("", `YAML cannot be read: ${reason}`)]);
  }
  const tooLarge = valueLimitViolation(raw);
  if (tooLarge !== undefined) throw new PipelineInvalid(file, [new ConfigError("", `the pipeline is ${tooLarge}`)]);
  const missing: ConfigError[] = [];
  const value = substitute(raw, "", env, missing);
  if (missing.length > 0) throw new PipelineInvalid(file, missing);
  return value;
}

/**
 * What to do when a line puts a plain `${...}` inside a flow collection (`{ servers: ${URL} }`): there
 * `{` and `}` are YAML's own, so the value must be quoted. Undefined for any other line.
 */
function flowVariableHint(lineText: string): string | undefined {
  const variableAt = lineText.indexOf("${");
  if (variableAt < 0) return undefined;
  const before = lineText.slice(0, variableAt).replaceAll("${", "");
  const opened = (before.match(/[{[]/g) ?? []).length - (before.match(/[}\]]/g) ?? []).length;
  if (opened <= 0) return undefined;
  const end = closingBrace(lineText, variableAt + 2);
  const value = lineText.slice(variableAt, end < 0 ? undefined : end + 1);
  const key = /([A-Za-z_][\w-]*):\s*$/.exec(lineText.slice(0, variableAt))?.[1];
  return `a plain \${...} cannot stand inside { } or [ ]: quote the value: ${key ? `${key}: ` : ""}"${value}"`;
}

const PROTOTYPE_KEYS = new Set(["__proto__", "constructor", "prototype"]);

function substitute(value: unknown, path: string, env: NodeJS.ProcessEnv, missing: ConfigError[]): unknown {
  if (typeof value === "string") return expand(value, path, env, missing, 0);
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, `${path}[${i}]`, env, missing));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const at = path ? `${path}.${k}` : k;
      // Assigned, "__proto__" would replace the mapping's prototype instead of being a field.
      if (PROTOTYPE_KEYS.has(k)) missing.push(new ConfigError(at, `a key named "${k}" is not allowed`));
      else out[k] = substitute(v, at, env, missing);
    }
    return out;
  }
  return value;
}

/**
 * `text` with each `${NAME}` and `${NAME:-default}` replaced, as a shell does: the default may
 * itself hold `${...}` (expanded only when used), and a variable's value is not expanded again.
 * A `${` not followed by a name is kept as it is; a default without its closing `}` is an error.
 */
function expand(text: string, path: string, env: NodeJS.ProcessEnv, missing: ConfigError[], nesting: number): string {
  let out = "";
  let at = 0;
  for (let start = text.indexOf("${"); start >= 0; start = text.indexOf("${", at)) {
    VARIABLE_START.lastIndex = start;
    const head = VARIABLE_START.exec(text);
    if (head === null) {
      out += text.slice(at, start + 2);
      at = start + 2;
      continue;
    }
    out += text.slice(at, start);
    const [whole, name, form] = head;
    const found = env[name];
    const isSet = found !== undefined && found !== "";
    if (form === "}") {
      if (!isSet) missing.push(new ConfigError(path, `environment variable ${name} is not set and ${whole} has no default`));
      out += isSet ? found : whole;
      at = start + whole.length;
      continue;
    }
    const end = closingBrace(text, start + whole.length);
    if (end < 0) {
      missing.push(new ConfigError(path, `${quote(text.slice(start))} has no closing "}" for its \${${name}:-`));
      return out + text.slice(start);
    }
    const fallback = text.slice(start + whole.length, end);
    if (isSet) out += found;
    else if (nesting >= MAX_VARIABLE_NESTING) missing.push(new ConfigError(path, `\${...} nested more than ${MAX_VARIABLE_NESTING} deep in defaults`));
    else out += expand(fallback, path, env, missing, nesting + 1);
    at = end + 1;
  }
  return out + text.slice(at);
}

/** The index of the `}` closing a default that starts at `from`, counting nested `${`; -1 if none. */
function closingBrace(text: string, from: number): number {
  let depth = 1;
  for (let i = from; i < text.length; i++) {
    if (text[i] === "$" && text[i + 1] === "{") {
      depth++;
      i++;
    } else if (text[i] === "}" && --depth === 0) return i;
  }
  return -1;
}
