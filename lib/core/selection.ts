/**
 * Magnitude selection in O(n) with moekit's total order: `|x|` descending, lower flat index first on
 * ties (docs/merging.md, "Tie rules"). The k largest are "every |x| > θ, then the first k − #{|x| > θ}
 * entries equal to θ in index order", θ being the k-th largest magnitude. θ is found by a histogram of
 * the top 16 bits of |x| (sign, exponent and 4 mantissa bits of the float64 pattern, which orders
 * non-negative doubles), then an exact selection among the entries of the one boundary bucket: two passes
 * over the data, no sort, no copy of the data. This is the one k-th-magnitude routine of moekit
 * (magnitude pruning, Breadcrumbs, the TIES paper variant, ComPEFT).
 * @module
 */

const CHUNK = 4096;
const chunkF64 = new Float64Array(CHUNK), chunkU32 = new Uint32Array(chunkF64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // index of the high word
const hist = new Uint32Array(65536);
let candidates = new Float64Array(1024);

/** |values[i] − sub[i]| (or |values[i]|) for i in [start, start + len) into `chunkF64`. */
function absChunk(values: ArrayLike<number>, sub: ArrayLike<number> | undefined, start: number, len: number) {
  if (sub) { for (let i = 0; i < len; i++) chunkF64[i] = Math.abs(values[start + i] - sub[start + i]); }
  else for (let i = 0; i < len; i++) chunkF64[i] = Math.abs(values[start + i]);
}

/** Exact k-th largest of non-negative doubles by 16-bit radix passes over their bit patterns. */
function radixKth(v: Float64Array, count: number, k: number): number {
  const f = new Float64Array(1), u = new Uint32Array(f.buffer);
  let prefixHi = 0, prefixLo = 0, rank = k;
  const h = new Uint32Array(65536);
  for (let pass = 0; pass < 4; pass++) {
    h.fill(0);
    for (let i = 0; i < count; i++) {
      f[0] = v[i];
      const hi = u[HI], lo = u[1 - HI];
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
      h[digit]++;
    }
    let d = 65535;
    for (; d > 0 && h[d] < rank; d--) rank -= h[d];
    if (pass === 0) prefixHi = (d << 16) >>> 0;
    else if (pass === 1) prefixHi = (prefixHi | d) >>> 0;
    else if (pass === 2) prefixLo = (d << 16) >>> 0;
    else prefixLo = (prefixLo | d) >>> 0;
  }
  u[HI] = prefixHi;
  u[1 - HI] = prefixLo;
  return f[0];
}

/**
 * The k-th largest magnitude and how many entries are strictly larger. `sub` (optional) is subtracted
 * first: the magnitudes are `|values[i] − sub[i]|`, so task vectors need not be materialised.
 */
export function selectMagnitude(
  values: ArrayLike<number>,
  k: number,
  sub?: ArrayLike<number>,
): { theta: number; above: number } {
  const n = values.length;
  // Guess the boundary bucket from a sample, and gather the entries of the guessed buckets during the
  // histogram pass: one pass over the data when the guess holds (almost always), two when it does not.
  const [gLo, gHi] = n >= 1 << 16 ? guessBuckets(values, k, sub) : [1, 0];
  hist.fill(0);
  let g = 0;
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    absChunk(values, sub, start, len);
    for (let i = 0; i < len; i++) {
      const key = chunkU32[2 * i + HI] >>> 16;
      hist[key]++;
      if (key >= gLo && key <= gHi) {
        if (g === gathered.length) {
          const grown = new Float64Array(2 * gathered.length);
          grown.set(gathered);
          gathered = grown;
        }
        gathered[g++] = chunkF64[i];
      }
    }
  }
  let d = 65535, rank = k, above = 0;
  for (; d > 0 && hist[d] < rank; d--) {
    rank -= hist[d];
    above += hist[d];
  }
  const count = hist[d];
  if (candidates.length < count) candidates = new Float64Array(Math.max(count, 2 * candidates.length));
  let c = 0;
  if (d >= gLo && d <= gHi) {
    const f = new Float64Array(1), u = new Uint32Array(f.buffer);
    for (let i = 0; i < g; i++) {
      f[0] = gathered[i];
      if (u[HI] >>> 16 === d) candidates[c++] = gathered[i];
    }
  } else {
    for (let start = 0; start < n && c < count; start += CHUNK) {
      const len = Math.min(CHUNK, n - start);
      absChunk(values, sub, start, len);
      for (let i = 0; i < len; i++) if (chunkU32[2 * i + HI] >>> 16 === d) candidates[c++] = chunkF64[i];
    }
  }
  let theta: number;
  if (count <= 4096) {
    const s = candidates.subarray(0, count).sort(); // ascending
    theta = s[count - rank];
    for (let i = count - 1; i >= 0 && s[i] > theta; i--) above++;
  } else {
    theta = radixKth(candidates, count, rank);
    for (let i = 0; i < count; i++) if (candidates[i] > theta) above++;
  }
  return { theta, above };
}

let gathered = new Float64Array(1 << 16);

/**
 * The range of top-16-bit keys likely to hold the k-th largest magnitude: from 4096 evenly spaced
 * samples, the keys a few standard deviations of the sample quantile either side of rank k.
 */
function guessBuckets(values: ArrayLike<number>, k: number, sub?: ArrayLike<number>): [number, number] {
  const n = values.length, S = 4096, step = Math.floor(n / S), keys = new Uint32Array(S);
  const f = new Float64Array(1), u = new Uint32Array(f.buffer);
  for (let j = 0; j < S; j++) {
    const i = j * step;
    f[0] = Math.abs(sub ? values[i] - sub[i] : values[i]);
    keys[j] = u[HI] >>> 16;
  }
  keys.sort(); // ascending: the k-th largest sits near position S − k·S/n
  const q = k / n, pos = S - q * S, margin = 4 * Math.sqrt(S * q * (1 - q)) + 8;
  const lo = keys[Math.max(0, Math.floor(pos - margin))], hi = keys[Math.min(S - 1, Math.ceil(pos + margin))];
  return [lo, hi];
}

/**
 * The k-th largest `|x|` (1 ≤ k ≤ n), exactly, in O(n) without copying or sorting the data.
 *
 * @example
 * ```ts
 * import { kthLargestMagnitude } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * assert.equal(kthLargestMagnitude([0.5, -2, 1, 0.25, -1, 3], 3), 1);
 * ```
 */
export function kthLargestMagnitude(values: ArrayLike<number>, k: number): number {
  if (!(k >= 1 && k <= values.length)) {
    throw new RangeError(`kthLargestMagnitude: k = ${k} outside [1, ${values.length}]`);
  }
  return selectMagnitude(values, k).theta;
}

/**
 * The band `[from, to)` of the total magnitude order as thresholds: an entry is in the top `to` when
 * `|x| > t1`, or `|x| = t1` and it is among the first `ties1` such entries in index order; likewise for
 * the top `from` with `t0`, `ties0`. The band is the top `to` minus the top `from`.
 */
export interface RangeCut {
  readonly t1: number;
  readonly ties1: number;
  readonly t0: number;
  readonly ties0: number;
}

/** The thresholds of the band `[from, to)` (`"none"`: empty band, `"all"`: every entry). */
export function magnitudeRangeCut(
  values: ArrayLike<number>,
  from: number,
  to: number,
  sub?: ArrayLike<number>,
): RangeCut | "none" | "all" {
  const n = values.length;
  if (to <= 0 || to <= from || from >= n) return "none";
  if (to >= n && from <= 0) return "all";
  const hiSel = to >= n ? { theta: -1, above: n } : selectMagnitude(values, to, sub);
  const loSel = from <= 0 ? { theta: Infinity, above: 0 } : selectMagnitude(values, from, sub);
  return {
    t1: hiSel.theta,
    ties1: to >= n ? 0 : to - hiSel.above,
    t0: loSel.theta,
    ties0: from <= 0 ? 0 : from - loSel.above,
  };
}

/**
 * Writes into `mask` (1 = keep) whether each entry's position in the total magnitude order lies in
 * `[from, to)`: the top `to` minus the top `from`, in one pass after the selections. With `sub`, the
 * magnitudes are those of `values − sub`.
 */
export function magnitudeRangeInto(
  mask: Uint8Array,
  values: ArrayLike<number>,
  from: number,
  to: number,
  sub?: ArrayLike<number>,
): Uint8Array {
  const n = values.length, cut = magnitudeRangeCut(values, from, to, sub);
  if (cut === "none") return mask.fill(0, 0, n);
  if (cut === "all") return mask.fill(1, 0, n);
  const { t1, t0 } = cut;
  let { ties1, ties0 } = cut;
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    absChunk(values, sub, start, len);
    for (let i = 0; i < len; i++) {
      const a = chunkF64[i];
      let inTop = a > t1;
      if (!inTop && a === t1 && ties1 > 0) {
        inTop = true;
        ties1--;
      }
      let inDrop = a > t0;
      if (!inDrop && a === t0 && ties0 > 0) {
        inDrop = true;
        ties0--;
      }
      mask[start + i] = inTop && !inDrop ? 1 : 0;
    }
  }
  return mask;
}

/**
 * Marks (sets `mask[i] = 1`) the `k` entries of largest magnitude in the total order. Returns the mask.
 *
 * @example
 * ```ts
 * import { topMagnitudeMask } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * // δ = [.5, −2, 1, .25, −1, 3], k = 3 → entries 5, 1, 2 (1 and −1 tie; the lower index wins)
 * assert.deepEqual(Array.from(topMagnitudeMask([.5, -2, 1, .25, -1, 3], 3)), [0, 1, 1, 0, 0, 1]);
 * ```
 */
export function topMagnitudeMask(values: ArrayLike<number>, k: number): Uint8Array {
  return magnitudeRangeInto(new Uint8Array(values.length), values, 0, k);
}

/**
 * Marks the entries whose position in the total magnitude order is in `[from, to)` — Breadcrumbs'
 * `order[nTop : n − nBot]` — as the top-`to` minus the top-`from` (one order for both cuts).
 *
 * @example
 * ```ts
 * import { magnitudeRangeMask } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const d = [.9, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8]; // keep order[1:6]
 * assert.deepEqual(Array.from(magnitudeRangeMask(d, 1, 6)), [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]);
 * ```
 */
export function magnitudeRangeMask(values: ArrayLike<number>, from: number, to: number): Uint8Array {
  return magnitudeRangeInto(new Uint8Array(values.length), values, from, to);
}

/**
 * Writes into `mask` whether `|values[i] − sub[i]| ≥` the `kth` smallest magnitude (1-based; `kth ≤ 0`
 * keeps everything): the TIES paper code's and ComPEFT's rule (a threshold, ties all kept).
 */
export function atLeastKthSmallestInto(
  mask: Uint8Array,
  values: ArrayLike<number>,
  kth: number,
  sub?: ArrayLike<number>,
): Uint8Array {
  const n = values.length;
  if (kth <= 0) return mask.fill(1, 0, n);
  const thr = selectMagnitude(values, n - kth + 1, sub).theta; // kth smallest = (n − kth + 1)-th largest
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    absChunk(values, sub, start, len);
    for (let i = 0; i < len; i++) mask[start + i] = chunkF64[i] >= thr ? 1 : 0;
  }
  return mask;
}

/**
 * Ranks within one row by magnitude for DELLA: rank 1 = smallest `|x|`, `n` = largest; ties by the total
 * order (the lower index ranks higher). Writes ranks (1-based) into `out[0..n)`.
 */
export function magnitudeRanks(values: ArrayLike<number>, off: number, n: number, out: Int32Array): void {
  if (rankSorted.length < n) {
    rankSorted = new Float64Array(n);
    rankSeen = new Int32Array(n);
  }
  const s = rankSorted.subarray(0, n), seen = rankSeen;
  for (let j = 0; j < n; j++) s[j] = Math.abs(values[off + j]);
  s.sort(); // ascending
  seen.fill(0, 0, n);
  for (let j = 0; j < n; j++) {
    const a = Math.abs(values[off + j]);
    let lo = 0, hi = n; // lb: first s[k] ≥ a
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid] < a) lo = mid + 1;
      else hi = mid;
    }
    const lb = lo;
    hi = n; // ub: first s[k] > a
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid] <= a) lo = mid + 1;
      else hi = mid;
    }
    // descending position = #{greater} + #{equal before j}; rank = n − position
    out[j] = lo - seen[lb]++;
  }
}

let rankSorted = new Float64Array(0), rankSeen = new Int32Array(0);
