// The state dir lock: one job per dir, released by the kernel when its process dies; only dirs
// flusso made are used or reset.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { StateDirForeign, StateDirLocked } from "../../engine/errors.ts";
import { lockStateDir, STATE_DIR_MARKER } from "../../engine/stateDir.ts";

const fresh = () => join(mkdtempSync(join(tmpdir(), "flusso-statedir-")), "state");

/** A child process that takes the lock on `dir`, says so, and then waits to be killed. */
function holderProcess(dir: string): Promise<{ pid: number; kill(): Promise<void> }> {
  const script = `import { lockStateDir } from ${JSON.stringify(resolve(import.meta.dirname, "../../engine/stateDir.ts"))};
await lockStateDir(${JSON.stringify(dir)});
process.stdout.write("locked\\n");
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((ready, fail) => {
    child.stdout.once("data", () =>
      ready({
        pid: child.pid!,
        kill: () =>
          new Promise<void>((exited) => {
            child.once("exit", () => exited());
            child.kill("SIGKILL");
          }),
      }),
    );
    child.once("exit", (code) => fail(new Error(`the holder exited with ${code} before locking`)));
  });
}

describe("state dir lock", () => {
  it("refuses a second lock on the same dir, naming the holder's pid", async () => {
    const dir = fresh();
    const first = await lockStateDir(dir);
    const second = lockStateDir(dir);
    await expect(second).rejects.toThrow(StateDirLocked);
    await expect(second).rejects.toThrow(`${dir} is in use by another flusso process (pid ${process.pid})`);
    await first.release();
    const again = await lockStateDir(dir);
    await again.release();
  });

  it("is held across processes, and a process killed with SIGKILL leaves no lock behind", async () => {
    const dir = fresh();
    const holder = await holderProcess(dir);
    try {
      await expect(lockStateDir(dir)).rejects.toThrow(`(pid ${holder.pid})`);
    } finally {
      await holder.kill();
    }
    const lock = await lockStateDir(dir);
    await lock.release();
  });

  it("takes the same lock for the same dir reached through another path", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    const first = await lockStateDir(dir);
    await expect(lockStateDir(join(dir, "..", "state"))).rejects.toThrow(StateDirLocked);
    await first.release();
  });

  it("marks the dir it makes, and refuses a dir holding files flusso did not write, touching nothing", async () => {
    const project = mkdtempSync(join(tmpdir(), "flusso-statedir-"));
    writeFileSync(join(project, "pipeline.yaml"), "name: x\n");
    writeFileSync(join(project, "data.jsonl"), "{}\n");
    await expect(lockStateDir(project, { reset: true })).rejects.toThrow(StateDirForeign);
    await expect(lockStateDir(project, { reset: true })).rejects.toThrow(/holds files flusso did not write \(data\.jsonl, pipeline\.yaml\)/);
    expect(readdirSync(project).sort()).toEqual(["data.jsonl", "pipeline.yaml"]);
    const dir = fresh();
    const lock = await lockStateDir(dir);
    expect(existsSync(join(dir, STATE_DIR_MARKER))).toBe(true);
    await lock.release();
  });

  it("resets only the store files, in a dir of its own", async () => {
    const dir = fresh();
    await (await lockStateDir(dir)).release();
    writeFileSync(join(dir, "data.mdb"), "x");
    writeFileSync(join(dir, "lock.mdb"), "x");
    writeFileSync(join(dir, "notes.txt"), "kept");
    const lock = await lockStateDir(dir, { reset: true });
    expect(readdirSync(dir).sort()).toEqual([STATE_DIR_MARKER, "holder.pid", "notes.txt"]);
    await lock.release();
  });

  it("takes a dir that holds only LMDB's files, as earlier flusso versions left it", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "data.mdb"), "");
    const lock = await lockStateDir(dir);
    expect(existsSync(join(dir, STATE_DIR_MARKER))).toBe(true);
    await lock.release();
  });
});
