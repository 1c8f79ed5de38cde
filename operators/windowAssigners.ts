// Which windows an event time belongs to: tumbling and hopping windows aligned to the epoch, and
// the one-event session window that merging grows. Windows are half-open: [startMs, endMs).

export type WindowBounds = { readonly startMs: number; readonly endMs: number };

export type WindowAssigner =
  | { readonly type: "tumbling"; readonly sizeMs: number }
  | { readonly type: "hopping"; readonly sizeMs: number; readonly slideMs: number }
  | { readonly type: "session"; readonly gapMs: number };

function floorTo(timeMs: number, stepMs: number): number {
  return timeMs - (((timeMs % stepMs) + stepMs) % stepMs);
}

/** The windows containing `timeMs`, earliest first. */
export function assignWindows(assigner: WindowAssigner, timeMs: number): WindowBounds[] {
  switch (assigner.type) {
    case "tumbling": {
      const startMs = floorTo(timeMs, assigner.sizeMs);
      return [{ startMs, endMs: startMs + assigner.sizeMs }];
    }
    case "hopping": {
      const windows: WindowBounds[] = [];
      for (let startMs = floorTo(timeMs, assigner.slideMs); startMs > timeMs - assigner.sizeMs; startMs -= assigner.slideMs) {
        windows.unshift({ startMs, endMs: startMs + assigner.sizeMs });
      }
      return windows;
    }
    case "session":
      return [{ startMs: timeMs, endMs: timeMs + assigner.gapMs }];
  }
}

/**
 * Session windows merge when they overlap or touch, as Flink's do: events at most gapMs apart share a
 * session. Plain numbers: it runs for every session of a key on every event.
 */
export function sessionsMeet(aStartMs: number, aEndMs: number, bStartMs: number, bEndMs: number): boolean {
  return aStartMs <= bEndMs && bStartMs <= aEndMs;
}
