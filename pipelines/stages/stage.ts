// The contract of a behaviour section's reader: from its YAML section to the stage definition the
// behaviour operator runs, and the output kinds the stage can emit.
import type { StageDefinition } from "../../operators/stage.ts";
import type { Reader } from "../reader.ts";
import type { Scope } from "../scope.ts";

/** A stage as read from its section: the definition and the output kinds it can emit. */
export type ReadStage = { definition: StageDefinition; outputs: readonly string[] };

/**
 * Reads one section. `scope` holds what the section's expressions may use; the reader declares
 * the values its stage writes into the view (`scope.declare`) so that later sections can use them.
 */
export type StageReader = (r: Reader, path: string, value: unknown, scope: Scope) => ReadStage | undefined;
