// The worker thread of `flusso run` (see pipelines/runWorker.ts): loads the TypeScript through tsx.
import { register } from "tsx/esm/api";

register();
await import("../pipelines/runWorker.ts");
