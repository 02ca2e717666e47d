/**
 * Magnitude selection in O(n) with moekit's total order: `|x|` descending, lower flat index first on ties
 * (merging.md §1). The k largest are "every |x| > θ, then the first k − #{|x| > θ} entries equal to θ in
 * index order", θ being the k-th largest magnitude, found by radix selection — no sort, no copy.
 * @module
 */

const CHUNK = 4096;
const chunkF64 = new Float64Array(CHUNK), chunkU32 = new Uint32Array(chunkF64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // index of the high word

/**
 * The k-th largest |x| (1-based, k ≤ n), exactly, by radix selection on the 64-bit pattern of |x|
 * (monotone in the value for non-negative doubles): four 16-bit histogram passes, each over the entries
 * whose higher bits match the prefix found so far. O(n) time and O(1) extra memory (no copy of the data).
 */
function kthLargestAbs(values: ArrayLike<number>, k: number): number {
  const n = values.length, hist = new Uint32Array(65536);
  let prefixHi = 0, prefixLo = 0, rank = k; // rank within the entries matching the prefix
  for (let pass = 0; pass < 4; pass++) {
    hist.fill(0);
    for (let start = 0; start < n; start += CHUNK) {
      const len = Math.min(CHUNK, n - start);
      for (let i = 0; i < len; i++) chunkF64[i] = Math.abs(values[start + i]);
      for (let i = 0; i < len; i++) {
        const hi = chunkU32[2 * i + HI], lo = chunkU32[2 * i + 1 - HI];
        let digit: number;
        if (pass === 0) digit = hi >>> 16;
        else if (pass === 1) {
          if (hi >>> 16 !== prefixHi >>> 16) continue;
          digit = hi & 0xffff;
        } else if (pass === 2) {
          if (hi !== prefixHi) continue;
          digit = lo >>> 16;
        } else {
          if (hi !== prefixHi || lo >>> 16 !== prefixLo >>> 16) continue;
          digit = lo & 0xffff;
        }
        hist[digit]++;
      }
    }
    let d = 65535;
    for (; d > 0 && hist[d] < rank; d--) rank -= hist[d];
    if (pass === 0) prefixHi = (d << 16) >>> 0;
    else if (pass === 1) prefixHi = (prefixHi | d) >>> 0;
    else if (pass === 2) prefixLo = (d << 16) >>> 0;
    else prefixLo = (prefixLo | d) >>> 0;
  }
  chunkU32[HI] = prefixHi;
  chunkU32[1 - HI] = prefixLo;
  return chunkF64[0];
}

/**
 * Marks (sets `mask[i] = 1`) the `k` entries of largest magnitude in the total order. Returns the mask.
 *
 * @example
 * ```ts
 * import { topMagnitudeMask } from "@moekit/moekit";
 * // merging.md example 1: δ = [.5,−2,1,.25,−1,3], k = 3 → entries 5, 1, 2 (1 and −1 tie; index 2 wins)
 * console.log(Array.from(topMagnitudeMask([.5, -2, 1, .25, -1, 3], 3))); // [0, 1, 1, 0, 0, 1]
 * ```
 */
export function topMagnitudeMask(values: ArrayLike<number>, k: number): Uint8Array {
  const n = values.length, mask = new Uint8Array(n);
  if (k <= 0) return mask;
  if (k >= n) return mask.fill(1);
  const theta = kthLargestAbs(values, k); // O(n), no copy of the data
  let above = 0;
  for (let i = 0; i < n; i++) {
    if (Math.abs(values[i]) > theta) {
      mask[i] = 1;
      above++;
    }
  }
  for (let i = 0, left = k - above; i < n && left > 0; i++) {
    if (Math.abs(values[i]) === theta) {
      mask[i] = 1;
      left--;
    }
  }
  return mask;
}

/**
 * Marks the entries whose position in the total magnitude order is in `[from, to)` — Breadcrumbs'
 * `order[nTop : n − nBot]` — as the top-`to` minus the top-`from` (one order for both cuts).
 *
 * @example
 * ```ts
 * import { magnitudeRangeMask } from "@moekit/moekit";
 * const d = [.9, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8]; // merging.md example 2: keep order[1:6]
 * console.log(Array.from(magnitudeRangeMask(d, 1, 6))); // [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]
 * ```
 */
export function magnitudeRangeMask(values: ArrayLike<number>, from: number, to: number): Uint8Array {
  const keep = topMagnitudeMask(values, to);
  if (from <= 0) return keep;
  const drop = topMagnitudeMask(values, from);
  for (let i = 0; i < keep.length; i++) if (drop[i]) keep[i] = 0;
  return keep;
}

/**
 * Ranks within one row by magnitude for DELLA: rank 1 = smallest `|x|`, `n` = largest; ties by the total
 * order (the lower index ranks higher). Writes ranks (1-based) into `out[0..n)`.
 */
export function magnitudeRanks(values: ArrayLike<number>, off: number, n: number, out: Int32Array): void {
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => Math.abs(values[off + b]) - Math.abs(values[off + a]) || a - b); // total order, descending
  for (let j = 0; j < n; j++) out[order[j]] = n - j;
}
