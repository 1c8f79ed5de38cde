// Which variables a CEL expression cannot do without: read off its syntax tree once, so that an
// evaluation that could only fail on a missing value is skipped instead of thrown and caught
// (a throw inside cel-js costs ~20 us; the check costs a few ns).
import { Environment } from "@marcbachmann/cel-js";


/** Parses only (the expression was type-checked already): the standard macros suffice. */
const parser = new Environment({ homogeneousAggregateLiterals: false });

/** Comprehensions and has() may succeed with a name missing: they never make a name needed. */
const MACROS = new Set(["has", "all", "exists", "exists_one", "map", "filter"]);

/** What the parser's nodes look like, as far as this walk reads them. */
type Node = { op: string; args: unknown; meta?: { macro?: unknown; alternate?: unknown } };

const NONE: ReadonlySet<string> = new Set();

/**
 * The names without which `source` cannot evaluate to true: the rule then does not hold, and
 * evaluating it would only fail. CEL is strict (a failing argument fails the call) except for
 * `&&` and `||` (`false && x` is false and `true || x` true whatever x is), `?:` (only the branch
 * taken counts) and macros (has, comprehensions). Unknown node kinds need nothing: the answer may
 * be too little, never too much.
 */
export function namesNeeded(source: string, forTrue = true): string[] {
  try {
    return namesNeededIn(parser.parse(source).ast, forTrue);
  } catch {
    return [];
  }
}

/** The same, of an expression already parsed. */
export function namesNeededIn(ast: unknown, forTrue = true): string[] {
  return [...needed(ast as Node, forTrue)];
}

/** Names whose absence makes `node` fail, or, with `forTrue`, makes it anything but true. */
function needed(node: Node, forTrue: boolean): ReadonlySet<string> {
  const args = node.args;
  switch (node.op) {
    case "id":
      return new Set([args as string]);
    case "&&": {
      // True needs both sides true; failing needs both to fail (false && failure is false).
      const [left, right] = args as Node[];
      return forTrue ? union([needed(left, true), needed(right, true)]) : intersection(needed(left, false), needed(right, false));
    }
    case "||": {
      const [left, right] = args as Node[];
      return intersection(needed(left, forTrue), needed(right, forTrue));
    }
    case "?:": {
      const [condition, ifTrue, ifFalse] = args as Node[];
      return union([needed(condition, false), intersection(needed(ifTrue, forTrue), needed(ifFalse, forTrue))]);
    }
    case "!_":
    case "-_":
      return needed(args as Node, false);
    case ".":
      return needed((args as [Node, string])[0], false);
    case "call":
    case "rcall": {
      const name = (args as [string])[0];
      // `matches` is a macro only to run in RE2 (celRegex.ts): as strict as any function.
      const isMacro = name !== "matches" && (node.meta?.macro !== undefined || node.meta?.alternate !== undefined);
      if (isMacro || MACROS.has(name)) return NONE;
      const [, receiverOrArgs, rest] = args as [string, Node | Node[], Node[] | undefined];
      const operands = node.op === "call" ? (receiverOrArgs as Node[]) : [receiverOrArgs as Node, ...(rest ?? [])];
      return strict(operands);
    }
    case "list":
      return strict(args as Node[]);
    case "map":
      return strict((args as Array<[Node, Node]>).flat());
    case "[]":
    case "in":
    case "==":
    case "!=":
    case "<":
    case "<=":
    case ">":
    case ">=":
    case "+":
    case "-":
    case "*":
    case "/":
    case "%":
      return strict(args as Node[]);
    default:
      return NONE;
  }
}

/** A strict operation fails when any operand fails. */
function strict(operands: readonly Node[]): ReadonlySet<string> {
  return union(operands.map((operand) => needed(operand, false)));
}

function intersection(a: ReadonlySet<string>, b: ReadonlySet<string>): ReadonlySet<string> {
  return new Set([...a].filter((name) => b.has(name)));
}

function union(sets: ReadonlyArray<ReadonlySet<string>>): ReadonlySet<string> {
  return new Set(sets.flatMap((set) => [...set]));
}
