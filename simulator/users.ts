// The simulated population: where users are, which devices they use, what they consented to,
// shopper or B2B lead, and each user's state (traits, current session, pending event).
import { partitionOf } from "../engine/partitioning.ts";
import type { Sfc32 } from "../engine/random.ts";
import { CATEGORIES } from "./catalogue.ts";
import type { Device, EventProps } from "./events.ts";
import { S } from "./steps.ts";

/** Time zones with their country and share of users: mostly Italian, some European, a few further away. */
const ZONES = [
  { tz: "Europe/Rome", geo: "IT", share: 45 }, { tz: "Europe/Bucharest", geo: "RO", share: 8 },
  { tz: "Europe/Madrid", geo: "ES", share: 8 }, { tz: "Europe/Berlin", geo: "DE", share: 8 },
  { tz: "Europe/Paris", geo: "FR", share: 7 }, { tz: "Europe/London", geo: "GB", share: 6 },
  { tz: "America/New_York", geo: "US", share: 6 }, { tz: "America/Sao_Paulo", geo: "BR", share: 4 },
  { tz: "Asia/Dubai", geo: "AE", share: 3 }, { tz: "Asia/Tokyo", geo: "JP", share: 3 },
  { tz: "Australia/Sydney", geo: "AU", share: 2 },
] as const;
const DEVICES: readonly Device[] = ["mobile", "desktop", "tablet"];
const DEVICE_SHARES = [60, 32, 8];
const ZONE_SHARES = ZONES.map((zone) => zone.share);

/** Frozen and shared: one props object per (zone, device). */
const PROPS = ZONES.map((zone) => DEVICES.map((device) => Object.freeze({ device, geo: zone.geo })));

/** Shares of the population that are B2B leads (the rest shop) and that are quiet. */
const LEAD_SHARE = 0.2;
const QUIET_SHARE = 0.15;

/**
 * A user's fixed traits, current session and pending event. The numbers touched per event are small
 * integers (ms within a session, percent, cents), which V8 stores unboxed: with 10k users the
 * generator's speed is bound by cache misses on these objects, so they stay compact.
 */
export class User {
  // Fixed for the user's life.
  readonly primaryProps: EventProps;
  readonly secondaryProps: EventProps;
  consentBits: number;
  /** Mean of the random part of the gap between sessions. */
  gapMeanMs = 0;
  // The current session.
  sessionNo = 0;
  /** Built when an event first needs it: skipping to a position never pays for the string. */
  sessionId = "";
  sessionElapsedMs = 0;
  sessionEvents = 0;
  sessionProps: EventProps;
  cartItems = 0;
  cartCents = 0;
  /** What the messages of experiments the user is treated in add to their chance of coming back for a cart. */
  cartReturnUplift = 0;
  isDemoBooked = false;
  // The pending event: emitted when the user comes due.
  step = S.start;
  page = "";
  productIndex = -1;
  searchQuery = "";
  scrollPercent = -1;
  orderCents = 0;
  secondsWatched = 0;

  constructor(
    readonly id: string,
    readonly partition: number,
    readonly isLead: boolean,
    readonly tz: string,
    zone: number,
    devices: readonly [number, number],
    consentBits: number,
    readonly favouriteCategory: number,
    /** Often goes dormant after a session. */
    readonly isQuiet: boolean,
  ) {
    this.primaryProps = PROPS[zone][devices[0]];
    this.secondaryProps = PROPS[zone][devices[1]];
    this.sessionProps = this.primaryProps;
    this.consentBits = consentBits;
  }
}

/** An index into `shares`, drawn in proportion to them. */
function pickShare(rng: Sfc32, shares: readonly number[]): number {
  const total = shares.reduce((sum, share) => sum + share, 0);
  let u = rng.next() * total;
  for (let i = 0; i < shares.length - 1; i++) if ((u -= shares[i]) < 0) return i;
  return shares.length - 1;
}

/** User number `index`, with traits drawn from the population's shares and the partition its id hashes to. */
export function createUser(rng: Sfc32, index: number, partitions: number): User {
  const id = `u${String(index).padStart(6, "0")}`;
  const zone = pickShare(rng, ZONE_SHARES);
  const primary = pickShare(rng, DEVICE_SHARES);
  const secondary = (primary + 1 + rng.below(DEVICES.length - 1)) % DEVICES.length;
  const consentBits = (rng.chance(0.8) ? 1 : 0) | (rng.chance(0.5) ? 2 : 0) | (rng.chance(0.3) ? 4 : 0);
  const isLead = rng.chance(LEAD_SHARE);
  return new User(id, partitionOf(id, partitions), isLead, ZONES[zone].tz, zone, [primary, secondary], consentBits,
    rng.below(CATEGORIES.length), rng.chance(QUIET_SHARE));
}

