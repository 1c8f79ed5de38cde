// What CEL expressions of a behaviour stage may read: the event's fields, `user`, `now`, and the
// values declared by the stages before it. Each stage declares its names as it is read, so a
// reference to a later stage's value is a type error at load time, at the path that made it.
import type { Environment } from "@marcbachmann/cel-js";
import { QuantileFunction } from "./celQuantile.ts";
import { celEnvironment, compileExpression, type Compiled, type Variables } from "./expressions.ts";
import type { Reader } from "./reader.ts";

export class Scope {
  private env: Environment;
  private readonly declaredAt = new Map<string, string>();
  private readonly eventFields: ReadonlySet<string>;
  private readonly usedFields = new Set<string>();
  /** `quantile("metric", q)` in every expression of the scope, and the metrics it may name. */
  readonly quantile = new QuantileFunction();

  constructor(eventFields: Variables) {
    this.env = celEnvironment({ ...eventFields, user: "string", now: "double" });
    this.eventFields = new Set(Object.keys(eventFields));
    for (const name of Object.keys(eventFields)) this.declaredAt.set(name, `schema.${name}`);
    this.declaredAt.set("user", "(built in: the key)");
    this.declaredAt.set("now", "(built in: the step's event time in ms)");
    this.quantile.register(this.env);
  }

  /** Whether `name` is free; if not, records an error at `path` saying who has it. */
  declare(r: Reader, path: string, name: string, celType: string): boolean {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || /^(constructor|prototype|__.*__)$/.test(name)) {
      r.fail(path, `"${name}" is not a usable name: letters, digits and _ only (it is a CEL variable)`);
      return false;
    }
    const owner = this.declaredAt.get(name);
    if (owner !== undefined) {
      r.fail(path, `"${name}" is already the name of ${owner}; names of fields and stage values must be unique`);
      return false;
    }
    this.declaredAt.set(name, path);
    this.env = this.env.clone();
    this.env.registerVariable(name, celType);
    return true;
  }

  /** Every name declared so far: event fields, built-ins, stage values. */
  names(): string[] {
    return [...this.declaredAt.keys()];
  }

  /** The event fields in scope. */
  fields(): string[] {
    return [...this.eventFields];
  }

  has(name: string): boolean {
    return this.declaredAt.has(name);
  }

  /** Compiles a CEL expression against what is declared now; undefined (error recorded) if bad. */
  compile(r: Reader, path: string, source: unknown, expected?: string[]): Compiled | undefined {
    const compiled = r.compiled(() => compileExpression(this.env, source, path, expected));
    if (compiled) {
      this.quantile.noteUses(path, compiled.source);
      for (const field of fieldsNamedIn(compiled.source, this.eventFields)) this.usedFields.add(field);
    }
    return compiled;
  }

  /** Records that a stage reads an event field directly (not through an expression), e.g. the time zone. */
  useField(field: string): void {
    this.usedFields.add(field);
  }

  /** Event fields some expression or stage reads: what `privacy.keep: used` keeps. */
  usedEventFields(): ReadonlySet<string> {
    return this.usedFields;
  }
}

/**
 * Event fields an expression names. Read off the text: a field named only inside a string literal
 * is counted too, which keeps a field needlessly but never drops one that is used.
 */
export function fieldsNamedIn(source: string, fields: ReadonlySet<string>): string[] {
  return [...new Set(source.match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? [])].filter((word) => fields.has(word));
}
