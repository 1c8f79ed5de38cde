// A sink whose outputs are reshaped before they reach another sink (e.g. dead letters minimised for
// privacy); everything else, positions and held outputs included, is the inner sink's.
import type { Sink } from "./sink.ts";

export function mappedSink(inner: Sink, shape: (value: object) => object): Sink {
  const sink: Sink = {
    description: inner.description,
    recover: (position, recovery) => inner.recover(position, recovery),
    write: (value) => inner.write(shape(value)),
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
  if (inner.hold !== undefined) {
    sink.hold = (checkpointId) => inner.hold!(checkpointId);
    sink.release = (checkpointId) => inner.release!(checkpointId);
    sink.deliveredThrough = () => inner.deliveredThrough!();
    sink.delivered = () => inner.delivered!();
  }
  return sink;
}
