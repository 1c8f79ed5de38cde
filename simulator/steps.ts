// The steps of a user's journey (an event type, or a page view that matters to the funnel) and
// the event each step emits.
import { PRODUCTS } from "./catalogue.ts";
import { CONSENTS, EVENT_TYPES, type EventType, type GeneratedEvent } from "./events.ts";
import type { User } from "./users.ts";

/** A step is an event type, or a page view of a page that matters to the funnel. "start"/"end" bound a session. */
export const STEPS = [
  ...EVENT_TYPES, "pricing", "demo_page", "cart_page", "start", "end",
] as const;
export type Step = (typeof STEPS)[number];
export const S = Object.fromEntries(STEPS.map((step, i) => [step, i])) as Record<Step, number>;
export const STEP_TYPE: EventType[] = STEPS.map((step) =>
  step === "pricing" || step === "demo_page" || step === "cart_page" ? "page_view" : (step as EventType),
);

/** Which optional fields each step's event carries. */
const enum Shape { Plain, Scrolled, Product, ScrolledProduct, Search, Purchase, Video }
const STEP_SHAPE: Shape[] = STEPS.map((step) => {
  switch (step) {
    case "view_home": case "page_view": case "pricing": case "demo_page": case "cart_page": case "content_view":
      return Shape.Scrolled;
    case "product_view":
      return Shape.ScrolledProduct;
    case "add_to_cart": case "remove_from_cart":
      return Shape.Product;
    case "search":
      return Shape.Search;
    case "purchase":
      return Shape.Purchase;
    case "video_view":
      return Shape.Video;
    default:
      return Shape.Plain;
  }
});

/** Builds the pending event; one object literal per shape keeps each shape's hidden class stable. */
export function eventOf(user: User, timestamp: number): GeneratedEvent {
  const event_type = STEP_TYPE[user.step];
  if (user.sessionId === "") user.sessionId = `S${user.sessionNo}`;
  const { id: user_id, page, sessionId: session_id, tz } = user;
  const session_duration_sec = Math.round(user.sessionElapsedMs / 100) / 10;
  const consent = CONSENTS[user.consentBits];
  const props = user.sessionProps;
  switch (STEP_SHAPE[user.step]) {
    case Shape.Scrolled:
      return { user_id, timestamp, event_type, page, session_duration_sec, scroll_depth: user.scrollPercent / 100, session_id, tz, consent, props };
    case Shape.ScrolledProduct:
      return {
        user_id, timestamp, event_type, page, session_duration_sec, scroll_depth: user.scrollPercent / 100,
        product_id: PRODUCTS[user.productIndex].id, session_id, tz, consent, props,
      };
    case Shape.Product:
      return { user_id, timestamp, event_type, page, session_duration_sec, product_id: PRODUCTS[user.productIndex].id, session_id, tz, consent, props };
    case Shape.Search:
      return { user_id, timestamp, event_type, page, session_duration_sec, search_query: user.searchQuery, session_id, tz, consent, props };
    case Shape.Purchase:
      return { user_id, timestamp, event_type, page, session_duration_sec, order_value: user.orderCents / 100, session_id, tz, consent, props };
    case Shape.Video:
      return { user_id, timestamp, event_type, page, session_duration_sec, seconds_watched: user.secondsWatched, session_id, tz, consent, props };
    default:
      return { user_id, timestamp, event_type, page, session_duration_sec, session_id, tz, consent, props };
  }
}
