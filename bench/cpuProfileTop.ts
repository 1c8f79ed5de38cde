// Sums the self time of .cpuprofile files per function (name + file + line) and prints the top ones.
// Usage: node --import tsx bench/cpuProfileTop.ts <profile dir or file> [top=15]
// A directory's profiles are summed (under tsx, Node 20 writes one more for the loader thread, idle
// while the job runs); "(idle)" is left out of the shares. With a job-span.json beside the profiles
// (bench/profileEngine.ts writes one), only samples taken while the job ran count.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fmt } from "./benchUtil.ts";

type CallFrame = { functionName: string; url: string; lineNumber: number; columnNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame };
type CpuProfile = { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] };

const [target = "/tmp/prof-bench", topText = "15"] = process.argv.slice(2);
const isDir = statSync(target).isDirectory();
const files = isDir ? readdirSync(target).filter((f) => f.endsWith(".cpuprofile")).map((f) => join(target, f)) : [target];
const spanPath = join(isDir ? target : dirname(target), "job-span.json");
const span = existsSync(spanPath) ? (JSON.parse(readFileSync(spanPath, "utf8")) as { fromUs: number; toUs: number }) : undefined;

const selfUs = new Map<string, number>();
let totalUs = 0;
let idleUs = 0;
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let atUs = profile.startTime;
  // A sample's timeDelta is the time since the previous sample: it is charged to this sample's node.
  profile.samples.forEach((id, i) => {
    const deltaUs = profile.timeDeltas[i] ?? 0;
    atUs += deltaUs;
    if (span && (atUs < span.fromUs || atUs > span.toUs)) return;
    const { functionName, url, lineNumber, columnNumber } = byId.get(id)!.callFrame;
    if (functionName === "(idle)") {
      idleUs += deltaUs;
      return;
    }
    // Under tsx the line and column are those of the transformed module; they tell functions apart.
    const where = url ? `${url.startsWith("file://") ? relative(process.cwd(), new URL(url).pathname) : url}:${lineNumber + 1}:${columnNumber + 1}` : "";
    const name = `${functionName || "(anonymous)"} ${where}`.trim();
    selfUs.set(name, (selfUs.get(name) ?? 0) + deltaUs);
    totalUs += deltaUs;
  });
}
console.log(
  `${files.length} profile(s) in ${target}: ${fmt(totalUs / 1000)} ms busy, ${fmt(idleUs / 1000)} ms idle${span ? `, while the job ran (${fmt((span.toUs - span.fromUs) / 1000)} ms)` : ""}`,
);
for (const [name, us] of [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, Number(topText))) {
  console.log(`${fmt(us / 1000).padStart(7)} ms ${((us / totalUs) * 100).toFixed(1).padStart(5)}%  ${name}`);
}
