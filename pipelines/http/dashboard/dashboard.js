// The dashboard's script, plain browser JavaScript (no build step): it draws the job's samples with
// uPlot, from /api/v1/series first and then live from /api/v1/stream (server-sent events), falling
// back to polling the series when the stream cannot be opened; and it shows one user's state from
// /api/v1/keys/{key}. With a token on the server, open the page as /?token=<token>.
"use strict";

(() => {
  const token = new URLSearchParams(location.search).get("token");
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const HISTORY_SAMPLES = 600;
  const POLL_MS = 1000;
  const PROMISE_MS = 500;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c", "#0d9488", "#9333ea"];

  /** What the page holds, for whoever inspects it (the browser test reads the charts' data here). */
  const dashboard = { name: "", intervalMs: 1000, samples: [], charts: {}, keyState: undefined, experiments: undefined };
  /** How often the experiments' reports are fetched again (a report comes once a period of event time). */
  const EXPERIMENTS_POLL_MS = 5000;
  window.__flussoDashboard = dashboard;

  /** Entries of a name -> count map, prefixed; missing maps give none. */
  const prefixed = (prefix, counts) => Object.fromEntries(Object.entries(counts ?? {}).map(([name, n]) => [`${prefix}${name}`, n]));

  /**
   * Each chart: the values a sample gives it, by series name (a name that no sample gives is not
   * drawn; a chart no sample gives anything is hidden), its unit, and styles for special series.
   */
  const CHARTS = [
    { id: "events", title: "Events read per second", unit: "events/s", values: (s) => ({ "events/s": s.eventsPerSecond }) },
    {
      id: "latency",
      title: "Output latency (source to sink) against the 500 ms promise",
      unit: "ms",
      values: (s) => ({ p50: s.latencyP50Ms, p99: s.latencyP99Ms, "500 ms": PROMISE_MS }),
      styles: { "500 ms": { stroke: "#dc2626", dash: [6, 4], width: 1 } },
      // The promise line alone is no data: the chart waits for a latency.
      hasData: (s) => s.latencyP50Ms !== null,
    },
    { id: "watermarkLag", title: "Watermark lag (processing time minus watermark)", unit: "lag", values: (s) => ({ lag: s.watermarkLagSeconds }), format: formatSeconds },
    { id: "checkpoints", title: "Checkpoint duration (start to durable)", unit: "ms", values: (s) => ({ checkpoint: s.checkpointMs }), points: true },
    {
      id: "failures",
      title: "Dead letters and late events",
      unit: "per s",
      values: (s) => ({ "dead letters/s": s.deadLettersPerSecond, "late/s": s.latePerSecond, "dead letters (total)": s.deadLetters, "late (total)": s.late }),
      scaleOf: (name) => (name.endsWith("(total)") ? "total" : "y"),
      styles: { "dead letters (total)": { dash: [4, 3] }, "late (total)": { dash: [4, 3] } },
    },
    { id: "segments", title: "Segment sizes (members)", unit: "users", values: (s) => Object.assign({}, ...Object.entries(s.segments?.groups ?? {}).map(([group, segments]) => prefixed(`${group}: `, segments))) },
    { id: "tags", title: "Tags (members)", unit: "users", values: (s) => prefixed("", s.segments?.tags) },
    { id: "triggers", title: "Triggers per channel (sent, total)", unit: "triggers", values: (s) => prefixed("", s.triggersByChannel) },
    { id: "clusters", title: "Cluster sizes (members)", unit: "users", values: (s) => prefixed("", s.clusters) },
  ];

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatNumber(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    const abs = Math.abs(n);
    if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 1 : 2)}M`;
    if (abs >= 1e4) return `${(n / 1e3).toFixed(abs >= 1e5 ? 0 : 1)}k`;
    if (abs >= 100 || Number.isInteger(n)) return String(Math.round(n));
    return n.toPrecision(3);
  }

  /** A duration in seconds as a person reads it: 850 ms, 12 s, 3.5 min, 5.1 h, 2.0 d. */
  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const abs = Math.abs(seconds);
    const sign = seconds < 0 ? "-" : "";
    if (abs < 1) return `${sign}${Math.round(abs * 1000)} ms`;
    if (abs < 120) return `${sign}${abs.toFixed(abs < 10 ? 1 : 0)} s`;
    if (abs < 7200) return `${sign}${(abs / 60).toFixed(1)} min`;
    if (abs < 172800) return `${sign}${(abs / 3600).toFixed(1)} h`;
    return `${sign}${(abs / 86400).toFixed(1)} d`;
  }

  // --- charts ---------------------------------------------------------------------------------

  const panels = new Map();
  for (const chart of CHARTS) {
    const panel = el("section", "panel");
    panel.id = `chart-${chart.id}`;
    panel.hidden = true;
    panel.append(el("h2", "", chart.title), el("div", "plot"));
    $("charts").append(panel);
    panels.set(chart.id, panel);
  }

  /** Series names in the order they first appear in the samples. */
  function seriesNames(chart, samples) {
    const names = new Set();
    for (const sample of samples) for (const [name, value] of Object.entries(chart.values(sample))) if (value !== undefined) names.add(name);
    return [...names];
  }

  function chartData(chart, names, samples) {
    const rows = samples.map((s) => chart.values(s));
    return [samples.map((s) => s.timeMs / 1000), ...names.map((name) => rows.map((row) => row[name] ?? null))];
  }

  function chartOptions(chart, names, width) {
    const format = chart.format ?? formatNumber;
    const scales = new Set(names.map((name) => chart.scaleOf?.(name) ?? "y"));
    const axes = [{ stroke: "#64748b" }, { stroke: "#64748b", size: 64, label: chart.unit, values: (u, splits) => splits.map(format) }];
    if (scales.has("total")) axes.push({ scale: "total", side: 1, stroke: "#64748b", size: 64, grid: { show: false }, label: "total", values: (u, splits) => splits.map(formatNumber) });
    return {
      width,
      height: 220,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, ...(scales.has("total") ? { total: { auto: true } } : {}) },
      axes,
      series: [
        { value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleTimeString()) },
        ...names.map((name, i) => ({
          label: name,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: true,
          scale: chart.scaleOf?.(name) ?? "y",
          points: { show: chart.points === true },
          value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
          ...chart.styles?.[name],
        })),
      ],
    };
  }

  function draw() {
    const samples = dashboard.samples;
    for (const chart of CHARTS) {
      const panel = panels.get(chart.id);
      const names = seriesNames(chart, samples);
      const hasData = samples.some((s) => (chart.hasData ? chart.hasData(s) : Object.values(chart.values(s)).some((v) => v !== null && v !== undefined)));
      const existing = dashboard.charts[chart.id];
      if (!hasData) {
        existing?.plot.destroy();
        delete dashboard.charts[chart.id];
        panel.hidden = true;
        continue;
      }
      panel.hidden = false;
      const data = chartData(chart, names, samples);
      let plot = existing?.plot;
      if (existing && existing.names.join("\u0000") === names.join("\u0000")) {
        plot.setData(data);
      } else {
        // New series (a segment seen for the first time): uPlot's series are fixed, so draw afresh.
        existing?.plot.destroy();
        const target = panel.querySelector(".plot");
        plot = new uPlot(chartOptions(chart, names, target.clientWidth || 600), data, target);
        dashboard.charts[chart.id] = { names, plot };
      }
      // Away from the cursor the legend tells the latest values.
      if (plot.cursor.left === undefined || plot.cursor.left < 0) plot.setLegend({ idx: data[0].length - 1 });
    }
  }

  window.addEventListener("resize", () => {
    for (const [id, { plot }] of Object.entries(dashboard.charts)) plot.setSize({ width: panels.get(id).querySelector(".plot").clientWidth, height: 220 });
  });

  // --- header -----------------------------------------------------------------------------------

  function showHeader() {
    const last = dashboard.samples.at(-1);
    $("pipeline-name").textContent = dashboard.name;
    document.title = `${dashboard.name} · flusso`;
    if (!last) return;
    const phase = $("phase");
    phase.textContent = last.phase;
    phase.className = `badge phase-${last.phase}`;
    $("ready").textContent = last.notReady === undefined ? "ready" : `not ready: ${last.notReady}`;
    $("ready").className = last.notReady === undefined ? "ready is-ready" : "ready is-not-ready";
    $("fact-read").textContent = formatNumber(last.read);
    $("fact-rate").textContent = formatNumber(last.eventsPerSecond);
    $("fact-watermark").textContent = last.watermarkMs === null ? "–" : new Date(last.watermarkMs).toISOString().replace(".000Z", "Z");
    $("fact-updated").textContent = new Date(last.timeMs).toLocaleTimeString();
  }

  function showProblem(text) {
    const problem = $("problem");
    problem.hidden = text === undefined;
    problem.textContent = text ?? "";
  }

  // --- samples: the series, then the stream (or polling) ------------------------------------------

  function setSeries(series) {
    dashboard.name = series.name;
    dashboard.intervalMs = series.intervalMs;
    dashboard.samples = series.samples.slice(-HISTORY_SAMPLES);
    showHeader();
    draw();
  }

  function addSample(sample) {
    dashboard.samples.push(sample);
    if (dashboard.samples.length > HISTORY_SAMPLES) dashboard.samples.splice(0, dashboard.samples.length - HISTORY_SAMPLES);
    showHeader();
    draw();
  }

  async function fetchSeries() {
    const response = await fetch("/api/v1/series", { headers });
    if (response.status === 401) throw new Error(token ? "the token was refused (401)" : "this server asks for a token: open the page as /?token=<token>");
    if (!response.ok) throw new Error(`/api/v1/series answered ${response.status}`);
    return response.json();
  }

  function poll() {
    const again = () =>
      fetchSeries()
        .then((series) => (showProblem(undefined), setSeries(series)))
        .catch((error) => showProblem(`${error.message}; retrying`))
        .finally(() => setTimeout(again, POLL_MS));
    again();
  }

  function stream() {
    const source = new EventSource(`/api/v1/stream${token ? `?access_token=${encodeURIComponent(token)}` : ""}`);
    source.addEventListener("history", (event) => (showProblem(undefined), setSeries(JSON.parse(event.data))));
    source.addEventListener("sample", (event) => addSample(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) return showProblem("the connection to the job dropped; reconnecting");
      // The browser gave up on the stream: poll instead.
      source.close();
      poll();
    });
  }

  async function start() {
    let series;
    try {
      series = await fetchSeries();
      setSeries(series);
    } catch (error) {
      return showProblem(error.message);
    }
    if (series.experiments) void refreshExperiments();
    if (typeof EventSource === "function") stream();
    else poll();
  }

  // --- one user's state ---------------------------------------------------------------------------

  /** Any JSON as nested tables: objects and arrays as rows, each leaf marked with its path (`data-path`, a JSON array). */
  function renderJson(value, path) {
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
      if (entries.length === 0) return el("span", "empty", Array.isArray(value) ? "[ ]" : "{ }");
      const table = el("table", Array.isArray(value) ? "tree is-array" : "tree");
      for (const [name, child] of entries) {
        const row = table.insertRow();
        row.append(el("th", "", name));
        const cell = row.insertCell();
        cell.append(renderJson(child, [...path, name]));
      }
      return table;
    }
    const leaf = el("span", `leaf is-${value === null ? "null" : typeof value}`, typeof value === "string" ? value : JSON.stringify(value));
    leaf.dataset.path = JSON.stringify(path);
    const name = path.at(-1) ?? "";
    // Epoch-ms times read better as dates: shown on hover.
    if (typeof value === "number" && value > 1e11 && value < 1e14 && /(ms|Ms|_at|At|time|Time)$/.test(name)) leaf.title = new Date(value).toISOString();
    return leaf;
  }

  async function lookUp(key) {
    const result = $("key-result");
    result.replaceChildren(el("p", "muted", `looking up ${key}…`));
    try {
      const response = await fetch(`/api/v1/keys/${encodeURIComponent(key)}`, { headers });
      if (response.status === 404) {
        dashboard.keyState = { key, state: null };
        const { error } = await response.json().catch(() => ({}));
        return result.replaceChildren(el("p", "muted", `${key}: ${error ?? "no such key in the job's state"}`));
      }
      if (!response.ok) throw new Error(`/api/v1/keys answered ${response.status}`);
      const state = await response.json();
      dashboard.keyState = { key, state };
      result.replaceChildren(el("h2", "", key), renderJson(state, []));
    } catch (error) {
      result.replaceChildren(el("p", "problem", error.message));
    }
  }

  // --- experiments: a panel each, from /api/v1/experiments (404: the pipeline runs none) ----------

  const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
  const pValue = (p) => (p === null || p === undefined ? "–" : p < 0.001 ? p.toExponential(1) : p.toFixed(3));

  /** A rate and its 95% interval on a 0-100% bar. */
  function rateBar(rate, interval) {
    const bar = el("div", "rate");
    if (interval) {
      const ci = el("div", "ci");
      ci.style.left = `${interval[0] * 100}%`;
      ci.style.width = `${Math.max(0.5, (interval[1] - interval[0]) * 100)}%`;
      bar.append(ci);
    }
    if (rate !== null && rate !== undefined) {
      const point = el("div", "point");
      point.style.left = `${rate * 100}%`;
      bar.append(point);
    }
    return bar;
  }

  function experimentPanel({ experiment, rule, report }) {
    const panel = el("section", "panel");
    panel.dataset.experiment = experiment;
    panel.append(el("h2", "", `Experiment ${experiment} (rule ${rule})`));
    if (report === null) {
      panel.append(el("p", "muted", "no report yet: the first comes at the end of the first report period"));
      return panel;
    }
    const overall = report.cells.find((cell) => cell.group === null);
    const byVariant = Object.fromEntries(overall.variants.map((v) => [v.variant, v]));
    const table = el("table", "arms");
    const head = el("tr");
    for (const title of ["arm", "counted", "converted", "rate (95% interval)", "", "awaiting", "uplift", "Welch p"]) head.append(el("th", "", title));
    table.append(el("thead"));
    table.tHead.append(head);
    const body = el("tbody");
    for (const arm of overall.arms) {
      const row = el("tr");
      const test = arm.variant === null ? undefined : byVariant[arm.variant];
      const ci = arm.conversion_rate_ci;
      row.append(
        el("td", "", arm.variant ?? "holdout"),
        el("td", "", formatNumber(arm.exposed)),
        el("td", "", formatNumber(arm.converted)),
        el("td", "", `${percent(arm.conversion_rate)}${ci ? ` (${percent(ci[0])}-${percent(ci[1])})` : ""}`),
      );
      const barCell = el("td");
      barCell.append(rateBar(arm.conversion_rate, ci));
      row.append(barCell, el("td", "", formatNumber(arm.awaiting)), el("td", "", test ? percent(test.uplift) : ""), el("td", "", test?.welch_t ? pValue(test.welch_t.p_value) : ""));
      body.append(row);
    }
    table.append(body);
    panel.append(table);
    const chi = overall.chi_squared;
    const tests = el("p", "tests");
    if (chi) {
      const verdict = el("span", chi.p_value < 0.05 ? "significant" : "", `chi-squared p = ${pValue(chi.p_value)}`);
      tests.append(verdict, ` (${chi.degrees_of_freedom} df${chi.low_expected_counts ? "; an expected count below 5: not to be trusted" : ""})`);
    } else tests.append("chi-squared: not yet computable");
    tests.append(` · ${report.final ? "final report" : "report"} of ${new Date(report.time_ms).toISOString().slice(0, 16).replace("T", " ")} (event time); decide at the sample size planned, not at the first p < 0.05`);
    panel.append(tests);
    return panel;
  }

  async function refreshExperiments() {
    try {
      const response = await fetch("/api/v1/experiments", { headers });
      if (response.ok) {
        const { experiments } = await response.json();
        dashboard.experiments = experiments;
        const section = $("experiments");
        section.replaceChildren(...experiments.map(experimentPanel));
        section.hidden = experiments.length === 0;
      }
    } catch {
      // Asked again at the next poll: the job may be restarting.
    }
    setTimeout(refreshExperiments, EXPERIMENTS_POLL_MS);
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key !== "") void lookUp(key);
  });

  void start();
})();
