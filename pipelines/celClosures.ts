// CEL expressions of a common subset compiled to plain JavaScript closures, built by walking the
// parsed tree once: the results of cel-js's interpreter (expressions.ts) at a fraction of its cost
// per event. Anything outside the subset gets no closure and stays with the interpreter.
import type { Environment } from "@marcbachmann/cel-js";

/** An expression's value for one context: what `compileExpression(...).evaluate` returns. */
export type Evaluate = (context: object) => unknown;

/** The variables an expression reads, as the interpreter sees them: the context's properties. */
type Vars = Record<string, unknown>;

/**
 * A compiled expression or part of one. undefined stands for a CEL error (a missing or mistyped
 * variable): no value of the subset is undefined, and the interpreter's caller turns errors into it.
 */
type Closure = (vars: Vars) => unknown;

/** The types parts compute with. Every part's value has its type's JS shape: number, bigint, ... */
type Scalar = "double" | "int" | "string" | "bool";

/** A compiled part; `constant` is its value when it has the same one for every context. */
type Part = { type: Scalar; run: Closure; constant?: unknown };

/** What `typeof` says of a value of each type. */
const JS_TYPE: Record<Scalar, string> = { double: "number", int: "bigint", string: "string", bool: "boolean" };

/** What the parser's nodes look like, as far as this walk reads them. */
type Node = { op: string; args: unknown; meta?: { macro?: unknown } };

const RELATIONAL = new Set(["==", "!=", "<", "<=", ">", ">="]);
const ARITHMETIC = new Set(["+", "-", "*", "/"]);
const STRING_TESTS = new Map<string, (text: string, part: string) => boolean>([
  ["startsWith", (text, part) => text.startsWith(part)],
  ["endsWith", (text, part) => text.endsWith(part)],
  ["contains", (text, part) => text.includes(part)],
]);
const ORDER: Record<string, (a: any, b: any) => boolean> = {
  "<": (a, b) => a < b,
  "<=": (a, b) => a <= b,
  ">": (a, b) => a > b,
  ">=": (a, b) => a >= b,
};
const APPLY: Record<string, (a: any, b: any) => unknown> = {
  "+": (a, b) => a + b,
  "-": (a, b) => a - b,
  "*": (a, b) => a * b,
  "/": (a, b) => a / b,
};

/**
 * A closure computing what the interpreter `interpreted` computes for the expression `ast`, or
 * undefined if `ast` uses anything outside the subset:
 * - variables of type double, int, string, bool; literals of those types;
 * - `-` and `!`; `+ - * /` on doubles (an int on the right as celEnvironment mixes it), `+` on strings;
 * - `== != < <= > >=` on two of a type, or a double and an int; `&&`, `||`, `?:`;
 * - `x in [literals]`; `startsWith`, `endsWith`, `contains` and `size` of strings;
 * - as the whole expression only: a variable of type map or list, or a field of a map variable.
 * `env` must be the environment `ast` was type-checked in (one made by celEnvironment).
 */
export function closureFor(ast: unknown, env: Environment, interpreted: Evaluate): Evaluate | undefined {
  const whole = wholeExpression(ast as Node, env, interpreted);
  if (whole === undefined) return undefined;
  // No check first of the names the interpreter needs (celNeeds): here a missing name fails every
  // operation on it as in cel-js, and each extra read costs ~20 ns on a behaviour stage's variables.
  return (context) => {
    // A Map or a non-object is read differently by cel-js: leave such contexts to it.
    if (typeof context !== "object" || context === null || context instanceof Map) return interpreted(context);
    return whole(context as Vars);
  };
}

/** The whole expression, which may also be of a type parts never have (a map, a list, dyn). */
function wholeExpression(node: Node, env: Environment, interpreted: Evaluate): Closure | undefined {
  if (node.op === "id" && typeof node.args === "string") {
    const type = declaredType(env, node.args);
    if (type === "map" || type === "list") return collectionVariable(node.args, type);
  }
  if (node.op === ".") {
    const [left, field] = node.args as [Node, unknown];
    if (left.op === "id" && typeof left.args === "string" && typeof field === "string" && declaredType(env, left.args) === "map") {
      return mapField(left.args, field, interpreted);
    }
    return undefined;
  }
  const part = compile(node, env);
  if (part === undefined) return undefined;
  const value = part.constant;
  return value === undefined ? part.run : () => value;
}

/** The part for `node`, or undefined if it is outside the subset. */
function compile(node: Node, env: Environment): Part | undefined {
  const { op, args } = node;
  if (op === "value") return literal(args);
  if (op === "id") return typeof args === "string" ? variable(args, env) : undefined;
  if (op === "!_" || op === "-_") return unary(op, compile(args as Node, env));
  if (op === "&&" || op === "||") return logical(op, compileAll(args as Node[], env));
  if (op === "?:") return conditional(compileAll(args as Node[], env));
  if (RELATIONAL.has(op)) return relational(op, compileAll(args as Node[], env));
  if (ARITHMETIC.has(op)) return arithmetic(op, compileAll(args as Node[], env));
  if (op === "in") return membership(args as [Node, Node], env);
  if (node.meta?.macro !== undefined) return undefined;
  if (op === "rcall") return method(args as [string, Node, Node[]], env);
  if (op === "call") return sizeCall(args as [string, Node[]], env);
  return undefined;
}

/** The parts for `nodes`, or undefined if any is outside the subset. */
function compileAll(nodes: readonly Node[], env: Environment): Part[] | undefined {
  const parts: Part[] = [];
  for (const node of nodes) {
    const part = compile(node, env);
    if (part === undefined) return undefined;
    parts.push(part);
  }
  return parts;
}

function literal(value: unknown): Part | undefined {
  const type = scalarTypeOf(value);
  return type === undefined ? undefined : constant(type, value);
}

function constant(type: Scalar, value: unknown): Part {
  return { type, run: () => value, constant: value };
}

/** The scalar type of a literal; null, bytes and uint literals are outside the subset. */
function scalarTypeOf(value: unknown): Scalar | undefined {
  switch (typeof value) {
    case "number":
      return "double";
    case "bigint":
      return "int";
    case "string":
      return "string";
    case "boolean":
      return "bool";
    default:
      return undefined;
  }
}

/** A read that, like cel-js, fails on a value missing or not of the declared type. */
function variable(name: string, env: Environment): Part | undefined {
  const type = declaredType(env, name);
  if (type !== "double" && type !== "int" && type !== "string" && type !== "bool") return undefined;
  const jsType = JS_TYPE[type];
  return {
    type,
    run: (vars) => {
      const value = vars[name];
      return typeof value === jsType ? value : undefined;
    },
  };
}

/**
 * The CEL type `name` is declared with in `env` ("double", "map", ...), or undefined if it is not a
 * variable. A constant (the type names `int`, `string`, ...) has its value in `env`, not the context:
 * it alone evaluates without one.
 */
function declaredType(env: Environment, name: string): string | undefined {
  const checked = env.check(name);
  if (!checked.valid) return undefined;
  try {
    env.evaluate(name, Object.create(null));
    return undefined;
  } catch {
    return String(checked.type);
  }
}

/** A map or list variable as the whole expression: its value if cel-js takes it for one. */
function collectionVariable(name: string, type: "map" | "list"): Closure {
  const isOfType = type === "list" ? isCelList : isCelMap;
  return (vars) => {
    const value = vars[name];
    return isOfType(value) ? value : undefined;
  };
}

/**
 * `map.field` as the whole expression: the field's value, or undefined where cel-js fails (no such
 * key, or a value it has no type for). Objects of other classes depend on the types registered in
 * the environment: those are left to `interpreted`.
 */
function mapField(name: string, field: string, interpreted: Evaluate): Closure {
  return (vars) => {
    const map = vars[name];
    if (!isCelMap(map)) return undefined;
    const value = map instanceof Map ? map.get(field) : Object.hasOwn(map, field) ? (map as Vars)[field] : undefined;
    switch (typeof value) {
      case "string":
      case "number":
      case "bigint":
      case "boolean":
        return value;
      case "object":
        return value === null || isCelMap(value) || isCelList(value) ? value : interpreted(vars);
      default:
        return undefined;
    }
  };
}

/** What cel-js takes for a map: a plain object (with or without a prototype) or a Map. */
function isCelMap(value: unknown): value is object {
  if (typeof value !== "object" || value === null) return false;
  const constructor = value.constructor;
  return constructor === undefined || constructor === Object || constructor === Map;
}

/** What cel-js takes for a list: an Array or a Set. */
function isCelList(value: unknown): boolean {
  const constructor = (value as { constructor?: unknown } | null | undefined)?.constructor;
  return constructor === Array || constructor === Set;
}

/** `-` of a double or an int, `!` of a bool: none can fail on a value of its type. */
function unary(op: "!_" | "-_", operand: Part | undefined): Part | undefined {
  if (operand === undefined) return undefined;
  if (op === "!_") return operand.type === "bool" ? strict1("bool", operand, (a: boolean) => !a) : undefined;
  return operand.type === "double" || operand.type === "int" ? strict1(operand.type, operand, (a: number) => -a) : undefined;
}

/**
 * `&&` and `||` as CEL has them, commutative over errors: `false && error` and `error && false`
 * are false, `true || error` and `error || true` true; any other error stays an error.
 */
function logical(op: "&&" | "||", parts: Part[] | undefined): Part | undefined {
  if (parts === undefined || parts.some((part) => part.type !== "bool")) return undefined;
  const [left, right] = parts.map((part) => part.run);
  const decisive = op === "||";
  return {
    type: "bool",
    run: (vars) => {
      const a = left(vars);
      if (a === decisive) return decisive;
      const b = right(vars);
      if (a === !decisive) return b;
      return b === decisive ? decisive : undefined;
    },
  };
}

/** `c ? a : b`: only the branch taken is evaluated, so only its error counts. */
function conditional(parts: Part[] | undefined): Part | undefined {
  if (parts === undefined) return undefined;
  const [condition, ifTrue, ifFalse] = parts;
  if (condition.type !== "bool" || ifTrue.type !== ifFalse.type) return undefined;
  const [test, a, b] = parts.map((part) => part.run);
  return {
    type: ifTrue.type,
    run: (vars) => {
      const c = test(vars);
      return c === true ? a(vars) : c === false ? b(vars) : undefined;
    },
  };
}

/**
 * Equality and ordering of two values of one type, or of a double and an int. celEnvironment's
 * `double == int` compares with the int made a double; cel-js orders a double and an int as JS does.
 */
function relational(op: string, parts: Part[] | undefined): Part | undefined {
  if (parts === undefined) return undefined;
  const [left, right] = parts;
  const isMixed = isNumber(left) && isNumber(right) && left.type !== right.type;
  if (left.type !== right.type && !isMixed) return undefined;
  if (op === "==" || op === "!=") {
    const isEqual = op === "==";
    if (!isMixed) return strict2(left, right, (a, b) => (a === b) === isEqual);
    return left.type === "double"
      ? strict2(left, right, (a: number, b: bigint) => (a === Number(b)) === isEqual)
      : strict2(left, right, (a: bigint, b: number) => (b === Number(a)) === isEqual);
  }
  return strict2(left, right, ORDER[op]);
}

/**
 * `+ - * /` on doubles (IEEE: 1.0 / 0.0 is Infinity, no error) and `+` on strings. A double with an
 * int on its right is celEnvironment's mixed arithmetic, the int made a double. An int on the left
 * is not: cel-js types `1 + x` as an int holding a double, and int arithmetic can overflow.
 */
function arithmetic(op: string, parts: Part[] | undefined): Part | undefined {
  if (parts === undefined) return undefined;
  const [left, right] = parts;
  const apply = APPLY[op];
  if (left.type === "string" && right.type === "string" && op === "+") return strict2(left, right, apply, "string");
  if (left.type !== "double" || !isNumber(right)) return undefined;
  return strict2(left, right.type === "int" ? asDouble(right) : right, apply, "double");
}

/** An int part's value as a double, as celEnvironment's mixed operators take it. */
function asDouble(part: Part): Part {
  return strict1("double", part, (a: bigint) => Number(a));
}

/** `x in [literals]`: CEL equality of x with each element, the numbers compared across int and double. */
function membership([needle, haystack]: [Node, Node], env: Environment): Part | undefined {
  const part = compile(needle, env);
  if (part === undefined || haystack.op !== "list") return undefined;
  const items = compileAll(haystack.args as Node[], env);
  if (items === undefined || items.some((item) => item.constant === undefined)) return undefined;
  const values = items.map((item) => item.constant);
  if (part.type === "string" || part.type === "bool") {
    // Only the same string or bool is equal to one, and a Set finds it (no NaN or -0 to mind).
    const set = new Set(values);
    return strict1("bool", part, (a) => set.has(a));
  }
  return strict1("bool", part, (a) => values.some((value) => celNumberEquals(a as number | bigint, value)));
}

/** cel-js's equality of a number (double or int) with a literal: exact across int and double. */
function celNumberEquals(a: number | bigint, b: unknown): boolean {
  if (a === b) return true;
  // eslint-disable-next-line eqeqeq -- a bigint and a number compare by value with ==, as cel-js does
  return (typeof b === "number" || typeof b === "bigint") && typeof a !== typeof b && a == b;
}

/** `text.startsWith(part)`, `endsWith`, `contains`, and `text.size()`. */
function method([name, receiver, args]: [string, Node, Node[]], env: Environment): Part | undefined {
  const parts = compileAll([receiver, ...args], env);
  if (parts === undefined || parts.some((part) => part.type !== "string")) return undefined;
  if (name === "size" && parts.length === 1) return strict1("int", parts[0], codePointCount);
  const test = STRING_TESTS.get(name);
  return test !== undefined && parts.length === 2 ? strict2(parts[0], parts[1], test, "bool") : undefined;
}

/** `size(text)`. */
function sizeCall([name, args]: [string, Node[]], env: Environment): Part | undefined {
  const parts = name === "size" ? compileAll(args, env) : undefined;
  if (parts?.length !== 1 || parts[0].type !== "string") return undefined;
  return strict1("int", parts[0], codePointCount);
}

/** CEL's size of a string: its code points, as an int. */
function codePointCount(text: string): bigint {
  let count = 0;
  for (const _ of text) count++;
  return BigInt(count);
}

function isNumber(part: Part): boolean {
  return part.type === "double" || part.type === "int";
}

/** A strict one-operand operation: the operand's error is the result's; constants fold. */
function strict1(type: Scalar, operand: Part, apply: (a: any) => unknown): Part {
  if (operand.constant !== undefined) return constant(type, apply(operand.constant));
  const run = operand.run;
  return {
    type,
    run: (vars) => {
      const a = run(vars);
      return a === undefined ? undefined : apply(a);
    },
  };
}

/** A strict two-operand operation (a bool unless `type` says otherwise); constants fold. */
function strict2(left: Part, right: Part, apply: (a: any, b: any) => unknown, type: Scalar = "bool"): Part {
  const a = left.constant;
  const b = right.constant;
  if (a !== undefined && b !== undefined) return constant(type, apply(a, b));
  const runLeft = left.run;
  const runRight = right.run;
  if (b !== undefined) {
    return {
      type,
      run: (vars) => {
        const x = runLeft(vars);
        return x === undefined ? undefined : apply(x, b);
      },
    };
  }
  if (a !== undefined) {
    return {
      type,
      run: (vars) => {
        const y = runRight(vars);
        return y === undefined ? undefined : apply(a, y);
      },
    };
  }
  return {
    type,
    run: (vars) => {
      const x = runLeft(vars);
      if (x === undefined) return undefined;
      const y = runRight(vars);
      return y === undefined ? undefined : apply(x, y);
    },
  };
}
