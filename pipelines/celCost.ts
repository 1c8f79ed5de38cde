// The worst-case cost of one evaluation of a CEL expression, estimated at load time from its
// type-checked syntax tree (as cel-go's cost estimator does), so that an expression that could run
// for minutes on one event (maps nested in maps over big lists) is refused before anything runs.
import { MAX_COLLECTION_ENTRIES, MAX_LINE_BYTES } from "../engine/valueLimits.ts";

/**
 * Steps one evaluation may take. A step is one node of the tree evaluated: 12-50 ns in cel-js's
 * interpreter as measured here (1000 x 1000 nested maps, 5 million steps, take 150-180 ms), so the
 * budget is at most ~5 ms per evaluation. It admits a comprehension with a body of up to 8 steps
 * over the largest list an event may hold (MAX_COLLECTION_ENTRIES entries), and refuses one nested
 * in another over such lists (10^8 steps and more: seconds per event).
 */
export const MAX_EXPRESSION_COST = 100_000;

/** Characters of one expression: far above any rule people write, far below a file's worth of text. */
export const MAX_EXPRESSION_LENGTH = 10_000;

/** cel-js's parse-time limits: the length above allows ~5,000 nodes; nesting deeper than 64 is no rule. */
export const PARSE_LIMITS = { maxAstNodes: 5_000, maxDepth: 64, maxListElements: 1_000, maxMapEntries: 1_000, maxCallArguments: 32 };

/**
 * Levels of the syntax tree. cel-js's parser bounds nesting (maxDepth) but not a chain such as
 * `a + b + c + ...`, one level per operator, and its checker and evaluator recurse per level: at
 * ~2,400 they overflow the stack. 200 leaves a wide margin and no rule chains 200 operators.
 */
export const MAX_TREE_DEPTH = 200;

/** The depth of a parsed tree, walked with an explicit stack so the walk itself cannot overflow. */
export function treeDepth(ast: unknown): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[ast, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== "object" || ArrayBuffer.isView(node)) continue;
    if (Array.isArray(node)) {
      for (const item of node) stack.push([item, depth]);
      continue;
    }
    deepest = Math.max(deepest, depth);
    if (deepest > MAX_TREE_DEPTH) return deepest;
    stack.push([(node as Node).args, depth + 1]);
  }
  return deepest;
}

/** Characters of string work that count as one step (cel-go's string traversal factor). */
const CHARS_PER_STEP = 10;

const COMPREHENSIONS = new Set(["map", "filter", "all", "exists", "exists_one"]);

/** What the parser's nodes look like after a type check, as far as this walk reads them. */
type Node = { op: string; args: unknown; checkedType?: { name?: string; kind?: string } };

/**
 * The bound on a value: the steps to compute it, how many entries it may hold if it may be a list
 * or map, how long it may be if it may be a string, and the bound on its entries.
 */
type Estimate = {
  cost: number;
  entries: number;
  chars: number;
  element?: Estimate;
  /**
   * Derived from the innermost comprehension's variable: string work on it, summed over the
   * iterations, is bounded by the size of the event (its entries share one input line), so it is
   * not charged per iteration.
   */
  isFree?: boolean;
};

type Scope = { vars: ReadonlyMap<string, Estimate>; isInLoop: boolean };

/** A value read from the event or a stage: as large as the limits on input allow. */
const INPUT: Estimate = { cost: 1, entries: MAX_COLLECTION_ENTRIES, chars: MAX_LINE_BYTES };

/** The worst-case steps of one evaluation of a type-checked expression's tree. */
export function estimateCost(ast: unknown): number {
  return Math.ceil(estimate(ast as Node, { vars: new Map(), isInLoop: false }).cost);
}

function estimate(node: Node, scope: Scope): Estimate {
  const args = node.args;
  switch (node.op) {
    case "value":
      return typeof args === "string" ? { cost: 1, entries: 0, chars: args.length } : args instanceof Uint8Array ? { cost: 1, entries: 0, chars: args.length } : scalar(1);
    case "id": {
      const bound = scope.vars.get(args as string);
      return bound ? { ...bound, cost: 1 } : shaped(node, 1, INPUT);
    }
    case ".":
    case ".?": {
      const object = estimate((args as [Node])[0], scope);
      return { ...shaped(node, object.cost + 1, object.element ?? INPUT), isFree: object.isFree };
    }
    case "[]":
    case "[?]": {
      const [object, index] = (args as Node[]).map((a) => estimate(a, scope));
      return { ...shaped(node, object.cost + index.cost + 1, object.element ?? INPUT), isFree: object.isFree };
    }
    case "list": {
      const items = (args as Node[]).map((a) => estimate(a, scope));
      return { cost: sum(items) + items.length + 1, entries: items.length, chars: 0, element: widest(items) };
    }
    case "map": {
      const pairs = (args as Array<[Node, Node]>).map(([k, v]) => [estimate(k, scope), estimate(v, scope)]);
      // Iterating a map gives its keys, reading it its values: the element bounds both.
      return { cost: sum(pairs.flat()) + pairs.length + 1, entries: pairs.length, chars: 0, element: widest(pairs.flat()) };
    }
    case "?:": {
      const [condition, ifTrue, ifFalse] = (args as Node[]).map((a) => estimate(a, scope));
      const larger = widest([ifTrue, ifFalse])!;
      return { ...larger, cost: condition.cost + Math.max(ifTrue.cost, ifFalse.cost) + 1, isFree: ifTrue.isFree && ifFalse.isFree };
    }
    case "+": {
      const [left, right] = (args as Node[]).map((a) => estimate(a, scope));
      // Lists are copied; strings are joined as ropes, in constant time.
      const entries = left.entries > 0 && right.entries > 0 ? left.entries + right.entries : 0;
      const chars = left.chars > 0 && right.chars > 0 ? left.chars + right.chars : 0;
      return { cost: left.cost + right.cost + 1 + entries, entries, chars, element: widest([left.element, right.element]), isFree: left.isFree && right.isFree };
    }
    case "==":
    case "!=":
    case "<":
    case "<=":
    case ">":
    case ">=":
    case "in": {
      const [left, right] = (args as Node[]).map((a) => estimate(a, scope));
      // Equality of lists and maps compares entry by entry; `in` a list searches it.
      const entries = node.op === "in" ? right.entries : Math.min(left.entries, right.entries);
      // Comparing strings stops at the end of the shorter one.
      return scalar(left.cost + right.cost + 1 + entries + charge(Math.min(paid(left), paid(right)), scope));
    }
    case "rcall":
    case "call":
      return call(node, scope);
    default: {
      const parts = children(node).map((a) => estimate(a, scope));
      return shaped(node, sum(parts) + 1, INPUT);
    }
  }
}

/** A function or method call, a comprehension macro or `cel.bind`. */
function call(node: Node, scope: Scope): Estimate {
  const [name, receiverNode, argNodes] = node.op === "rcall" ? (node.args as [string, Node, Node[]]) : [(node.args as [string])[0], undefined, (node.args as [string, Node[]])[1]];
  if (receiverNode && COMPREHENSIONS.has(name) && argNodes.length >= 2 && argNodes[0].op === "id") return comprehension(name, receiverNode, argNodes, scope);
  if (receiverNode?.op === "id" && receiverNode.args === "cel" && name === "bind" && argNodes.length === 3 && argNodes[0].op === "id") {
    const init = estimate(argNodes[1], scope);
    const vars = new Map(scope.vars).set(argNodes[0].args as string, init);
    const body = estimate(argNodes[2], { ...scope, vars });
    return { ...body, cost: init.cost + body.cost + 1 };
  }
  if (name === "has") return scalar(2);
  const receiver = receiverNode && estimate(receiverNode, scope);
  const operands = [...(receiver ? [receiver] : []), ...argNodes.map((a) => estimate(a, scope))];
  // String functions may scan their strings; of the functions of lists, only join walks one.
  const cost = sum(operands) + 1 + charge(scanned(name, receiver, operands), scope) + (name === "join" && receiver ? receiver.entries : 0);
  if (name === "split" && receiver) {
    // At most one piece per character, each at most the whole string.
    return { cost, entries: receiver.chars + 1, chars: 0, element: { cost: 1, entries: 0, chars: receiver.chars, isFree: receiver.isFree }, isFree: receiver.isFree };
  }
  if (name === "join" && receiver) {
    const element = receiver.element ?? INPUT;
    return { cost, entries: 0, chars: receiver.entries * (element.chars + (operands[1]?.chars ?? 0)), isFree: receiver.isFree };
  }
  const result = shaped(node, cost, INPUT);
  // A string made from strings (lowerAscii, substring, trim...) is no longer than they are.
  const longest = Math.max(0, ...operands.map((o) => o.chars));
  return result.chars > 0 && longest > 0 ? { ...result, chars: Math.min(result.chars, Math.max(longest, 64)), isFree: operands.every((o) => o.isFree || o.chars === 0) } : result;
}

/**
 * `range.map(x, body)` and the other comprehension macros: the body runs once per entry of the
 * range. Inside it, the variable's string work is free (see Estimate.isFree); any other variable's
 * is charged on every iteration.
 */
function comprehension(name: string, rangeNode: Node, argNodes: Node[], scope: Scope): Estimate {
  const range = estimate(rangeNode, scope);
  const element = range.element ?? INPUT;
  const vars = new Map<string, Estimate>();
  for (const [bound, value] of scope.vars) vars.set(bound, { ...value, isFree: false });
  vars.set(argNodes[0].args as string, { ...element, isFree: true });
  const inner: Scope = { vars, isInLoop: true };
  const bodies = argNodes.slice(1).map((a) => estimate(a, inner));
  const cost = range.cost + 1 + range.entries * (sum(bodies) + 2);
  if (name === "map") return { cost, entries: range.entries, chars: 0, element: { ...bodies[bodies.length - 1], isFree: false } };
  if (name === "filter") return { cost, entries: range.entries, chars: 0, element };
  return scalar(cost);
}

/** Characters a call may scan: startsWith and endsWith read no more than the shorter string; others all. */
function scanned(name: string, receiver: Estimate | undefined, operands: readonly Estimate[]): number {
  if (receiver && (name === "startsWith" || name === "endsWith") && operands.length === 2) return Math.min(paid(receiver), paid(operands[1]));
  return operands.reduce((total, o) => total + paid(o), 0);
}

/** Characters of `e` whose scanning is charged: none when it is the loop's own variable (see Estimate.isFree). */
function paid(e: Estimate): number {
  return e.isFree ? 0 : e.chars;
}

/** Scanning strings costs nothing once (it is linear in the event), but on every iteration of a loop. */
function charge(chars: number, scope: Scope): number {
  return scope.isInLoop ? Math.ceil(chars / CHARS_PER_STEP) : 0;
}

/** An estimate of `cost` whose size is what the node's checked type allows, taken from `from`. */
function shaped(node: Node, cost: number, from: Estimate): Estimate {
  const type = node.checkedType;
  const isDyn = type === undefined || type.kind === "dyn";
  const isCollection = isDyn || type.kind === "list" || type.kind === "map";
  const isText = isDyn || type.name === "string" || type.name === "bytes";
  return { cost, entries: isCollection ? from.entries : 0, chars: isText ? from.chars : 0, element: isCollection ? (from.element ?? INPUT) : undefined };
}

function scalar(cost: number): Estimate {
  return { cost, entries: 0, chars: 0 };
}

/** The largest of each bound over `estimates` (undefined entries skipped). */
function widest(estimates: ReadonlyArray<Estimate | undefined>): Estimate | undefined {
  const present = estimates.filter((e): e is Estimate => e !== undefined);
  if (present.length === 0) return undefined;
  return {
    cost: Math.max(...present.map((e) => e.cost)),
    entries: Math.max(...present.map((e) => e.entries)),
    chars: Math.max(...present.map((e) => e.chars)),
    element: widest(present.map((e) => e.element)),
    isFree: present.every((e) => e.isFree),
  };
}

function sum(estimates: readonly Estimate[]): number {
  return estimates.reduce((total, e) => total + e.cost, 0);
}

/** The child nodes of a node of a kind the walk does not know. */
function children(node: Node): Node[] {
  const args = node.args;
  if (Array.isArray(args)) return args.flat().filter((a): a is Node => a !== null && typeof a === "object" && "op" in a);
  return args !== null && typeof args === "object" && "op" in args ? [args as Node] : [];
}
