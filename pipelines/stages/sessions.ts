// PLACEHOLDER while the stage is being built: refuses the section so nothing pretends to work.
import type { StageReader } from "../behaviour.ts";

export const readSessions: StageReader = (r, path) => r.fail(path, "is not supported yet");
