// The simulator as a Source: a seeded, bounded e-commerce and B2B clickstream, one event at a time
// from the user due next, with bounded disorder, late events and duplicates; resumable by count.
import { armOf, type Assignment } from "../engine/assignment.ts";
import { SourcePositionInvalid } from "../engine/errors.ts";
import { fnv1a32 } from "../engine/partitioning.ts";
import { Sfc32 } from "../engine/random.ts";
import type { Source, SourceBatch, SourceItem, SourceProgress } from "../engine/sources/source.ts";
import { DueHeap } from "./dueHeap.ts";
import { CONSENT_UPDATE_CHANCE, chooseNext, dwellMs, enter } from "./journeys.ts";
import { drawActivity, drawFirstDelayMs, drawGapMs, gapMeanMsOf, MAX_SESSION_EVENTS, openSession, solveBaseCycleMs, WARM_UP_MS } from "./sessions.ts";
import { eventOf, S } from "./steps.ts";
import { createUser, type User } from "./users.ts";

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
  /**
   * How the simulated users answer experiments' messages (flusso's triggers under `experiment:`):
   * each user is in the arm flusso assigns (engine/assignment.ts), and one in a variant with an
   * uplift comes back for a cart left behind that much more often (a probability added to the 0.3
   * of anyone, at their next session). Default none: nobody answers any message.
   */
  treatments?: readonly Treatment[];
};

/** An experiment's arms as flusso assigns them, and each variant's uplift (held-out users have none). */
export type Treatment = { assignment: Assignment; uplifts: Readonly<Record<string, number>> };

/** The most a treatment adds to the chance of coming back for a cart (0.3): it stays a chance. */
export const MAX_UPLIFT = 0.7;

/** What a checkpoint records: events emitted so far, and which stream they came from. */
type GeneratorPosition = { emitted: number; fingerprint: string };

type Settings = Required<GeneratorOptions>;

/** Every option's default. */
export const GENERATOR_DEFAULTS: Readonly<Settings> = {
  seed: 42,
  users: 10_000,
  events: 200_000,
  partitions: 4,
  startMs: Date.UTC(2024, 4, 20),
  eventsPerSecond: 200,
  disorderMs: 2000,
  lateFraction: 0.001,
  lateByMs: 60_000,
  duplicateFraction: 0.005,
  treatments: [],
};

/** Users simulated at most: each is an object in memory (~300 bytes), so ~300 MB. */
export const MAX_USERS = 1_000_000;

export type GeneratorRange = { min?: number; max?: number; integer?: boolean };

/** What each option may be (startMs: any finite time); anything else is refused with a RangeError. */
export const GENERATOR_RANGES: Readonly<Record<Exclude<keyof Settings, "startMs" | "treatments">, GeneratorRange>> = {
  seed: { integer: true },
  users: { min: 1, max: MAX_USERS, integer: true },
  events: { min: 1, integer: true },
  partitions: { min: 1, integer: true },
  // Below one event in 1000 s the population's sessions would lie months apart.
  eventsPerSecond: { min: 0.001 },
  disorderMs: { min: 0 },
  lateFraction: { min: 0, max: 1 },
  lateByMs: { min: 0 },
  duplicateFraction: { min: 0, max: 1 },
};

function settingsOf(options: GeneratorOptions): Settings {
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  const settings: Settings = { ...GENERATOR_DEFAULTS, ...given };
  for (const [key, { min = -Infinity, max = Infinity, integer = false }] of Object.entries(GENERATOR_RANGES)) {
    const value = settings[key as keyof typeof GENERATOR_RANGES];
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      throw new RangeError(`generator ${key}: expected a${integer ? " whole" : ""} number from ${min} to ${max}, got ${value}`);
    }
  }
  if (!Number.isFinite(settings.startMs)) throw new RangeError(`generator startMs: expected a time in epoch ms, got ${settings.startMs}`);
  for (const { assignment, uplifts } of settings.treatments) {
    for (const [variant, uplift] of Object.entries(uplifts)) {
      if (!(uplift >= 0 && uplift <= MAX_UPLIFT)) throw new RangeError(`generator treatments: the uplift of ${assignment.experiment}/${variant} must be from 0 to ${MAX_UPLIFT}, got ${uplift}`);
    }
  }
  return settings;
}

/** What the user's arms in every treatment add to their chance of coming back for a cart. */
function upliftOf(treatments: readonly Treatment[], userId: string): number {
  let uplift = 0;
  for (const { assignment, uplifts } of treatments) uplift += uplifts[armOf(assignment, userId)] ?? 0;
  return Math.min(MAX_UPLIFT, uplift);
}

/** Hashes what shapes the stream (not the total, so a run can be extended), to refuse foreign checkpoints. */
function fingerprintOf(s: Settings): string {
  const shape: unknown[] = [s.seed, s.users, s.partitions, s.startMs, s.eventsPerSecond, s.disorderMs, s.lateFraction, s.lateByMs, s.duplicateFraction];
  // Only when there are some: a world without treatments keeps the fingerprint it always had.
  if (s.treatments.length > 0) shape.push(s.treatments);
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

  /** Events emitted of the events it was asked for. */
  progress(): SourceProgress {
    return { done: this.emitted, total: this.settings.events };
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
    for (const user of this.users) user.cartReturnUplift = upliftOf(this.settings.treatments, user.id);
    const activities = Float64Array.from(this.users, () => drawActivity(this.rng));
    const baseCycleMs = solveBaseCycleMs(activities, eventsPerSecond / 1000);
    const firstAtMs = new Float64Array(users);
    for (let i = 0; i < users; i++) {
      const user = this.users[i];
      user.gapMeanMs = gapMeanMsOf(user, baseCycleMs / activities[i]);
      firstAtMs[i] = this.startSession(user, startMs - WARM_UP_MS + drawFirstDelayMs(this.rng, user));
    }
    this.heap = new DueHeap(firstAtMs);
    // The offset of disorderMs keeps on-time timestamps at or after startMs.
    this.warmUp(startMs + disorderMs);
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
    if (next === S.end || user.sessionEvents >= MAX_SESSION_EVENTS) return this.startSession(user, atMs + drawGapMs(rng, user));
    const dwelledMs = dwellMs(rng, user);
    user.sessionElapsedMs += dwelledMs;
    enter(rng, user, next);
    return atMs + dwelledMs;
  }

  /** Opens the user's next session at `atMs` with its landing event; returns `atMs`. */
  private startSession(user: User, atMs: number): number {
    openSession(this.rng, user, ++this.sessions);
    return atMs;
  }
}
