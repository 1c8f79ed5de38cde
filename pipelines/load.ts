// Reads a pipeline file: YAML (syntax errors name their line), then `${VAR}` and `${VAR:-default}`
// replaced from the environment in string values (never in the YAML text, so a value cannot inject
// structure).
import { readFileSync } from "node:fs";
import { LineCounter, parseDocument } from "yaml";
import { ConfigError, PipelineInvalid } from "./errors.ts";

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function loadPipelineFile(file: string, env: NodeJS.ProcessEnv = process.env): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new PipelineInvalid(file, [new ConfigError("", `cannot read the pipeline file: ${(error as Error).message}`)]);
  }
  return parsePipelineText(text, file, env);
}

export function parsePipelineText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): unknown {
  const lines = new LineCounter();
  const document = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lines });
  if (document.errors.length > 0) {
    throw new PipelineInvalid(
      file,
      document.errors.map((e) => {
        const at = lines.linePos(e.pos[0]);
        return new ConfigError("", `YAML syntax error at line ${at.line}, column ${at.col}: ${e.message.split("\n")[0]}`);
      }),
    );
  }
  const missing: ConfigError[] = [];
  const value = substitute(document.toJS(), "", env, missing);
  if (missing.length > 0) throw new PipelineInvalid(file, missing);
  return value;
}

const PROTOTYPE_KEYS = new Set(["__proto__", "constructor", "prototype"]);

function substitute(value: unknown, path: string, env: NodeJS.ProcessEnv, missing: ConfigError[]): unknown {
  if (typeof value === "string") {
    return value.replace(VARIABLE, (whole, name: string, fallback: string | undefined) => {
      const found = env[name];
      if (found !== undefined && found !== "") return found;
      if (fallback !== undefined) return fallback;
      missing.push(new ConfigError(path, `environment variable ${name} is not set and ${whole} has no default`));
      return whole;
    });
  }
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
