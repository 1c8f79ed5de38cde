// CEL's `text.matches(pattern)` evaluated with RE2 (re2js): linear in the text whatever the pattern,
// where cel-js's own overload uses JavaScript's backtracking RegExp, which a pattern like
// "^(a+)+$" keeps busy for hours. A literal pattern is checked at load time; one from the data is
// compiled at run time through a small cache, and an invalid one leaves the expression without value.
import type { Environment } from "@marcbachmann/cel-js";
import { RE2JS } from "re2js";

/** Characters of one pattern; RE2 parses in linear time, this keeps the parse itself small. */
export const MAX_PATTERN_LENGTH = 1_000;

/**
 * Instructions of one compiled pattern. RE2 matches in time proportional to text x program size
 * (~5 ns per character and instruction when its DFA gives up, as measured here): 500 keeps a match
 * over a 1 KiB value under ~3 ms and over the longest line (1 MiB) under ~3 s. Typical patterns
 * compile to 10-50; `.{1000}` alone is 1000.
 */
export const MAX_PATTERN_INSTRUCTIONS = 500;

/** Patterns from the data compiled at run time and kept, newest last (a Map keeps insertion order). */
const DATA_PATTERN_CACHE_SIZE = 64;

/** A compiled pattern, or why it cannot be one. */
type Compiled = { regex: RE2JS } | { refusal: string };

/** What the parser's nodes look like, as far as this file reads them. */
type Node = { op: string; args: unknown; checkedType?: { name?: string; kind?: string } };

/** The pieces of cel-js's checker and evaluator that a macro uses. */
type Checker = { check(node: unknown, ctx: unknown): { name: string; kind: string }; getType(name: string): unknown; createError(code: string, message: string, node: unknown): Error };
type Evaluator = { run(node: unknown, ctx: unknown): unknown };

const dataPatterns = new Map<string, Compiled>();

/** Compiles `pattern` under the limits above, or says why it is refused. */
export function compilePattern(pattern: string): Compiled {
  if (pattern.length > MAX_PATTERN_LENGTH) return { refusal: `is ${pattern.length} characters long, over the limit of ${MAX_PATTERN_LENGTH}` };
  let regex: RE2JS;
  try {
    regex = RE2JS.compile(pattern);
  } catch (error) {
    return { refusal: `is not RE2 syntax: ${(error as Error).message}` };
  }
  const instructions = programSize(regex);
  if (instructions > MAX_PATTERN_INSTRUCTIONS) {
    return { refusal: `compiles to ${instructions} instructions, over the limit of ${MAX_PATTERN_INSTRUCTIONS} (large repeat counts such as {500} make long programs)` };
  }
  return { regex };
}

/** The number of instructions RE2 compiled `regex` to (re2js exposes its program, untyped). */
function programSize(regex: RE2JS): number {
  const prog = (regex.re2() as { prog?: { numInst?: () => number } }).prog;
  // Without the program's size (another re2js), the pattern's length is the next best bound.
  return typeof prog?.numInst === "function" ? prog.numInst() : regex.pattern().length;
}

/** A pattern from the data: compiled once while it stays among the most recently used. */
function dataPattern(pattern: string): Compiled {
  // Refused before the cache: a long pattern is not kept as a key.
  if (pattern.length > MAX_PATTERN_LENGTH) return compilePattern(pattern);
  let compiled = dataPatterns.get(pattern);
  if (compiled !== undefined) {
    dataPatterns.delete(pattern);
  } else {
    compiled = compilePattern(pattern);
    if (dataPatterns.size >= DATA_PATTERN_CACHE_SIZE) dataPatterns.delete(dataPatterns.keys().next().value!);
  }
  dataPatterns.set(pattern, compiled);
  return compiled;
}

/**
 * Makes `text.matches(pattern)` in `env` (and the environments cloned from it) match with RE2.
 * cel-js refuses a second overload of `string.matches(string)`, but it expands a macro by name and
 * argument count whatever the receiver's type: a macro registered on another receiver type takes
 * every `.matches(x)` call, and its own type check requires strings, as the overload did.
 */
export function useRe2ForMatches(env: Environment): void {
  env.registerFunction("bytes.matches(ast): bool", ({ ast, receiver, args }: { ast: unknown; receiver: Node; args: Node[] }) => {
    const pattern = args[0];
    // A literal pattern is compiled once, here; refusals are reported at load time (literalPatternRefusal).
    const literal = pattern.op === "value" && typeof pattern.args === "string" ? compilePattern(pattern.args) : undefined;
    return {
      async: false,
      typeCheck(checker: Checker, _macro: unknown, ctx: unknown) {
        const receiverType = checker.check(receiver, ctx);
        const patternType = checker.check(pattern, ctx);
        const isText = (type: { name: string }) => type.name === "string" || type.name === "dyn";
        if (!isText(receiverType) || !isText(patternType)) {
          throw checker.createError("no_matching_overload", `found no matching overload for '${receiverType.name}.matches(${patternType.name})'`, ast);
        }
        return checker.getType("bool");
      },
      evaluate(evaluator: Evaluator, _macro: unknown, ctx: unknown) {
        const text = evaluator.run(receiver, ctx);
        const source = literal === undefined ? evaluator.run(pattern, ctx) : undefined;
        if (typeof text !== "string" || (literal === undefined && typeof source !== "string")) throw new Error("matches() of a value that is not a string");
        const compiled = literal ?? dataPattern(source as string);
        // An invalid pattern from the data is an evaluation error, as in cel-js: the expression has no value.
        if ("refusal" in compiled) throw new Error(`matches(): the pattern ${compiled.refusal}`);
        return compiled.regex.test(text);
      },
    };
  });
}

/** Why a literal pattern of a `matches` call in `ast` is refused, if one is: checked at load time. */
export function literalPatternRefusal(ast: unknown): string | undefined {
  const stack: unknown[] = [ast];
  while (stack.length > 0) {
    const node = stack.pop() as Node | null;
    if (node === null || typeof node !== "object") continue;
    if (Array.isArray(node)) {
      stack.push(...node);
      continue;
    }
    if (node.op === "rcall" && Array.isArray(node.args) && node.args[0] === "matches") {
      const pattern = (node.args[2] as Node[] | undefined)?.[0];
      if (pattern?.op === "value" && typeof pattern.args === "string") {
        const compiled = compilePattern(pattern.args);
        if ("refusal" in compiled) return `the regular expression ${JSON.stringify(pattern.args.slice(0, 60))}${pattern.args.length > 60 ? "..." : ""} ${compiled.refusal}`;
      }
    }
    if (Array.isArray(node.args)) stack.push(...node.args);
    else if (node.args !== null && typeof node.args === "object") stack.push(node.args);
  }
  return undefined;
}
