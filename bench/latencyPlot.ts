// The latency-over-time plot of one `bench:latency` run: every features output's latency at the time
// it arrived, the checkpoints (each one's span, from its start to durable) and the cluster runs (the
// arrival of each `clusters` output) marked on the same clock; drawn with uPlot in headless chromium,
// saved as PNG. Again from a run's series:
//   node --import tsx bench/latencyPlot.ts bench/results/latency-retention-series.json bench/results/latency-retention.png
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { launchChromium } from "../test/chromium.ts";
import type { CheckpointMark, ClusterMark } from "./retentionLatencyRuns.ts";

const ROOT = resolve(import.meta.dirname, "..");
const WIDTH = 1600;
const HEIGHT = 700;

export type PlotData = {
  title: string;
  /** Per output: its event's publish time and its latency, ms (time from the run's first stamp). */
  stampMs: number[];
  latencyMs: number[];
  checkpoints: CheckpointMark[];
  clusterRuns: ClusterMark[];
};

/** The page: uPlot and its stylesheet inlined, the data as JSON; `window.done` once drawn. */
function page(data: PlotData): string {
  const uplot = readFileSync(join(ROOT, "node_modules/uplot/dist/uPlot.iife.min.js"), "utf8");
  const css = readFileSync(join(ROOT, "node_modules/uplot/dist/uPlot.min.css"), "utf8");
  return `<!doctype html><html><head><meta charset="utf-8"><style>${css}
body { margin: 0; background: #fff; font: 14px sans-serif; } #plot { padding: 8px; }
.legend-extra { padding: 0 16px 8px; color: #333; }</style><script>${uplot}</script></head>
<body><div id="plot"></div><div class="legend-extra" id="extra"></div><script>
const data = ${JSON.stringify(data)};
// Points at their arrival (publish stamp + latency), in seconds, sorted: on the clock of the
// checkpoints, so the outputs a checkpoint released stand at its end. The marks are drawn over them.
const arrivals = data.stampMs.map((s, i) => s + data.latencyMs[i]);
const order = arrivals.map((_, i) => i).sort((a, b) => arrivals[a] - arrivals[b]);
const xs = order.map((i) => arrivals[i] / 1000);
const ys = order.map((i) => data.latencyMs[i]);
const marks = (u) => {
  const ctx = u.ctx;
  const top = u.bbox.top, height = u.bbox.height;
  ctx.save();
  for (const c of data.checkpoints) {
    const x0 = u.valToPos(c.startedAtMs / 1000, "x", true), x1 = u.valToPos((c.startedAtMs + c.totalMs) / 1000, "x", true);
    ctx.fillStyle = "rgba(0, 120, 255, 0.10)";
    ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
    ctx.fillStyle = "rgba(0, 90, 200, 0.7)";
    ctx.fillRect(x1, top + height - 8, 1, 8);
  }
  ctx.strokeStyle = "rgba(220, 0, 0, 0.9)";
  ctx.fillStyle = "rgba(220, 0, 0, 0.9)";
  ctx.lineWidth = 2;
  ctx.font = "12px sans-serif";
  for (const c of data.clusterRuns) {
    const x = u.valToPos(c.receivedAtMs / 1000, "x", true);
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
    ctx.fillText("clusters run " + c.run + " (" + c.users + " users)", x + 4, top + 14);
  }
  ctx.restore();
};
new uPlot({
  title: data.title,
  width: ${WIDTH}, height: ${HEIGHT},
  scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(10, max * 1.05)] } },
  axes: [{ label: "output received (s from the run's first publish)" }, { label: "publish -> features output received (ms)", size: 70 }],
  series: [{ label: "s" }, { label: "latency (ms)", stroke: "rgba(40, 40, 40, 0.6)", paths: () => null, points: { show: true, size: 2, fill: "rgba(40,40,40,0.45)", stroke: "rgba(40,40,40,0.45)" } }],
  legend: { show: true },
  hooks: { draw: [marks] },
}, [xs, ys], document.getElementById("plot"));
const held = data.checkpoints.map((c) => c.waitMs + c.flushMs + c.snapshotMs);
document.getElementById("extra").textContent =
  "Blue bands: checkpoints, from start to durable (" + data.checkpoints.length + "; a NATS output leaves when its checkpoint is durable, tick at the bottom). " +
  "Red lines: a clusters output (one k-means run) received. Points: " + xs.length + " features outputs.";
window.done = true;
</script></body></html>`;
}

/**
 * Draws the plot to `pngPath`; when chromium cannot be started (not installed) nothing is drawn and
 * the reason is given back, so a bench still writes its figures.
 */
export async function writeLatencyPlot(data: PlotData, pngPath: string): Promise<{ isWritten: true } | { isWritten: false; reason: string }> {
  let chromium;
  try {
    chromium = await launchChromium();
  } catch (error) {
    return { isWritten: false, reason: (error as Error).message };
  }
  try {
    const tab = await chromium.browser.newPage();
    await tab.setViewport({ width: WIDTH + 16, height: HEIGHT + 120, deviceScaleFactor: 1 });
    const htmlPath = `${pngPath}.html`;
    writeFileSync(htmlPath, page(data));
    await tab.goto(`file://${htmlPath}`, { waitUntil: "load" });
    await tab.waitForFunction("window.done === true", { timeout: 30_000 });
    await tab.screenshot({ path: pngPath as `${string}.png`, fullPage: true });
    return { isWritten: true };
  } finally {
    await chromium.close();
    rmSync(`${pngPath}.html`, { force: true });
  }
}

/** `node --import tsx bench/latencyPlot.ts <series.json> <out.png>`: the plot again from a run's series. */
if (import.meta.url === `file://${process.argv[1]}`) {
  const [seriesPath, pngPath] = process.argv.slice(2);
  if (!seriesPath || !pngPath) throw new Error("usage: node --import tsx bench/latencyPlot.ts <series.json> <out.png>");
  const drawn = await writeLatencyPlot(JSON.parse(readFileSync(seriesPath, "utf8")) as PlotData, resolve(pngPath));
  process.stdout.write(drawn.isWritten ? `${pngPath}\n` : `skipped: ${drawn.reason}\n`);
}
