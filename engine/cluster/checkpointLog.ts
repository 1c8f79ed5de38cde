// A partition's checkpoints in NATS, so that a worker on any machine, with an empty disk, can take
// the partition over: every StateStore transaction (the changed keys only) is appended to the
// partition's subject of the group's checkpoint stream, in pieces, the last piece being its commit
// record. Now and then a transaction is a base (the whole state) and what came before it is purged.
//
// The fence: every message is published with the subject's expected last sequence. A worker taking
// the partition over first reads the log and appends a claim after its end; from then on, anything
// the previous holder tries to append fails (wrong last sequence), so a holder that lost its lease
// (paused, cut off) cannot commit a checkpoint or move the partition's source position, and its
// unreleased outputs are never sent. A reader applies only the transactions whose commit record it
// saw: half a checkpoint (a crash mid-append) is never seen.
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { pack, unpack } from "msgpackr";
import { ensureStream, isTransient, lastMessageOf, readStreamSince, retryTransient } from "../nats.ts";
import type { CheckpointMeta, Transaction } from "../store.ts";
import { seal, unseal } from "./seal.ts";

export type CheckpointLogOptions = {
  group: string;
  partition: number;
  workerId: string;
  /** Copies NATS keeps of the checkpoint stream. */
  replicas: number;
  /** 32 bytes: transactions are encrypted (AES-256-GCM) before they leave, as the state dir is at rest. */
  encryptionKey?: string;
};

/** What a claim found: the log's committed transactions from its last base, unless the cache was current. */
export type Claim = {
  /** The local state dir already holds the log's last committed checkpoint. */
  isCacheCurrent: boolean;
  /** Committed transactions from the last base on, oldest first; empty when the cache is current. */
  transactions: Transaction[];
  /** The stream sequence of the last commit record (0: none): what a cache that applied them is at. */
  lastCommitSeq: number;
  /** The checkpoint id of that commit (0: none). */
  lastCheckpointId: number;
};

/**
 * Where a local state dir stands against the log: the commit record it holds last, and the creation
 * time of the stream it was read from (a stream made again restarts its sequences).
 */
export type CachedCommit = { commitSeq: number; checkpointId: number; streamCreated?: string };

/** A partition's subject was appended to by someone else since this worker's last message: it lost the partition. */
export class PartitionFenced extends Error {
  constructor(readonly partition: number) {
    super(`partition ${partition} was taken over by another worker: this worker's checkpoint was refused`);
    this.name = "PartitionFenced";
  }
}

/** A read of a partition's checkpoint log ended before its last message (a fetch that came back empty under load). */
class LogReadShort extends Error {
  constructor(partition: number, readThroughSeq: number, lastSeq: number) {
    super(`the checkpoint log of partition ${partition} was read up to sequence ${readThroughSeq} of ${lastSeq}`);
  }
}

export function checkpointStreamName(group: string): string {
  return `flusso_${group}_checkpoints`;
}

/** Bytes per message: well under NATS's default 1 MB payload limit. */
export const PIECE_BYTES = 256 * 1024;
/** A base is written once the log since the last one holds this many times its size, and at least... */
const BASE_GROWTH_RATIO = 2;
/** ...this many bytes: small states are not rewritten at every checkpoint. */
const BASE_MIN_BYTES = 4 * 1024 * 1024;
export const KIND_HEADER = "Flusso-Kind";
const CHECKPOINT_HEADER = "Flusso-Checkpoint";
const BASE_HEADER = "Flusso-Base";
export const WORKER_HEADER = "Flusso-Worker";
/** How often a claim is tried when the previous holder appends between the look and the claim (a ms apart). */
const CLAIM_ATTEMPTS = 50;
/**
 * How long an append or a claim keeps trying while NATS cannot answer (a NATS cluster electing a new
 * leader takes 5-10 s). A holder that cannot append for longer loses its lease meanwhile anyway.
 */
const UNAVAILABLE_LIMIT_MS = 60_000;
/** Between two reads of a log that came back short. */
const REREAD_WAIT_MS = 250;

type Kind = "piece" | "commit" | "claim";

export class CheckpointLog {
  private readonly subject: string;
  private readonly stream: string;
  /** The subject's last sequence as this worker knows it: its next append expects it. */
  private lastSeq = 0;
  /** Where this worker's claim is: message ids are unique to it. */
  private claimSeq = 0;
  private bytesSinceBase = 0;
  private baseBytes = 0;
  private isBaseDue = false;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly nc: NatsConnection,
    private readonly options: CheckpointLogOptions,
    /** When the checkpoint stream was created: part of what a cache must match. */
    readonly streamCreated: string,
  ) {
    this.stream = checkpointStreamName(options.group);
    this.subject = `flusso.${options.group}.checkpoints.${options.partition}`;
  }

  static async open(nc: NatsConnection, options: CheckpointLogOptions): Promise<CheckpointLog> {
    const jsm = await jetstreamManager(nc);
    const stream = checkpointStreamName(options.group);
    const info = await ensureStream(jsm, { name: stream, subjects: [`flusso.${options.group}.checkpoints.>`], replicas: options.replicas });
    return new CheckpointLog(jetstream(nc), jsm, nc, options, info.created);
  }

  /**
   * Makes the partition this worker's to commit to:
   * 1. looks at the subject's last message and the commit it stands on (a commit, or the one a claim
   *    stood on; unknown after a piece, the end of a transaction cut short);
   * 2. appends a claim right after it, which fences every earlier holder; a holder still appending
   *    (its lease ran out while it worked) makes it try again, at once, from 1.;
   * 3. reads the log before the claim, unless the local cache holds its last commit already.
   */
  async claim(cached: CachedCommit | undefined): Promise<Claim> {
    for (let attempt = 1; ; attempt++) {
      // 1.
      const last = await retryTransient(() => this.lastMessage(), UNAVAILABLE_LIMIT_MS);
      const known = last === undefined ? { commitSeq: 0, checkpointId: 0 } : last;
      // 2.
      let claimSeq: number;
      try {
        const hdrs = this.headersOf("claim", known.checkpointId);
        const body = JSON.stringify({ worker: this.options.workerId, lastCommitSeq: known.commitSeq });
        claimSeq = await this.publish(body, hdrs, last?.seq ?? 0, `${this.msgIdPrefix}.claim.${last?.seq ?? 0}`);
      } catch (error) {
        if (!isWrongLastSequence(error) || attempt >= CLAIM_ATTEMPTS) throw error;
        continue;
      }
      this.lastSeq = claimSeq;
      this.claimSeq = claimSeq;
      this.bytesSinceBase = 0;
      // 3.
      if (known.commitSeq === 0) return { isCacheCurrent: false, transactions: [], lastCommitSeq: 0, lastCheckpointId: 0 };
      if (cached !== undefined && known.commitSeq === cached.commitSeq && known.checkpointId === cached.checkpointId && cached.streamCreated === this.streamCreated) {
        return { isCacheCurrent: true, transactions: [], lastCommitSeq: cached.commitSeq, lastCheckpointId: cached.checkpointId };
      }
      const claim = await this.read(last!.seq);
      // A base soon after a takeover keeps the next one's read short.
      this.isBaseDue = claim.transactions.length > 1;
      return claim;
    }
  }

  /** Whether the next transaction should be a base (the log has grown enough since the last). */
  takeBaseDue(): boolean {
    const isDue = this.isBaseDue || this.bytesSinceBase > Math.max(BASE_MIN_BYTES, BASE_GROWTH_RATIO * this.baseBytes);
    this.isBaseDue = false;
    return isDue;
  }

  /**
   * Appends one transaction, fenced: PartitionFenced when someone appended since this worker's last
   * message. Resolves with the commit record's sequence once every piece is stored. After a base,
   * drops the messages before it.
   */
  async append(transaction: Transaction, meta: CheckpointMeta): Promise<number> {
    const bytes = seal(pack(transaction), this.options.encryptionKey);
    const isBase = transaction.outbox !== undefined;
    let firstSeq = 0;
    for (let at = 0; at === 0 || at < bytes.length; at += PIECE_BYTES) {
      const isLast = at + PIECE_BYTES >= bytes.length;
      const hdrs = this.headersOf(isLast ? "commit" : "piece", meta.checkpointId);
      if (isLast && isBase) hdrs.set(BASE_HEADER, "1");
      try {
        const msgId = `${this.msgIdPrefix}.${this.claimSeq}.${meta.checkpointId}.${at / PIECE_BYTES}`;
        this.lastSeq = await this.publish(bytes.subarray(at, at + PIECE_BYTES), hdrs, this.lastSeq, msgId);
        if (firstSeq === 0) firstSeq = this.lastSeq;
      } catch (error) {
        if (isWrongLastSequence(error)) throw new PartitionFenced(this.options.partition);
        throw error;
      }
    }
    this.bytesSinceBase += bytes.length;
    if (isBase) {
      this.baseBytes = bytes.length;
      this.bytesSinceBase = 0;
      // What came before the base is no longer needed to restore; a failed purge only costs space.
      await this.jsm.streams.purge(this.stream, { filter: this.subject, seq: firstSeq }).catch(() => undefined);
    }
    return this.lastSeq;
  }

  /** Message ids are unique in the whole stream (every partition's subject): worker and partition first. */
  private get msgIdPrefix(): string {
    return `${this.options.workerId}.p${this.options.partition}`;
  }

  /**
   * Publishes after `expectedLastSeq`, trying again while NATS cannot answer. The message id makes a
   * retry of a message that was stored (its ack lost) a duplicate, acked as before, and not a
   * second message that the fence would then refuse.
   */
  private async publish(data: string | Uint8Array, hdrs: ReturnType<typeof headers>, expectedLastSeq: number, msgID: string): Promise<number> {
    const ack = await retryTransient(() => this.js.publish(this.subject, data, { headers: hdrs, msgID, expect: { lastSubjectSequence: expectedLastSeq } }), UNAVAILABLE_LIMIT_MS);
    return ack.seq;
  }

  /** The subject's last message: its sequence, and the commit it stands on (a commit, or the one a claim saw). */
  private async lastMessage(): Promise<{ seq: number; commitSeq: number; checkpointId: number } | undefined> {
    const msg = await lastMessageOf(this.jsm, this.stream, this.subject);
    if (msg === undefined) return undefined;
    const kind = msg.header?.get(KIND_HEADER) as Kind;
    const checkpointId = Number(msg.header?.get(CHECKPOINT_HEADER) ?? 0);
    if (kind === "commit") return { seq: msg.seq, commitSeq: msg.seq, checkpointId };
    if (kind === "claim") return { seq: msg.seq, commitSeq: (msg.json() as { lastCommitSeq: number }).lastCommitSeq, checkpointId };
    // A piece: a transaction cut short; the commit before it is known only by reading.
    return { seq: msg.seq, commitSeq: -1, checkpointId: -1 };
  }

  /**
   * The committed transactions up to the subject's message `lastSeq` (the last before the claim),
   * from the last base on. A read that ends before `lastSeq` (a fetch that came back empty under
   * load) is done again: taking over from part of the log would resume from an old checkpoint.
   */
  private async read(lastSeq: number): Promise<Claim> {
    if (lastSeq === 0) return { isCacheCurrent: false, transactions: [], lastCommitSeq: 0, lastCheckpointId: 0 };
    const isRetried = (error: unknown) => error instanceof LogReadShort || isTransient(error);
    return retryTransient(() => this.readOnce(lastSeq), UNAVAILABLE_LIMIT_MS, { waitMs: REREAD_WAIT_MS, isRetried });
  }

  /** One read of the log up to `lastSeq`; LogReadShort when it ended before it. */
  private async readOnce(lastSeq: number): Promise<Claim> {
    let transactions: Transaction[] = [];
    let pieces: Uint8Array[] = [];
    let lastCommitSeq = 0;
    let lastCheckpointId = 0;
    let readThroughSeq = 0;
    await readStreamSince(this.nc, this.stream, { afterSeq: 0, subject: this.subject }, (msg) => {
      if (msg.seq > lastSeq) return;
      readThroughSeq = msg.seq;
      const kind = msg.headers?.get(KIND_HEADER) as Kind;
      if (kind === "claim") {
        // What a previous holder left unfinished before being fenced is not part of the log.
        pieces = [];
        return;
      }
      pieces.push(msg.data);
      if (kind !== "commit") return;
      const transaction = unpack(unseal(Buffer.concat(pieces), this.options.encryptionKey)) as Transaction;
      pieces = [];
      if (transaction.outbox !== undefined) transactions = [];
      transactions.push(transaction);
      lastCommitSeq = msg.seq;
      lastCheckpointId = transaction.checkpointId;
    });
    if (readThroughSeq !== lastSeq) throw new LogReadShort(this.options.partition, readThroughSeq, lastSeq);
    return { isCacheCurrent: false, transactions, lastCommitSeq, lastCheckpointId };
  }

  private headersOf(kind: Kind, checkpointId: number) {
    const hdrs = headers();
    hdrs.set(KIND_HEADER, kind);
    hdrs.set(CHECKPOINT_HEADER, String(checkpointId));
    // Who wrote it: for whoever audits a takeover (`nats stream view`).
    hdrs.set(WORKER_HEADER, this.options.workerId);
    return hdrs;
  }
}

function isWrongLastSequence(error: unknown): boolean {
  return /wrong last sequence/i.test(String((error as Error)?.message ?? error));
}
