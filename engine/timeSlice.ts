// Work done in slices on a thread others share (the job's HTTP answers, a commit finishing): after
// about `sliceMs` of work, the work lets the rest of the thread run, then goes on.

export class TimeSlice {
  private startMs = performance.now();

  constructor(private readonly sliceMs: number) {}

  /** This slice has lasted its time: the work should `yieldThread()` at its next clean point. */
  isOver(): boolean {
    return performance.now() - this.startMs >= this.sliceMs;
  }

  /** Lets timers, I/O and messages run (setImmediate), then starts the next slice. */
  async yieldThread(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.startMs = performance.now();
  }
}
