// The event fields some behaviour stages read by name, not through a configured expression: the
// `event_type` and `page` of BEHAVIOUR.md's events, stated once for every stage that assumes them.
//
// Who relies on them:
// - dedup: its default `fields` (two events are identical when both match, for the same user);
// - scores: a weighted event given as points, or with a `type`, matches events whose event_type is
//   that type; `<score>_last` is the event_type of the latest weighted event, and an alert's drivers
//   report each one's event_type and page;
// - sequences: each matched step of an output reports the event's event_type and page.
// The scores and sequences readers mark the two as used, so `privacy.keep: used` keeps them.
//
// A schema without them: dedup without `fields` is refused at load (`dedup.fields[0]: ... Unknown
// variable: event_type`), so the fields that make events identical must be listed; a weighted event
// matched by type never matches (one with only `when` still does), `<score>_last` has no value, and
// drivers and matched steps report null. Nothing fails at run time.

/** The event's type: "page_view", "add_to_cart", "purchase", ... */
export const EVENT_TYPE_FIELD = "event_type";

/** The page (path) the event happened on: "/", "/pricing", ... */
export const PAGE_FIELD = "page";
