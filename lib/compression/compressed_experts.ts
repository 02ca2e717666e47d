/**
 * Compressed Experts (He et al., arXiv 2503.00634; docs/compression.md, "Compressed Experts"): per token,
 * the top k − n_ce routed experts run in full; the remaining n_ce are replaced by their aggregated
 * IA³-style scaling vectors, which rescale the main experts' inputs and intermediates.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { isKept } from "../routing/result.ts";
import { addRowBias, addSharedExperts, gatedHidden, type MoeLayer } from "../moe/layer.ts";
import { type CompressedLayer, expertParams, layerParams, routerParams, sharedParams } from "./compressed.ts";

/**
 * Per-expert CE vectors: `c1, c3 ∈ R^d` scale the inputs of W1 and W3, `c2 ∈ R^f` the intermediate.
 *
 * @example
 * ```ts
 * import { type CeVectors } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const ones: CeVectors = { c1: new Float32Array(4).fill(1), c2: new Float32Array(8).fill(1), c3: new Float32Array(4).fill(1) };
 * assert.equal(ones.c2.length, 8);
 * ```
 */
export interface CeVectors {
  /** `[d]`. */
  readonly c1: Float32Array;
  /** `[f]`. */
  readonly c2: Float32Array;
  /** `[d]`. */
  readonly c3: Float32Array;
}

/**
 * Options of {@link compressedExpertsLayer}.
 *
 * @example
 * ```ts
 * import { type CompressedExpertsOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: CompressedExpertsOptions = { nCe: 4 }; // OLMoE: k = 8, 4 auxiliary experts
 * assert.equal(o.nCe, 4);
 * ```
 */
export interface CompressedExpertsOptions {
  /** Auxiliary (not computed) experts per token n_ce, in 0..k−1. Default `⌊k/2⌋`. */
  readonly nCe?: number;
  /** CE vectors of every expert `[E]` (trained upstream). Default: all ones. */
  readonly vectors?: readonly CeVectors[];
}

/**
 * The Compressed-Experts layer: per token, the kept choices sorted by weight (ties → lower expert index);
 * the first `k − n_ce` are main, the last n_ce auxiliary; `c = Σ_aux ŵ_a c_a` with ŵ normalised over the
 * auxiliary experts, and `y = Σ_main w_m · W2_m(act(W1_m(x⊙c1), W3_m(x⊙c3)) ⊙ c2)` + shared experts, w not
 * renormalised over the main experts. Stored parameters grow by `(2d + f)·E`; active ones fall.
 *
 * @example
 * ```ts
 * import { compressedExpertsLayer, matrix, moeLayer, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * // scalar experts, all W = 1, x = 1, raw weights [.5, .3, .1]; the auxiliary expert has (c1, c2, c3) = (2, .5, 1)
 * const one = matrix.full(1, 1, 1), v = (x: number) => new Float32Array([x]);
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.fromArrays([[.5], [.3], [.1], [.1]].map((r) => r.map(Math.log))), k: 3, normTopkProb: false }),
 *   experts: Array(4).fill({ w1: one, w2: one, w3: one }),
 * });
 * const ce = [0, 1, 2, 3].map((e) => (e === 2 ? { c1: v(2), c2: v(.5), c3: v(1) } : { c1: v(1), c2: v(1), c3: v(1) }));
 * const y = compressedExpertsLayer(layer, { nCe: 1, vectors: ce }).forward(one).output.data[0];
 * assert.equal(y.toFixed(6), "0.704638"); // (.5 + .3)·silu(2)·.5
 * ```
 */
export function compressedExpertsLayer(
  layer: MoeLayer,
  options: CompressedExpertsOptions = {},
): CompressedLayer {
  const E = layer.router.experts, d = layer.dim, k = layer.router.k, nCe = options.nCe ?? Math.floor(k / 2);
  if (!Number.isInteger(nCe) || nCe < 0 || nCe >= k) {
    throw new OptionError("nCe", nCe, `must be an integer in 0..k−1 = ${k - 1}`);
  }
  const f = layer.experts[0].w1.rows;
  if (layer.experts.some((e) => e.w1.rows !== f)) {
    throw new MoekitError(
      "compressedExpertsLayer: the experts have different hidden sizes (CE vectors need one f)",
    );
  }
  const vectors = options.vectors ??
    Array.from({ length: E }, () => ({
      c1: new Float32Array(d).fill(1),
      c2: new Float32Array(f).fill(1),
      c3: new Float32Array(d).fill(1),
    }));
  if (vectors.length !== E) {
    throw new MoekitError(`compressedExpertsLayer: ${vectors.length} CE vector sets for ${E} experts`);
  }
  vectors.forEach((v, e) => {
    if (v.c1.length !== d || v.c3.length !== d || v.c2.length !== f) {
      throw new MoekitError(`CE vectors of expert ${e}: c1, c3 need ${d} entries and c2 ${f}`);
    }
  });
  const main = k - nCe, params = layerParams(layer) + E * (2 * d + f);
  return {
    method: `compressed-experts n_ce=${nCe}`,
    params,
    bytes: params * 4,
    forward(x: Mat) {
      const routing = layer.route(x), T = x.rows, out = matrix.zeros(T, d);
      const keep = new Uint8Array(T * k), activeParams = new Float64Array(T);
      // per token: its aggregated c1, c2, c3, and the main choices
      const c1 = new Float32Array(T * d), c3 = new Float32Array(T * d), c2 = new Float32Array(T * f);
      const fixed = routerParams(layer) + sharedParams(layer);
      for (let t = 0; t < T; t++) {
        const o = t * k, w = routing.weights, idx = routing.indices;
        const kept = Array.from({ length: k }, (_, j) => o + j).filter((i) => isKept(routing, i))
          .sort((a, b) => w[b] - w[a] || idx[a] - idx[b]);
        const aux = kept.slice(main, main + nCe);
        let wAux = 0;
        for (const i of aux) wAux += w[i];
        if (!aux.length) {
          c1.fill(1, t * d, (t + 1) * d);
          c3.fill(1, t * d, (t + 1) * d);
          c2.fill(1, t * f, (t + 1) * f);
        }
        for (const i of aux) {
          const v = vectors[idx[i]], a = wAux > 0 ? w[i] / wAux : 1 / aux.length;
          for (let p = 0; p < d; p++) {
            c1[t * d + p] += a * v.c1[p];
            c3[t * d + p] += a * v.c3[p];
          }
          for (let p = 0; p < f; p++) c2[t * f + p] += a * v.c2[p];
        }
        let active = fixed + (aux.length ? 2 * d + f : 0);
        for (const i of kept.slice(0, main)) {
          keep[i] = 1;
          active += expertParams(layer.experts[idx[i]]);
        }
        activeParams[t] = active;
      }
      // each main expert on its tokens: W2((act(W1(x⊙c1), W3(x⊙c3))) ⊙ c2) + b2, weighted into the output
      for (let e = 0; e < E; e++) {
        const rows: number[] = [], choice: number[] = [];
        for (let i = 0; i < T * k; i++) {
          if (keep[i] && routing.indices[i] === e) {
            rows.push(Math.floor(i / k));
            choice.push(i);
          }
        }
        if (!rows.length) continue;
        const x1 = matrix.zeros(rows.length, d), x3 = matrix.zeros(rows.length, d);
        rows.forEach((t, r) => {
          for (let p = 0; p < d; p++) {
            x1.data[r * d + p] = x.data[t * d + p] * c1[t * d + p];
            x3.data[r * d + p] = x.data[t * d + p] * c3[t * d + p];
          }
        });
        const ex = layer.experts[e], h = gatedHidden(ex, x1, x3, layer.activation);
        rows.forEach((t, r) => {
          for (let p = 0; p < f; p++) h.data[r * f + p] *= c2[t * f + p];
        });
        const y = matrix.matmulT(h, ex.w2);
        addRowBias(y, ex.b2);
        rows.forEach((t, r) => {
          const wt = routing.weights[choice[r]];
          for (let p = 0; p < d; p++) out.data[t * d + p] += wt * y.data[r * d + p];
        });
      }
      if (layer.shared) addSharedExperts(out, x, layer.shared, layer.activation);
      return { output: out, routing: { ...routing, keep }, activeParams };
    },
  };
}
