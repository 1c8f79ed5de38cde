// CEL closures: the shipped pipelines' expressions all get one, and a closure returns what cel-js's
// interpreter returns, for generated expressions of the subset and for the edge cases by hand.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Environment } from "@marcbachmann/cel-js";
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { closureFor, type Evaluate } from "../../pipelines/celClosures.ts";
import { loadPipeline } from "../../pipelines/load.ts";
import { celEnvironment, compileExpression } from "../../pipelines/expressions.ts";
import { PROJECT_ROOT } from "./pipelineFiles.ts";

/** Every expression the pipeline reader compiles, with the environment it was checked in. */
const compiledByReader = vi.hoisted(() => [] as Array<{ env: unknown; source: unknown }>);

vi.mock("../../pipelines/expressions.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../pipelines/expressions.ts")>();
  return {
    ...real,
    compileExpression: (...args: Parameters<typeof real.compileExpression>) => {
      compiledByReader.push({ env: args[0], source: args[1] });
      return real.compileExpression(...args);
    },
  };
});

const VARIABLES = { d1: "double", d2: "double", i: "int", s1: "string", s2: "string", b1: "bool", b2: "bool", m: "map", l: "list" };
const env = celEnvironment(VARIABLES);

/** The interpreter's evaluation of `source` and the closure's, if it gets one. */
function bothWays(source: string, inEnv: Environment = env): { interpreted: Evaluate; closure: Evaluate | undefined } {
  const interpreted = compileExpression(inEnv, source, "test", undefined, { isInterpretedOnly: true }).evaluate;
  return { interpreted, closure: closureFor(inEnv.parse(source).ast, inEnv, interpreted) };
}

/** Asserts that `source` gets a closure and that it agrees with the interpreter on each context. */
function expectSameResults(source: string, contexts: object[]): unknown[] {
  const { interpreted, closure } = bothWays(source);
  expect(closure, `${source} gets a closure`).toBeDefined();
  return contexts.map((context) => {
    const expected = interpreted(context);
    const actual = closure!(context);
    expect(actual, `${source} with ${describeContext(context)}`).toBe(expected);
    return actual;
  });
}

function describeContext(context: object): string {
  return JSON.stringify(context, (_, v) => (typeof v === "bigint" ? `${v}n` : typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
}

describe("the shipped pipelines", () => {
  const files = readdirSync(join(PROJECT_ROOT, "config")).filter((file) => file.endsWith(".yaml"));
  /** Outside the subset: a call to a function the pipeline registers. */
  const INTERPRETED = ['lead_score > quantile("lead_score", 0.9)'];

  it.each(files)("compiles every expression of %s to a closure", (file) => {
    compiledByReader.length = 0;
    loadPipeline(join(PROJECT_ROOT, "config", file), {});
    expect(compiledByReader.length).toBeGreaterThan(0);
    for (const { env: readerEnv, source } of compiledByReader) {
      const pipelineEnv = readerEnv as Environment;
      const closure = closureFor(pipelineEnv.parse(source as string).ast, pipelineEnv, () => undefined);
      expect(closure === undefined, `${String(source)} is interpreted`).toBe(INTERPRETED.includes(source as string));
    }
  });
});

describe("closures of generated expressions", () => {
  /** An expression of a type, as CEL text: every compound one in parentheses. */
  type Arbitraries = { double: string; int: string; string: string; bool: string };
  const op = (...ops: string[]) => fc.constantFrom(...ops);
  const DOUBLE_LITERALS = ["0.0", "1.0", "2.5", "0.1", "7.0", "120.0", "1e308", "5e-324"];
  const INT_LITERALS = ["0", "1", "3", "9007199254740993", "9223372036854775807"];
  const STRING_LITERALS = ['""', '"a"', '"ab"', '"B"', '"/blog"', '"é"', '"😀"'];

  const expression = fc.letrec<Arbitraries>((tie) => ({
    double: fc.oneof(
      { depthSize: "small", maxDepth: 4, depthIdentifier: "cel", withCrossShrink: true },
      fc.constantFrom("d1", "d2", ...DOUBLE_LITERALS),
      fc.tuple(tie("double"), op("+", "-", "*", "/"), fc.oneof(tie("double"), tie("int"))).map(([a, o, b]) => `(${a} ${o} ${b})`),
      tie("double").map((a) => `(-${a})`),
      fc.tuple(tie("bool"), tie("double"), tie("double")).map(([c, a, b]) => `(${c} ? ${a} : ${b})`),
    ),
    int: fc.oneof(
      { depthSize: "small", maxDepth: 4, depthIdentifier: "cel" },
      fc.constantFrom("i", ...INT_LITERALS),
      tie("string").map((s) => `size(${s})`),
      tie("string").map((s) => `${s}.size()`),
      tie("int").map((a) => `(-${a})`),
    ),
    string: fc.oneof(
      { depthSize: "small", maxDepth: 4, depthIdentifier: "cel" },
      fc.constantFrom("s1", "s2", ...STRING_LITERALS),
      fc.tuple(tie("string"), tie("string")).map(([a, b]) => `(${a} + ${b})`),
      fc.tuple(tie("bool"), tie("string"), tie("string")).map(([c, a, b]) => `(${c} ? ${a} : ${b})`),
    ),
    bool: fc.oneof(
      { depthSize: "small", maxDepth: 4, depthIdentifier: "cel", withCrossShrink: true },
      fc.constantFrom("b1", "b2", "true", "false"),
      fc.tuple(fc.oneof(tie("double"), tie("int")), op("==", "!=", "<", "<=", ">", ">="), fc.oneof(tie("double"), tie("int"))).map(([a, o, b]) => `(${a} ${o} ${b})`),
      fc.tuple(tie("string"), op("==", "!=", "<", "<=", ">", ">="), tie("string")).map(([a, o, b]) => `(${a} ${o} ${b})`),
      fc.tuple(tie("bool"), op("==", "!=", "<", ">="), tie("bool")).map(([a, o, b]) => `(${a} ${o} ${b})`),
      fc.tuple(tie("bool"), op("&&", "||"), tie("bool")).map(([a, o, b]) => `(${a} ${o} ${b})`),
      tie("bool").map((a) => `(!${a})`),
      fc.tuple(tie("bool"), tie("bool"), tie("bool")).map(([c, a, b]) => `(${c} ? ${a} : ${b})`),
      fc.tuple(tie("string"), op("startsWith", "endsWith", "contains"), tie("string")).map(([a, m, b]) => `${a}.${m}(${b})`),
      // With only ints, the list would be a list<int>, and a double in it a type error.
      fc.tuple(tie("double"), fc.subarray(DOUBLE_LITERALS, { minLength: 1 }), fc.subarray(INT_LITERALS)).map(([a, doubles, ints]) => `(${a} in [${[...ints, ...doubles].join(", ")}])`),
      fc.tuple(tie("string"), fc.subarray(STRING_LITERALS)).map(([a, list]) => `(${a} in [${list.join(", ")}])`),
    ),
  }));

  /** A value for each variable: often of its type, sometimes missing or of another type. */
  const WRONG = [null, "1", 1, 1n, true, {}];
  const valueOr = <T>(typed: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 6, arbitrary: typed }, { weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom(...WRONG) });
  const doubles = fc.oneof(fc.constantFrom(0, -0, 1, -1.5, 0.1, 7, NaN, Infinity, -Infinity, 1e308, 5e-324, 2 ** 53, 2 ** 53 + 2), fc.double());
  const strings = fc.oneof(fc.constantFrom("", "a", "ab", "B", "/blog/x", "é", "😀", "\uffff"), fc.string({ unit: "binary" }));
  const context = fc.record(
    {
      d1: valueOr(doubles),
      d2: valueOr(doubles),
      i: valueOr(fc.oneof(fc.constantFrom(0n, 1n, 3n, -1n, 9007199254740993n), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }))),
      s1: valueOr(strings),
      s2: valueOr(strings),
      b1: valueOr(fc.boolean()),
      b2: valueOr(fc.boolean()),
    },
    { requiredKeys: [] },
  );

  it("agree with the interpreter on every context", () => {
    fc.assert(
      fc.property(fc.oneof(expression.bool, expression.double, expression.string, expression.int), fc.array(context, { minLength: 4, maxLength: 4 }), (source, contexts) => {
        expectSameResults(source, contexts);
      }),
      { seed: 42, numRuns: 400 },
    );
  });
});

describe("closures at the edges of CEL", () => {
  it("divide by zero as IEEE doubles do, even by an int zero", () => {
    const results = ["d1 / 0.0", "0.0 / 0.0", "d1 / i", "-d1 / 0.0"].map((source) => expectSameResults(source, [{ d1: 1, i: 0n }])[0]);
    expect(results).toEqual([Infinity, NaN, Infinity, -Infinity]);
  });

  it("order strings by UTF-16 code units, as cel-js does", () => {
    const contexts = [{ s1: "B", s2: "a" }, { s1: "é", s2: "z" }, { s1: "😀", s2: "\uffff" }, { s1: "", s2: "" }];
    expect(expectSameResults("s1 < s2", contexts)).toEqual([true, false, true, false]);
    expect(expectSameResults("s1 >= s2", contexts)).toEqual([false, true, false, true]);
  });

  it("find a value in a literal list by CEL equality: ints equal doubles, NaN equals nothing", () => {
    const contexts = [{ d1: 1 }, { d1: 2 }, { d1: NaN }, { d1: -0 }, { d1: 1.5 }];
    expect(expectSameResults("d1 in [1, 2.0, 0.0]", contexts)).toEqual([true, true, false, true, false]);
    expect(expectSameResults('s1 in ["a", "b"]', [{ s1: "a" }, { s1: "c" }, {}])).toEqual([true, false, undefined]);
    expect(expectSameResults("i in [1.0, 2]", [{ i: 1n }, { i: 2n }, { i: 3n }])).toEqual([true, true, false]);
  });

  it("leave a missing value in the branch not taken out of the result", () => {
    const contexts = [{ b1: true, d1: 1 }, { b1: false, d1: 1 }, { b1: true }, { d1: 1, d2: 2 }];
    expect(expectSameResults("b1 ? d1 : d2", contexts)).toEqual([1, undefined, undefined, undefined]);
  });

  it("let a decisive operand of && and || win over an error on either side", () => {
    const contexts = [{ b1: true }, { b1: false }, { d1: 2 }, { d1: 0 }, { d1: "2", b1: true }];
    expect(expectSameResults("d1 > 1.0 || b1", contexts)).toEqual([true, undefined, true, undefined, true]);
    expect(expectSameResults("b1 && d1 > 1.0", contexts)).toEqual([undefined, false, undefined, false, undefined]);
  });

  it("mix ints into doubles as celEnvironment registers it", () => {
    const contexts = [{ d1: 3, i: 3n }, { d1: 2.5, i: 2n }];
    expect(expectSameResults("d1 == 3", contexts)).toEqual([true, false]);
    expect(expectSameResults("3 != d1", contexts)).toEqual([false, true]);
    expect(expectSameResults("d1 * i", contexts)).toEqual([9, 5]);
    expect(expectSameResults("i < d1", contexts)).toEqual([false, true]);
    // The int made a double (2^53 + 1 rounds to 2^53) for ==, compared exactly for <.
    expect(expectSameResults("d1 == 9007199254740993", [{ d1: 2 ** 53 }])).toEqual([true]);
    expect(expectSameResults("d1 < 9007199254740993", [{ d1: 2 ** 53 }])).toEqual([true]);
  });

  it("fail on a variable of the wrong type, as cel-js does", () => {
    expect(expectSameResults("d1 > 1.0", [{ d1: "2" }, { d1: 2n }, { d1: null }])).toEqual([undefined, undefined, undefined]);
    expect(expectSameResults("i > 1", [{ i: 2 }])).toEqual([undefined]);
  });

  it("read a map's field, failing on a missing key and leaving unknown objects to cel-js", () => {
    const date = new Date(0);
    class Unknown {}
    const contexts = [{ m: { f: "x" } }, { m: { g: 1 } }, { m: new Map([["f", 2]]) }, { m: { f: date } }, { m: { f: new Unknown() } }, { m: { f: null } }, { m: [1] }, {}];
    expect(expectSameResults("m.f", contexts)).toEqual(["x", undefined, 2, date, undefined, null, undefined, undefined]);
  });

  it("leave contexts cel-js reads differently (a Map) to cel-js", () => {
    expect(expectSameResults("b1 || b2", [new Map([["b1", true]])])).toEqual([true]);
  });

  it("give no closure to what is outside the subset", () => {
    const outside = ["1 + d1", "i + i", "i * 2", "size(l)", 'm.f == "x"', "has(m.f)", "dyn(d1) > 1.0", "l[0]", "d1 in l", "m.f.g", "int(d1) > 1", "s1.matches('a')", "null == null"];
    for (const source of outside) expect(bothWays(source).closure, source).toBeUndefined();
  });

  it("give no closure to a function call, even to a double function the scope registers", () => {
    const withQuantile = celEnvironment({ lead_score: "double" });
    withQuantile.registerFunction("quantile(string, double): double", () => 1);
    expect(bothWays('lead_score > quantile("lead_score", 0.9)', withQuantile).closure).toBeUndefined();
  });

  it("still refuses names that reach outside the event", () => {
    expect(() => compileExpression(env, "m.constructor", "x")).toThrow(/reaches outside the event/);
  });
});
