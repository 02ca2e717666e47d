/**
 * Load-balance metrics over the kept (token, choice) assignments of a routing result (docs/routing.md, "Load metrics").
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { isKept, type RoutingResult } from "./result.ts";
import { checkRoutingIndices } from "./checks.ts";

/**
 * Load-balance figures of one routing result.
 *
 * @example
 * ```ts
 * import { type LoadMetrics } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const show = (m: LoadMetrics) => `cv ${m.cv.toFixed(3)} maxVio ${m.maxVio.toFixed(3)}`;
 * assert.equal(typeof show, "function");
 * ```
 */
export interface LoadMetrics {
  /** Kept assignments per expert `[E]`. */
  readonly counts: Float64Array;
  /** `counts / Σ counts` (zeros when nothing is kept). */
  readonly fraction: Float64Array;
  /** Coefficient of variation `std_pop(counts) / mean(counts)`. */
  readonly cv: number;
  /** `max / mean`. */
  readonly maxOverMean: number;
  /** `max / mean − 1` (MaxVio, Wang et al. 2024). */
  readonly maxVio: number;
  /** `min / mean`. */
  readonly minOverMean: number;
  /** `−Σ f ln f` over f > 0, in nats. */
  readonly entropy: number;
  /** Entropy divided by ln E (1 when E = 1). */
  readonly entropyNorm: number;
  /** `1 − kept / assignments` (assignments = choices with an expert). */
  readonly droppedFraction: number;
  /** `[E,E]`: tokens whose kept selection holds both i and j; the diagonal holds `counts`. */
  readonly coactivation: Mat;
}

/**
 * Computes {@link LoadMetrics}. Ratio metrics are 0 when the mean count is 0.
 *
 * @example
 * ```ts
 * import { loadMetrics, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[4, 2, 1, 1], [4, 1, 2, 1]].map((r) => r.map(Math.log)));
 * const m = loadMetrics(topKRouter({ weight: matrix.identity(4), k: 2 }).route(x)); // docs/routing.md, "Softmax top-k"
 * assert.deepEqual(Array.from(m.counts), [2, 1, 1, 0]);
 * assert.equal(m.maxVio, 1);
 * assert.equal(m.entropyNorm, 0.75);
 * ```
 */
export function loadMetrics(r: RoutingResult): LoadMetrics {
  checkRoutingIndices(r);
  const E = r.experts, k = r.k;
  const counts = new Float64Array(E), co = matrix.zeros(E, E);
  let kept = 0, assigned = 0;
  const chosen: number[] = [];
  for (let t = 0; t < r.tokens; t++) {
    chosen.length = 0;
    for (let j = 0; j < k; j++) {
      const i = t * k + j;
      if (r.indices[i] >= 0) assigned++;
      if (!isKept(r, i)) continue;
      kept++;
      counts[r.indices[i]]++;
      chosen.push(r.indices[i]);
    }
    for (const a of chosen) for (const b of chosen) co.data[a * E + b]++;
  }
  const mean = kept / E;
  let max = -Infinity, min = Infinity, varSum = 0, entropy = 0;
  const fraction = new Float64Array(E);
  for (let e = 0; e < E; e++) {
    max = Math.max(max, counts[e]);
    min = Math.min(min, counts[e]);
    varSum += (counts[e] - mean) ** 2;
    fraction[e] = kept > 0 ? counts[e] / kept : 0;
    if (fraction[e] > 0) entropy -= fraction[e] * Math.log(fraction[e]);
  }
  const ratio = (v: number) => (mean > 0 ? v / mean : 0);
  return {
    counts,
    fraction,
    cv: ratio(Math.sqrt(varSum / E)),
    maxOverMean: ratio(max),
    maxVio: mean > 0 ? max / mean - 1 : 0,
    minOverMean: ratio(min),
    entropy,
    entropyNorm: E > 1 ? entropy / Math.log(E) : 1,
    droppedFraction: assigned > 0 ? 1 - kept / assigned : 0,
    coactivation: co,
  };
}
