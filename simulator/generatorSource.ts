// Built-in source of seeded, realistic e-commerce and B2B clickstream: a per-user session simulation.
import { SourcePositionInvalid } from "../engine/errors.ts";
import { fnv1a32, partitionOf } from "../engine/partitioning.ts";
import { Sfc32 } from "../engine/random.ts";
import type { Source, SourceBatch, SourceItem } from "../engine/sources/source.ts";

export type GeneratorOptions = {
  /** Seeds every random choice (as a 32-bit integer): the same options always give the same events. Default 42. */
  seed?: number;
  /** Size of the user population; it also caps the pace (see `eventsPerSecond`). Default 10_000. */
  users?: number;
  /** Events to produce; the source is done after the last one. Default 200_000. */
  events?: number;
  /** Number of partitions; a user always lands in `partitionOf(user_id, partitions)` (engine/partitioning.ts). Default 4. */
  partitions?: number;
  /** Event time at which the simulated world starts, epoch ms. Default Date.UTC(2024, 4, 20). */
  startMs?: number;
  /**
   * Average pace of the whole population, in events per second of event time. Sessions stay bursts of
   * events seconds apart (~4 events over ~2 minutes) whatever the pace: what it sets is the gap between
   * a user's sessions. With 10_000 users, 200 gives sessions minutes apart and 200k events over ~1000 s;
   * 0.5 spreads them over ~5 days with sessions about a day apart (and dormant stretches of weeks), as
   * the multi-day pipelines (inactivity, retention, decay) need. Each user has at most one session every
   * ~3 minutes, so the pace is capped near `users / 40` events per second: asking for more gives the cap.
   * Default 200.
   */
  eventsPerSecond?: number;
  /** A timestamp lies up to this much before its place in the emission order (bounded disorder). Default 2000. */
  disorderMs?: number;
  /** Share of events that are genuinely late: a further `lateByMs` in the past. Default 0.001. */
  lateFraction?: number;
  /** How much further back a late event's timestamp lies. Default 60_000. */
  lateByMs?: number;
  /** Share of events sent twice, a moment apart with all fields but the timestamp equal, for dedup to drop. Default 0.005. */
  duplicateFraction?: number;
};

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

/** What a checkpoint records: events emitted so far, and which stream they came from. */
type GeneratorPosition = { emitted: number; fingerprint: string };

// ---- The simulated site: fixed, seed-independent catalogue and pages. ----

type Product = { id: string; page: string; query: string; priceCents: number; category: number };

/** Italian nouns with the adjective form they take: masculine/feminine, singular/plural. */
const CATEGORIES = [
  { noun: "scarpe", form: 3, priceEur: 90 }, { noun: "stivali", form: 2, priceEur: 150 },
  { noun: "giacca", form: 1, priceEur: 180 }, { noun: "zaino", form: 0, priceEur: 70 },
  { noun: "borsa", form: 1, priceEur: 120 }, { noun: "maglione", form: 0, priceEur: 60 },
  { noun: "occhiali", form: 2, priceEur: 110 }, { noun: "sciarpa", form: 1, priceEur: 35 },
  { noun: "orologio", form: 0, priceEur: 240 }, { noun: "camicia", form: 1, priceEur: 45 },
  { noun: "jeans", form: 2, priceEur: 80 }, { noun: "cappello", form: 0, priceEur: 30 },
] as const;
const COLOURS = [
  ["rosso", "rossa", "rossi", "rosse"], ["nero", "nera", "neri", "nere"], ["bianco", "bianca", "bianchi", "bianche"],
  ["blu", "blu", "blu", "blu"], ["verde", "verde", "verdi", "verdi"], ["grigio", "grigia", "grigi", "grigie"],
  ["marrone", "marrone", "marroni", "marroni"], ["giallo", "gialla", "gialli", "gialle"],
] as const;

const PRODUCTS: Product[] = buildCatalogue();

function buildCatalogue(): Product[] {
  const rng = new Sfc32(0x5eed); // the shop is the same whatever the seed
  return CATEGORIES.flatMap((category, c) =>
    COLOURS.map((colour, k) => {
      const slug = `${category.noun}-${colour[category.form]}`;
      return {
        id: `p${String(c * COLOURS.length + k).padStart(4, "0")}`,
        page: `/prodotti/${slug}`,
        query: slug.replace("-", " "),
        priceCents: Math.round(category.priceEur * (0.7 + 0.6 * rng.next())) * 100 - 1, // 89.99
        category: c,
      };
    }),
  );
}

const SHOP_PAGES = [...CATEGORIES.map((c) => `/prodotti/${c.noun}`), "/offerte", "/novita", "/spedizioni-e-resi", "/chi-siamo"];
const LEAD_PAGES = ["/soluzioni/crm", "/soluzioni/marketing-automation", "/casi-studio", "/integrazioni", "/chi-siamo", "/contatti"];
const SHOP_POSTS = ["/blog/come-scegliere-le-scarpe-da-corsa", "/blog/guida-alle-taglie", "/blog/tendenze-autunno-inverno", "/blog/cura-della-pelle"];
const LEAD_POSTS = [
  "/blog/lead-scoring-in-5-passi", "/blog/customer-journey-b2b", "/blog/segmentazione-dinamica",
  "/blog/email-marketing-che-converte", "/blog/roi-del-crm",
];
const WHITEPAPERS = ["/whitepaper/report-prezzi-2024", "/whitepaper/guida-al-lead-scoring", "/whitepaper/benchmark-email-marketing", "/whitepaper/crm-per-pmi"];
const SHOP_VIDEOS = [{ page: "/video/unboxing-zaino", lengthSec: 90 }, { page: "/video/lookbook-primavera", lengthSec: 180 }];
const LEAD_VIDEOS = [
  { page: "/video/demo-piattaforma", lengthSec: 420 }, { page: "/video/webinar-automazione", lengthSec: 1800 },
  { page: "/video/testimonianza-cliente", lengthSec: 150 },
];
const SHOP_CAMPAIGNS = ["/email/newsletter-maggio", "/email/saldi-estivi", "/email/nuovi-arrivi"];
const LEAD_CAMPAIGNS = ["/email/webinar-crm", "/email/nurturing-1", "/email/report-prezzi"];

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

/** Frozen and shared: one object per (zone, device) and per consent combination. */
const PROPS = ZONES.map((zone) => DEVICES.map((device) => Object.freeze({ device, geo: zone.geo })));
const CONSENT_EMAIL = 1;
const CONSENTS = Array.from({ length: 8 }, (_, bits) =>
  Object.freeze({ email: (bits & 1) !== 0, push: (bits & 2) !== 0, sms: (bits & 4) !== 0 }),
);

// ---- The per-user state machine: steps, and where each leads for shoppers and for B2B leads. ----

/** A step is an event type, or a page view of a page that matters to the funnel. "start"/"end" bound a session. */
const STEPS = [
  ...EVENT_TYPES, "pricing", "demo_page", "cart_page", "start", "end",
] as const;
type Step = (typeof STEPS)[number];
const S = Object.fromEntries(STEPS.map((step, i) => [step, i])) as Record<Step, number>;
const STEP_TYPE: EventType[] = STEPS.map((step) =>
  step === "pricing" || step === "demo_page" || step === "cart_page" ? "page_view" : (step as EventType),
);

type Transitions = Partial<Record<Step, [Step, number][]>>;

const SHOPPER: Transitions = {
  start: [["view_home", 45], ["product_view", 20], ["search", 15], ["page_view", 12], ["email_open", 8]],
  view_home: [["product_view", 35], ["search", 18], ["page_view", 17], ["content_view", 7], ["cta_click", 4], ["support_contact", 1], ["end", 12]],
  page_view: [["product_view", 45], ["page_view", 12], ["search", 10], ["content_view", 5], ["end", 16]],
  product_view: [["product_view", 28], ["add_to_cart", 16], ["search", 8], ["page_view", 8], ["video_view", 3], ["cart_page", 3], ["end", 18]],
  search: [["product_view", 70], ["search", 10], ["end", 10]],
  add_to_cart: [["product_view", 35], ["cart_page", 25], ["purchase", 10], ["end", 22]],
  cart_page: [["purchase", 42], ["remove_from_cart", 15], ["product_view", 20], ["end", 25]],
  remove_from_cart: [["product_view", 35], ["cart_page", 20], ["end", 35]],
  purchase: [["page_view", 15], ["product_view", 10], ["support_contact", 3], ["end", 72]],
  content_view: [["content_view", 20], ["product_view", 30], ["video_view", 10], ["cta_click", 5], ["form_submission", 2], ["end", 20]],
  video_view: [["product_view", 35], ["content_view", 15], ["end", 30]],
  cta_click: [["product_view", 60], ["page_view", 20], ["end", 20]],
  email_open: [["email_click", 45], ["end", 55]],
  email_click: [["product_view", 60], ["page_view", 25], ["view_home", 15]],
  form_submission: [["page_view", 30], ["end", 70]],
  support_contact: [["page_view", 20], ["end", 80]],
  consent_update: [["page_view", 40], ["end", 60]],
};

const LEAD: Transitions = {
  start: [["view_home", 35], ["content_view", 25], ["page_view", 15], ["pricing", 10], ["email_open", 15]],
  view_home: [["pricing", 22], ["content_view", 22], ["page_view", 18], ["cta_click", 8], ["video_view", 5], ["end", 14]],
  page_view: [["pricing", 25], ["content_view", 20], ["page_view", 12], ["demo_page", 5], ["end", 22]],
  pricing: [["demo_page", 12], ["whitepaper_download", 10], ["content_view", 15], ["page_view", 12], ["cta_click", 10], ["form_submission", 4], ["end", 22]],
  demo_page: [["form_submission", 35], ["pricing", 15], ["end", 35]],
  content_view: [["content_view", 22], ["whitepaper_download", 14], ["cta_click", 9], ["video_view", 8], ["pricing", 14], ["end", 20]],
  whitepaper_download: [["pricing", 22], ["content_view", 20], ["cta_click", 8], ["end", 35]],
  cta_click: [["demo_page", 30], ["form_submission", 15], ["pricing", 20], ["content_view", 10], ["end", 18]],
  form_submission: [["pricing", 20], ["content_view", 15], ["end", 50]],
  video_view: [["content_view", 30], ["pricing", 20], ["end", 30]],
  demo_call: [["pricing", 30], ["page_view", 10], ["end", 60]],
  email_open: [["email_click", 45], ["end", 55]],
  email_click: [["content_view", 45], ["pricing", 25], ["whitepaper_download", 15], ["demo_page", 15]],
  support_contact: [["page_view", 20], ["end", 80]],
  consent_update: [["page_view", 40], ["end", 60]],
};

/** Transitions indexed by step code, as parallel arrays of next steps and cumulative probabilities. */
type CompiledStep = { next: Int32Array; upTo: Float64Array };

function compile(transitions: Transitions): CompiledStep[] {
  return STEPS.map((step) => {
    const choices = transitions[step] ?? [["end", 1]]; // a step with no table ends the session
    const total = choices.reduce((sum, [, weight]) => sum + weight, 0);
    let upTo = 0;
    return {
      next: Int32Array.from(choices, ([next]) => S[next]),
      upTo: Float64Array.from(choices, ([, weight]) => (upTo += weight / total)),
    };
  });
}

const SHOPPER_STEPS = compile(SHOPPER);
const LEAD_STEPS = compile(LEAD);

/** Mean seconds spent on each step before the next action (exponentially distributed, plus 1 s). */
const DWELL_MEAN_SEC: Partial<Record<Step, number>> = {
  view_home: 12, page_view: 20, pricing: 40, demo_page: 25, cart_page: 25, product_view: 35, content_view: 60,
  search: 8, add_to_cart: 10, remove_from_cart: 8, purchase: 30, email_open: 20, email_click: 3, cta_click: 4,
  form_submission: 15, whitepaper_download: 30, demo_call: 60, support_contact: 120, consent_update: 10,
};
const DWELL_MEAN_MS = Float64Array.from(STEPS, (step) => (DWELL_MEAN_SEC[step] ?? 10) * 1000);

const LEAD_SHARE = 0.2;
const QUIET_SHARE = 0.15;
/** Quiet users often go dormant after a session; everyone else rarely does. */
const DORMANT_CHANCE = { quiet: 0.3, other: 0.03 };
/** A dormant stretch is this many ordinary gaps long: long enough for inactivity rules to fire. */
const DORMANT_FACTOR = 25;
const MIN_SESSION_GAP_MS = 60_000;
const MAX_SESSION_EVENTS = 60;
const CONSENT_UPDATE_CHANCE = 0.0005;
/** Share of dwells where the user reads on without clicking, for "long browsing without a click". */
const IDLE_CHANCE = 0.05;
const IDLE_FACTOR = 6;
/** Measured on the default population: they turn `eventsPerSecond` into gaps between sessions. */
const MEAN_EVENTS_PER_SESSION = 4.35;
const MEAN_SESSION_MS = 117_000;
/**
 * The world runs this long before the first event it emits, so the pace is steady from the start: users
 * that all started at once would first crowd, then thin out. Two sessions and gaps are enough.
 */
const WARM_UP_MS = 2 * (MEAN_SESSION_MS + MIN_SESSION_GAP_MS);

// ---- Users. ----

/**
 * A user's fixed traits, current session and pending event. The numbers touched per event are small
 * integers (ms within a session, percent, cents), which V8 stores unboxed: with 10k users the
 * generator's speed is bound by cache misses on these objects, so they stay compact.
 */
class User {
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

function pickShare(rng: Sfc32, shares: readonly number[]): number {
  const total = shares.reduce((sum, share) => sum + share, 0);
  let u = rng.next() * total;
  for (let i = 0; i < shares.length - 1; i++) if ((u -= shares[i]) < 0) return i;
  return shares.length - 1;
}

function createUser(rng: Sfc32, index: number, partitions: number): User {
  const id = `u${String(index).padStart(6, "0")}`;
  const zone = pickShare(rng, ZONE_SHARES);
  const primary = pickShare(rng, DEVICE_SHARES);
  const secondary = (primary + 1 + rng.below(DEVICES.length - 1)) % DEVICES.length;
  const consentBits = (rng.chance(0.8) ? 1 : 0) | (rng.chance(0.5) ? 2 : 0) | (rng.chance(0.3) ? 4 : 0);
  const isLead = rng.chance(LEAD_SHARE);
  return new User(id, partitionOf(id, partitions), isLead, ZONES[zone].tz, zone, [primary, secondary], consentBits,
    rng.below(CATEGORIES.length), rng.chance(QUIET_SHARE));
}

/** How much more often than average a user comes back: exponential, so a few heavy users and many occasional ones. */
function drawActivity(rng: Sfc32): number {
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
function solveBaseCycleMs(activities: Float64Array, eventsPerMs: number): number {
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

// ---- The due-time heap: which user emits next. ----

/**
 * Min-heap of users by the emission time of their pending event; every user is always in it. Four
 * children per node: half the depth of a binary heap, and siblings share a cache line.
 */
class DueHeap {
  readonly atMs: Float64Array;
  readonly user: Int32Array;

  constructor(dueAtMs: Float64Array) {
    this.atMs = Float64Array.from(dueAtMs);
    this.user = Int32Array.from(dueAtMs, (_, i) => i);
    for (let i = (this.atMs.length - 2) >> 2; i >= 0; i--) this.siftDown(i, this.atMs[i], this.user[i]);
  }

  /** Gives the first user a new due time and restores the order. */
  rescheduleFirst(atMs: number): void {
    this.siftDown(0, atMs, this.user[0]);
  }

  private siftDown(from: number, atMs: number, user: number): void {
    const at = this.atMs;
    const users = this.user;
    const size = at.length;
    let i = from;
    for (;;) {
      const first = 4 * i + 1;
      if (first >= size) break;
      let child = first;
      let childAtMs = at[first];
      const end = first + 4 < size ? first + 4 : size;
      for (let c = first + 1; c < end; c++) {
        if (at[c] < childAtMs) {
          child = c;
          childAtMs = at[c];
        }
      }
      if (childAtMs >= atMs) break;
      at[i] = childAtMs;
      users[i] = users[child];
      i = child;
    }
    at[i] = atMs;
    users[i] = user;
  }
}

// ---- The source. ----

type Settings = Required<GeneratorOptions>;

function settingsOf(options: GeneratorOptions): Settings {
  const settings: Settings = {
    seed: options.seed ?? 42,
    users: options.users ?? 10_000,
    events: options.events ?? 200_000,
    partitions: options.partitions ?? 4,
    startMs: options.startMs ?? Date.UTC(2024, 4, 20),
    eventsPerSecond: options.eventsPerSecond ?? 200,
    disorderMs: options.disorderMs ?? 2000,
    lateFraction: options.lateFraction ?? 0.001,
    lateByMs: options.lateByMs ?? 60_000,
    duplicateFraction: options.duplicateFraction ?? 0.005,
  };
  for (const key of ["users", "partitions"] as const) {
    if (!Number.isInteger(settings[key]) || settings[key] < 1) throw new RangeError(`generator ${key}: expected a positive integer, got ${settings[key]}`);
  }
  if (!Number.isInteger(settings.events) || settings.events < 0) throw new RangeError(`generator events: expected a count, got ${settings.events}`);
  if (!(settings.eventsPerSecond > 0)) throw new RangeError(`generator eventsPerSecond: expected > 0, got ${settings.eventsPerSecond}`);
  for (const key of ["disorderMs", "lateByMs"] as const) {
    if (!(settings[key] >= 0)) throw new RangeError(`generator ${key}: expected a duration >= 0, got ${settings[key]}`);
  }
  for (const key of ["lateFraction", "duplicateFraction"] as const) {
    if (!(settings[key] >= 0 && settings[key] <= 1)) throw new RangeError(`generator ${key}: expected a share in [0, 1], got ${settings[key]}`);
  }
  return settings;
}

/** Hashes what shapes the stream (not the total, so a run can be extended), to refuse foreign checkpoints. */
function fingerprintOf(s: Settings): string {
  const shape = [s.seed, s.users, s.partitions, s.startMs, s.eventsPerSecond, s.disorderMs, s.lateFraction, s.lateByMs, s.duplicateFraction];
  return fnv1a32(JSON.stringify(shape)).toString(16).padStart(8, "0");
}

/**
 * A bounded, deterministic clickstream. Every user is a small state machine (a shopper or a B2B lead)
 * whose pending event is emitted when it comes due, so events leave in event-time order; timestamps
 * then get bounded disorder, a few are made late, and a few events are sent twice. The position is the
 * count of events emitted: opening at it replays the simulation without building events, which is fast.
 */
export class GeneratorSource implements Source {
  private readonly settings: Settings;
  private readonly fingerprint: string;
  // Copies of settings read per event, so the hot path touches only this object.
  private readonly disorderMs: number;
  private readonly lateFraction: number;
  private readonly lateByMs: number;
  private readonly duplicateFraction: number;
  private rng!: Sfc32;
  private users!: User[];
  private heap!: DueHeap;
  private sessions = 0;
  private emitted = 0;
  private hasReportedFinish = false;

  constructor(options: GeneratorOptions = {}) {
    this.settings = settingsOf(options);
    this.fingerprint = fingerprintOf(this.settings);
    this.disorderMs = this.settings.disorderMs;
    this.lateFraction = this.settings.lateFraction;
    this.lateByMs = this.settings.lateByMs;
    this.duplicateFraction = this.settings.duplicateFraction;
    this.restart();
  }

  get description(): string {
    return `generator(seed=${this.settings.seed})`;
  }

  get partitions(): number {
    return this.settings.partitions;
  }

  async open(position: unknown): Promise<void> {
    const emitted = position === undefined || position === null ? 0 : this.validPosition(position);
    if (this.emitted > 0 || this.hasReportedFinish) this.restart(); // else the world is still at its start
    this.skip(emitted);
    this.hasReportedFinish = emitted > 0 && emitted === this.settings.events;
  }

  nextBatch(maxItems: number): SourceBatch {
    const count = Math.max(0, Math.min(Math.floor(maxItems), this.settings.events - this.emitted));
    const items: SourceItem[] = [];
    for (let i = 0; i < count; i++) {
      const user = this.users[this.heap.user[0]];
      const atMs = this.heap.atMs[0];
      items.push({ partition: user.partition, value: eventOf(user, this.timestampAt(atMs)) });
      this.heap.rescheduleFirst(this.advance(user, atMs));
    }
    this.emitted += count;
    const isDone = this.emitted >= this.settings.events;
    if (!isDone || this.hasReportedFinish) return { items, isDone };
    this.hasReportedFinish = true;
    return { items, isDone, finishedPartitions: Array.from({ length: this.partitions }, (_, p) => p) };
  }

  position(): GeneratorPosition {
    return { emitted: this.emitted, fingerprint: this.fingerprint };
  }

  async close(): Promise<void> {}

  private validPosition(position: unknown): number {
    const { emitted, fingerprint } = position as Partial<GeneratorPosition>;
    if (fingerprint !== this.fingerprint) {
      throw new SourcePositionInvalid(this.description, `checkpoint is of a generator with other options (fingerprint ${String(fingerprint)}, now ${this.fingerprint})`);
    }
    if (!Number.isInteger(emitted) || emitted! < 0 || emitted! > this.settings.events) {
      throw new SourcePositionInvalid(this.description, `checkpoint is at event ${String(emitted)} but the generator produces ${this.settings.events}`);
    }
    return emitted!;
  }

  /** Rebuilds the world as it is before the first event. */
  private restart(): void {
    const { seed, users, partitions, startMs, disorderMs, eventsPerSecond } = this.settings;
    this.rng = new Sfc32(seed);
    this.sessions = 0;
    this.emitted = 0;
    this.hasReportedFinish = false;
    this.users = Array.from({ length: users }, (_, i) => createUser(this.rng, i, partitions));
    const activities = Float64Array.from(this.users, () => drawActivity(this.rng));
    const baseCycleMs = solveBaseCycleMs(activities, eventsPerSecond / 1000);
    const firstAtMs = new Float64Array(users);
    for (let i = 0; i < users; i++) {
      const user = this.users[i];
      const cycleMs = Math.max(baseCycleMs / activities[i], MEAN_SESSION_MS + MIN_SESSION_GAP_MS);
      // The random part of the gap makes up the rest of the cycle, dormant stretches included.
      const gapMs = Math.max(0, cycleMs - MEAN_SESSION_MS - MIN_SESSION_GAP_MS);
      user.gapMeanMs = Math.round(gapMs / (1 + dormantChanceOf(user) * (DORMANT_FACTOR - 1)));
      firstAtMs[i] = this.startSession(user, startMs - WARM_UP_MS + this.firstDelayMs(user));
    }
    this.heap = new DueHeap(firstAtMs);
    // The offset of disorderMs keeps on-time timestamps at or after startMs.
    this.warmUp(startMs + disorderMs);
  }

  /**
   * How long after the warm-up starts a user's first session does. A long gap is likelier to span that
   * instant than a short one, so users are caught dormant in proportion to the time dormancy takes, and
   * (gaps being exponential) what is left of the gap has the gap's own distribution.
   */
  private firstDelayMs(user: User): number {
    const rng = this.rng;
    const dormantChance = dormantChanceOf(user);
    const dormantTime = dormantChance * DORMANT_FACTOR;
    const isDormant = rng.next() < dormantTime / (1 - dormantChance + dormantTime);
    const restOfSessionMs = rng.next() * (MEAN_SESSION_MS + MIN_SESSION_GAP_MS);
    return Math.round(restOfSessionMs + rng.exponential(user.gapMeanMs) * (isDormant ? DORMANT_FACTOR : 1));
  }

  /** Runs the world up to `untilMs` without emitting: users are then mid-session or mid-gap, as in a running world. */
  private warmUp(untilMs: number): void {
    while (this.heap.atMs[0] < untilMs) {
      this.heap.rescheduleFirst(this.advance(this.users[this.heap.user[0]], this.heap.atMs[0]));
    }
  }

  /** Advances the world by `count` events without building them. */
  private skip(count: number): void {
    for (let i = 0; i < count; i++) {
      const user = this.users[this.heap.user[0]];
      const atMs = this.heap.atMs[0];
      this.timestampAt(atMs);
      this.heap.rescheduleFirst(this.advance(user, atMs));
    }
    this.emitted = count;
  }

  /** The event time of an event emitted at `atMs`: bounded disorder, and now and then genuinely late. */
  private timestampAt(atMs: number): number {
    const rng = this.rng;
    const disorderedMs = atMs - Math.floor(rng.next() * (this.disorderMs + 1));
    return rng.next() < this.lateFraction ? disorderedMs - this.lateByMs : disorderedMs;
  }

  /** Picks the user's next pending event after the one emitted at `atMs`; returns when it is due. */
  private advance(user: User, atMs: number): number {
    const rng = this.rng;
    // A duplicate leaves the pending event as it is, so it goes out again a moment later.
    if (rng.next() < this.duplicateFraction) return atMs + 50 + rng.below(1950);
    user.sessionEvents++;
    const next = rng.next() < CONSENT_UPDATE_CHANCE ? S.consent_update : chooseNext(rng, user);
    if (next === S.end || user.sessionEvents >= MAX_SESSION_EVENTS) return this.startSession(user, atMs + this.gapMs(user));
    const dwelledMs = dwellMs(rng, user);
    user.sessionElapsedMs += dwelledMs;
    enter(rng, user, next);
    return atMs + dwelledMs;
  }

  private gapMs(user: User): number {
    const rng = this.rng;
    const dormancy = rng.next() < dormantChanceOf(user) ? DORMANT_FACTOR : 1;
    return MIN_SESSION_GAP_MS + Math.round(rng.exponential(user.gapMeanMs) * dormancy);
  }

  /** Opens the user's next session at `atMs` with its landing event; returns `atMs`. */
  private startSession(user: User, atMs: number): number {
    const rng = this.rng;
    user.sessionNo = ++this.sessions;
    user.sessionId = "";
    user.sessionElapsedMs = 0;
    user.sessionEvents = 0;
    user.sessionProps = rng.next() < 0.8 ? user.primaryProps : user.secondaryProps;
    let landing: number;
    if (user.isDemoBooked && rng.next() < 0.7) landing = S.demo_call;
    else if (user.cartItems > 0 && rng.next() < 0.3) landing = S.cart_page; // back for the cart
    else {
      if (user.cartItems > 0 && rng.next() < 0.3) forgetCart(user);
      landing = chooseNext(rng, user, S.start);
    }
    enter(rng, user, landing);
    return atMs;
  }
}

function chooseNext(rng: Sfc32, user: User, from = user.step): number {
  const { next, upTo } = (user.isLead ? LEAD_STEPS : SHOPPER_STEPS)[from];
  const u = rng.next();
  for (let i = 0; i < next.length - 1; i++) if (u < upTo[i]) return next[i];
  return next[next.length - 1];
}

function dwellMs(rng: Sfc32, user: User): number {
  if (user.step === S.video_view) return user.secondsWatched * 1000 + 1000 + rng.below(4000);
  const ms = 1000 + rng.exponential(DWELL_MEAN_MS[user.step]);
  return Math.round(rng.next() < IDLE_CHANCE ? ms * IDLE_FACTOR : ms);
}

function forgetCart(user: User): void {
  user.cartItems = 0;
  user.cartCents = 0;
}

function scrollPercent(rng: Sfc32): number {
  return Math.round(rng.next() * 100);
}

/** Makes `wanted` (or what the user can do instead) the pending event, with its page and fields; applies its effects. */
function enter(rng: Sfc32, user: User, wanted: number): void {
  const from = user.step;
  const step = availableStep(user, wanted);
  user.step = step;
  user.scrollPercent = -1;
  switch (step) {
    case S.view_home:
      user.page = "/";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.page_view:
      user.page = rng.pick(user.isLead ? LEAD_PAGES : SHOP_PAGES);
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.pricing:
      user.page = "/pricing";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.demo_page:
      user.page = "/demo";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.cart_page:
      user.page = "/cart";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.product_view:
      // After a search, usually the product searched for.
      if (from !== S.search || rng.next() < 0.3) user.productIndex = pickProduct(rng, user);
      user.page = PRODUCTS[user.productIndex].page;
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.search:
      user.productIndex = pickProduct(rng, user);
      user.searchQuery = PRODUCTS[user.productIndex].query;
      user.page = "/cerca";
      break;
    case S.add_to_cart:
      if (user.productIndex < 0) user.productIndex = pickProduct(rng, user);
      user.page = PRODUCTS[user.productIndex].page;
      user.cartItems++;
      user.cartCents += PRODUCTS[user.productIndex].priceCents;
      break;
    case S.remove_from_cart:
      user.page = "/cart";
      user.cartCents -= Math.round(user.cartCents / user.cartItems);
      user.cartItems--;
      break;
    case S.purchase:
      user.page = "/checkout";
      user.orderCents = user.cartCents;
      forgetCart(user);
      break;
    case S.content_view:
      user.page = rng.pick(user.isLead ? LEAD_POSTS : SHOP_POSTS);
      user.scrollPercent = Math.round(Math.sqrt(rng.next()) * 100); // articles get read further
      break;
    case S.video_view: {
      const video = rng.pick(user.isLead ? LEAD_VIDEOS : SHOP_VIDEOS);
      user.page = video.page;
      user.secondsWatched = Math.max(3, Math.round(video.lengthSec * rng.next() ** 1.5));
      break;
    }
    case S.email_open:
      user.page = rng.pick(user.isLead ? LEAD_CAMPAIGNS : SHOP_CAMPAIGNS);
      break;
    case S.email_click:
    case S.cta_click:
      break; // on the page of the email or of the call to action
    case S.form_submission:
      user.page = user.isLead ? "/demo" : "/newsletter";
      if (user.isLead) user.isDemoBooked = true;
      break;
    case S.whitepaper_download:
      user.page = rng.pick(WHITEPAPERS);
      break;
    case S.demo_call:
      user.page = "/demo";
      user.isDemoBooked = false;
      break;
    case S.support_contact:
      user.page = "/supporto";
      break;
    case S.consent_update:
      user.page = "/account/privacy";
      user.consentBits ^= 1 << rng.below(3);
      break;
  }
}

/** What the user does instead of a step that needs what it lacks: a cart, or consent to campaign email. */
function availableStep(user: User, step: number): number {
  if ((step === S.cart_page || step === S.remove_from_cart || step === S.purchase) && user.cartItems === 0) return S.product_view;
  if (step === S.email_open && (user.consentBits & CONSENT_EMAIL) === 0) return S.view_home;
  return step;
}

/** Mostly the user's favourite category, otherwise anything; within a category, a few colours sell most. */
function pickProduct(rng: Sfc32, user: User): number {
  const category = rng.next() < 0.6 ? user.favouriteCategory : rng.below(CATEGORIES.length);
  const u = rng.next();
  return category * COLOURS.length + Math.floor(u * u * COLOURS.length);
}

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
function eventOf(user: User, timestamp: number): GeneratedEvent {
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
