// The contract of a behaviour section's reader: from its YAML section to the stage definition the
// behaviour operator runs, and the output kinds the stage can emit.
import type { StageDefinition } from "../../operators/stage.ts";
import type { Assignment } from "../../engine/assignment.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

/** What a section's reader may know of the pipeline besides its own section and the scope. */
export type ReadContext = {
  /** The pipeline's name: part of the identity of a trigger's message. */
  pipeline: string;
  /** The key field's name: a trigger names its recipient under it. */
  keyField: string;
  /** Significant digits of scores and statistics in outputs (`outputs.digits`). */
  digits: number;
  /** The first segment group, when the pipeline has segments: the user's current segment for triggers. */
  segmentGroup: string | undefined;
  /** Whether the job answers queries (`http:` or `--http`): stages then keep what a query shows even when no sink takes it. Default false. */
  isQueried?: boolean;
};

/**
 * A stage as read from its section: the definition and the output kinds it can emit; `then`, a stage
 * the section also asks for, run right after it (the experiments of the triggers' rules), and the
 * experiments' assignments (the generator's simulated users answer them).
 */
export type ReadStage = { definition: StageDefinition; outputs: readonly string[]; then?: StageDefinition; experiments?: readonly Assignment[] };

/**
 * Reads one section. `scope` holds what the section's expressions may use; the reader declares
 * the values its stage writes into the view (`scope.declare`) so that later sections can use them.
 */
export type StageReader = (r: Reader, path: string, value: unknown, scope: Scope, context: ReadContext) => ReadStage | undefined;
