// The load-time cost estimate of a CEL expression: what could run without bound on one event is
// refused, naming the path, the estimate and the limit; what stays within the budget is accepted.
import { describe, expect, it } from "vitest";
import { MAX_COLLECTION_ENTRIES } from "../../engine/valueLimits.ts";
import { estimateCost, MAX_EXPRESSION_COST, MAX_EXPRESSION_LENGTH, MAX_TREE_DEPTH } from "../../pipelines/celCost.ts";
import { ConfigError } from "../../pipelines/errors.ts";
import { celEnvironment, compileExpression } from "../../pipelines/expressions.ts";

const env = celEnvironment({ items: "list", props: "map", page: "string", price: "double", tags: "list" });

/** The estimate of `source`, type-checked as the pipeline reader does. */
function costOf(source: string): number {
  const parsed = env.parse(source);
  expect(parsed.check().valid).toBe(true);
  return estimateCost(parsed.ast);
}

function refusal(source: string): ConfigError {
  try {
    compileExpression(env, source, "features.f");
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`${source.slice(0, 80)} was accepted`);
}

describe("the cost of one evaluation", () => {
  it("refuses map() nested in map() over event lists, naming the path, the estimate and the limit", () => {
    const error = refusal("items.map(x, items.map(y, y)).size() > 0");
    expect(error.path).toBe("features.f");
    expect(error.message).toMatch(new RegExp(`^features\\.f: "items\\.map\\(x, items\\.map\\(y, y\\)\\)\\.size\\(\\) > 0" may take (\\d+) steps per evaluation, over the limit of ${MAX_EXPRESSION_COST}`));
    expect(Number(/may take (\d+) steps/.exec(error.message)![1])).toBeGreaterThan(MAX_COLLECTION_ENTRIES ** 2);
  });

  it("accepts one comprehension over the largest list an event may hold", () => {
    expect(() => compileExpression(env, "items.exists(x, x == 1.0)", "f")).not.toThrow();
    expect(costOf("items.exists(x, x == 1.0)")).toBeLessThanOrEqual(MAX_EXPRESSION_COST);
    expect(costOf("items.exists(x, x == 1.0)")).toBeGreaterThanOrEqual(MAX_COLLECTION_ENTRIES);
  });

  it("counts a literal list's entries, so small nested comprehensions are accepted", () => {
    expect(costOf("[1, 2, 3].map(x, [4, 5].map(y, x + y)).size() > 0")).toBeLessThan(100);
  });

  it("counts map() over a map by its keys, as many as an event's mapping may hold", () => {
    expect(costOf('props.exists(k, k == "a")')).toBeGreaterThanOrEqual(MAX_COLLECTION_ENTRIES);
    expect(refusal('props.exists(k, props.exists(j, j == k))').message).toContain("over the limit");
  });

  it("refuses lists doubled again and again through cel.bind", () => {
    expect(refusal("cel.bind(a, items + items, cel.bind(b, a + a, cel.bind(c, b + b, c + c))).size() > 0").message).toContain("over the limit");
  });

  it("refuses a comprehension that copies a big list on every iteration", () => {
    expect(refusal("items.map(x, items + items).size() > 0").message).toContain("over the limit");
  });

  it("charges string work repeated by a comprehension, but not work on its own variable's entries", () => {
    expect(refusal("tags.exists(t, page.contains(t))").message).toContain("over the limit");
    expect(() => compileExpression(env, 'tags.exists(t, t.contains("vip"))', "f")).not.toThrow();
  });

  it("counts a split string as up to one piece per character of the longest line", () => {
    expect(() => compileExpression(env, 'page.split("/")[1] == "pricing"', "f")).not.toThrow();
    expect(refusal('page.split("/").exists(p, p == "pricing")').message).toContain("over the limit");
  });
});

describe("the size of an expression", () => {
  it(`refuses an expression longer than ${MAX_EXPRESSION_LENGTH} characters, quoting only its start`, () => {
    const source = `page == "${"x".repeat(12_000_000)}"`;
    const error = refusal(source);
    expect(error.message).toMatch(new RegExp(`^features\\.f: the expression "page == \\\\"x+"\\.\\.\\. \\(${source.length} characters\\) is ${source.length} characters long, over the limit of ${MAX_EXPRESSION_LENGTH}$`));
    expect(error.message.length).toBeLessThan(300);
  });

  it("quotes at most ~120 characters of the expression and of the library's message", () => {
    const name = `x${"y".repeat(MAX_EXPRESSION_LENGTH - 10)}`;
    const error = refusal(`${name} > 1.0`);
    expect(error.message).toContain("CEL type error in");
    expect(error.message.length).toBeLessThan(500);
  });

  it("refuses nesting deeper than the parser's limit", () => {
    expect(refusal(`${"(".repeat(100)}price${")".repeat(100)} > 1.0`).message).toMatch(/CEL syntax error in .*maxDepth/);
  });

  it(`refuses a chain of operators more than ${MAX_TREE_DEPTH} deep, before cel-js's checker would overflow its stack`, () => {
    const source = `${Array.from({ length: 1_500 }, () => "price").join("+")} > 1.0`;
    expect(refusal(source).message).toMatch(new RegExp(`^features\\.f: "price\\+price.* nests more than ${MAX_TREE_DEPTH} operations deep \\(a chain like a \\+ b \\+ c nests one level per operator\\): split it$`));
    expect(() => compileExpression(env, `${Array.from({ length: 150 }, () => "price").join(" + ")} > 1.0`, "f")).not.toThrow();
  });

  it("refuses more syntax nodes than the parser's limit", () => {
    const source = `${Array.from({ length: 3_000 }, () => "1").join("+")} > 1`;
    expect(source.length).toBeLessThan(MAX_EXPRESSION_LENGTH);
    expect(refusal(source).message).toMatch(/CEL syntax error in .*maxAstNodes/);
  });
});
