/**
 * Magnitude selection in O(n) with moekit's total order: `|x|` descending, lower flat index first on ties
 * (merging.md §1). The k largest are "every |x| > θ, then the first k − #{|x| > θ} entries equal to θ in
 * index order", θ being the k-th largest magnitude, found by quickselect — no full sort.
 * @module
 */

/** The k-th largest of `a` (1-based k ≤ n) by quickselect; permutes `a`. */
function kthLargest(a: Float64Array, k: number): number {
  let lo = 0, hi = a.length - 1;
  const target = k - 1; // index in descending order
  while (lo < hi) {
    // median of three pivot, partition descending (Hoare style)
    const mid = (lo + hi) >>> 1;
    const p = Math.max(Math.min(a[lo], a[mid]), Math.min(Math.max(a[lo], a[mid]), a[hi]));
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i] > p) i++;
      while (a[j] < p) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target];
  }
  return a[target];
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
  const scratch = new Float64Array(n); // the only O(n) temporary besides the mask; permuted by quickselect
  for (let i = 0; i < n; i++) scratch[i] = Math.abs(values[i]);
  const theta = kthLargest(scratch, k);
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
