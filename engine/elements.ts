// The two kinds of stream element: records that carry key and event time, and in-band watermarks.

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

/** The watermark a bounded source ends with, so every window and timer fires. */
export const END_OF_TIME = Number.MAX_SAFE_INTEGER;

export function record<V>(key: string, time: number, value: V): StreamRecord<V> {
  return { kind: "record", key, time, value };
}

export function watermark(time: number): Watermark {
  return { kind: "watermark", time };
}

export function isRecord<V>(element: Element<V>): element is StreamRecord<V> {
  return element.kind === "record";
}
