// The shipped Prometheus alerting rules: valid (`promtool check rules`), firing when a job falls
// behind or breaks the 500 ms promise and not before (`promtool test rules`), and shown in the README as shipped.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "../pipelines/pipelineFiles.ts";

const RULES_DIR = join(PROJECT_ROOT, "ops/prometheus");

function promtool(...args: string[]): { status: number | null; output: string } {
  const run = spawnSync("/usr/bin/promtool", args, { cwd: RULES_DIR, encoding: "utf8", timeout: 20_000 });
  if (run.error) throw new Error(`promtool could not run (apt-get install prometheus): ${run.error.message}`);
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

describe("ops/prometheus/alerts.yml", () => {
  it("passes promtool check rules", () => {
    const check = promtool("check", "rules", "alerts.yml");
    expect(check.output).toContain("SUCCESS: 2 rules found");
    expect(check.status).toBe(0);
  });

  it("fires on falling behind and on latency over 500 ms, and not before (promtool test rules)", () => {
    const test = promtool("test", "rules", "alerts.test.yml");
    expect(test.status, test.output).toBe(0);
  });

  it("is in the README as shipped", () => {
    const readme = readFileSync(join(PROJECT_ROOT, "README.md"), "utf8");
    expect(readme).toContain("```yml\n" + readFileSync(join(RULES_DIR, "alerts.yml"), "utf8") + "```\n");
  });
});
