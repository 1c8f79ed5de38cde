// The behaviour sections, each with its reader, in the order their stages run.
import { readAggregates } from "./aggregates.ts";
import { readClusters } from "./clusters.ts";
import { readDedup } from "./dedup.ts";
import { readFeatures } from "./features.ts";
import { readKbis } from "./kbis.ts";
import { readPhases } from "./phases.ts";
import { readQuantiles } from "./quantiles.ts";
import { readScores } from "./scores.ts";
import { readSegments } from "./segments.ts";
import { readSequences } from "./sequences.ts";
import { readSessions } from "./sessions.ts";
import type { StageReader } from "./stage.ts";
import { readTriggers } from "./triggers.ts";

/** The sections in the order their stages run: each may use the values of those above it. */
export const STAGE_SECTIONS: ReadonlyArray<readonly [string, StageReader]> = [
  ["dedup", readDedup],
  ["sessions", readSessions],
  ["aggregates", readAggregates],
  ["features", readFeatures],
  ["kbis", readKbis],
  ["scores", readScores],
  ["quantiles", readQuantiles],
  ["sequences", readSequences],
  ["phases", readPhases],
  ["clusters", readClusters],
  ["segments", readSegments],
  ["triggers", readTriggers],
];

export const STAGE_SECTION_NAMES: readonly string[] = STAGE_SECTIONS.map(([name]) => name);
