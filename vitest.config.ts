import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Crash-recovery tests spawn the CLI repeatedly; everything else is fast.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Two cores: child-process tests and property tests should not fight over them.
    maxWorkers: 2,
  },
});
