// KBI labels: per user, ordered threshold rules give each KBI a label ("active", "occasional", ...),
// re-evaluated on every step, written into the view and emitted when a label changes.
import { isoTime } from "./outputFormat.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { partsFrom, pickParts, relayoutAll, type StateShape } from "./stateShape.ts";

export type KbiRule = {
  label: string;
  /** The rule's condition over the view's variables; anything but `true` (absent values too) does not hold. */
  holds: (vars: Record<string, unknown>) => unknown;
};

export type KbiSpec = {
  /** The KBI's name: the view variable holding its label. */
  name: string;
  /** Tried in order: the first that holds gives the label. */
  rules: KbiRule[];
  /** The label when no rule holds. Default null: no label (the variable has no value). */
  defaultLabel?: string | null;
};

export type KbisOptions = {
  /** Names the stage's state. Default "kbis". */
  name?: string;
  kbis: KbiSpec[];
};

/** The output kind of a KBI label change. */
export const KBI_OUTPUT = "kbi";

/** The "kbi" output, one per label change: `previous` is null on a user's first label. */
export type KbiChange = { output: typeof KBI_OUTPUT; user_id: string; time: string; time_ms: number; kbi: string; label: string | null; previous: string | null };

/** The labels of one user, one per KBI in configured order. */
type Labels = Array<string | null>;

export function kbis(options: KbisOptions): StageDefinition {
  const name = options.name ?? "kbis";
  // A label per KBI, by name; its rules may change (a label no rule gives any more changes at the next step).
  const shape: StateShape = { parts: options.kbis.map((k): [string, StateShape] => [k.name, {}]) };
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const labels = ctx.userState<Labels>("labels");
      const from = partsFrom(ctx.restoredShape, shape);
      if (ctx.restoredShape) relayoutAll(labels, (current) => pickParts(current, from, () => null));
      return new KbisLogic(options.kbis, labels);
    },
  };
}

class KbisLogic implements StageLogic {
  /** The user's label of each KBI (null: no rule holds and no default). */
  readonly view: StageView = {
    user: (user) => {
      const labels = this.labels.get(user);
      return labels === undefined ? undefined : Object.fromEntries(this.specs.map((spec, i) => [spec.name, labels[i]]));
    },
  };

  constructor(
    private readonly specs: KbiSpec[],
    /** Each user's current labels, to tell a change. */
    private readonly labels: {
      get(key: string): Labels | undefined;
      set(key: string, value: Labels): void;
      touch(key: string): void;
    },
  ) {}

  step(view: UserView, out: StageOutput): void {
    const specs = this.specs;
    let current = this.labels.get(view.user);
    for (let i = 0; i < specs.length; i++) {
      const label = labelOf(specs[i], view.vars);
      view.vars[specs[i].name] = label ?? undefined;
      const previous = current === undefined ? null : current[i];
      if (label === previous) continue;
      if (current === undefined) {
        current = new Array<string | null>(specs.length).fill(null);
        this.labels.set(view.user, current);
      } else this.labels.touch(view.user);
      current[i] = label;
      const body: KbiChange = { output: KBI_OUTPUT, user_id: view.user, time: isoTime(view.timeMs), time_ms: view.timeMs, kbi: specs[i].name, label, previous };
      out.emit(KBI_OUTPUT, view.user, view.timeMs, body);
    }
  }
}

function labelOf(spec: KbiSpec, vars: Record<string, unknown>): string | null {
  for (const rule of spec.rules) if (rule.holds(vars) === true) return rule.label;
  return spec.defaultLabel ?? null;
}
