#!/usr/bin/env node
// Entry point of the `flusso` command: loads the TypeScript sources through tsx (no build step).
import { register } from "tsx/esm/api";

register();
const { main } = await import("../pipelines/cli.ts");
try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`flusso: ${error?.stack ?? error}\n`);
  process.exitCode = 1;
}
