// Named errors of the engine runtime: each says which rule was broken, with which values, and the
// way out. The name is the class's (`error.name`); messages do not repeat it.

/** Names every engine error after its class, so `String(error)` reads `StateMismatch: ...` once. */
export class EngineError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A watermark tried to move backwards: the engine never lets event-time progress regress. */
export class WatermarkRegression extends EngineError {
  constructor(readonly fromMs: number, readonly toMs: number) {
    super(`${fromMs} -> ${toMs}`);
  }
}

/**
 * The state directory holds state this job cannot resume: of another pipeline, or of one changed in
 * what its state means. `changes`: one line each; `wayOut`: what to do instead.
 */
export class StateMismatch extends EngineError {
  constructor(
    readonly dir: string,
    readonly changes: readonly string[],
    readonly wayOut = "use a fresh state dir or run with --reset",
  ) {
    super(`${dir} holds state this pipeline cannot resume:\n${changes.map((change) => `  - ${change}\n`).join("")}${wayOut}`);
  }
}

/** The state was written under another secret (a pseudonymisation key): resuming would mix the two. */
export class StateKeyChanged extends EngineError {
  constructor(readonly dir: string, readonly what: string) {
    super(
      `${dir} was written with another ${what}; resuming with this one would treat the same ids as new ones. ` +
        `Give the key the state was written with, or start over with --reset`,
    );
  }
}

/** The state directory cannot be read with the key given (another key, or none where one was used). */
export class StateUnreadable extends EngineError {
  constructor(readonly dir: string, readonly isEncrypted: boolean, cause: unknown) {
    super(
      `${dir} cannot be read ${isEncrypted ? "with the encryption key given" : "without an encryption key"} ` +
        `(${firstLine(cause)}): it was written ${isEncrypted ? "unencrypted or with another key" : "encrypted"}; ` +
        `give the key it was written with, or start over with --reset`,
      { cause },
    );
  }
}

/** The state directory's files are damaged (truncated, bits flipped): nothing in it is trusted. */
export class StateCorrupt extends EngineError {
  constructor(readonly dir: string, readonly detail: string) {
    super(`${dir} is damaged: ${detail}. Restore it from a backup, or start over with --reset (the outputs are rewritten from the start)`);
  }
}

/** The state directory (or a file in it) cannot be written or opened by this process. */
export class StateDirUnusable extends EngineError {
  constructor(readonly dir: string, cause: unknown) {
    super(`${dir} cannot be used: ${firstLine(cause)}; check that it exists, is a directory and is writable by this user`, { cause });
  }
}

/** Another process runs a job on this state dir. */
export class StateDirLocked extends EngineError {
  constructor(readonly dir: string, readonly holderPid: number | undefined) {
    super(
      `${dir} is in use by another flusso process` +
        `${holderPid === undefined ? "" : ` (pid ${holderPid})`}; two jobs on one state dir would corrupt each other's state and outputs. ` +
        `Stop it first, or give this job another state.dir`,
    );
  }
}

/** A state dir that holds files flusso did not write: flusso neither uses nor resets it. */
export class StateDirForeign extends EngineError {
  constructor(readonly dir: string, readonly entries: string[]) {
    const shown = entries.slice(0, 5).join(", ") + (entries.length > 5 ? `, ... (${entries.length} in all)` : "");
    super(
      `${dir} holds files flusso did not write (${shown}) and no FLUSSO_STATE marker; ` +
        `flusso keeps its state only in an empty or new directory of its own, so --reset never deletes anything else. Choose another state.dir`,
    );
  }
}

/** A sink's file is shorter than the position its last checkpoint committed: output was lost outside flusso. */
export class SinkPositionLost extends EngineError {
  constructor(readonly path: string, readonly committedBytes: number, readonly actualBytes: number) {
    super(
      `${path} has ${actualBytes} bytes but the checkpoint committed ${committedBytes}; ` +
        `the output was truncated or replaced outside flusso`,
    );
  }
}

/** A sink's destination is gone or replaced (a deleted stream): what was written there is lost. */
export class SinkLost extends EngineError {
  constructor(readonly sink: string, readonly detail: string) {
    super(`${sink}: ${detail}`);
  }
}

/** A source's input cannot be opened or is not something a source can read (a missing file, a pipe). */
export class SourceUnreadable extends EngineError {
  constructor(readonly source: string, readonly detail: string) {
    super(`${source}: ${detail}`);
  }
}

/** A source cannot resume from the position a checkpoint recorded. */
export class SourcePositionInvalid extends EngineError {
  constructor(readonly source: string, readonly detail: string) {
    super(`${source}: ${detail}`);
  }
}

function firstLine(cause: unknown): string {
  return String((cause as Error)?.message ?? cause).split("\n")[0];
}
