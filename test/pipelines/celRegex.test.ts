// CEL's matches() runs in RE2: linear in the text whatever the pattern, RE2's syntax, literal
// patterns checked at load time and patterns from the data compiled through a bounded cache.
import { RE2JS } from "re2js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MAX_PATTERN_INSTRUCTIONS, MAX_PATTERN_LENGTH } from "../../pipelines/celRegex.ts";
import { ConfigError } from "../../pipelines/errors.ts";
import { celEnvironment, compileExpression } from "../../pipelines/expressions.ts";

const env = celEnvironment({ page: "string", pattern: "string", props: "map" });

function refusal(source: string): ConfigError {
  try {
    compileExpression(env, source, "features.f", ["bool"]);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`${source} was accepted`);
}

afterEach(() => vi.restoreAllMocks());

describe("matches() with a literal pattern", () => {
  it("answers a pattern that makes a backtracking engine run for hours, ^(a+)+$ on 40 a's and a !", () => {
    const rule = compileExpression(env, 'page.matches("^(a+)+$")', "features.f", ["bool"]);
    expect(rule.evaluate({ page: `${"a".repeat(40)}!` })).toBe(false);
    expect(rule.evaluate({ page: "a".repeat(40) })).toBe(true);
  });

  it("reads RE2 syntax that JavaScript's RegExp does not, such as the (?i) flag", () => {
    const rule = compileExpression(env, 'page.matches("(?i)^/PRICING")', "features.f", ["bool"]);
    expect(rule.evaluate({ page: "/pricing/enterprise" })).toBe(true);
    expect(rule.evaluate({ page: "/blog" })).toBe(false);
  });

  it("matches anywhere in the text, as CEL's matches does (RE2's partial match)", () => {
    expect(compileExpression(env, 'page.matches("ric")', "f").evaluate({ page: "/pricing" })).toBe(true);
  });

  it("refuses a pattern that is not RE2 syntax (a lookahead) at load time, naming the path", () => {
    const error = refusal('page.matches("^(?=/p)")');
    expect(error.path).toBe("features.f");
    expect(error.message).toMatch(/^features\.f: in "page\.matches\(\\"\^\(\?=\/p\)\\"\)", the regular expression "\^\(\?=\/p\)" is not RE2 syntax: /);
  });

  it("refuses a backreference, which RE2 cannot match in linear time", () => {
    expect(refusal('page.matches("(a)\\\\1")').message).toContain("is not RE2 syntax");
  });

  it(`refuses a pattern that compiles to more than ${MAX_PATTERN_INSTRUCTIONS} instructions`, () => {
    expect(refusal('page.matches("x.{600}y")').message).toMatch(/compiles to 60\d instructions, over the limit of 500/);
  });

  it(`refuses a pattern longer than ${MAX_PATTERN_LENGTH} characters`, () => {
    expect(refusal(`page.matches("${"a".repeat(MAX_PATTERN_LENGTH + 1)}")`).message).toContain(`is ${MAX_PATTERN_LENGTH + 1} characters long, over the limit of ${MAX_PATTERN_LENGTH}`);
  });

  it("refuses matches() of something that is not a string", () => {
    expect(refusal('page.matches(1)').message).toContain("found no matching overload for 'string.matches(int)'");
  });

  it("is refused inside a comprehension too", () => {
    expect(refusal('props.exists(k, k.matches("(?!x)"))').message).toContain("is not RE2 syntax");
  });
});

describe("matches() with a pattern from the data", () => {
  const rule = compileExpression(env, "page.matches(pattern)", "features.f", ["bool"]);

  it("matches with RE2, catastrophic patterns included", () => {
    expect(rule.evaluate({ page: "/pricing", pattern: "^/pri" })).toBe(true);
    expect(rule.evaluate({ page: `${"a".repeat(40)}!`, pattern: "^(a+)+$" })).toBe(false);
    expect(rule.evaluate({ page: "ABC", pattern: "(?i)abc" })).toBe(true);
  });

  it("has no value when the pattern is not RE2 syntax or over the limits", () => {
    expect(rule.evaluate({ page: "/p", pattern: "(?=/p)" })).toBeUndefined();
    expect(rule.evaluate({ page: "/p", pattern: "(" })).toBeUndefined();
    expect(rule.evaluate({ page: "/p", pattern: "x.{600}" })).toBeUndefined();
    expect(rule.evaluate({ page: "/p", pattern: "a".repeat(MAX_PATTERN_LENGTH + 1) })).toBeUndefined();
  });

  it("compiles a pattern once while it is among the 64 most recent, and again after", () => {
    const compile = vi.spyOn(RE2JS, "compile");
    for (let i = 0; i < 3; i++) rule.evaluate({ page: "x", pattern: "^cached-pattern$" });
    expect(compile).toHaveBeenCalledTimes(1);
    for (let i = 0; i < 64; i++) rule.evaluate({ page: "x", pattern: `other-${i}` });
    rule.evaluate({ page: "x", pattern: "^cached-pattern$" });
    expect(compile.mock.calls.filter(([p]) => p === "^cached-pattern$")).toHaveLength(2);
  });
});
