// Which user emits next: a min-heap of users by the emission time of their pending event.

/**
 * Min-heap of users by the emission time of their pending event; every user is always in it. Four
 * children per node: half the depth of a binary heap, and siblings share a cache line.
 */
export class DueHeap {
  readonly atMs: Float64Array;
  readonly user: Int32Array;

  constructor(dueAtMs: Float64Array) {
    this.atMs = Float64Array.from(dueAtMs);
    this.user = Int32Array.from(dueAtMs, (_, i) => i);
    for (let i = (this.atMs.length - 2) >> 2; i >= 0; i--) this.siftDown(i, this.atMs[i], this.user[i]);
  }

  /** Gives the first user a new due time and restores the order. */
  rescheduleFirst(atMs: number): void {
    this.siftDown(0, atMs, this.user[0]);
  }

  private siftDown(from: number, atMs: number, user: number): void {
    const at = this.atMs;
    const users = this.user;
    const size = at.length;
    let i = from;
    for (;;) {
      const first = 4 * i + 1;
      if (first >= size) break;
      let child = first;
      let childAtMs = at[first];
      const end = first + 4 < size ? first + 4 : size;
      for (let c = first + 1; c < end; c++) {
        if (at[c] < childAtMs) {
          child = c;
          childAtMs = at[c];
        }
      }
      if (childAtMs >= atMs) break;
      at[i] = childAtMs;
      users[i] = users[child];
      i = child;
    }
    at[i] = atMs;
    users[i] = user;
  }
}
