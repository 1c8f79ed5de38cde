import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { from, lastValueFrom, toArray } from "rxjs";
import { describe, expect, it } from "vitest";
import { END_OF_TIME, type Element } from "../../engine/elements.ts";
import { operate } from "../../engine/operator.ts";
import { storeOperatorContext } from "../../engine/operatorContext.ts";
import { StateStore } from "../../engine/store.ts";
import { behaviour } from "../../operators/behaviour.ts";
import { messageId } from "../../operators/triggers.ts";
import type { EventFields, StageDefinition } from "../../operators/stage.ts";
import { ev, HOUR_MS, DAY_MS, runStages, runStagesWithRestart, signals, stagesFromYaml, T0, wm, type Emitted, configErrors, wakeUpAsker } from "../behaviourHarness.ts";


const signal = (user: string, timeMs: number, kindAndName: string, fields: Record<string, unknown> = {}) =>
  ev(user, timeMs, { event_type: "signal", page: kindAndName, session_duration_sec: 1, ...fields });
const view = (user: string, timeMs: number, fields: Record<string, unknown> = {}) =>
  ev(user, timeMs, { event_type: "page_view", page: "/", session_duration_sec: 1, ...fields });
const purchase = (user: string, timeMs: number) => ev(user, timeMs, { event_type: "purchase", page: "/checkout", session_duration_sec: 1 });

/** An event with event_type "waker" asks for a wake-up at its `order_value` (one the triggers stage never asked for). */
const waker = wakeUpAsker((view) => (view.event?.event_type === "waker" ? view.event.order_value : undefined));

const stagesOf = (yaml: string) => [signals, waker, ...stagesFromYaml(yaml)];

/**
 * Runs `elements` with a checkpoint and a restored operator after every one of them (the last
 * watermark replayed, as the job does): a state change a stage forgets to mark is lost on the way.
 */
async function runRestartingAfterEach(stages: StageDefinition[], elements: Element<EventFields>[]): Promise<Emitted[]> {
  const dir = mkdtempSync(join(tmpdir(), "flusso-triggers-"));
  const definition = behaviour({ name: "test", stages });
  const outputs: Emitted[] = [];
  let lastWatermark: Element<EventFields> | undefined;
  for (let i = 0; i < elements.length; i++) {
    const store = new StateStore(dir);
    const ctx = storeOperatorContext(store, definition.name, () => {});
    const input = [...(lastWatermark ? [lastWatermark] : []), elements[i]];
    for (const e of await lastValueFrom(from(input).pipe(operate(definition.build(ctx), ctx.side), toArray()))) {
      if (e.kind === "record") outputs.push({ kind: e.value.kind, key: e.key, time: e.time, body: e.value.body as Record<string, unknown> });
    }
    await store.commit({ shape: "t", sourcePosition: i + 1, sinkPositions: {}, watermarks: null, counters: {}, checkpointId: i + 1, takenAtMs: 0 });
    await store.close();
    if (elements[i].kind === "watermark") lastWatermark = elements[i];
  }
  return outputs;
}
const ALL_CONSENT = { email: true, push: true, sms: true };
const MESSAGE = "Hai aggiunto al carrello ma non concluso - ecco il 10% di sconto per completare, valido 24h";
/** 2024-05-20 is in summer time: Rome is UTC+2. */
const romeMs = (day: number, hh: number, mm = 0) => Date.UTC(2024, 4, 20 + day, hh - 2, mm);

const CART_RECOVERY = `
triggers:
  timezone: tz
  consent: consent
  quietHours: { from: "21:00", to: "08:00" }
  converts: 'event_type == "purchase"'
  rules:
    cart_recovery:
      on: { sequence: cart_abandoned }
      trigger: email_retargeting
      message: "${MESSAGE}"
      channels: [email, push]
      cooldown: 24h
      followUps:
        - { channel: email, at: "09:00" }
        - { channel: push, at: "11:00" }
        - { channel: sms, at: "15:00" }
`;

describe("triggers", () => {
  it("sends the seed shape by default, after the recipient and the message id, with the rule, the follow-up number and the send time: exactly", async () => {
    const stages = stagesOf(`
triggers:
  consent: consent
  rules:
    retargeting:
      on: { segment: occasionale_interessato }
      trigger: email_retargeting
      message: "${MESSAGE}"
      channels: [email, push]
`);
    const run = await runStages(stages, [signal("u1", T0 + 10.5 * HOUR_MS, "segment_enter:occasionale_interessato", { consent: ALL_CONSENT })]);
    const at = T0 + 10.5 * HOUR_MS;
    const id = messageId("test", "retargeting", "u1", at, 0);
    expect(id).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(run.outputs).toEqual([
      {
        kind: "trigger",
        key: "u1",
        time: at,
        body: {
          user_id: "u1",
          message_id: id,
          rule: "retargeting",
          segmento: "occasionale_interessato",
          trigger: "email_retargeting",
          messaggio: MESSAGE,
          canali: ["email", "push"],
          follow_up: 0,
          timestamp_trigger: "2024-05-20T10:30:00.000Z",
          timestamp_trigger_ms: at,
          // No zone known: UTC.
          send_at: "2024-05-20T10:30:00.000Z",
          send_at_ms: at,
        },
      },
    ]);
    expect(JSON.stringify(run.outputs[0].body)).toBe(
      `{"user_id":"u1","message_id":"${id}","rule":"retargeting","segmento":"occasionale_interessato","trigger":"email_retargeting","messaggio":"${MESSAGE}","canali":["email","push"],"follow_up":0,` +
        `"timestamp_trigger":"2024-05-20T10:30:00.000Z","timestamp_trigger_ms":${at},"send_at":"2024-05-20T10:30:00.000Z","send_at_ms":${at}}`,
    );
  });

  it("fires only on the signal kind and name of its rule, and only when its condition holds", async () => {
    const stages = stagesOf(`
triggers:
  segment: 'has(props.segment) ? props.segment : "nessuno"'
  rules:
    lead:
      on: { alert: lead_score }
      when: 'event_type == "signal" && page != ""'
      message: chiama
      channels: [crm]
    vip:
      on: { segment: vip }
      when: 'has(props.vip_ok)'
      message: benvenuto
      channels: [email]
`);
    const run = await runStages(stages, [
      signal("u1", T0, "alert:lead_score", { props: { segment: "caldo" } }),
      signal("u1", T0 + 1, "sequence:lead_score"),
      signal("u1", T0 + 2, "alert:other"),
      signal("u1", T0 + 3, "segment_enter:vip"),
      signal("u1", T0 + 4, "segment_enter:vip", { props: { vip_ok: true } }),
    ]);
    expect(run.outputs.map((o) => [o.time - T0, o.body.rule, o.body.segmento, o.body.trigger, o.body.messaggio, o.body.timestamp_trigger, o.body.canali])).toEqual([
      [0, "lead", "caldo", "lead", "chiama", "2024-05-20T00:00:00.000Z", ["crm"]],
      [4, "vip", "nessuno", "vip", "benvenuto", "2024-05-20T00:00:00.004Z", ["email"]],
    ]);
  });

  it("never sends SMS without SMS consent, and suppresses and counts a trigger left with no channel", async () => {
    const stages = stagesOf(`
triggers:
  consent: consent
  rules:
    reminder:
      on: { phase: re_engagement }
      message: torna
      channels: [email, sms]
    sms_only:
      on: { phase: lapsed }
      message: ciao
      channels: [sms]
`);
    const run = await runStages(stages, [
      signal("u1", T0, "phase:re_engagement", { consent: { email: true, push: true, sms: false } }),
      signal("u1", T0 + HOUR_MS, "phase:lapsed"),
      // Consent is remembered from the last event that carried it; an unknown user has none.
      signal("u2", T0 + HOUR_MS, "phase:re_engagement"),
      view("u1", T0 + 2 * HOUR_MS, { consent: { sms: true } }),
      signal("u1", T0 + 3 * HOUR_MS, "phase:re_engagement"),
      signal("u1", T0 + 4 * HOUR_MS, "phase:re_engagement", { consent: { email: true, sms: "yes" } }),
    ]);
    expect(run.outputs.map((o) => [o.key, o.time - T0, o.body.trigger, o.body.canali])).toEqual([
      ["u1", 0, "reminder", ["email"]],
      ["u1", 3 * HOUR_MS, "reminder", ["sms"]],
      ["u1", 4 * HOUR_MS, "reminder", ["email"]],
    ]);
    expect(run.counts.triggers_suppressed).toBe(2);
    expect(run.counts.triggers_channel_without_consent).toBe(6);
  });

  it("holds a trigger in quiet hours until 08:00 in the user's zone and sends it then, not before", async () => {
    const stages = stagesOf(CART_RECOVERY.replace(/followUps:[\s\S]*$/, ""));
    const run = await runStages(stages, [
      view("u1", romeMs(0, 20), { tz: "Europe/Rome", consent: ALL_CONSENT }),
      // 22:30 in Rome; the zone and consent are those of the earlier event.
      signal("u1", romeMs(0, 22, 30), "sequence:cart_abandoned"),
      wm(romeMs(1, 8) - 1),
      view("u2", romeMs(1, 8) - 1, {}),
    ]);
    expect(run.outputs).toEqual([]);
    const later = await runStages(stages, [
      view("u1", romeMs(0, 20), { tz: "Europe/Rome", consent: ALL_CONSENT }),
      signal("u1", romeMs(0, 22, 30), "sequence:cart_abandoned"),
      wm(romeMs(1, 8) - 1),
      wm(romeMs(1, 8)),
    ]);
    expect(later.outputs.map((o) => [o.time, o.body.timestamp_trigger, o.body.canali])).toEqual([
      [Date.UTC(2024, 4, 21, 6), "2024-05-20T20:30:00.000Z", ["email", "push"]],
    ]);
    expect(later.counts.triggers_deferred).toBe(1);
  });

  it("waits for the local morning across a daylight-saving change, and in offset zones", async () => {
    const stages = stagesOf(CART_RECOVERY.replace(/followUps:[\s\S]*$/, ""));
    const consent = ALL_CONSENT;
    const run = await runStages(stages, [
      // Saturday 30 March 2024, 22:30 in Rome (CET); Sunday 08:00 is CEST.
      signal("spring", Date.UTC(2024, 2, 30, 21, 30), "sequence:cart_abandoned", { tz: "Europe/Rome", consent }),
      // Saturday 26 October 2024, 22:30 in Rome (CEST); Sunday 08:00 is CET.
      signal("autumn", Date.UTC(2024, 9, 26, 20, 30), "sequence:cart_abandoned", { tz: "Europe/Rome", consent }),
      // 05:00 at UTC-05:00 is 10:00 UTC.
      signal("offset", Date.UTC(2024, 9, 27, 10), "sequence:cart_abandoned", { tz: "-05:00", consent }),
      // No zone: UTC. An unknown zone is not taken: the last known one stays.
      signal("utc", Date.UTC(2024, 9, 27, 7, 30), "sequence:cart_abandoned", { tz: "Mars/Olympus", consent }),
      view("spring", Date.UTC(2024, 9, 27, 19, 30), { tz: "Mars/Olympus" }),
      signal("spring", Date.UTC(2024, 9, 27, 20), "sequence:cart_abandoned"),
      wm(END_OF_TIME),
    ]);
    expect(run.outputs.map((o) => [o.key, new Date(o.time).toISOString()])).toEqual([
      ["spring", "2024-03-31T06:00:00.000Z"],
      ["autumn", "2024-10-27T07:00:00.000Z"],
      ["utc", "2024-10-27T08:00:00.000Z"],
      ["offset", "2024-10-27T13:00:00.000Z"],
      // 21:00 in Rome (CET).
      ["spring", "2024-10-28T07:00:00.000Z"],
    ]);
    expect(run.counts.triggers_unknown_timezone).toBe(2);
  });

  it("keeps one waiting copy of a rule's message through the night", async () => {
    const stages = stagesOf(CART_RECOVERY.replace(/cooldown: 24h[\s\S]*$/, ""));
    const run = await runStages(stages, [
      signal("u1", romeMs(0, 22), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: ALL_CONSENT }),
      signal("u1", romeMs(0, 23), "sequence:cart_abandoned"),
      wm(END_OF_TIME),
    ]);
    expect(run.outputs.map((o) => [o.time, o.body.timestamp_trigger])).toEqual([[romeMs(1, 8), "2024-05-20T20:00:00.000Z"]]);
    expect(run.counts.triggers_coalesced).toBe(1);
  });

  it("sends a message due before an event of the user when that event comes, at the message's time", async () => {
    const stages = stagesOf(CART_RECOVERY.replace(/followUps:[\s\S]*$/, ""));
    const run = await runStages(stages, [
      signal("u1", romeMs(0, 22), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: ALL_CONSENT }),
      view("u1", romeMs(1, 9)),
    ]);
    expect(run.outputs.map((o) => o.time)).toEqual([romeMs(1, 8)]);
  });

  it("lets the cooldown stop a second trigger on a channel within 24 h but not after", async () => {
    const stages = stagesOf(`
triggers:
  consent: consent
  rules:
    cart:
      on: { sequence: cart_abandoned }
      message: carrello
      channels: [email, push]
      cooldown: 24h
`);
    const run = await runStages(stages, [
      signal("u1", T0, "sequence:cart_abandoned", { consent: { email: true } }),
      view("u1", T0 + HOUR_MS, { consent: { email: true, push: true } }),
      // Email is in its cooldown, push is not: the trigger goes on push alone.
      signal("u1", T0 + 23 * HOUR_MS, "sequence:cart_abandoned"),
      signal("u1", T0 + 24 * HOUR_MS - 1, "sequence:cart_abandoned"),
      signal("u1", T0 + 24 * HOUR_MS, "sequence:cart_abandoned"),
      signal("u1", T0 + 47 * HOUR_MS, "sequence:cart_abandoned"),
    ]);
    expect(run.outputs.map((o) => [(o.time - T0) / HOUR_MS, o.body.canali])).toEqual([
      [0, ["email"]],
      [23, ["push"]],
      [24, ["email"]],
      [47, ["push"]],
    ]);
    expect(run.counts.triggers_channel_in_cooldown).toBe(5);
    expect(run.counts.triggers_suppressed).toBe(1);
  });

  it("caps messages per channel over a sliding window, counting every rule's", async () => {
    const stages = stagesOf(`
triggers:
  rules:
    news:
      on: { phase: awareness }
      message: novità
      channels: [email]
    offer:
      on: { phase: consideration }
      message: offerta
      channels: [email, push]
      cap: { max: 2, per: 7d }
`);
    const run = await runStages(stages, [
      signal("u1", T0, "phase:awareness"),
      signal("u1", T0 + DAY_MS, "phase:consideration"),
      signal("u1", T0 + 2 * DAY_MS, "phase:consideration"),
      signal("u1", T0 + 3 * DAY_MS, "phase:consideration"),
      // The first email left the window a week after it was sent.
      signal("u1", T0 + 7 * DAY_MS, "phase:consideration"),
    ]);
    expect(run.outputs.map((o) => [(o.time - T0) / DAY_MS, o.body.trigger, o.body.canali])).toEqual([
      [0, "news", ["email"]],
      [1, "offer", ["email", "push"]],
      [2, "offer", ["push"]],
      [7, "offer", ["email"]],
    ]);
    expect(run.counts.triggers_channel_capped).toBe(4);
    expect(run.counts.triggers_suppressed).toBe(1);
  });

  it("sends follow-ups at 09:00, 11:00 and 15:00 local, one channel each, and stops them when the user buys", async () => {
    const stages = stagesOf(CART_RECOVERY);
    const start = [signal("u1", romeMs(0, 8, 30), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: ALL_CONSENT })];
    const all = await runStages(stages, [...start, wm(END_OF_TIME)]);
    // Each message: its own id (the follow-up's number is part of it), the cause's time, and when
    // it is sent, in Rome's time. No segment anywhere: the default "segmento".
    const sent = (followUp: number, sendAt: string, canali: string[]) => ({
      user_id: "u1",
      message_id: messageId("test", "cart_recovery", "u1", romeMs(0, 8, 30), followUp),
      rule: "cart_recovery",
      segmento: "nuovo_cliente",
      trigger: "email_retargeting",
      messaggio: MESSAGE,
      canali,
      follow_up: followUp,
      timestamp_trigger: "2024-05-20T06:30:00.000Z",
      timestamp_trigger_ms: romeMs(0, 8, 30),
      send_at: sendAt,
      send_at_ms: Date.parse(sendAt),
    });
    expect(all.outputs.map((o) => [o.time, o.body])).toEqual([
      [romeMs(0, 8, 30), sent(0, "2024-05-20T08:30:00.000+02:00", ["email", "push"])],
      [romeMs(0, 9), sent(1, "2024-05-20T09:00:00.000+02:00", ["email"])],
      [romeMs(0, 11), sent(2, "2024-05-20T11:00:00.000+02:00", ["push"])],
      [romeMs(0, 15), sent(3, "2024-05-20T15:00:00.000+02:00", ["sms"])],
    ]);
    expect(new Set(all.outputs.map((o) => o.body.message_id)).size).toBe(4);
    const bought = await runStages(stages, [...start, wm(romeMs(0, 9)), purchase("u1", romeMs(0, 10)), wm(END_OF_TIME)]);
    expect(bought.outputs.map((o) => [o.time, o.body.canali])).toEqual([
      [romeMs(0, 8, 30), ["email", "push"]],
      [romeMs(0, 9), ["email"]],
    ]);
    expect(bought.counts.triggers_cancelled).toBe(2);
  });

  it("starts follow-ups the next day, in order, when the first one's time has passed", async () => {
    const stages = stagesOf(CART_RECOVERY);
    const run = await runStages(stages, [
      signal("u1", romeMs(0, 10), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: ALL_CONSENT }),
      wm(END_OF_TIME),
    ]);
    expect(run.outputs.map((o) => [o.time, o.body.canali])).toEqual([
      [romeMs(0, 10), ["email", "push"]],
      [romeMs(1, 9), ["email"]],
      [romeMs(1, 11), ["push"]],
      [romeMs(1, 15), ["sms"]],
    ]);
  });

  it("follows a message held through the night from the morning it goes out, and a purchase at night cancels it all", async () => {
    const stages = stagesOf(CART_RECOVERY);
    const night = [signal("u1", romeMs(0, 23), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: { email: true, push: true } })];
    const run = await runStages(stages, [...night, wm(END_OF_TIME)]);
    expect(run.outputs.map((o) => [o.time, o.body.canali])).toEqual([
      [romeMs(1, 8), ["email", "push"]],
      [romeMs(1, 9), ["email"]],
      [romeMs(1, 11), ["push"]],
    ]);
    expect(run.counts.triggers_channel_without_consent).toBe(1); // the SMS follow-up
    const bought = await runStages(stages, [...night, purchase("u1", romeMs(0, 23, 30)), wm(END_OF_TIME)]);
    expect(bought.outputs).toEqual([]);
    expect(bought.counts.triggers_cancelled).toBe(1);
    // An earlier stage's conversion signal counts as a conversion too.
    const converted = await runStages(stages, [...night, signal("u1", romeMs(1, 8, 30), "conversion:purchase"), wm(END_OF_TIME)]);
    expect(converted.outputs.map((o) => o.time)).toEqual([romeMs(1, 8)]);
    expect(converted.counts.triggers_cancelled).toBe(3);
  });

  it("places follow-ups after a delay, holds those that fall in quiet hours, and restarts the sequence on a new firing", async () => {
    const stages = stagesOf(`
triggers:
  quietHours: { from: "21:00", to: "08:00" }
  rules:
    cart:
      on: { sequence: cart_abandoned }
      message: carrello
      channels: [email]
      followUps:
        - { channel: email, after: 3d }
        - { channel: push, at: "22:00" }
`);
    const run = await runStages(stages, [
      signal("u1", T0 + 10 * HOUR_MS, "sequence:cart_abandoned"),
      signal("u1", T0 + DAY_MS + 12 * HOUR_MS, "sequence:cart_abandoned"),
      wm(END_OF_TIME),
    ]);
    expect(run.outputs.map((o) => [(o.time - T0) / HOUR_MS, o.body.canali])).toEqual([
      [10, ["email"]],
      [36, ["email"]],
      [36 + 72, ["email"]],
      // The first 22:00 after the delayed email, in quiet hours: the morning after.
      [5 * 24 + 8, ["push"]],
    ]);
  });

  it("builds a configured body from CEL over the user's values as they were at the trigger", async () => {
    const stages = stagesOf(`
triggers:
  quietHours: { from: "21:00", to: "08:00" }
  rules:
    cart:
      on: { sequence: cart_abandoned }
      message: carrello
      channels: [email]
      followUps: [{ channel: push, at: "09:00" }]
  template:
    pagina: page
    canali: trigger.channels
    quando: trigger.time
    ms: trigger.timeMs
    invio: trigger.sendAt
    seguito: trigger.followUp
    numero: trigger.followUpNumber
    id: trigger.id
    regola: trigger.rule + "/" + trigger.name
    messaggio: trigger.message
    segmento: trigger.segment
    punti: '[1, 2]'
    terzo: '1.0 / 3.0'
    mancante: scroll_depth
`);
    const run = await runStages(stages, [
      signal("u1", T0 + 22 * HOUR_MS, "sequence:cart_abandoned", { page: "sequence:cart_abandoned" }),
      view("u1", T0 + 23 * HOUR_MS, { page: "/altro" }),
      wm(END_OF_TIME),
    ]);
    const id = (followUp: number) => messageId("test", "cart", "u1", T0 + 22 * HOUR_MS, followUp);
    // The recipient and the message id come first whatever the template says.
    const body = {
      user_id: "u1",
      message_id: id(0),
      pagina: "sequence:cart_abandoned",
      canali: ["email"],
      quando: "2024-05-20T22:00:00.000Z",
      ms: T0 + 22 * HOUR_MS,
      invio: "2024-05-21T08:00:00.000Z",
      seguito: false,
      numero: 0,
      id: id(0),
      regola: "cart/cart",
      messaggio: "carrello",
      segmento: "nuovo_cliente",
      punti: [1, 2],
      // Numbers without binary noise: 12 significant digits.
      terzo: 0.333333333333,
      mancante: null,
    };
    expect(run.outputs.map((o) => [o.time - T0, o.body])).toEqual([
      [DAY_MS + 8 * HOUR_MS, body],
      [DAY_MS + 9 * HOUR_MS, { ...body, message_id: id(1), id: id(1), canali: ["push"], invio: "2024-05-21T09:00:00.000Z", seguito: true, numero: 1 }],
    ]);
  });

  it("derives a message's id from what it is: the same input gives the same ids, a second firing in the same millisecond another", async () => {
    const stages = stagesOf(`
triggers:
  rules:
    vip:
      on: { segment: vip }
      message: benvenuto
      channels: [email]
`);
    const elements = [
      signal("u1", T0, "segment_enter:vip"),
      signal("u2", T0, "segment_enter:vip"),
      // Another event of u1 in the same millisecond enters vip again: a second message, its own id.
      signal("u1", T0, "segment_enter:vip"),
      signal("u1", T0 + 1, "segment_enter:vip"),
    ];
    const ids = (await runStages(stages, elements)).outputs.map((o) => o.body.message_id);
    expect(ids).toEqual([
      messageId("test", "vip", "u1", T0, 0),
      messageId("test", "vip", "u2", T0, 0),
      messageId("test", "vip", "u1", T0, 0, 1),
      messageId("test", "vip", "u1", T0 + 1, 0),
    ]);
    expect(new Set(ids).size).toBe(4);
    expect((await runStages(stages, elements)).outputs.map((o) => o.body.message_id)).toEqual(ids);
    // Another pipeline's message about the same user and time has another id.
    expect(messageId("other", "vip", "u1", T0, 0)).not.toBe(ids[0]);
  });

  it("writes the send time in the user's zone: +02:00 in Rome's summer, +01:00 in its winter, a fixed offset, Z without a zone", async () => {
    const stages = stagesOf(`
triggers:
  timezone: tz
  rules:
    vip:
      on: { segment: vip }
      message: benvenuto
      channels: [email]
`);
    const run = await runStages(stages, [
      signal("summer", Date.UTC(2024, 4, 20, 7), "segment_enter:vip", { tz: "Europe/Rome" }),
      signal("winter", Date.UTC(2024, 11, 20, 7, 0, 0, 250), "segment_enter:vip", { tz: "Europe/Rome" }),
      signal("offset", Date.UTC(2024, 4, 20, 7), "segment_enter:vip", { tz: "-05:00" }),
      signal("none", Date.UTC(2024, 4, 20, 7), "segment_enter:vip"),
    ]);
    expect(run.outputs.map((o) => [o.key, o.body.send_at, o.body.send_at_ms])).toEqual([
      ["summer", "2024-05-20T09:00:00.000+02:00", Date.UTC(2024, 4, 20, 7)],
      ["winter", "2024-12-20T08:00:00.250+01:00", Date.UTC(2024, 11, 20, 7, 0, 0, 250)],
      ["offset", "2024-05-20T02:00:00.000-05:00", Date.UTC(2024, 4, 20, 7)],
      ["none", "2024-05-20T07:00:00.000Z", Date.UTC(2024, 4, 20, 7)],
    ]);
    for (const o of run.outputs) expect(Date.parse(o.body.send_at as string)).toBe(o.body.send_at_ms);
  });

  it("never leaves segmento empty: the expression's, else the segment entered, else the user's segment in the first group, else defaultSegment", async () => {
    const yaml = (extra: string) => `
features: { value: 'order_value' }
segments:
  groups:
    lifecycle:
      rules: [{ name: vip, when: 'value > 200.0' }]
      default: nuovo
    other:
      rules: [{ name: altro, when: 'true' }]
      default: mai
triggers:
  segment: 'has(props.cluster) ? props.cluster : ""'
${extra}
  rules:
    entered:
      on: { segment: vip }
      message: benvenuto
      channels: [email]
    cart:
      on: { sequence: cart_abandoned }
      message: carrello
      channels: [email]
`;
    const run = await runStages(stagesOf(yaml("")), [
      signal("u1", T0, "sequence:cart_abandoned", { props: { cluster: "fedele" } }),
      signal("u1", T0 + 1, "sequence:cart_abandoned"),
      ev("u1", T0 + 2, { event_type: "purchase", page: "/", session_duration_sec: 1, order_value: 300 }),
      signal("u1", T0 + 3, "sequence:cart_abandoned", { order_value: 300 }),
    ]);
    expect(run.byKind("trigger").map((o) => [o.body.rule, o.body.segmento])).toEqual([
      ["cart", "fedele"], // the expression's
      ["cart", "nuovo"], // "" from it: the user's segment in lifecycle, the first group
      ["entered", "vip"], // the segment entered
      ["cart", "vip"],
    ]);
    const withoutSegments = stagesOf(`
triggers:
  segment: '""'
  rules: { cart: { on: { sequence: cart_abandoned }, message: carrello, channels: [email] } }
`);
    expect((await runStages(withoutSegments, [signal("u1", T0, "sequence:cart_abandoned")])).outputs[0].body.segmento).toBe("nuovo_cliente");
    const configured = stagesOf(`
triggers:
  defaultSegment: generico
  rules: { cart: { on: { sequence: cart_abandoned }, message: carrello, channels: [email] } }
`);
    expect((await runStages(configured, [signal("u1", T0, "sequence:cart_abandoned")])).outputs[0].body.segmento).toBe("generico");
  });

  it("refuses a template field that would replace the recipient or the message id, and the renamed trigger.sentAt", () => {
    const template = (fields: string) => `
triggers:
  rules: { cart: { on: { sequence: cart_abandoned }, message: carrello, channels: [email] } }
  template: { ${fields} }
`;
    const message = configErrors(template("user_id: user, message_id: trigger.rule, quando: trigger.sentAt, ms: trigger.sentAtMs, ok: trigger.sendAt")).join("\n");
    expect(message).toContain("triggers.template.user_id: every message carries its recipient (user_id) and message_id already: drop this field");
    expect(message).toContain("triggers.template.message_id: every message carries its recipient (user_id) and message_id already");
    expect(message).toContain("triggers.template.quando: trigger.sentAt is now trigger.sendAt");
    expect(message).toContain("triggers.template.ms: trigger.sentAtMs is now trigger.sendAtMs");
    expect(message).not.toContain("triggers.template.ok");
    expect(configErrors(`triggers: { defaultSegment: "", rules: { a: { on: { phase: x }, message: m, channels: [sms] } } }`).join("\n")).toContain("triggers.defaultSegment");
  });

  it("takes a wake-up it did not ask for, and those of cancelled follow-ups, as nothing to do", async () => {
    const stages = stagesOf(CART_RECOVERY);
    const run = await runStages(stages, [
      ev("u1", romeMs(0, 8), { event_type: "waker", page: "/", session_duration_sec: 1, order_value: romeMs(0, 8, 45) }),
      signal("u1", romeMs(0, 8, 30), "sequence:cart_abandoned", { tz: "Europe/Rome", consent: ALL_CONSENT }),
      purchase("u1", romeMs(0, 8, 40)),
      wm(END_OF_TIME),
    ]);
    expect(run.outputs.map((o) => o.time)).toEqual([romeMs(0, 8, 30)]);
  });

  it("gives the same outputs after a restart at any point as without one", async () => {
    const stages = stagesOf(CART_RECOVERY.replace("cooldown: 24h", "cooldown: 24h\n      cap: { max: 3, per: 7d }"));
    const consent = ALL_CONSENT;
    const elements = [
      view("u1", romeMs(0, 20), { tz: "Europe/Rome", consent }),
      signal("u1", romeMs(0, 22, 30), "sequence:cart_abandoned"),
      signal("u2", romeMs(0, 22, 45), "sequence:cart_abandoned", { tz: "+02:00", consent: { email: true } }),
      wm(romeMs(0, 23)),
      signal("u1", romeMs(0, 23, 30), "sequence:cart_abandoned"),
      wm(romeMs(1, 8, 30)),
      view("u2", romeMs(1, 8, 40), { consent }),
      wm(romeMs(1, 9, 30)),
      purchase("u2", romeMs(1, 10)),
      signal("u1", romeMs(1, 12), "sequence:cart_abandoned"),
      wm(romeMs(1, 14)),
      signal("u1", romeMs(2, 9), "sequence:cart_abandoned"),
      wm(romeMs(2, 10)),
      wm(END_OF_TIME),
    ];
    const whole = await runStages(stages, elements);
    expect(whole.outputs.map((o) => [o.key, o.time, o.body.timestamp_trigger, o.body.canali])).toEqual([
      ["u1", romeMs(1, 8), "2024-05-20T20:30:00.000Z", ["email", "push"]],
      ["u2", romeMs(1, 8), "2024-05-20T20:45:00.000Z", ["email"]],
      ["u1", romeMs(1, 9), "2024-05-20T20:30:00.000Z", ["email"]],
      ["u2", romeMs(1, 9), "2024-05-20T20:45:00.000Z", ["email"]],
      // u2 bought: its push and SMS are cancelled. u1's trigger at 12:00 is in its cooldown.
      ["u1", romeMs(1, 11), "2024-05-20T20:30:00.000Z", ["push"]],
      ["u1", romeMs(1, 15), "2024-05-20T20:30:00.000Z", ["sms"]],
      ["u1", romeMs(2, 9), "2024-05-22T07:00:00.000Z", ["email", "push"]],
      // A fourth email and a fourth push in a week: the cap stops the 09:00 and 11:00 follow-ups.
      ["u1", romeMs(3, 15), "2024-05-22T07:00:00.000Z", ["sms"]],
    ]);
    for (let cut = 0; cut <= elements.length; cut++) {
      const restarted = await runStagesWithRestart(stages, elements, cut);
      expect(restarted.outputs, `cut at ${cut}`).toEqual(whole.outputs);
    }
    expect(await runRestartingAfterEach(stages, elements)).toEqual(whole.outputs);
  });

  it("refuses bad config, naming the path of every bad value", () => {
    const bad = `
triggers:
  timezone: tzz
  consent: page
  quietHours: { from: "21:00", to: "25:00" }
  colour: blue
  rules:
    cart:
      on: { sequence: cart_abandoned }
      when: 'event_type + 1.0'
      message: carrello
      chanels: [email]
      channels: [email, email]
      cooldown: soon
      cap: { max: 0, per: 7d }
      followUps:
        - { channel: push }
    vip:
      on: { segment_exit: vip }
      message: ciao
      channels: [email]
  template:
    canali: trigger.channels + missing
`;
    const message = configErrors(bad).join("\n");
    expect(message).toContain("triggers.timezone: CEL type error");
    expect(message).toContain(`triggers.consent: "page" is of type string, expected map`);
    expect(message).toContain(`triggers.quietHours.to: expected a local time like "08:00", got "25:00"`);
    expect(message).toContain("triggers.colour: unknown field");
    expect(message).toContain("triggers.rules.cart.when: CEL type error");
    expect(message).toContain("triggers.rules.cart.chanels: unknown field");
    expect(message).toContain(`triggers.rules.cart.channels[1]: "email" is listed twice`);
    expect(message).toContain(`triggers.rules.cart.cooldown: expected a duration like "24h", got "soon"`);
    expect(message).toContain("triggers.rules.cart.cap.max: expected a number from 1");
    expect(message).toContain(`triggers.rules.cart.followUps[0]: needs a local time (at: "09:00") or a delay (after: 3d)`);
    expect(message).toContain("triggers.rules.vip.on.segment_exit: unknown field");
    expect(message).toContain("triggers.template.canali: CEL type error");
  });

  it("refuses a rule without its message or channels, and quiet hours that start where they end", () => {
    expect(() => stagesFromYaml(`triggers: { rules: { a: { on: { phase: x }, channels: [email] } } }`)).toThrow(/triggers\.rules\.a\.message: is required/);
    expect(() => stagesFromYaml(`triggers: { rules: { a: { on: { phase: x }, message: m, channels: [] } } }`)).toThrow(/triggers\.rules\.a\.channels: expected at least one entry/);
    expect(() => stagesFromYaml(`triggers: { quietHours: { from: "08:00", to: "08:00" }, rules: { a: { on: { phase: x }, message: m, channels: [sms] } } }`)).toThrow(
      /triggers\.quietHours: from and to are both 08:00/,
    );
    expect(() => stagesFromYaml(`triggers: { rules: {} }`)).toThrow(/triggers\.rules: expected at least one rule/);
  });
});
