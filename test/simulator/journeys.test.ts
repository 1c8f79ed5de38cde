// Tests of the journeys: every event type of the funnel occurs, each event carries its step's fields, carts are often abandoned.
import { describe, expect, it } from "vitest";
import { EVENT_TYPES, type GeneratedEvent } from "../../simulator/events.ts";
import { eventsOf } from "./generated.ts";

/** The fields BEHAVIOUR.md requires, and the optional ones where their event type calls for them. */
function isWellFormed(event: GeneratedEvent): boolean {
  const { consent, scroll_depth: scrollDepth } = event;
  return (
    /^u\d{6}$/.test(event.user_id) &&
    Number.isInteger(event.timestamp) &&
    event.page.startsWith("/") &&
    event.session_duration_sec >= 0 &&
    /^S\d+$/.test(event.session_id) &&
    /^[A-Z][a-z]+\/[A-Za-z_]+$/.test(event.tz) &&
    typeof consent.email === "boolean" && typeof consent.push === "boolean" && typeof consent.sms === "boolean" &&
    ["desktop", "mobile", "tablet"].includes(event.props.device) &&
    /^[A-Z]{2}$/.test(event.props.geo) &&
    (scrollDepth === undefined || (scrollDepth >= 0 && scrollDepth <= 1)) &&
    (event.event_type !== "purchase" || event.order_value! > 0) &&
    (event.event_type !== "search" || !!event.search_query) &&
    (event.event_type !== "video_view" || event.seconds_watched! > 0) &&
    (event.event_type !== "product_view" || /^p\d{4}$/.test(event.product_id!)) &&
    (event.event_type !== "email_open" || consent.email) // campaigns go only to who consented
  );
}

describe("journeys", () => {
  it("produces every event type of the funnel, with consent and tz on every event", async () => {
    const events = await eventsOf({ users: 2000, events: 40_000 });
    expect(new Set(events.map((event) => event.event_type))).toEqual(new Set(EVENT_TYPES));
    // Checked in plain code and asserted once: 40k expect() calls would take seconds.
    const malformed = events.filter((event) => !isWellFormed(event));
    expect(malformed).toEqual([]);
    expect(new Set(events.map((event) => event.tz))).toContain("America/New_York");

    const sessions = new Map<string, { hasCart: boolean; hasPurchase: boolean }>();
    for (const event of events) {
      const session = sessions.get(event.session_id) ?? { hasCart: false, hasPurchase: false };
      session.hasCart ||= event.event_type === "add_to_cart";
      session.hasPurchase ||= event.event_type === "purchase";
      sessions.set(event.session_id, session);
    }
    const carts = [...sessions.values()].filter((session) => session.hasCart);
    const abandoned = carts.filter((session) => !session.hasPurchase);
    expect(abandoned.length / carts.length).toBeGreaterThan(0.5);
    expect(abandoned.length / carts.length).toBeLessThan(0.9);
  });
});
