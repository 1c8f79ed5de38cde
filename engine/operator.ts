// The contract every operator keeps, and the one helper (`operate`) that turns an operator's logic
// into an RxJS operator: it forwards watermarks after the logic has seen them, enforces their order,
// and routes errors and completion, so an operator file holds only its logic.
import { Observable, type OperatorFunction } from "rxjs";
import type { Element, StreamRecord } from "./elements.ts";
import { record, watermark } from "./elements.ts";
import { advanceWatermark } from "./watermarks.ts";
import { KeyedMapState, KeyedValueState, type KeyedStateOptions } from "./keyedState.ts";
import { TimerService } from "./timers.ts";
import type { RoundParticipant } from "./rounds.ts";

/** Where an operator's logic sends what it produces. */
export type Output<O> = {
  /** A result record downstream. */
  emit(key: string, timeMs: number, value: O): void;
  /** A record to a named side output (e.g. "late"), outside the main flow. */
  side(tag: string, value: unknown): void;
};

/**
 * What an operator shows of its state to queries (see engine/jobView.ts): read between batches, as
 * JSON. Optional for an operator.
 */
export type OperatorView = {
  /** Keys the operator holds state for. */
  keyCount(): number;
  /** What it holds for `key` now, as JSON; undefined for a key it knows nothing of. */
  key(key: string): unknown;
  /** Further named views (e.g. segment membership), each a function of the query's parameters. */
  views?: Readonly<Record<string, (params: Readonly<Record<string, string>>) => unknown>>;
};

/** An operator at run time: built from its definition, fed in order, state held in the context's states. */
export type OperatorLogic<I, O> = {
  /** What it shows of its state to queries. Optional. */
  readonly view?: OperatorView;
  onRecord(rec: StreamRecord<I>, out: Output<O>): void;
  /** Event time has reached `watermarkMs`: fire what is due. The watermark is forwarded afterwards. */
  onWatermark(watermarkMs: number, out: Output<O>): void;
  /** Processing time has reached `nowMs` (periodic, between batches). Optional. */
  onProcessingTime?(nowMs: number, out: Output<O>): void;
  /** Its part in a group's rounds (engine/rounds.ts), when it works across keys; used only when the job runs in a group. */
  readonly rounds?: RoundParticipant;
};

/** What the engine gives an operator to build itself: restored state, timers, side outputs. */
export type OperatorContext = {
  /** Keyed value state, restored from the last checkpoint when there is one. */
  valueState<V, S = V>(name: string, options?: KeyedStateOptions<V, S>): KeyedValueState<V, S>;
  mapState<V>(name: string, options?: { ttlMs?: number }): KeyedMapState<V>;
  /**
   * Event-time timers (fire on the watermark), restored from the last checkpoint. With
   * `isCheckpointed: false` they are not stored: the operator rebuilds them from its own state.
   */
  eventTimers(name: string, options?: { isCheckpointed?: boolean }): TimerService;
  /** Processing-time timers (fire on the wall clock between batches), restored from the last checkpoint. */
  processingTimers(name: string): TimerService;
  side(tag: string, value: unknown): void;
  /** Adds to a job counter reported in progress and the summary, and checkpointed with it. */
  count(counter: string, by: number): void;
};

/** What configuration describes; `build` makes the running logic from it. */
export type OperatorDefinition<I, O> = {
  readonly name: string;
  build(ctx: OperatorContext): OperatorLogic<I, O>;
};

/**
 * Wraps an operator's logic as an RxJS operator. Records go to `onRecord`; a watermark that moves
 * forward goes to `onWatermark` and then downstream; one that stands still is dropped; one that
 * goes back is an error. With `onRecordFailure`, a record the logic throws on is handed to it and
 * the stream goes on (one bad event must not stop a job); without it, the error ends the stream.
 */
export function operate<I, O>(
  logic: OperatorLogic<I, O>,
  side: Output<O>["side"],
  processingTime$?: Observable<number>,
  onRecordFailure?: (rec: StreamRecord<I>, error: unknown) => void,
): OperatorFunction<Element<I>, Element<O>> {
  return (source) =>
    new Observable<Element<O>>((subscriber) => {
      const out: Output<O> = {
        emit: (key, timeMs, value) => subscriber.next(record(key, timeMs, value)),
        side,
      };
      let watermarkMs = -Infinity;
      const onRecordGuarded = (rec: StreamRecord<I>) => {
        try {
          logic.onRecord(rec, out);
        } catch (error) {
          onRecordFailure!(rec, error);
        }
      };
      const onTick = logic.onProcessingTime?.bind(logic);
      if (onTick && processingTime$) {
        subscriber.add(
          processingTime$.subscribe((nowMs) => {
            try {
              onTick(nowMs, out);
            } catch (error) {
              subscriber.error(error);
            }
          }),
        );
      }
      return source.subscribe({
        next(element) {
          try {
            if (element.kind === "record") {
              if (onRecordFailure === undefined) logic.onRecord(element, out);
              else onRecordGuarded(element);
            } else if (element.time > watermarkMs) {
              watermarkMs = advanceWatermark(watermarkMs, element.time);
              logic.onWatermark(watermarkMs, out);
              subscriber.next(watermark(watermarkMs));
            } else if (element.time < watermarkMs) advanceWatermark(watermarkMs, element.time);
          } catch (error) {
            subscriber.error(error);
          }
        },
        error: (error) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
    });
}
