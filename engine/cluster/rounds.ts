// A group's rounds over NATS JetStream (engine/rounds.ts says what rounds are). Each partition's job
// publishes to the stream `flusso_<group>_rounds_in`, on `flusso.<group>.rounds.in.<n>.<kind>`:
//   start  its first watermark: it takes no part in rounds at or before it;
//   offer  its partial for the rounds in (afterMs, toMs], in pieces;
//   end    its final partial, standing for every round after afterMs, in pieces.
// The leader, which runs beside partition 0's job wherever that is, reads them in order and makes
// each round once every partition has spoken for it: the merge of their partials, published with the
// round's number to `flusso.<group>.rounds.models.<roundMs>` (and `...models.end`) of the stream
// `flusso_<group>_rounds`, and as the group's latest model, from which a new leader goes on.
//
// Nothing here needs fencing: a round's partials are each partition's first offer for it (read in
// stream order), and the merge is pure, so two leaders (one paused past its lease) publish the same
// model, under the same message id. A partition that replays from a checkpoint finds the models of
// rounds already made and does not offer again.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { pack, unpack } from "msgpackr";
import { END_OF_TIME } from "../elements.ts";
import { ensureStream, lastMessageOf, readStreamSince, retryTransient } from "../nats.ts";
import { RoundBook, RoundsStopped, roundsToEnd, type RoundEnvelope, type RoundExchange, type RoundMerger } from "../rounds.ts";
import { PIECE_BYTES } from "./checkpointLog.ts";
import { seal, unseal } from "./seal.ts";

export type RoundsOptions = {
  group: string;
  /** Copies NATS keeps of the rounds' streams. */
  replicas: number;
  /** 32 bytes: partials and models are encrypted as the state is. */
  encryptionKey?: string;
};

/** A piece of an offer or an end, as a partition publishes it. */
type Piece = { afterMs: number; toMs?: number; piece: number; pieces: number; bytes: Uint8Array };

type Kind = "start" | "offer" | "end";

export function roundsStreamNames(group: string): { inbound: string; models: string } {
  return { inbound: `flusso_${group}_rounds_in`, models: `flusso_${group}_rounds` };
}

/** How long a wait for a model goes without looking at the stream itself (a doorbell lost in a reconnect). */
const RELOOK_MS = 1_000;
/** How long publishing keeps trying while NATS cannot answer (a NATS cluster electing a leader). */
const UNAVAILABLE_LIMIT_MS = 60_000;
/** The leader purges the offers it has used every this many rounds. */
const PURGE_EVERY_ROUNDS = 64;

function openEnvelope(data: Uint8Array, encryptionKey: string | undefined): RoundEnvelope {
  return unpack(unseal(Buffer.from(data), encryptionKey)) as RoundEnvelope;
}

function modelToken(roundMs: number): string {
  return roundMs === END_OF_TIME ? "end" : String(roundMs);
}

/** The streams of a group's rounds, made when missing. */
async function ensureRoundStreams(jsm: JetStreamManager, group: string, replicas: number): Promise<void> {
  const names = roundsStreamNames(group);
  await ensureStream(jsm, { name: names.inbound, subjects: [`flusso.${group}.rounds.in.>`], replicas });
  await ensureStream(jsm, { name: names.models, subjects: [`flusso.${group}.rounds.models.>`, `flusso.${group}.rounds.latest`], replicas });
}

/** One partition's side of its group's rounds. */
export class PartitionRounds implements RoundExchange {
  readonly reports: boolean;
  private readonly names: { inbound: string; models: string };

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly options: RoundsOptions & { partition: number; signal: AbortSignal },
  ) {
    // Exactly one partition writes what belongs to the whole group: the leader's.
    this.reports = options.partition === 0;
    this.names = roundsStreamNames(options.group);
  }

  static async open(nc: NatsConnection, options: RoundsOptions & { partition: number; signal: AbortSignal }): Promise<PartitionRounds> {
    const jsm = await jetstreamManager(nc);
    await ensureRoundStreams(jsm, options.group, options.replicas);
    return new PartitionRounds(nc, jetstream(nc), jsm, options);
  }

  private subject(kind: Kind): string {
    return `flusso.${this.options.group}.rounds.in.${this.options.partition}.${kind}`;
  }

  async start(firstWatermarkMs: number): Promise<void> {
    await this.publish(this.subject("start"), pack({ afterMs: firstWatermarkMs }), `start.${this.options.partition}.${firstWatermarkMs}`);
  }

  async offer(afterMs: number, toMs: number, partial: unknown): Promise<void> {
    // Replayed from a checkpoint: the group may have made these rounds already.
    if ((await this.modelOf(toMs)) !== undefined) return;
    await this.publishPieces("offer", { afterMs, toMs }, partial);
  }

  async model(roundMs: number): Promise<unknown> {
    return (await this.waitFor(roundMs)).model;
  }

  async end(afterMs: number, partial: unknown, boundariesIn: (afterMs: number, toMs: number) => number[]): Promise<Array<{ roundMs: number; model: unknown }>> {
    if ((await this.modelOf(END_OF_TIME)) === undefined) await this.publishPieces("end", { afterMs }, partial);
    return roundsToEnd(afterMs, await this.waitFor(END_OF_TIME), boundariesIn, (roundMs) => this.modelOf(roundMs));
  }

  private async publishPieces(kind: "offer" | "end", range: { afterMs: number; toMs?: number }, partial: unknown): Promise<void> {
    const bytes = seal(pack(partial), this.options.encryptionKey);
    const pieces = Math.max(1, Math.ceil(bytes.length / PIECE_BYTES));
    for (let piece = 0; piece < pieces; piece++) {
      const body: Piece = { ...range, piece, pieces, bytes: bytes.subarray(piece * PIECE_BYTES, (piece + 1) * PIECE_BYTES) };
      await this.publish(this.subject(kind), pack(body), `${kind}.${this.options.partition}.${range.afterMs}.${piece}`);
    }
  }

  private async publish(subject: string, data: Uint8Array, msgID: string): Promise<void> {
    await retryTransient(() => this.js.publish(subject, data, { msgID }), UNAVAILABLE_LIMIT_MS);
  }

  /** The round's model if the group has made it. */
  private async modelOf(roundMs: number): Promise<RoundEnvelope | undefined> {
    const stored = await retryTransient(() => lastMessageOf(this.jsm, this.names.models, `flusso.${this.options.group}.rounds.models.${modelToken(roundMs)}`), UNAVAILABLE_LIMIT_MS);
    return stored === undefined ? undefined : this.openEnvelope(stored.data);
  }

  private openEnvelope(data: Uint8Array): RoundEnvelope {
    return unpack(unseal(Buffer.from(data), this.options.encryptionKey)) as RoundEnvelope;
  }

  /** The round's model, waiting for it: rung by its publication, looked up now and then. */
  private async waitFor(roundMs: number): Promise<RoundEnvelope> {
    const { signal } = this.options;
    const doorbell = new Doorbell(this.nc, `flusso.${this.options.group}.rounds.models.${modelToken(roundMs)}`);
    try {
      for (;;) {
        if (signal.aborted) throw new RoundsStopped();
        const made = await this.modelOf(roundMs);
        if (made !== undefined) return made;
        const rung = await doorbell.wait(RELOOK_MS, signal);
        if (rung !== undefined) return this.openEnvelope(rung);
      }
    } finally {
      doorbell.close();
    }
  }
}

/**
 * A core subscription that says when its subject was published to: a wait on it ends at the next
 * message (its data), after `waitMs`, or at a stop. Only the latest message is kept.
 */
class Doorbell {
  private readonly subscription: Subscription;
  private rung?: Uint8Array;
  private waiter?: (data: Uint8Array | undefined) => void;

  constructor(nc: NatsConnection, subject: string) {
    this.subscription = nc.subscribe(subject, {
      callback: (error, msg) => {
        if (error !== null) return;
        if (this.waiter === undefined) this.rung = msg.data;
        else this.waiter(msg.data);
      },
    });
  }

  wait(waitMs: number, signal: AbortSignal): Promise<Uint8Array | undefined> {
    const rung = this.rung;
    this.rung = undefined;
    if (rung !== undefined || signal.aborted) return Promise.resolve(rung);
    return new Promise((resolve) => {
      const done = (data: Uint8Array | undefined) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.waiter = undefined;
        resolve(data);
      };
      const onAbort = () => done(undefined);
      const timer = setTimeout(onAbort, waitMs);
      signal.addEventListener("abort", onAbort);
      this.waiter = done;
    });
  }

  close(): void {
    this.subscription.unsubscribe();
  }
}

/** An offer or an end being put together from its pieces. */
type Assembly = { afterMs: number; toMs?: number; pieces: Uint8Array[]; count: number; firstSeq: number };

/**
 * The group's leader: reads what the partitions publish into a RoundBook (engine/rounds.ts), and
 * publishes every round the book can make, in order, then the end. Runs beside partition 0's job,
 * until stopped.
 */
export class RoundLeader {
  private readonly names: { inbound: string; models: string };
  /** Each partition's offer or end being put together. */
  private readonly assembling = new Map<string, Assembly>();
  private readSeq = 0;
  private book!: RoundBook;
  private roundsSincePurge = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: RoundsOptions & { partitions: number; merger: RoundMerger; signal: AbortSignal },
  ) {
    this.names = roundsStreamNames(options.group);
  }

  /** Leads until stopped. */
  async run(): Promise<void> {
    const { signal } = this.options;
    const jsm = await retryTransient(() => jetstreamManager(this.nc), UNAVAILABLE_LIMIT_MS);
    await retryTransient(() => ensureRoundStreams(jsm, this.options.group, this.options.replicas), UNAVAILABLE_LIMIT_MS);
    const stored = await retryTransient(() => lastMessageOf(jsm, this.names.models, `flusso.${this.options.group}.rounds.latest`), UNAVAILABLE_LIMIT_MS);
    this.book = new RoundBook(this.options.partitions, this.options.merger, stored === undefined ? undefined : openEnvelope(stored.data, this.options.encryptionKey));
    const js = jetstream(this.nc);
    const doorbell = new Doorbell(this.nc, `flusso.${this.options.group}.rounds.in.>`);
    try {
      while (!signal.aborted) {
        await this.readNew();
        for (let envelope = this.book.makeNext(); envelope !== undefined; envelope = this.book.makeNext()) await this.publish(js, jsm, envelope);
        await doorbell.wait(RELOOK_MS, signal);
      }
    } finally {
      doorbell.close();
    }
  }

  /** Takes in what the partitions published since the last read. */
  private async readNew(): Promise<void> {
    await readStreamSince(this.nc, this.names.inbound, { afterSeq: this.readSeq }, (msg) => {
      this.readSeq = msg.seq;
      const [, , , , partitionToken, kind] = msg.subject.split(".");
      const partition = Number(partitionToken);
      if (!(Number.isInteger(partition) && partition >= 0 && partition < this.options.partitions)) return;
      if (kind === "start") this.book.start(partition, (unpack(msg.data) as { afterMs: number }).afterMs);
      else if (kind === "offer" || kind === "end") this.takePiece(partition, kind, unpack(msg.data) as Piece, msg.seq);
    });
  }

  /** Puts pieces together; a complete offer or end goes to the book. One left half-published (a crash) gives way to the next. */
  private takePiece(partition: number, kind: "offer" | "end", piece: Piece, seq: number): void {
    const key = `${kind}.${partition}`;
    let assembly = this.assembling.get(key);
    if (assembly === undefined || assembly.afterMs !== piece.afterMs) {
      assembly = { afterMs: piece.afterMs, toMs: piece.toMs, pieces: new Array<Uint8Array>(piece.pieces), count: 0, firstSeq: seq };
      this.assembling.set(key, assembly);
    }
    if (assembly.pieces[piece.piece] !== undefined) return;
    assembly.pieces[piece.piece] = piece.bytes;
    assembly.count++;
    if (assembly.count < assembly.pieces.length) return;
    this.assembling.delete(key);
    const partial = unpack(unseal(Buffer.concat(assembly.pieces), this.options.encryptionKey));
    if (kind === "end") this.book.end(partition, assembly.afterMs, partial);
    else this.book.offer(partition, assembly.afterMs, assembly.toMs!, partial, assembly.firstSeq);
  }

  private async publish(js: JetStreamClient, jsm: JetStreamManager, envelope: RoundEnvelope): Promise<void> {
    const data = seal(pack(envelope), this.options.encryptionKey);
    const token = modelToken(envelope.roundMs);
    await retryTransient(() => js.publish(`flusso.${this.options.group}.rounds.models.${token}`, data, { msgID: `model.${token}` }), UNAVAILABLE_LIMIT_MS);
    await retryTransient(() => js.publish(`flusso.${this.options.group}.rounds.latest`, data, { msgID: `latest.${token}` }), UNAVAILABLE_LIMIT_MS);
    this.book.made(envelope);
    if (++this.roundsSincePurge >= PURGE_EVERY_ROUNDS) await this.purgeUsed(jsm);
  }

  /**
   * Purges each partition's offers before the first one still standing or being put together (starts
   * and ends stay: later rounds and leaders need them).
   */
  private async purgeUsed(jsm: JetStreamManager): Promise<void> {
    this.roundsSincePurge = 0;
    for (let p = 0; p < this.options.partitions; p++) {
      const keepFromSeq = Math.min(this.book.firstTagOf(p) ?? Infinity, this.assembling.get(`offer.${p}`)?.firstSeq ?? Infinity, this.readSeq + 1);
      await retryTransient(() => jsm.streams.purge(this.names.inbound, { filter: `flusso.${this.options.group}.rounds.in.${p}.offer`, seq: keepFromSeq }), UNAVAILABLE_LIMIT_MS);
    }
  }
}

