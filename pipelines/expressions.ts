// CEL expressions from pipeline files: parsed and type-checked once at load time against the
// declared fields, refused if they reach for anything outside the data (`constructor`, `__proto__`),
// and evaluated as plain functions of an event. Expressions are data: no eval, no Function.
import { Environment } from "@marcbachmann/cel-js";
import { closureFor } from "./celClosures.ts";
import { estimateCost, MAX_EXPRESSION_COST, MAX_EXPRESSION_LENGTH, MAX_TREE_DEPTH, PARSE_LIMITS, treeDepth } from "./celCost.ts";
import { namesNeededIn } from "./celNeeds.ts";
import { literalPatternRefusal, useRe2ForMatches } from "./celRegex.ts";
import { ConfigError, quote } from "./errors.ts";
import { describe } from "./reader.ts";
import { MAX_COLLECTION_ENTRIES } from "../engine/valueLimits.ts";

/** CEL types of the declared fields, e.g. `{ event_type: "string", price: "double" }`. */
export type Variables = Record<string, string>;

/** A compiled expression; a missing optional field makes it undefined rather than throwing. */
export type Compiled = {
  readonly source: string;
  /** The CEL type the checker inferred: bool, double, int, string, dyn, ... */
  readonly type: string;
  evaluate(context: object): unknown;
};

/** How an expression is evaluated; the fast paths are for everything but tests comparing them. */
export type CompileOptions = {
  /** Evaluate with cel-js's interpreter even where a direct read or a closure would do. Default false. */
  isInterpretedOnly?: boolean;
};

type AstNode = { op: string; args: unknown };

const FORBIDDEN_NAME = /^(constructor|prototype|__.*__|__proto__)$/;
const ARITHMETIC = ["+", "-", "*", "/"] as const;

/**
 * Builds the CEL environment for a set of variables, with int/double arithmetic mixed freely,
 * `matches` in RE2 (celRegex.ts) and parse-time limits on the size of an expression.
 */
export function celEnvironment(variables: Variables): Environment {
  const env = new Environment({ homogeneousAggregateLiterals: false, limits: PARSE_LIMITS });
  useRe2ForMatches(env);
  for (const [name, type] of Object.entries(variables)) env.registerVariable(name, type);
  // Event numbers are doubles; without these, `price * 2` would be a type error that surprises everyone.
  const apply = { "+": (a: number, b: number) => a + b, "-": (a: number, b: number) => a - b, "*": (a: number, b: number) => a * b, "/": (a: number, b: number) => a / b };
  for (const op of ARITHMETIC) {
    env.registerOperator(`double ${op} int`, (a: number, b: bigint) => apply[op](a, Number(b)));
    env.registerOperator(`int ${op} double`, (a: bigint, b: number) => apply[op](Number(a), b));
  }
  // Likewise `visits == 3` on a double: ordering comparisons mix already, equality does not.
  env.registerOperator("double == int", (a: number, b: bigint) => a === Number(b));
  return env;
}

/**
 * Parses, guards and type-checks `source`. `expected` lists acceptable result types (dyn always
 * passes the checker and is checked at run time by the caller).
 */
export function compileExpression(env: Environment, source: unknown, path: string, expected?: string[], options: CompileOptions = {}): Compiled {
  if (typeof source !== "string" || source.trim() === "") {
    throw new ConfigError(path, `expected a CEL expression, got ${describe(source)}`);
  }
  if (source.length > MAX_EXPRESSION_LENGTH) {
    throw new ConfigError(path, `the expression ${quote(source)} is ${source.length} characters long, over the limit of ${MAX_EXPRESSION_LENGTH}`);
  }
  let parsed: ReturnType<Environment["parse"]>;
  try {
    parsed = env.parse(source);
  } catch (error) {
    throw new ConfigError(path, `CEL syntax error in ${quote(source)}: ${firstLine(error)}`);
  }
  // Before any walk that recurses (the checks below, cel-js's checker): a deep tree would overflow it.
  const depth = treeDepth(parsed.ast);
  if (depth > MAX_TREE_DEPTH) {
    throw new ConfigError(path, `${quote(source)} nests more than ${MAX_TREE_DEPTH} operations deep (a chain like a + b + c nests one level per operator): split it`);
  }
  const forbidden = findForbiddenName(parsed.ast as AstNode);
  if (forbidden !== undefined) {
    throw new ConfigError(path, `${quote(source)} reaches outside the event through ${quote(forbidden)}, which is not allowed`);
  }
  const refusedPattern = literalPatternRefusal(parsed.ast);
  if (refusedPattern !== undefined) throw new ConfigError(path, `in ${quote(source)}, ${refusedPattern}`);
  // Checked on the parsed tree itself: its nodes keep their types, which the cost estimate reads.
  const checked = parsed.check();
  if (!checked.valid) {
    throw new ConfigError(path, `CEL type error in ${quote(source)}: ${firstLine(checked.error)}`);
  }
  const type = String(checked.type);
  if (expected && type !== "dyn" && !expected.includes(type)) {
    throw new ConfigError(path, `${quote(source)} is of type ${type}, expected ${expected.join(" or ")}`);
  }
  const cost = estimateCost(parsed.ast);
  if (cost > MAX_EXPRESSION_COST) {
    throw new ConfigError(
      path,
      `${quote(source)} may take ${cost} steps per evaluation, over the limit of ${MAX_EXPRESSION_COST} (a comprehension such as map() or exists() takes its list's size times its body's steps, and a list of the event counts as ${MAX_COLLECTION_ENTRIES} entries)`,
    );
  }
  const interpreted = evaluator(parsed, namesNeededIn(parsed.ast, false));
  if (options.isInterpretedOnly) return { source, type, evaluate: interpreted };
  // The interpreter takes 100-300 ns an evaluation (over 1 us when a missing value throws inside
  // it); a closure of the common subset (celClosures.ts) takes 40-100 ns, most of it reading variables.
  return { source, type, evaluate: directRead(parsed.ast as AstNode) ?? closureFor(parsed.ast, env, interpreted) ?? interpreted };
}

/**
 * The two commonest shapes, a bare name and `name == "text"`, read straight off the context: the
 * same result as CEL (a missing value is no value), without the evaluator (~100 ns) on hot paths.
 */
function directRead(ast: AstNode): ((context: object) => unknown) | undefined {
  if (ast.op === "id" && typeof ast.args === "string") {
    const name = ast.args;
    return (context) => (context as Record<string, unknown>)[name];
  }
  if (ast.op !== "==" || !Array.isArray(ast.args)) return undefined;
  const [left, right] = ast.args as AstNode[];
  if (left?.op !== "id" || typeof left.args !== "string" || right?.op !== "value" || typeof right.args !== "string") return undefined;
  const name = left.args;
  const text = right.args;
  return (context) => {
    const value = (context as Record<string, unknown>)[name];
    return value === undefined ? undefined : value === text;
  };
}

function evaluator(parsed: (context: object) => unknown, needs: readonly string[]): (context: object) => unknown {
  return (context) => {
    // Without one of these the evaluation can only fail: skip it (same result, no throw).
    for (let i = 0; i < needs.length; i++) if ((context as Record<string, unknown>)[needs[i]] === undefined) return undefined;
    const stackTraceLimit = Error.stackTraceLimit;
    // A failure still throws inside cel-js (a missing map key, say); without a stack it is cheap.
    Error.stackTraceLimit = 0;
    try {
      return parsed(context);
    } catch {
      // An absent optional field (or a failing function on it) has no value: the caller skips it.
      return undefined;
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
  };
}

/** A field name or member name that leads out of the data, if the expression has one. */
function findForbiddenName(node: AstNode): string | undefined {
  if (node === null || typeof node !== "object") return undefined;
  const { op, args } = node;
  if (op === "id" && typeof args === "string" && FORBIDDEN_NAME.test(args)) return args;
  if ((op === "." || op === ".?") && Array.isArray(args) && typeof args[1] === "string" && FORBIDDEN_NAME.test(args[1])) return args[1];
  if (op === "value" && typeof args === "string" && FORBIDDEN_NAME.test(args)) return args;
  if (Array.isArray(args)) {
    for (const arg of args) {
      const found = Array.isArray(arg) ? arg.map((a) => findForbiddenName(a as AstNode)).find((x) => x) : findForbiddenName(arg as AstNode);
      if (found) return found;
    }
  }
  return undefined;
}

/** The first line of a library's message, cut short: it may quote a long identifier of the expression. */
function firstLine(error: unknown): string {
  const line = String((error as Error)?.message ?? error).split("\n")[0];
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}
