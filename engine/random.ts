// Seeded PRNGs, for everything that must draw the same numbers on every run. Two algorithms, each
// pinning outputs that must not change: mulberry32 (k-means++ seeds, test data, benchmark
// workloads) and sfc32 (hot loops that draw millions of numbers, such as a generated input).

/** mulberry32: 32 bits of state, floats in [0, 1). Same seed, same sequence. */
export function mulberry32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** sfc32 (small fast chaotic PRNG) seeded through splitmix32: fast, 128-bit state, uniform in [0, 1). */
export class Sfc32 {
  /** a, b, c, d, in an Int32Array so the int32 state is never boxed as heap numbers. */
  private readonly state = new Int32Array(4);

  constructor(seed: number) {
    let s = seed | 0;
    const splitmix32 = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = Math.imul(s ^ (s >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      return z ^ (z >>> 15);
    };
    for (let i = 0; i < 4; i++) this.state[i] = splitmix32();
    for (let i = 0; i < 12; i++) this.next(); // sfc32 mixes its first outputs poorly
  }

  next(): number {
    const state = this.state;
    const a = state[0];
    const b = state[1];
    const c = state[2];
    const d = state[3];
    const t = (((a + b) | 0) + d) | 0;
    state[0] = b ^ (b >>> 9);
    state[1] = (c + (c << 3)) | 0;
    state[2] = (((c << 21) | (c >>> 11)) + t) | 0;
    state[3] = (d + 1) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Exponentially distributed with mean `mean`. */
  exponential(mean: number): number {
    return -Math.log(1 - this.next()) * mean;
  }

  pick<T>(list: readonly T[]): T {
    return list[this.below(list.length)];
  }
}
