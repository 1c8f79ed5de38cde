// What NATS's names and flusso's NATS defaults mean, apart from the client library: pipeline
// validation reads these, and loading @nats-io for it would slow every start of a pipeline that
// never talks to NATS.

/** JetStream's own API: no stream may take a subject within these. */
export const JETSTREAM_API_SUBJECTS = "$JS.API.>";

/**
 * Whether some subject matches both `a` and `b`, by NATS's rules: tokens split on ".", `*` matches
 * one token, a final `>` one or more. JetStream refuses a stream whose subjects overlap one another
 * or another stream's ("subjects overlap with an existing stream").
 */
export function subjectsOverlap(a: string, b: string): boolean {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; ; i++) {
    if (i === x.length || i === y.length) return x.length === y.length;
    if (x[i] === ">" || y[i] === ">") return true;
    if (x[i] !== "*" && y[i] !== "*" && x[i] !== y[i]) return false;
  }
}

/** Whether every subject `subject` matches, `pattern` matches too (NATS's rules, as in subjectsOverlap). */
export function isSubjectWithin(subject: string, pattern: string): boolean {
  const x = subject.split(".");
  const y = pattern.split(".");
  for (let i = 0; ; i++) {
    if (i === y.length || i === x.length) return x.length === y.length;
    if (y[i] === ">") return true;
    if (x[i] === ">" || (y[i] !== "*" && x[i] !== y[i])) return false;
  }
}

/** An ack later than this means the message or its ack was lost (e.g. the server went away): send again. */
export const ACK_TIMEOUT_MS = 2_000;

/** The stream's duplicate window when none is given. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

/** The NATS source's defaults, for the options (NatsSourceOptions) that have one. */
export const NATS_SOURCE_DEFAULTS = { partitions: 1, bounded: false, bufferMessages: 10_000, pollMs: 100 } as const;
