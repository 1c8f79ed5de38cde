// The shape of a simulated event: its types, fields, and the frozen consent objects events share.

export const EVENT_TYPES = [
  "view_home", "page_view", "product_view", "content_view", "search", "add_to_cart", "remove_from_cart",
  "purchase", "email_open", "email_click", "cta_click", "form_submission", "whitepaper_download",
  "video_view", "demo_call", "support_contact", "consent_update",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export type Consent = { readonly email: boolean; readonly push: boolean; readonly sms: boolean };
export type Device = "desktop" | "mobile" | "tablet";
export type EventProps = { readonly device: Device; readonly geo: string };

/**
 * One generated event. `consent` and `props` are frozen objects shared between events (they are fixed
 * per user or per session), so the generator allocates nothing per event but the event itself.
 */
export type GeneratedEvent = {
  user_id: string;
  timestamp: number;
  event_type: EventType;
  page: string;
  session_duration_sec: number;
  scroll_depth?: number;
  search_query?: string;
  product_id?: string;
  order_value?: number;
  seconds_watched?: number;
  session_id: string;
  tz: string;
  consent: Consent;
  props: EventProps;
};

/** Consent as three bits (email 1, push 2, sms 4); `CONSENTS[bits]` is the frozen object events share. */
export const CONSENT_EMAIL = 1;
export const CONSENTS: readonly Consent[] = Array.from({ length: 8 }, (_, bits) =>
  Object.freeze({ email: (bits & 1) !== 0, push: (bits & 2) !== 0, sms: (bits & 4) !== 0 }),
);
