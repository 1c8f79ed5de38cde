// Tests of the population: a user keeps their time zone, country and consent until they update it.
import { describe, expect, it } from "vitest";
import type { GeneratedEvent } from "../../simulator/events.ts";
import { eventsOf } from "./generated.ts";

function isSameConsent(a: GeneratedEvent, b: GeneratedEvent): boolean {
  return a.consent.email === b.consent.email && a.consent.push === b.consent.push && a.consent.sms === b.consent.sms;
}

describe("users", () => {
  it("keeps a user's time zone and consent stable until a consent update", async () => {
    const events = await eventsOf({ users: 500, events: 20_000 });
    const lastOf = new Map<string, GeneratedEvent>();
    const changes: string[] = [];
    let consentUpdates = 0;
    for (const event of events) {
      const last = lastOf.get(event.user_id);
      const isUpdate = event.event_type === "consent_update" && last?.event_type !== "consent_update"; // not a resend
      if (isUpdate) consentUpdates++;
      if (last && (event.tz !== last.tz || event.props.geo !== last.props.geo)) changes.push(`${event.user_id} moved`);
      if (last && isUpdate === isSameConsent(event, last)) changes.push(`${event.user_id} ${event.event_type}`);
      lastOf.set(event.user_id, event);
    }
    expect(consentUpdates).toBeGreaterThan(2);
    expect(changes).toEqual([]);
  });
});
