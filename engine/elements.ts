// The two kinds of stream element (records that carry key and event time, and in-band watermarks),
// and the kinded value of a record bound for the sinks.

/** A keyed record; `time` is its event time in epoch milliseconds. */
export type StreamRecord<V> = {
  readonly kind: "record";
  readonly key: string;
  readonly time: number;
  readonly value: V;
};

/** Event-time progress: no record with `time <= watermark.time` is expected any more. */
export type Watermark = { readonly kind: "watermark"; readonly time: number };

export type Element<V> = StreamRecord<V> | Watermark;

/** A record's value that says what it is, for routing to the sinks that take that kind. */
export type KindedOutput = { kind: string; body: object };

/** The watermark a bounded source ends with, so every window and timer fires. */
export const END_OF_TIME = Number.MAX_SAFE_INTEGER;

export function record<V>(key: string, time: number, value: V): StreamRecord<V> {
  return { kind: "record", key, time, value };
}

export function watermark(time: number): Watermark {
  return { kind: "watermark", time };
}
