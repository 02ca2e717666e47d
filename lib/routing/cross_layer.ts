/**
 * Cross-layer routing metrics: how much consecutive layers' expert choices share, the question RMoE's
 * recurrent state is meant to change.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "./result.ts";
import { loadMetrics } from "./metrics.ts";

/**
 * Cross-layer figures of an L-layer routing run.
 *
 * @example
 * ```ts
 * import { type CrossLayerMetrics } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const meanMi = (m: CrossLayerMetrics) => m.mutualInformation.reduce((a, b) => a + b, 0) / m.mutualInformation.length;
 * assert.equal(typeof meanMi, "function");
 * ```
 */
export interface CrossLayerMetrics {
  /** Per layer: normalised entropy of the expert load (1 = every expert used equally). */
  readonly selectionEntropy: number[];
  /** Per consecutive pair (l, l+1): fraction of tokens whose kept expert set is identical. */
  readonly sameSet: number[];
  /** Per pair: mean `|S_l ∩ S_{l+1}| / k` over tokens. */
  readonly overlap: number[];
  /** Per pair: mutual information (nats) between the two layers' top-1 experts over tokens. */
  readonly mutualInformation: number[];
  /** Per pair: the MI divided by `min(H(top-1 at l), H(top-1 at l+1))` (0 when either is constant). */
  readonly normalizedMutualInformation: number[];
}

function keptSet(r: RoutingResult, t: number): number[] {
  const out: number[] = [];
  for (let j = 0; j < r.k; j++) if (isKept(r, t * r.k + j)) out.push(r.indices[t * r.k + j]);
  return out.sort((a, b) => a - b);
}

/**
 * Computes {@link CrossLayerMetrics} for routings of the same tokens at consecutive layers.
 *
 * @example
 * ```ts
 * import { crossLayerMetrics, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.randn(50, 8, { seed: 1 });
 * const r = topKRouter({ weight: matrix.randn(4, 8, { seed: 2 }), k: 2 }).route(x);
 * const m = crossLayerMetrics([r, r]); // identical layers
 * assert.equal(m.sameSet[0], 1);
 * assert.equal(m.overlap[0], 1);
 * ```
 */
export function crossLayerMetrics(routings: readonly RoutingResult[]): CrossLayerMetrics {
  if (routings.length === 0) throw new MoekitError("crossLayerMetrics: needs at least one layer's routing");
  const { tokens: T, experts: E } = routings[0];
  routings.forEach((r, l) => {
    if (r.tokens !== T || r.experts !== E) {
      throw new MoekitError(
        `crossLayerMetrics: layer ${l} has T = ${r.tokens}, E = ${r.experts}; layer 0 has ${T}, ${E}`,
      );
    }
  });
  const selectionEntropy = routings.map((r) => loadMetrics(r).entropyNorm);
  const sameSet: number[] = [], overlap: number[] = [], mutualInformation: number[] = [];
  const normalizedMutualInformation: number[] = [];
  for (let l = 0; l + 1 < routings.length; l++) {
    const a = routings[l], b = routings[l + 1];
    let same = 0, ov = 0, n = 0;
    const joint = new Float64Array(E * E), pa = new Float64Array(E), pb = new Float64Array(E);
    for (let t = 0; t < T; t++) {
      const sa = keptSet(a, t), sb = keptSet(b, t);
      if (sa.length === sb.length && sa.every((v, i) => v === sb[i])) same++;
      const k = Math.max(a.k, b.k);
      ov += sa.filter((v) => sb.includes(v)).length / k;
      const ea = a.indices[t * a.k], eb = b.indices[t * b.k];
      if (ea >= 0 && eb >= 0) {
        joint[ea * E + eb]++;
        pa[ea]++;
        pb[eb]++;
        n++;
      }
    }
    let mi = 0, ha = 0, hb = 0;
    for (let i = 0; i < E; i++) {
      if (pa[i] > 0) ha -= (pa[i] / n) * Math.log(pa[i] / n);
      if (pb[i] > 0) hb -= (pb[i] / n) * Math.log(pb[i] / n);
      for (let j = 0; j < E; j++) {
        const p = joint[i * E + j] / n;
        if (p > 0) mi += p * Math.log(p / ((pa[i] / n) * (pb[j] / n)));
      }
    }
    sameSet.push(T > 0 ? same / T : 0);
    overlap.push(T > 0 ? ov / T : 0);
    mutualInformation.push(Math.max(0, mi));
    normalizedMutualInformation.push(Math.min(ha, hb) > 0 ? Math.max(0, mi) / Math.min(ha, hb) : 0);
  }
  return { selectionEntropy, sameSet, overlap, mutualInformation, normalizedMutualInformation };
}
