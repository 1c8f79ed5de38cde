// Experiments on trigger rules: assignment by hash, holdouts that get nothing and spend nothing,
// attribution in event time (golden scenarios worked out by hand), and reports whose figures an
// independent recomputation from the exposure and conversion outputs gives again.
import { describe, expect, it } from "vitest";
import { armOf, HOLDOUT } from "../../engine/assignment.ts";
import { chiSquared, welchT, type ArmSums } from "../../operators/experimentStats.ts";
import type { StageDefinition } from "../../operators/stage.ts";
import { configErrors, DAY_MS, ev, expectRestartsChangeNothing, HOUR_MS, runStages, signals, stagesFromYaml, T0, wm, type Emitted } from "../behaviourHarness.ts";
import { mulberry32 } from "../harness.ts";

/** Writes the event's `page` into `lifecycle`, as a segment group would. */
const lifecycle: StageDefinition = {
  name: "lifecycle",
  build: () => ({
    step(view) {
      view.vars.lifecycle = view.event?.search_query ?? "nuovo";
    },
  }),
};

const abandoned = (user: string, timeMs: number, segment = "nuovo") => ev(user, timeMs, { event_type: "signal", page: "sequence:cart_abandoned", session_duration_sec: 1, search_query: segment });
const purchase = (user: string, timeMs: number, value: number) => ev(user, timeMs, { event_type: "purchase", page: "/checkout", session_duration_sec: 1, order_value: value });

function yaml({ holdout = "50%", within = "2d", report = "1d", cap = "" } = {}): string {
  return `
triggers:
  rules:
    cart_recovery:
      on: { sequence: cart_abandoned }
      message: "Hai dimenticato qualcosa"
      channels: [email]
      ${cap}
      experiment:
        name: cr
        holdout: ${holdout}
        variants:
          - { name: sconto_10, weight: 1 }
          - { name: spedizione, weight: 1, message: "Spedizione gratuita" }
        goal: 'event_type == "purchase"'
        value: order_value
        within: ${within}
        by: [lifecycle]
        report: ${report}
`;
}

const stagesOf = (text: string) => {
  // The lifecycle stand-in must come before the triggers: declared as a view variable.
  const [triggers, experiments] = stagesFromYaml(text, { ...TEST_FIELDS_WITH_LIFECYCLE });
  return [signals, lifecycle, triggers, experiments];
};
const TEST_FIELDS_WITH_LIFECYCLE: Record<string, string> = {
  user_id: "string",
  timestamp: "double",
  event_type: "string",
  page: "string",
  session_duration_sec: "double",
  search_query: "string",
  order_value: "double",
  lifecycle: "string",
};

/** Users in the held-out arm and in each variant, of those named u0, u1, ... */
function usersIn(arm: string, count: number): string[] {
  const found: string[] = [];
  for (let i = 0; found.length < count; i++) if (armOf({ experiment: "cr", holdout: 0.5, variants: VARIANTS }, `u${i}`) === arm) found.push(`u${i}`);
  return found;
}
const VARIANTS = [
  { name: "sconto_10", weight: 1 },
  { name: "spedizione", weight: 1 },
];

describe("assignment", () => {
  it("puts each arm's share of 100,000 users within 1% of its weight, the same way every time", () => {
    const assignment = { experiment: "cart_recovery_2024q2", holdout: 0.1, variants: [{ name: "a", weight: 1 }, { name: "b", weight: 3 }] };
    const counts: Record<string, number> = {};
    for (let i = 0; i < 100_000; i++) counts[armOf(assignment, `user-${i}`)] = (counts[armOf(assignment, `user-${i}`)] ?? 0) + 1;
    expect(Math.abs(counts[HOLDOUT] / 100_000 - 0.1)).toBeLessThan(0.01);
    expect(Math.abs(counts.a / 100_000 - 0.9 * 0.25)).toBeLessThan(0.01);
    expect(Math.abs(counts.b / 100_000 - 0.9 * 0.75)).toBeLessThan(0.01);
    // Another experiment shuffles users anew: arms are not shared between experiments.
    const other = { ...assignment, experiment: "another" };
    let same = 0;
    for (let i = 0; i < 1000; i++) if (armOf(other, `user-${i}`) === armOf(assignment, `user-${i}`)) same++;
    expect(same).toBeLessThan(800);
  });

  it("gives the same arms on a reordered stream and across restarts", async () => {
    const rnd = mulberry32(5);
    const events = Array.from({ length: 40 }, (_, i) => abandoned(`u${i}`, T0 + i * 1000));
    const shuffled = [...events].sort(() => rnd() - 0.5);
    const armsOf = (outputs: Emitted[]) =>
      Object.fromEntries(outputs.filter((o) => o.kind === "exposure").map((o) => [o.key, o.body.variant ?? HOLDOUT]));
    const inOrder = armsOf((await runStages(stagesOf(yaml()), [...events, wm(T0 + DAY_MS)])).outputs);
    const reordered = armsOf((await runStages(stagesOf(yaml()), [...shuffled, wm(T0 + DAY_MS)])).outputs);
    expect(reordered).toEqual(inOrder);
    expect(new Set(Object.values(inOrder))).toEqual(new Set([HOLDOUT, "sconto_10", "spedizione"]));
  });
});

describe("holdouts and variants", () => {
  it("send a held-out user nothing and spend none of their cap; a variant's message is its own", async () => {
    const [held] = usersIn(HOLDOUT, 1);
    const [shipping] = usersIn("spedizione", 1);
    const text = yaml({ cap: "cap: { max: 1, per: 7d }" });
    const run = await runStages(stagesOf(text), [abandoned(held, T0), abandoned(shipping, T0 + 1), wm(T0 + HOUR_MS)]);
    const sent = run.byKind("trigger");
    expect(sent.map((o) => o.key)).toEqual([shipping]);
    expect(sent[0].body.messaggio).toBe("Spedizione gratuita");
    expect(run.counts.triggers_held_out).toBe(1);
    // Both are exposed, at the moment the rule fired.
    expect(run.byKind("exposure").map((o) => [o.key, o.body.arm, o.body.variant, o.time])).toEqual([
      [held, HOLDOUT, null, T0],
      [shipping, "variant", "spedizione", T0 + 1],
    ]);
  });

  it("refuses a variant named holdout, two variants of one name, a holdout of 100%, a goal that is not a condition and an unknown segment group, naming the paths", () => {
    const refused = configErrors(
      yaml({ holdout: "100%" })
        .replace("{ name: sconto_10, weight: 1 }", "{ name: holdout, weight: 1 }")
        .replace("{ name: spedizione, weight: 1,", "{ name: holdout, weight: 2,"),
      TEST_FIELDS_WITH_LIFECYCLE,
    );
    expect(refused).toContainEqual(expect.stringContaining("triggers.rules.cart_recovery.experiment.holdout: expected a share"));
    expect(refused).toContainEqual(expect.stringContaining("triggers.rules.cart_recovery.experiment.variants[0].name: \"holdout\" names the held-out arm"));
    const measuring = configErrors(yaml().replace("goal: 'event_type == \"purchase\"'", "goal: 'order_value'").replace("by: [lifecycle]", "by: [nowhere]"), TEST_FIELDS_WITH_LIFECYCLE);
    expect(measuring).toContainEqual(expect.stringContaining("triggers.rules.cart_recovery.experiment.goal"));
    expect(measuring).toContainEqual(expect.stringContaining("triggers.rules.cart_recovery.experiment.by[0]"));
    const twice = configErrors(yaml().replace("{ name: sconto_10, weight: 1 }", "{ name: spedizione, weight: 1 }"), TEST_FIELDS_WITH_LIFECYCLE);
    expect(twice).toContainEqual(expect.stringContaining("triggers.rules.cart_recovery.experiment.variants[1].name: two variants are named"));
  });
});

describe("attribution, in event time (golden scenarios)", () => {
  const [a, b, c, d, e] = usersIn("sconto_10", 5);
  const exposedAt = T0 + HOUR_MS;
  const windowEnd = exposedAt + 2 * DAY_MS;
  const elements = [
    wm(T0),
    // a converts on the window's last millisecond: converted, its value counts.
    abandoned(a, exposedAt),
    purchase(a, windowEnd, 40),
    // b buys a millisecond after the window: not converted.
    abandoned(b, exposedAt),
    purchase(b, windowEnd + 1, 99),
    // c bought before its exposure, then never again: not converted.
    purchase(c, exposedAt - 1, 10),
    abandoned(c, exposedAt),
    // d is exposed twice: the first exposure starts the window, the second changes nothing.
    abandoned(d, exposedAt),
    abandoned(d, exposedAt + DAY_MS),
    purchase(d, exposedAt + DAY_MS + 1, 5),
    purchase(d, exposedAt + DAY_MS + 2, 7),
    // e is erased while its window is open: it counts nowhere.
    abandoned(e, exposedAt),
    ev(e, exposedAt + HOUR_MS, { event_type: "erasure_request", page: "/", session_duration_sec: 1 }),
    // Past the next day's start: the report there counts every window, all closed by then.
    wm(T0 + 3 * DAY_MS + HOUR_MS),
  ];

  it("counts the users whose window has closed: converted on the last millisecond, not after it nor before exposure, exposed twice once, erased nowhere", async () => {
    const run = await runStages(stagesOf(yaml({ report: "1d" })), elements, { erasesWhen: (vars) => vars.event_type === "erasure_request" });
    const conversions = run.byKind("conversion").map((o) => [o.key, o.body.value, o.time]);
    expect(conversions).toEqual([
      [a, 40, windowEnd],
      [d, 5, exposedAt + DAY_MS + 1],
      [d, 7, exposedAt + DAY_MS + 2],
    ]);
    expect(run.counts.experiment_exposed_again).toBe(1);
    const reports = run.byKind("experiment");
    const last = reports[reports.length - 1].body as { cells: Array<{ segment: string | null; arms: Array<Record<string, unknown>> }> };
    const overall = last.cells.find((cell) => cell.segment === null)!.arms.find((arm) => arm.variant === "sconto_10")!;
    // a, b, c and d are counted (4), a and d converted; e was erased.
    expect(overall).toMatchObject({ exposed: 4, converted: 2, awaiting: 0, conversion_rate: 0.5, revenue_mean: 13 });
  });

  it("changes nothing across restarts at any point", async () => {
    const stages = stagesOf(yaml());
    const expected = (await runStages(stages, elements.filter((el) => el.kind !== "record" || el.value.event_type !== "erasure_request"))).outputs;
    await expectRestartsChangeNothing(stages, elements.filter((el) => el.kind !== "record" || el.value.event_type !== "erasure_request"), expected);
  });
});

describe("the report", () => {
  it("gives the figures an independent recomputation from the exposure and conversion outputs gives", async () => {
    const rnd = mulberry32(17);
    const elements = [];
    for (let i = 0; i < 600; i++) {
      const user = `r${i}`;
      const atMs = T0 + Math.floor(rnd() * 3 * DAY_MS);
      elements.push(abandoned(user, atMs, rnd() < 0.5 ? "nuovo" : "fedele"));
      if (rnd() < 0.3) elements.push(purchase(user, atMs + Math.floor(rnd() * 3 * DAY_MS), Math.round(rnd() * 10_000) / 100));
    }
    elements.sort((x, y) => x.time - y.time);
    elements.unshift(wm(T0 - 1));
    elements.push(wm(T0 + 10 * DAY_MS));
    const run = await runStages(stagesOf(yaml({ holdout: "20%" })), elements);
    const reports = run.byKind("experiment");
    const report = reports[reports.length - 1];
    const withinMs = 2 * DAY_MS;
    // Recomputed from the audit outputs alone: each exposure whose window has closed by the report,
    // converted when a conversion output names it, its revenue the sum of their values.
    const sums = new Map<string, ArmSums>();
    const conversions = run.byKind("conversion");
    for (const exposure of run.byKind("exposure")) {
      if (exposure.time + withinMs >= report.time) continue;
      const own = conversions.filter((c) => c.key === exposure.key);
      const value = own.reduce((s, c) => s + (c.body.value as number), 0);
      for (const cell of ["*", `lifecycle=${(exposure.body.segments as Record<string, string>).lifecycle}`]) {
        const key = `${cell}|${exposure.body.variant ?? HOLDOUT}`;
        const s = sums.get(key) ?? { exposed: 0, converted: 0, revenueSum: 0, revenueSumOfSquares: 0 };
        s.exposed++;
        if (own.length > 0) s.converted++;
        s.revenueSum += value;
        s.revenueSumOfSquares += value * value;
        sums.set(key, s);
      }
    }
    const body = report.body as { cells: Array<{ group: string | null; segment: string | null; arms: Array<{ exposed: number; converted: number }>; chi_squared: { statistic: number; p_value: number }; variants: Array<{ welch_t: { statistic: number; p_value: number } }> }> };
    for (const cell of body.cells) {
      const key = cell.group === null ? "*" : `${cell.group}=${cell.segment}`;
      const arms = [HOLDOUT, "sconto_10", "spedizione"].map((arm) => sums.get(`${key}|${arm}`) ?? { exposed: 0, converted: 0, revenueSum: 0, revenueSumOfSquares: 0 });
      expect(cell.arms.map((arm) => [arm.exposed, arm.converted])).toEqual(arms.map((s) => [s.exposed, s.converted]));
      const chi = chiSquared(arms)!;
      expect(cell.chi_squared.statistic).toBeCloseTo(chi.statistic, 4);
      expect(cell.chi_squared.p_value).toBeCloseTo(chi.p_value, 5);
      const welch = welchT(arms[1], arms[0])!;
      expect(cell.variants[0].welch_t.statistic).toBeCloseTo(welch.statistic, 4);
    }
    expect(body.cells.map((cell) => cell.segment)).toEqual([null, "fedele", "nuovo"]);
  });
});
