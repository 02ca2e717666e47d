/**
 * ComPEFT (Yadav et al., arXiv 2311.13171; docs/compression.md, "ComPEFT"): keep the largest-magnitude
 * entries of a task vector or expert delta and replace them by `α·σ·sign`, with Golomb–Rice position
 * coding for the byte count, and the entropy bound it is measured against.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { kthLargestMagnitude } from "../core/selection.ts";

/**
 * A ComPEFT-compressed vector.
 *
 * @example
 * ```ts
 * import { type Compeft, compeft } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const c: Compeft = compeft([0.3, -0.1, 0.05, -0.4, 0.2, 0, 0.15, -0.25], { density: 0.25 });
 * assert.equal(c.nnz / c.values.length, 0.375); // 3 of 8 kept (trunc(8·0.25) + 1)
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
  /** The scale written for kept entries (ασ in ternary mode), rounded to f32. */
  readonly scale: number;
  /** Encoded size in bits (Rice-coded gaps + one sign bit per non-zero). */
  readonly bits: number;
  /** `⌈bits/8⌉ + 12`. */
  readonly bytes: number;
  /** `H₂(p)` in bits, p = nnz/d: the entropy of the kept/zero pattern per entry. */
  readonly entropy: number;
  /** The ideal size `d·(H₂(p) + p)` bits (positions at their entropy + one sign bit per non-zero). */
  readonly idealBits: number;
}

/**
 * Binary entropy `H₂(p) = −p·log2 p − (1−p)·log2(1−p)` in bits (0 at p = 0 and p = 1).
 *
 * @example
 * ```ts
 * import { binaryEntropy } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * assert.equal(binaryEntropy(0.5), 1);
 * assert.equal(binaryEntropy(0), 0);
 * ```
 */
export function binaryEntropy(p: number): number {
  if (!(p >= 0 && p <= 1)) throw new OptionError("p", p, "must be a probability in [0, 1]");
  const h = (q: number) => (q > 0 ? -q * Math.log2(q) : 0);
  return h(p) + h(1 - p);
}

/**
 * Ideal bits per entry of a ternary vector with non-zero density p: `H₂(p) + p` (where the non-zeros are,
 * at the entropy bound, plus one sign bit each). The ideal compression ratio against fp16 is
 * `16 / compeftIdealBits(p)`.
 *
 * @example
 * ```ts
 * import { compeftIdealBits } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * assert.equal((16 / compeftIdealBits(0.01)).toFixed(1), "176.2"); // × smaller than fp16 at 1 % density
 * assert.equal((16 / compeftIdealBits(0.25)).toFixed(2), "15.08");
 * ```
 */
export function compeftIdealBits(p: number): number {
  return binaryEntropy(p) + p;
}

/**
 * ComPEFT of τ at density ρ: `kth = d − trunc(d·ρ)`, threshold = the kth smallest |τ|, keep `|τ| ≥ thr`
 * (trunc(dρ)+1 entries for distinct magnitudes — the reference's rule), then `α·σ·sign(τ)` (ternary),
 * the kept values (trim) or their mean magnitude (stc).
 *
 * @example
 * ```ts
 * import { compeft } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const c = compeft([.3, -.1, .05, -.4, .2, 0, .15, -.25], { density: 0.25 });
 * assert.deepEqual(Array.from(c.positions), [0, 3, 7]); // trunc(8·0.25) + 1 = 3 entries
 * assert.deepEqual([c.sigma.toFixed(6), c.bits, c.bytes], ["0.235186", 11, 14]);
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
  const thr = kth === 0 ? -Infinity : kthLargestMagnitude(tau, d - kth + 1); // the kth smallest |τ|
  const pos: number[] = [];
  for (let i = 0; i < d; i++) if (Math.abs(tau[i]) >= thr && tau[i] !== 0) pos.push(i);
  let scale = alpha * sigma;
  if (mode === "stc") scale = pos.reduce((s, i) => s + Math.abs(tau[i]), 0) / Math.max(1, pos.length);
  scale = Math.fround(scale); // stored as f32 in the encoding, so decode(encode(τ̂)) = τ̂ exactly
  const values = new Float64Array(d);
  for (const i of pos) values[i] = mode === "trim" ? tau[i] : Math.sign(tau[i]) * scale;
  const bits = riceBits(pos, d), entropy = binaryEntropy(pos.length / d);
  return {
    values,
    positions: Int32Array.from(pos),
    nnz: pos.length,
    sigma,
    scale,
    bits,
    bytes: Math.ceil(bits / 8) + 12,
    entropy,
    idealBits: d * (entropy + pos.length / d),
  };
}

/**
 * Bits of the Golomb–Rice coding of the kept positions plus one sign bit each: `k = max(0,
 * ⌊log2(ln 2/p)⌋)`, each gap g costs `⌊g/2^k⌋ + 1 + k`. Internal.
 */
function riceBits(positions: ArrayLike<number>, d: number): number {
  const nnz = positions.length;
  if (nnz === 0) return 0;
  const k = riceK(nnz, d);
  let bits = 0, prev = -1;
  for (let i = 0; i < nnz; i++) {
    const g = positions[i] - prev - 1;
    bits += Math.floor(g / 2 ** k) + 1 + k;
    prev = positions[i];
  }
  return bits + nnz;
}

/**
 * Encodes a ternary or stc ComPEFT vector: a 12-byte header (f32 scale, u32 d, u32 nnz) then, per kept
 * entry, its Rice-coded gap and a sign bit. `bytes.length` equals {@link Compeft}'s `bytes`.
 *
 * @example
 * ```ts
 * import { compeft, compeftDecode, compeftEncode } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const c = compeft([.3, -.1, .05, -.4, .2, 0, .15, -.25], { density: 0.25 });
 * const bytes = compeftEncode(c);
 * assert.equal(bytes.length, 14);
 * assert.deepEqual(compeftDecode(bytes), c.values);
 * ```
 */
export function compeftEncode(c: Compeft): Uint8Array {
  const d = c.values.length, nnz = c.nnz;
  for (const p of c.positions) {
    if (Math.abs(c.values[p]) !== c.scale) {
      throw new OptionError("mode", "trim", "only ternary and stc vectors (one scale) can be encoded");
    }
  }
  const out = new Uint8Array(12 + Math.ceil(c.bits / 8)), view = new DataView(out.buffer);
  view.setFloat32(0, c.scale, true);
  view.setUint32(4, d, true);
  view.setUint32(8, nnz, true);
  const k = riceK(nnz, d);
  let bit = 0;
  const put = (b: number) => {
    if (b) out[12 + (bit >> 3)] |= 1 << (bit & 7);
    bit++;
  };
  let prev = -1;
  for (const p of c.positions) {
    const g = p - prev - 1, q = Math.floor(g / 2 ** k);
    for (let i = 0; i < q; i++) put(1);
    put(0);
    for (let i = k - 1; i >= 0; i--) put((g >> i) & 1);
    put(c.values[p] < 0 ? 1 : 0);
    prev = p;
  }
  return out;
}

/**
 * Decodes {@link compeftEncode}'s bytes back to the dense vector (exactly: the scale is stored as f32 and
 * ComPEFT values are f32-rounded).
 *
 * @example
 * ```ts
 * import { compeft, compeftDecode, compeftEncode } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * // d = 4, ρ = .5: threshold = the 2nd smallest |τ| = 1, so 1, −2 and 3 are kept
 * const signs = Array.from(compeftDecode(compeftEncode(compeft([1, -2, 0.5, 3], { density: 0.5 }))), Math.sign);
 * assert.deepEqual(signs, [1, -1, 0, 1]);
 * ```
 */
export function compeftDecode(bytes: Uint8Array): Float64Array {
  if (bytes.length < 12) {
    throw new OptionError("bytes", bytes.length, "a ComPEFT encoding has a 12-byte header");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const scale = view.getFloat32(0, true), d = view.getUint32(4, true), nnz = view.getUint32(8, true);
  const out = new Float64Array(d), k = riceK(nnz, d);
  let bit = 0;
  const get = () => {
    const byte = 12 + (bit >> 3);
    if (byte >= bytes.length) {
      throw new OptionError("bytes", bytes.length, `truncated ComPEFT stream (needed bit ${bit})`);
    }
    const b = (bytes[byte] >> (bit & 7)) & 1;
    bit++;
    return b;
  };
  let pos = -1;
  for (let n = 0; n < nnz; n++) {
    let q = 0;
    while (get()) q++;
    let r = 0;
    for (let i = 0; i < k; i++) r = (r << 1) | get();
    pos += q * 2 ** k + r + 1;
    if (pos >= d) {
      throw new OptionError("bytes", bytes.length, `ComPEFT position ${pos} outside the vector of ${d}`);
    }
    out[pos] = get() ? -scale : scale;
  }
  return out;
}

function riceK(nnz: number, d: number): number {
  return nnz === 0 ? 0 : Math.max(0, Math.floor(Math.log2(Math.LN2 / (nnz / d))));
}
