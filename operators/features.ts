// Derived features: formulas over a user's aggregates (and earlier features), evaluated on every
// step, written into the view, and emitted as one feature vector when any of them changes.
import { isoTime, withoutNoise } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";

export type FeatureSpec = {
  name: string;
  /** The formula over the view's variables; undefined or a non-finite number means "no value". */
  value: (vars: Record<string, unknown>) => unknown;
};

export type FeaturesOptions = {
  /** Names the stage's state. Default "features". */
  name?: string;
  features: FeatureSpec[];
  /**
   * Keep each user's last vector even when no sink takes vectors, for queries to show. Default
   * false: kept only while some sink takes them (a vector per change costs a little on every step).
   */
  keepsVectors?: boolean;
};

/** The output kind of a feature vector. */
export const FEATURES_OUTPUT = "features";

/** The "features" output: `{ output, user_id, time, <feature>: number | null, ... }`. */
export type FeatureVector = { output: typeof FEATURES_OUTPUT; user_id: string; time: string; time_ms: number; [feature: string]: unknown };

/** The fields of every feature vector: features cannot be named so. */
export const FEATURE_VECTOR_FIELDS: readonly string[] = ["output", "user_id", "time", "time_ms"];

export function features(options: FeaturesOptions): StageDefinition {
  const name = options.name ?? "features";
  // The last vector emitted, a value per feature by name (to tell a change).
  const shape: StateShape = { parts: options.features.map((f): [string, StateShape] => [f.name, {}]) };
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const last = ctx.userState<Array<number | null>>("last");
      const from = partsFrom(ctx.restoredShape, shape);
      if (ctx.restoredShape) relayoutAll(last, (vector) => pickParts(vector, from, () => null));
      return new FeaturesLogic(options, last);
    },
  };
}

class FeaturesLogic implements StageLogic {
  /** The user's current vector, as the "features" output shows it (kept while a sink takes vectors or the job answers queries). */
  readonly view: StageView = {
    user: (user) => {
      const vector = this.last.get(user);
      if (vector === undefined) return undefined;
      return Object.fromEntries(this.options.features.map((f, i) => [f.name, vector[i] === null ? null : withoutNoise(vector[i]!)]));
    },
  };

  /** This step's vector, compared with the user's last before a copy is kept: no array per step. */
  private readonly scratch: Array<number | null>;

  constructor(
    private readonly options: FeaturesOptions,
    /** Each user's last vector, to tell a change and to answer queries. */
    private readonly last: { get(key: string): Array<number | null> | undefined; set(key: string, value: Array<number | null>): void; delete(key: string): void },
  ) {
    this.scratch = new Array<number | null>(options.features.length).fill(null);
  }

  step(view: UserView, out: StageOutput): void {
    const specs = this.options.features;
    const scratch = this.scratch;
    for (let i = 0; i < specs.length; i++) {
      const value = numeric(specs[i].value(view.vars));
      scratch[i] = value;
      view.vars[specs[i].name] = value ?? undefined;
    }
    const isWanted = out.wants(FEATURES_OUTPUT);
    if (!isWanted && this.options.keepsVectors !== true) {
      // A vector an earlier run kept for queries would go stale here, and a later run's queries would show it.
      if (this.last.get(view.user) !== undefined) this.last.delete(view.user);
      return;
    }
    const previous = this.last.get(view.user);
    if (previous !== undefined && sameVector(previous, scratch)) return;
    // The user's own array is rewritten in place: no allocation when a vector changes.
    const vector = previous?.length === scratch.length ? copyInto(scratch, previous) : scratch.slice();
    this.last.set(view.user, vector);
    // Emitted when it changes, unless no sink takes feature vectors.
    if (!isWanted) return;
    const body: FeatureVector = { output: FEATURES_OUTPUT, user_id: view.user, time: isoTime(view.timeMs), time_ms: view.timeMs };
    // Shown without the noise of decimal arithmetic (1 - 0.7 is 0.30000000000000004); the view keeps the value.
    for (let i = 0; i < specs.length; i++) body[specs[i].name] = vector[i] === null ? null : withoutNoise(vector[i]!);
    out.emit(FEATURES_OUTPUT, view.user, view.timeMs, body);
  }
}

/** A finite number, or null: CEL bools count as 0/1 (the write-ups' formulas add them). */
function numeric(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "bigint") return Number(value);
  return null;
}

function copyInto(from: ReadonlyArray<number | null>, to: Array<number | null>): Array<number | null> {
  for (let i = 0; i < from.length; i++) to[i] = from[i];
  return to;
}

function sameVector(a: ReadonlyArray<number | null>, b: ReadonlyArray<number | null>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
