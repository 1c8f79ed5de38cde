// Rounds: how the partitions of a group (engine/cluster/) give one answer across all of them. Work
// that looks across keys (a model fitted to every user) is done at event-time boundaries, the rounds:
// at each, every partition offers its partial result (its users' points, its digest, its counts), one
// merge over all partitions' partials makes the round's model, and every partition applies that model
// when its watermark reaches the boundary. A partition waits for the model before its watermark goes
// past the boundary, so the result depends on the events and the partition count only: not on how many
// workers there are, nor on which worker holds which partition, nor on crashes and takeovers.
//
// A partition's watermark may jump over several boundaries at once: it offers one partial for them
// all (its state as the first of them falls due), and applies their models one by one.
import { END_OF_TIME } from "./elements.ts";

/** What a job's operator offers to and takes from its group's rounds. */
export type RoundParticipant = {
  /** The round boundaries in (afterMs, toMs], ascending; toMs is finite. */
  boundariesIn(afterMs: number, toMs: number): number[];
  /**
   * This partition's partial result as its state stands now, for the rounds after `afterMs` the
   * watermark is about to cross or, `atEnd`, for every round after it to the group's end.
   */
  partial(afterMs: number, atEnd: boolean): unknown;
  /**
   * The group's model of round `roundMs` (END_OF_TIME: the end), applied when the watermark next
   * reaches it. `reports`: this partition writes what belongs to the whole group (a model's
   * summary), which exactly one partition of the group does.
   */
  accept(roundMs: number, model: unknown, reports: boolean): void;
};

/**
 * Makes the model of a round from every partition's partial, in partition order (undefined where a
 * partition had not started by then). `previous` is the model of the round before (undefined before
 * the first). Pure: the same partials make the same model wherever and however often it runs.
 */
export type RoundMerger = {
  boundariesIn(afterMs: number, toMs: number): number[];
  merge(roundMs: number, previous: unknown, partials: ReadonlyArray<unknown>): unknown;
};

/** A job's link to its group's rounds (engine/cluster/rounds.ts over NATS). */
export type RoundExchange = {
  /** This partition reports for the group (see RoundParticipant.accept). */
  readonly reports: boolean;
  /** The partition's first watermark: it takes no part in rounds at or before it. */
  start(firstWatermarkMs: number): Promise<void>;
  /** Offers the partial for the rounds in (afterMs, toMs]. */
  offer(afterMs: number, toMs: number, partial: unknown): Promise<void>;
  /** The model of round `roundMs`, once the group has made it. */
  model(roundMs: number): Promise<unknown>;
  /**
   * The partition's input ended after `afterMs`: offers its final partial, and resolves with the
   * models of the rounds after `afterMs` it must still apply, in order, the group's end last
   * (`roundMs` END_OF_TIME).
   */
  end(afterMs: number, partial: unknown, boundariesIn: (afterMs: number, toMs: number) => number[]): Promise<Array<{ roundMs: number; model: unknown }>>;
};

/** A wait for the group was cut short by a stop: the job stops without a last checkpoint (its last one stands). */
export class RoundsStopped extends Error {
  constructor() {
    super("stopped while waiting for the group's round");
    this.name = "RoundsStopped";
  }
}

/** Boundaries that are multiples of `everyMs` (shifted by `offsetMs`) in (afterMs, toMs]; none unless both ends are finite. */
export function multiplesIn(afterMs: number, toMs: number, everyMs: number, offsetMs = 0): number[] {
  const out: number[] = [];
  if (!(toMs > afterMs) || !Number.isFinite(toMs) || !Number.isFinite(afterMs)) return out;
  const firstMs = Math.floor((afterMs - offsetMs) / everyMs) * everyMs + offsetMs + everyMs;
  for (let t = firstMs; t <= toMs; t += everyMs) out.push(t);
  return out;
}

/** Sorted union of ascending lists. */
export function unionSorted(lists: ReadonlyArray<readonly number[]>): number[] {
  if (lists.length === 1) return [...lists[0]];
  return [...new Set(lists.flat())].sort((a, b) => a - b);
}

/** What the group makes of a round, as every partition reads it. */
export type RoundEnvelope = {
  /** The round's boundary; END_OF_TIME: the group's end. */
  roundMs: number;
  /** The group's first round. */
  firstRoundMs: number;
  /** The round made before this one (for the end: the last of all); undefined before the first. */
  previousRoundMs?: number;
  model: unknown;
};

/** A partition's offer as the book keeps it; `tag` is the transport's (where it is in a stream). */
type BookOffer = { afterMs: number; toMs: number; partial: unknown; tag: number };

/**
 * The leader's book of what each partition said (engine/cluster/rounds.ts reads it from NATS): first
 * watermarks, offers, ends; from which it makes the rounds in order. A round is made once every
 * partition stands for it: with the offer whose range holds it, with its end, or as not started yet
 * (its first watermark at or after the round); a partition that said none of these is waited for.
 */
export class RoundBook {
  private readonly starts = new Map<number, number>();
  private readonly offers: BookOffer[][];
  private readonly ends = new Map<number, { afterMs: number; partial: unknown }>();

  constructor(
    private readonly partitions: number,
    private readonly merger: RoundMerger,
    /** The latest round made, by this leader or one before it. */
    private latest?: RoundEnvelope,
  ) {
    this.offers = Array.from({ length: partitions }, () => []);
  }

  get hasEnded(): boolean {
    return this.latest?.roundMs === END_OF_TIME;
  }

  start(partition: number, firstWatermarkMs: number): void {
    if (!this.starts.has(partition)) this.starts.set(partition, firstWatermarkMs);
  }

  /**
   * The first offer of each round counts. A replay from a checkpoint offers again from an earlier
   * watermark: it stands only for the rounds after those already offered or made.
   */
  offer(partition: number, afterMs: number, toMs: number, partial: unknown, tag: number): void {
    const offers = this.offers[partition];
    const fromMs = Math.max(afterMs, offers[offers.length - 1]?.toMs ?? -Infinity, this.latest?.roundMs ?? -Infinity);
    if (toMs > fromMs) offers.push({ afterMs: fromMs, toMs, partial, tag });
  }

  /** The partition's final partial: it stands for every round after `afterMs`. The first counts. */
  end(partition: number, afterMs: number, partial: unknown): void {
    if (!this.ends.has(partition)) this.ends.set(partition, { afterMs, partial });
  }

  /** The tag of the partition's first offer still standing. */
  firstTagOf(partition: number): number | undefined {
    return this.offers[partition][0]?.tag;
  }

  /** The next round (or the end) if every partition stands for it now; undefined while one is waited for. */
  makeNext(): RoundEnvelope | undefined {
    if (this.hasEnded) return undefined;
    const previousRoundMs = this.latest?.roundMs;
    const roundMs = this.nextRound(previousRoundMs ?? -Infinity);
    if (roundMs === undefined) {
      if (this.ends.size < this.partitions) return undefined;
      const partials = Array.from({ length: this.partitions }, (_, p) => this.ends.get(p)!.partial);
      return { roundMs: END_OF_TIME, firstRoundMs: this.latest?.firstRoundMs ?? END_OF_TIME, previousRoundMs, model: this.merger.merge(END_OF_TIME, this.latest?.model, partials) };
    }
    const partials: unknown[] = [];
    for (let p = 0; p < this.partitions; p++) {
      const standing = this.standingFor(p, roundMs);
      if (standing === WAITING) return undefined;
      partials.push(standing);
    }
    return { roundMs, firstRoundMs: this.latest?.firstRoundMs ?? roundMs, previousRoundMs, model: this.merger.merge(roundMs, this.latest?.model, partials) };
  }

  /** The round was made (published): the offers no later round needs go. */
  made(envelope: RoundEnvelope): void {
    this.latest = envelope;
    for (const offers of this.offers) while (offers.length > 0 && offers[0].toMs <= envelope.roundMs) offers.shift();
  }

  /** The first round after `afterMs` some partition has offered for. */
  private nextRound(afterMs: number): number | undefined {
    let next: number | undefined;
    for (const offers of this.offers) {
      for (const offer of offers) {
        const first = this.merger.boundariesIn(Math.max(afterMs, offer.afterMs), offer.toMs)[0];
        if (first !== undefined && (next === undefined || first < next)) next = first;
      }
    }
    return next;
  }

  private standingFor(partition: number, roundMs: number): unknown {
    const offer = this.offers[partition].find((o) => o.afterMs < roundMs && roundMs <= o.toMs);
    if (offer !== undefined) return offer.partial;
    const end = this.ends.get(partition);
    if (end !== undefined && end.afterMs < roundMs) return end.partial;
    const startMs = this.starts.get(partition);
    if (startMs !== undefined && roundMs <= startMs) return undefined;
    return WAITING;
  }
}

const WAITING = Symbol("waiting");

/**
 * What a partition whose input ended after `afterMs` applies once the group has ended: the models
 * of the rounds the group made after it (its final partial stood in them), in order, then the end's.
 */
export async function roundsToEnd(
  afterMs: number,
  end: RoundEnvelope,
  boundariesIn: (afterMs: number, toMs: number) => number[],
  modelOf: (roundMs: number) => Promise<RoundEnvelope | undefined>,
): Promise<Array<{ roundMs: number; model: unknown }>> {
  const models: Array<{ roundMs: number; model: unknown }> = [];
  if (end.previousRoundMs !== undefined) {
    for (const roundMs of boundariesIn(Math.max(afterMs, end.firstRoundMs - 1), end.previousRoundMs)) {
      const made = await modelOf(roundMs);
      if (made !== undefined) models.push({ roundMs, model: made.model });
    }
  }
  models.push({ roundMs: END_OF_TIME, model: end.model });
  return models;
}
