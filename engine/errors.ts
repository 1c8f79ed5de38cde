// Named errors of the engine runtime: each says which rule was broken and with which values.

/** A watermark tried to move backwards: the engine never lets event-time progress regress. */
export class WatermarkRegression extends Error {
  constructor(readonly fromMs: number, readonly toMs: number) {
    super(`WatermarkRegression: ${fromMs} -> ${toMs}`);
    this.name = "WatermarkRegression";
  }
}

/** The state directory holds a checkpoint of a different pipeline definition. */
export class StateMismatch extends Error {
  constructor(readonly dir: string, readonly expected: string, readonly found: string) {
    super(
      `StateMismatch: ${dir} holds a checkpoint of another pipeline definition ` +
        `(fingerprint ${found}, this pipeline is ${expected}); use a fresh state dir or run with --reset`,
    );
    this.name = "StateMismatch";
  }
}

/** The state directory cannot be read with the key given (another key, or none where one was used). */
export class StateUnreadable extends Error {
  constructor(readonly dir: string, readonly isEncrypted: boolean, cause: unknown) {
    super(
      `StateUnreadable: ${dir} cannot be read ${isEncrypted ? "with the encryption key given" : "without an encryption key"} ` +
        `(${String((cause as Error)?.message ?? cause).split("\n")[0]}): it was written ${isEncrypted ? "unencrypted or with another key" : "encrypted"}; ` +
        `give the key it was written with, or start over with --reset`,
    );
    this.name = "StateUnreadable";
  }
}

/** A sink's file is shorter than the position its last checkpoint committed: output was lost outside flusso. */
export class SinkPositionLost extends Error {
  constructor(readonly path: string, readonly committedBytes: number, readonly actualBytes: number) {
    super(
      `SinkPositionLost: ${path} has ${actualBytes} bytes but the checkpoint committed ${committedBytes}; ` +
        `the output was truncated or replaced outside flusso`,
    );
    this.name = "SinkPositionLost";
  }
}

/** A source cannot resume from the position a checkpoint recorded. */
export class SourcePositionInvalid extends Error {
  constructor(readonly source: string, readonly detail: string) {
    super(`SourcePositionInvalid: ${source}: ${detail}`);
    this.name = "SourcePositionInvalid";
  }
}
