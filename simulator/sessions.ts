// When users come back: the gaps between sessions, solved from the population's target pace,
// dormant stretches, the warm-up before the first event, and how a session opens.
import type { Sfc32 } from "../engine/random.ts";
import { chooseNext, enter, forgetCart } from "./journeys.ts";
import { S } from "./steps.ts";
import type { User } from "./users.ts";

/** Quiet users often go dormant after a session; everyone else rarely does. */
const DORMANT_CHANCE = { quiet: 0.3, other: 0.03 };
/** A dormant stretch is this many ordinary gaps long: long enough for inactivity rules to fire. */
const DORMANT_FACTOR = 25;
const MIN_SESSION_GAP_MS = 60_000;
/** A session ends after this many events at most. */
export const MAX_SESSION_EVENTS = 60;
/** Measured on the default population: they turn `eventsPerSecond` into gaps between sessions. */
const MEAN_EVENTS_PER_SESSION = 4.35;
const MEAN_SESSION_MS = 117_000;
/**
 * The world runs this long before the first event it emits, so the pace is steady from the start: users
 * that all started at once would first crowd, then thin out. Two sessions and gaps are enough.
 */
export const WARM_UP_MS = 2 * (MEAN_SESSION_MS + MIN_SESSION_GAP_MS);

/** How much more often than average a user comes back: exponential, so a few heavy users and many occasional ones. */
export function drawActivity(rng: Sfc32): number {
  return Math.min(5, Math.max(0.05, rng.exponential(1)));
}

function dormantChanceOf(user: User): number {
  return user.isQuiet ? DORMANT_CHANCE.quiet : DORMANT_CHANCE.other;
}

/**
 * Mean time between session starts for activity 1, chosen so the population's pace is `eventsPerMs`.
 * A user's cycle is `baseMs / activity`, but never shorter than a session plus the minimum gap, so the
 * pace is solved for by bisection (it falls as the base grows).
 */
export function solveBaseCycleMs(activities: Float64Array, eventsPerMs: number): number {
  const floorMs = MEAN_SESSION_MS + MIN_SESSION_GAP_MS;
  const paceAt = (baseMs: number): number =>
    activities.reduce((sum, activity) => sum + MEAN_EVENTS_PER_SESSION / Math.max(baseMs / activity, floorMs), 0);
  let low = 0;
  let high = (MEAN_EVENTS_PER_SESSION * activities.reduce((sum, activity) => sum + activity, 0)) / eventsPerMs;
  for (let i = 0; i < 60; i++) {
    const mid = (low + high) / 2;
    if (paceAt(mid) > eventsPerMs) low = mid;
    else high = mid;
  }
  return high;
}

/**
 * The mean of the random part of a user's gap between sessions, so that a cycle (a session, the
 * minimum gap, and the random gap, now and then stretched into dormancy) lasts `cycleMs` on average (never less than a session and the minimum gap).
 */
export function gapMeanMsOf(user: User, cycleMs: number): number {
  const boundedCycleMs = Math.max(cycleMs, MEAN_SESSION_MS + MIN_SESSION_GAP_MS);
  // The random part of the gap makes up the rest of the cycle, dormant stretches included.
  const gapMs = Math.max(0, boundedCycleMs - MEAN_SESSION_MS - MIN_SESSION_GAP_MS);
  return Math.round(gapMs / (1 + dormantChanceOf(user) * (DORMANT_FACTOR - 1)));
}

/**
 * How long after the warm-up starts a user's first session does. A long gap is likelier to span that
 * instant than a short one, so users are caught dormant in proportion to the time dormancy takes, and
 * (gaps being exponential) what is left of the gap has the gap's own distribution.
 */
export function drawFirstDelayMs(rng: Sfc32, user: User): number {
  const dormantChance = dormantChanceOf(user);
  const dormantTime = dormantChance * DORMANT_FACTOR;
  const isDormant = rng.next() < dormantTime / (1 - dormantChance + dormantTime);
  const restOfSessionMs = rng.next() * (MEAN_SESSION_MS + MIN_SESSION_GAP_MS);
  return Math.round(restOfSessionMs + rng.exponential(user.gapMeanMs) * (isDormant ? DORMANT_FACTOR : 1));
}

/** The gap between the session that just ended and the user's next one; now and then a dormant stretch. */
export function drawGapMs(rng: Sfc32, user: User): number {
  const dormancy = rng.next() < dormantChanceOf(user) ? DORMANT_FACTOR : 1;
  return MIN_SESSION_GAP_MS + Math.round(rng.exponential(user.gapMeanMs) * dormancy);
}

/** Opens session number `sessionNo` for the user, with its landing step as the pending event. */
export function openSession(rng: Sfc32, user: User, sessionNo: number): void {
  user.sessionNo = sessionNo;
  user.sessionId = "";
  user.sessionElapsedMs = 0;
  user.sessionEvents = 0;
  user.sessionProps = rng.next() < 0.8 ? user.primaryProps : user.secondaryProps;
  let landing: number;
  if (user.isDemoBooked && rng.next() < 0.7) landing = S.demo_call;
  else if (user.cartItems > 0 && rng.next() < 0.3 + user.cartReturnUplift) landing = S.cart_page; // back for the cart
  else {
    if (user.cartItems > 0 && rng.next() < 0.3) forgetCart(user);
    landing = chooseNext(rng, user, S.start);
  }
  enter(rng, user, landing);
}
