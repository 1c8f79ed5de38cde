// Debian's chromium driven by puppeteer-core, for the dashboard's browser test and its screenshot:
// headless, sandbox-less (containers), no background traffic, a fresh profile each time. A missing
// chromium is an error that says how to install it, never a reason to skip.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import puppeteer, { type Browser } from "puppeteer-core";

const FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** `CHROMIUM` when set, else `chromium` on the PATH (Debian puts it at /usr/bin/chromium). */
export function chromiumPath(): string {
  const given = process.env.CHROMIUM;
  if (given !== undefined && given !== "") return given;
  const found = (process.env.PATH ?? "")
    .split(delimiter)
    .map((dir) => join(dir, "chromium"))
    .find((path) => existsSync(path));
  if (found === undefined) {
    throw new Error("chromium was not found on the PATH: install Debian's chromium package (apt-get install chromium), as .ci/run does, or set CHROMIUM to its path");
  }
  return found;
}

export type Chromium = { browser: Browser; close(): Promise<void> };

export async function launchChromium(): Promise<Chromium> {
  const userDataDir = mkdtempSync(join(tmpdir(), "flusso-chromium-"));
  const browser = await puppeteer.launch({ executablePath: chromiumPath(), headless: true, args: FLAGS, userDataDir, defaultViewport: { width: 1400, height: 1000 } });
  return {
    browser,
    async close() {
      // A browser that does not close in time is killed: a test must not leave one behind.
      const killer = setTimeout(() => browser.process()?.kill("SIGKILL"), 5_000);
      await browser.close().catch(() => browser.process()?.kill("SIGKILL"));
      clearTimeout(killer);
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
