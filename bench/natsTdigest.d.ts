// Types for the part of `tdigest` (CommonJS, untyped) the NATS latency benchmark uses.
declare module "tdigest" {
  export class TDigest {
    /** `delta`: compression (default 0.01); `K`: recompression threshold (default 25). */
    constructor(delta?: number | false, K?: number, CX?: number);
    /** Points seen. */
    readonly n: number;
    push(x: number | number[]): void;
    compress(): void;
    /** The value at quantile `p` (0..1), or one per quantile of a list. */
    percentile(p: number): number;
    percentile(p: number[]): number[];
  }
  const tdigest: { TDigest: typeof TDigest };
  export default tdigest;
}
