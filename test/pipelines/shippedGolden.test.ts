// Golden scenarios of the shipped pipelines: each config/<name>.yaml run over a few hand-written
// events, with every output worked out by hand from BEHAVIOUR.md's rules as the file states them.
import { afterAll, describe, expect, it } from "vitest";
import { loadPipeline } from "../../pipelines/load.ts";
import { runPipeline } from "../../pipelines/compile.ts";
import { messageId } from "../../operators/triggers.ts";
import { removeTempDirs, tempDir } from "./pipelineFiles.ts";
import { shippedVariant, variantOutput, type Shipped, type VariantOptions } from "./shipped.ts";

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const MINUTE_MS = 60_000;
/** Monday 2024-05-20 09:00 UTC (11:00 in Rome). */
const T0 = Date.UTC(2024, 4, 20, 9);
/** ISO-8601 to the millisecond, as every output's times are. */
const iso = (ms: number) => new Date(ms).toISOString();

afterAll(removeTempDirs);

/**
 * Runs a scenario of hand-written events. Each scenario is worked out to its last deadline, some of
 * which fall after its last event: the input drains at its end (`atEnd: drain`) so they fire.
 */
async function runVariant(name: Shipped, options: VariantOptions): Promise<string> {
  const dir = tempDir(`flusso-golden-${name}-`);
  const result = await runPipeline(loadPipeline(shippedVariant(name, dir, { atEnd: "drain", ...options })), { reset: true });
  expect(result.counters.deadLettered).toBe(0);
  return dir;
}

type Fields = Record<string, unknown>;
const base = { session_duration_sec: 10, tz: "Europe/Rome", consent: { email: true, push: true, sms: true } };
const event = (user: string, timeMs: number, event_type: string, page: string, more: Fields = {}) => ({
  user_id: user,
  timestamp: timeMs,
  event_type,
  page,
  ...base,
  ...more,
});

describe("config/lead-scoring.yaml", () => {
  /** The score as the file defines it, at the time of a lead's latest weighted event. */
  const halfLifeMs = 7 * DAY_MS;
  const decayed = (points: number, ageMs: number) => points * 2 ** (-ageMs / halfLifeMs);

  it("alerts sales once when the score reaches 80, with what drove it, and again only after it fell below", async () => {
    const events = [
      // L1: two pricing visits, a whitepaper, then a demo call: 80 is crossed at the demo call.
      event("L1", T0, "page_view", "/pricing"),
      event("L1", T0 + HOUR_MS, "page_view", "/pricing"),
      event("L1", T0 + 2 * HOUR_MS, "whitepaper_download", "/whitepaper/report-prezzi-2024"),
      event("L1", T0 + 3 * HOUR_MS, "demo_call", "/demo"),
      // L2: two pricing visits only: never near 80.
      event("L2", T0, "page_view", "/pricing"),
      event("L2", T0 + HOUR_MS, "page_view", "/pricing"),
      // L1 again after ten days (the score has halved and more): the same path crosses 80 again.
      event("L1", T0 + 10 * DAY_MS, "page_view", "/pricing"),
      event("L1", T0 + 10 * DAY_MS + HOUR_MS, "page_view", "/pricing"),
      event("L1", T0 + 10 * DAY_MS + 2 * HOUR_MS, "whitepaper_download", "/whitepaper/guida-al-lead-scoring"),
      event("L1", T0 + 10 * DAY_MS + 3 * HOUR_MS, "demo_call", "/demo"),
    ];
    const dir = await runVariant("lead-scoring", { events });
    const alerts = variantOutput(dir, "alerts.jsonl");
    const triggers = variantOutput(dir, "triggers.jsonl");

    // At the first demo call: (1.3 x decayed points + 15 + 40 + 10), nothing decayed since the call.
    const firstAt = T0 + 3 * HOUR_MS;
    const firstPoints = decayed(10, 3 * HOUR_MS) + decayed(10, 2 * HOUR_MS) + decayed(25, HOUR_MS);
    const firstScore = 1.3 * firstPoints + 15 + 40 + 10;
    // Ten days on the score has decayed below 80 (re-armed at the next event). What is left of the
    // old points (~17) with two new pricing visits and a whitepaper, boosted, plus the +15 rule, is
    // ~95: the second crossing is at the whitepaper, an hour before the demo call.
    const secondAt = T0 + 10 * DAY_MS + 2 * HOUR_MS;
    expect(alerts).toHaveLength(2);
    expect(alerts[0]).toMatchObject({ output: "alert", user_id: "L1", time: iso(firstAt), time_ms: firstAt, score: "lead_score", threshold: 80 });
    // Scores and their parts are shown to 6 significant digits (outputs.digits).
    const six = (x: number) => Number(x.toPrecision(6));
    expect(alerts[0].value).toBe(six(firstScore));
    const shown = (ms: number) => ({ time: iso(ms), time_ms: ms });
    // What drove it, adding up to the value: each weighted event's points decayed to the demo
    // call, the 30% boost, and the three rules that hold, by name.
    expect(alerts[0].drivers).toEqual([
      { driver: "event", type: "page_view", page: "/pricing", ...shown(T0), earned: 10, points: six(decayed(10, 3 * HOUR_MS)) },
      { driver: "event", type: "page_view", page: "/pricing", ...shown(T0 + HOUR_MS), earned: 10, points: six(decayed(10, 2 * HOUR_MS)) },
      { driver: "event", type: "whitepaper_download", page: "/whitepaper/report-prezzi-2024", ...shown(T0 + 2 * HOUR_MS), earned: 25, points: six(decayed(25, HOUR_MS)) },
      { driver: "event", type: "demo_call", page: "/demo", ...shown(firstAt), earned: 0, points: 0 },
      { driver: "boost", factor: 1.3, points: six(0.3 * firstPoints) },
      { driver: "rule", rule: "pricing_and_whitepaper", points: 15 },
      { driver: "rule", rule: "demo_call", points: 40 },
      { driver: "rule", rule: "recent_demo_call", points: 10 },
    ]);
    expect(alerts[1]).toMatchObject({ user_id: "L1", time_ms: secondAt });
    expect(alerts[1].value).toBeGreaterThanOrEqual(80);
    expect(alerts[1].value).toBeLessThan(100);
    // The 5 latest weighted events are listed; the two first pricing visits are summed up as
    // earlier events. The demo-call rules no longer hold (the latest event is a whitepaper).
    expect(alerts[1].drivers.map((d: Fields) => d.rule ?? d.driver)).toEqual(["event", "event", "event", "event", "event", "earlier_events", "boost", "pricing_and_whitepaper"]);
    expect(alerts[1].drivers[5].points).toBe(six(decayed(10, 10 * DAY_MS + 2 * HOUR_MS) + decayed(10, 10 * DAY_MS + HOUR_MS)));
    // Each part rounded on its own: they add up to the value to within their rounding (exactly, before it: test/operators/scores.test.ts).
    for (const alert of alerts) expect(alert.drivers.reduce((sum: number, d: Fields) => sum + (d.points as number), 0)).toBeCloseTo(alert.value, 2);
    // The template's body: the seed shape and delivery fields through trigger.*, plus the score;
    // the recipient and the message id come first, whatever a template says.
    expect(triggers).toEqual(
      alerts.map((a) => ({
        user_id: "L1",
        message_id: messageId("lead-scoring", "sales_alert", "L1", a.time_ms, 0),
        rule: "sales_alert",
        segmento: "lead_caldo",
        trigger: "avviso_commerciale",
        messaggio: "Lead caldo: proponi una demo ora, ricontatta entro 2 ore",
        canali: ["crm"],
        follow_up: 0,
        timestamp_trigger: iso(a.time_ms),
        timestamp_trigger_ms: a.time_ms,
        // No quiet hours: at once, written in Rome's time.
        send_at: new Date(a.time_ms + 2 * HOUR_MS).toISOString().replace("Z", "+02:00"),
        send_at_ms: a.time_ms,
        lead_score: expect.closeTo(a.value, 3),
      })),
    );
  });
});

describe("config/retention.yaml", () => {
  const emailOnly = { consent: { email: true, push: false, sms: false } };
  it("sends the cart-abandonment email 2 h after an unpaid cart, a win-back after 7 days away, respecting consent, caps and quiet hours", async () => {
    const night = Date.UTC(2024, 4, 20, 20); // 22:00 in Rome
    const events = [
      // R1 leaves a cart unpaid; it may be emailed only.
      event("R1", T0, "view_home", "/", emailOnly),
      event("R1", T0 + MINUTE_MS, "product_view", "/prodotti/scarpe-rosse", emailOnly),
      event("R1", T0 + 2 * MINUTE_MS, "add_to_cart", "/prodotti/scarpe-rosse", emailOnly),
      // R2 pays for its cart within the 2 hours.
      event("R2", T0, "view_home", "/"),
      event("R2", T0 + MINUTE_MS, "add_to_cart", "/prodotti/zaino"),
      event("R2", T0 + 30 * MINUTE_MS, "purchase", "/checkout", { order_value: 250 }),
      // R3 visits once, late in the evening (Rome time).
      event("R3", night, "view_home", "/"),
      // R4 leaves a cart, then asks to be forgotten: no reminder, no win-back, nothing kept.
      event("R4", T0, "view_home", "/"),
      event("R4", T0 + MINUTE_MS, "add_to_cart", "/prodotti/borsa"),
      event("R4", T0 + 5 * MINUTE_MS, "erasure_request", "/account/privacy"),
    ];
    const dir = await runVariant("retention", { events });
    const cart = "Hai aggiunto al carrello ma non concluso - ecco il 10% di sconto per completare, valido 24h";
    const winBack = "Ci manchi! Torna a trovarci: nuovi arrivi ti aspettano";
    // Each message names its user, has an id made of what it is, and says which rule sent it,
    // whether it is a follow-up, when its cause happened and when to send it (Rome time).
    const message = (user: string, rule: string, trigger: string, messaggio: string, causeMs: number, followUp: number, sendAt: string, canali: string[], segmento: string) => ({
      user_id: user,
      message_id: messageId("retention", rule, user, causeMs, followUp),
      rule,
      segmento,
      trigger,
      messaggio,
      canali,
      follow_up: followUp,
      timestamp_trigger: iso(causeMs),
      timestamp_trigger_ms: causeMs,
      send_at: sendAt,
      send_at_ms: Date.parse(sendAt),
    });
    const cartAt = T0 + 2 * MINUTE_MS + 2 * HOUR_MS;
    // Fewer users than clusters, so no cluster: "segmento" is then the user's lifecycle segment.
    expect(variantOutput(dir, "triggers.jsonl")).toEqual([
      // No purchase within 2 h of the cart: email only (no push consent), at 13:02 in Rome.
      message("R1", "cart_recovery", "email_retargeting", cart, cartAt, 0, "2024-05-20T13:02:00.000+02:00", ["email"], "carrello_abbandonato"),
      // The follow-up 3 days after it, at the next 09:00 in Rome.
      message("R1", "cart_recovery", "email_retargeting", cart, cartAt, 1, "2024-05-24T09:00:00.000+02:00", ["email"], "carrello_abbandonato"),
      // R1's own win-back (7 days after its cart) is not here: its cap is 2 emails in 30 days, both used.
      // R2, 7 days after its purchase (still a VIP: the order is under 30 days old): every channel it consented to.
      message("R2", "win_back", "sms_promemoria", winBack, T0 + 30 * MINUTE_MS + 7 * DAY_MS, 0, "2024-05-27T11:30:00.000+02:00", ["sms", "email"], "vip"),
      // R3 went quiet at 22:00 in Rome: 7 days later is within quiet hours, so it waits for 08:00.
      message("R3", "win_back", "sms_promemoria", winBack, night + 7 * DAY_MS, 0, "2024-05-28T08:00:00.000+02:00", ["sms", "email"], "dormiente"),
    ]);
    // Every stage but features (no sink takes feature vectors and no query can ask, so none are kept)
    // held something of R4; its session, lookbacks, cart deadline and inactivity timer were pending wake-ups.
    expect(variantOutput(dir, "erasures.jsonl")).toEqual([
      {
        output: "erasure",
        user_id: "R4",
        time: iso(T0 + 5 * MINUTE_MS),
        time_ms: T0 + 5 * MINUTE_MS,
        stages: ["dedup", "sessions", "aggregates", "kbis", "sequences", "phases", "clusters", "segments", "triggers"],
        wake_ups_withdrawn: 4,
      },
    ]);
    // An enter says where the user came from, an exit where the user goes.
    const segments = variantOutput(dir, "segments.jsonl").map((o) => [o.user_id, iso(o.time_ms), o.change, o.segment, o.change === "enter" ? o.previous : o.next]);
    // R4's memberships end with it, silently: an erasure is not an exit.
    expect(segments.filter(([user]) => user === "R4").map(([, time]) => time)).toEqual([iso(T0), iso(T0 + MINUTE_MS), iso(T0 + MINUTE_MS)]);
    expect(segments.filter(([user]) => user === "R2")).toEqual([
      ["R2", iso(T0), "enter", "nuovo_cliente", null],
      // A cart and no purchase yet: 100% abandonment, high risk, which outranks the default.
      ["R2", iso(T0 + MINUTE_MS), "exit", "nuovo_cliente", "carrello_abbandonato"],
      ["R2", iso(T0 + MINUTE_MS), "enter", "carrello_abbandonato", "nuovo_cliente"],
      // A 250 order: VIP, the first rule, outranks everything below it.
      ["R2", iso(T0 + 30 * MINUTE_MS), "exit", "carrello_abbandonato", "vip"],
      ["R2", iso(T0 + 30 * MINUTE_MS), "enter", "vip", "carrello_abbandonato"],
      // VIP needs an order in the last 30 days: when the order leaves the lookback (its day's
      // bucket, 30 days on), re-engagement (7 days without activity) is what holds.
      ["R2", "2024-06-20T00:00:00.000Z", "exit", "vip", "dormiente"],
      ["R2", "2024-06-20T00:00:00.000Z", "enter", "dormiente", "vip"],
    ]);
  });
});

describe("config/journey.yaml", () => {
  it("moves users through the phases on event time and sends each phase's message at its time", async () => {
    const events = [
      // J1: home page, then a cart 2 minutes later, never paid: the quick offer 1 h after the cart.
      event("J1", T0, "view_home", "/"),
      event("J1", T0 + 2 * MINUTE_MS, "add_to_cart", "/prodotti/zaino"),
      // J2: reads one article and never comes back.
      event("J2", T0, "content_view", "/blog/guida-alle-taglie"),
    ];
    const dir = await runVariant("journey", { events });
    const cartAt = T0 + 2 * MINUTE_MS;
    expect(variantOutput(dir, "phases.jsonl").map((o) => [o.user_id, iso(o.time_ms), o.output, o.phase, o.output === "phase" ? o.previous : o.window])).toEqual([
      ["J1", iso(T0), "phase", "awareness", null],
      ["J1", iso(cartAt), "phase", "conversion", "awareness"],
      ["J2", iso(T0), "phase", "awareness", null],
      // The conversion window closes 24 h after the cart.
      ["J1", iso(cartAt + DAY_MS), "phase", "consideration", "conversion"],
      // 48 h after the last touchpoint: nudge the one still in awareness, retarget the one considering.
      ["J2", iso(T0 + 2 * DAY_MS), "phase_window", "awareness", "awareness_nudge"],
      ["J1", iso(cartAt + 2 * DAY_MS), "phase_window", "consideration", "retarget"],
      // More than 60 days without activity, fired by event-time timers when the watermark passes.
      ["J2", iso(T0 + 60 * DAY_MS), "phase", "re_engagement", "awareness"],
      ["J1", iso(cartAt + 60 * DAY_MS), "phase", "re_engagement", "consideration"],
    ]);
    expect(variantOutput(dir, "sequences.jsonl")).toEqual([
      {
        output: "sequence",
        user_id: "J1",
        time: iso(cartAt + HOUR_MS),
        time_ms: cartAt + HOUR_MS,
        sequence: "quick_cart_abandoned",
        matched: [
          { step: "home", time: iso(T0), time_ms: T0, event_type: "view_home", page: "/" },
          { step: "cart", time: iso(cartAt), time_ms: cartAt, event_type: "add_to_cart", page: "/prodotti/zaino" },
        ],
      },
    ]);
    const triggers = variantOutput(dir, "triggers.jsonl");
    const sent = triggers.map((t) => [t.user_id, t.rule, t.trigger, t.segmento, t.timestamp_trigger, t.canali, t.follow_up, t.send_at]);
    const all = ["email", "push", "sms"];
    expect(sent).toEqual([
      // Home to cart in 2 minutes, no purchase within the hour: the time-limited offer, at once (12:02 in Rome).
      ["J1", "quick_offer", "offerta_lampo", "conversion", iso(cartAt + HOUR_MS), ["push", "email"], 0, "2024-05-20T12:02:00.000+02:00"],
      ["J2", "nudge", "contenuti_consigliati", "awareness", iso(T0 + 2 * DAY_MS), ["email"], 0, "2024-05-22T11:00:00.000+02:00"],
      ["J1", "retarget", "retargeting", "consideration", iso(cartAt + 2 * DAY_MS), ["email", "push"], 0, "2024-05-22T11:02:00.000+02:00"],
      // Re-engagement at 11:00 in Rome, then the follow-ups the next day at 09:00, 11:00 and 15:00 Rome
      // time: numbered, each its own message (a message and its follow-up used to be the same line).
      ["J2", "win_back", "riattivazione", "re_engagement", iso(T0 + 60 * DAY_MS), all, 0, "2024-07-19T11:00:00.000+02:00"],
      ["J1", "win_back", "riattivazione", "re_engagement", iso(cartAt + 60 * DAY_MS), all, 0, "2024-07-19T11:02:00.000+02:00"],
      ["J1", "win_back", "riattivazione", "re_engagement", iso(cartAt + 60 * DAY_MS), ["email"], 1, "2024-07-20T09:00:00.000+02:00"],
      ["J2", "win_back", "riattivazione", "re_engagement", iso(T0 + 60 * DAY_MS), ["email"], 1, "2024-07-20T09:00:00.000+02:00"],
      ["J1", "win_back", "riattivazione", "re_engagement", iso(cartAt + 60 * DAY_MS), ["push"], 2, "2024-07-20T11:00:00.000+02:00"],
      ["J2", "win_back", "riattivazione", "re_engagement", iso(T0 + 60 * DAY_MS), ["push"], 2, "2024-07-20T11:00:00.000+02:00"],
      ["J1", "win_back", "riattivazione", "re_engagement", iso(cartAt + 60 * DAY_MS), ["sms"], 3, "2024-07-20T15:00:00.000+02:00"],
      ["J2", "win_back", "riattivazione", "re_engagement", iso(T0 + 60 * DAY_MS), ["sms"], 3, "2024-07-20T15:00:00.000+02:00"],
    ]);
    for (const t of triggers) {
      expect(t.message_id).toBe(messageId("journey", t.rule, t.user_id, t.timestamp_trigger_ms, t.follow_up));
      expect(t.send_at_ms).toBe(Date.parse(t.send_at));
    }
    expect(new Set(triggers.map((t) => t.message_id)).size).toBe(triggers.length);
  });
});

describe("config/segments.yaml", () => {
  it("puts each user in the first segment whose rule holds, the default without data, and sends each segment's offer on entry", async () => {
    const events = [
      // S1: a 300 order: VIP, though "cliente" (any purchase) holds too.
      event("S1", T0, "purchase", "/checkout", { order_value: 300 }),
      // S2: email open, a click and the demo page within 5 days: a hot lead.
      event("S2", T0, "email_open", "/email/webinar-crm"),
      event("S2", T0 + HOUR_MS, "cta_click", "/email/webinar-crm"),
      event("S2", T0 + DAY_MS, "page_view", "/demo"),
      // S3: pricing, then three whitepapers: from "visited pricing" to its refinement.
      event("S3", T0, "page_view", "/pricing"),
      event("S3", T0 + HOUR_MS, "whitepaper_download", "/whitepaper/a"),
      event("S3", T0 + 2 * HOUR_MS, "whitepaper_download", "/whitepaper/b"),
      event("S3", T0 + 3 * HOUR_MS, "whitepaper_download", "/whitepaper/c"),
    ];
    const dir = await runVariant("segments", { events });
    // Lookbacks of 30 days and more keep day buckets: an event leaves at the end of its day + 30 d.
    const day30 = "2024-06-20T00:00:00.000Z";
    const day60 = "2024-07-20T00:00:00.000Z";
    expect(variantOutput(dir, "segments.jsonl").map((o) => [o.user_id, iso(o.time_ms), o.group, o.change, o.segment])).toEqual([
      ["S1", iso(T0), "value", "enter", "vip"],
      ["S1", iso(T0), "interest", "enter", "generico"],
      ["S2", iso(T0), "value", "enter", "nuovo_cliente"],
      ["S2", iso(T0), "interest", "enter", "generico"],
      ["S2", iso(T0 + DAY_MS), "interest", "exit", "generico"],
      ["S2", iso(T0 + DAY_MS), "interest", "enter", "lead_caldo"],
      ["S3", iso(T0), "value", "enter", "nuovo_cliente"],
      ["S3", iso(T0), "interest", "enter", "visitato_prezzi"],
      ["S3", iso(T0 + 3 * HOUR_MS), "interest", "exit", "visitato_prezzi"],
      ["S3", iso(T0 + 3 * HOUR_MS), "interest", "enter", "prezzi_approfondito"],
      // The email open leaves the 5-day lookback (hour buckets): no longer a hot lead.
      ["S2", "2024-05-25T10:00:00.000Z", "interest", "exit", "lead_caldo"],
      ["S2", "2024-05-25T10:00:00.000Z", "interest", "enter", "generico"],
      // No purchase in 30 days: no longer VIP, still a customer.
      ["S1", day30, "value", "exit", "vip"],
      ["S1", day30, "value", "enter", "cliente"],
      ["S3", day30, "interest", "exit", "prezzi_approfondito"],
      ["S3", day30, "interest", "enter", "generico"],
      // 60 days without any event: lost, whatever they were.
      ["S1", day60, "value", "exit", "cliente"],
      ["S1", day60, "value", "enter", "perso"],
      ["S3", day60, "value", "exit", "nuovo_cliente"],
      ["S3", day60, "value", "enter", "perso"],
      ["S2", "2024-07-21T00:00:00.000Z", "value", "exit", "nuovo_cliente"],
      ["S2", "2024-07-21T00:00:00.000Z", "value", "enter", "perso"],
    ]);
    const triggers = variantOutput(dir, "triggers.jsonl");
    expect(triggers.map((t) => [t.user_id, t.rule, t.trigger, t.segmento, t.timestamp_trigger, t.canali, t.send_at])).toEqual([
      ["S1", "vip_offer", "offerta_vip", "vip", iso(T0), ["email", "push"], "2024-05-20T11:00:00.000+02:00"],
      ["S2", "hot_lead", "contatto_commerciale", "lead_caldo", iso(T0 + DAY_MS), ["email"], "2024-05-21T11:00:00.000+02:00"],
      ["S3", "pricing_content", "caso_studio", "prezzi_approfondito", iso(T0 + 3 * HOUR_MS), ["email"], "2024-05-20T14:00:00.000+02:00"],
      // Midnight UTC is 02:00 in Rome, in quiet hours: the win-back waits for 08:00.
      ["S1", "win_back", "riattivazione", "perso", day60, ["email", "sms"], "2024-07-20T08:00:00.000+02:00"],
      ["S3", "win_back", "riattivazione", "perso", day60, ["email", "sms"], "2024-07-20T08:00:00.000+02:00"],
      ["S2", "win_back", "riattivazione", "perso", "2024-07-21T00:00:00.000Z", ["email", "sms"], "2024-07-21T08:00:00.000+02:00"],
    ]);
    for (const t of triggers) expect(t).toMatchObject({ message_id: messageId("segments", t.rule, t.user_id, t.timestamp_trigger_ms, 0), follow_up: 0 });
  });
});
