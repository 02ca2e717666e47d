/**
 * ComPEFT (compression.md §8): keep the largest-magnitude entries of a task vector or expert delta and
 * replace them by `α·σ·sign`, with Golomb–Rice position coding for the byte count.
 * @module
 */

import { OptionError } from "../core/errors.ts";

/**
 * A ComPEFT-compressed vector.
 *
 * @example
 * ```ts
 * import { type Compeft } from "@moekit/moekit";
 * const density = (c: Compeft) => c.nnz / c.values.length;
 * console.log(typeof density); // function
 * ```
 */
export interface Compeft {
  /** The compressed vector (dense view): values in {−ασ, 0, ασ} in ternary mode. */
  readonly values: Float64Array;
  /** Kept positions, ascending. */
  readonly positions: Int32Array;
  /** Non-zeros. */
  readonly nnz: number;
  /** `std(τ)` with the N−1 denominator. */
  readonly sigma: number;
  /** The scale written for kept entries (ασ in ternary mode). */
  readonly scale: number;
  /** Encoded size in bits (Rice-coded gaps + one sign bit per non-zero). */
  readonly bits: number;
  /** `⌈bits/8⌉ + 12`. */
  readonly bytes: number;
}

/**
 * ComPEFT of τ at density ρ: `kth = d − trunc(d·ρ)`, threshold = the kth smallest |τ|, keep `|τ| ≥ thr`
 * (trunc(dρ)+1 entries for distinct magnitudes — the reference's rule), then `α·σ·sign(τ)` (ternary),
 * the kept values (trim) or their mean magnitude (stc).
 *
 * @example
 * ```ts
 * import { compeft } from "@moekit/moekit";
 * const c = compeft([.3, -.1, .05, -.4, .2, 0, .15, -.25], { density: 0.25 });
 * console.log(Array.from(c.positions), c.sigma.toFixed(6), c.bits, c.bytes); // [0, 3, 7] 0.235186 11 14
 * ```
 */
export function compeft(
  tau: ArrayLike<number>,
  options: { density: number; alpha?: number; mode?: "ternary" | "trim" | "stc" },
): Compeft {
  const d = tau.length, rho = options.density, alpha = options.alpha ?? 1, mode = options.mode ?? "ternary";
  if (!(rho >= 0 && rho <= 1)) throw new OptionError("density", rho, "must be in [0, 1]");
  if (d < 2) throw new OptionError("tau", `${d} entries`, "ComPEFT needs at least 2 entries (σ uses N − 1)");
  let mean = 0;
  for (let i = 0; i < d; i++) mean += tau[i] / d;
  let v = 0;
  for (let i = 0; i < d; i++) v += (tau[i] - mean) ** 2;
  const sigma = Math.sqrt(v / (d - 1));
  const kth = d - Math.trunc(d * rho);
  const sorted = Float64Array.from(tau, Math.abs).sort();
  const thr = kth === 0 ? -Infinity : sorted[kth - 1];
  const pos: number[] = [];
  for (let i = 0; i < d; i++) if (Math.abs(tau[i]) >= thr && tau[i] !== 0) pos.push(i);
  let scale = alpha * sigma;
  if (mode === "stc") scale = pos.reduce((s, i) => s + Math.abs(tau[i]), 0) / Math.max(1, pos.length);
  const values = new Float64Array(d);
  for (const i of pos) values[i] = mode === "trim" ? tau[i] : Math.sign(tau[i]) * scale;
  const bits = riceBits(pos, d);
  return {
    values,
    positions: Int32Array.from(pos),
    nnz: pos.length,
    sigma,
    scale,
    bits,
    bytes: Math.ceil(bits / 8) + 12,
  };
}

/**
 * Bits of the Golomb–Rice coding of the kept positions plus one sign bit each: `k = max(0,
 * ⌊log2(ln 2/p)⌋)`, each gap g costs `⌊g/2^k⌋ + 1 + k`.
 *
 * @example
 * ```ts
 * import { riceBits } from "@moekit/moekit";
 * console.log(riceBits([3, 20, 21, 40, 63], 64)); // 31
 * ```
 */
export function riceBits(positions: ArrayLike<number>, d: number): number {
  const nnz = positions.length;
  if (nnz === 0) return 0;
  const k = Math.max(0, Math.floor(Math.log2(Math.LN2 / (nnz / d))));
  let bits = 0, prev = -1;
  for (let i = 0; i < nnz; i++) {
    const g = positions[i] - prev - 1;
    bits += Math.floor(g / 2 ** k) + 1 + k;
    prev = positions[i];
  }
  return bits + nnz;
}
