/**
 * Compressed Experts (He et al., arXiv 2503.00634; compression.md §9): per token, the top k − n_ce routed
 * experts run in full; the remaining n_ce are replaced by their aggregated IA³-style scaling vectors.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { checkLayer, type CompressedLayer, type ExpertLayer, expertParams, layerRoute } from "./layer.ts";

/**
 * Per-expert CE vectors: `c1, c3 ∈ R^d` scale the inputs of W1 and W3, `c2 ∈ R^f` the intermediate.
 *
 * @example
 * ```ts
 * import { type CeVectors } from "@moekit/moekit";
 * const ones: CeVectors = { c1: new Float32Array(4).fill(1), c2: new Float32Array(8).fill(1), c3: new Float32Array(4).fill(1) };
 * console.log(ones.c2.length); // 8
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
 * The Compressed-Experts layer: `y = Σ_{main} w_m · W2_m((silu(W1_m(x⊙c1)) ⊙ W3_m(x⊙c3)) ⊙ c2)` with
 * `c = Σ_{aux} ŵ_a c_a` (ŵ normalised over the aux experts), w not renormalised over the main experts.
 * Default `nCe = ⌊k/2⌋`, vectors = ones.
 *
 * @example
 * ```ts
 * import { compressedExpertsLayer, matrix } from "@moekit/moekit";
 * // compression.md §9: scalar experts, all W = 1, x = 1, raw w = [.5, .3, .1], aux (c1, c2, c3) = (2, .5, 1)
 * const one = matrix.full(1, 1, 1);
 * const layer = {
 *   gate: matrix.fromArrays([[Math.log(.5)], [Math.log(.3)], [Math.log(.1)], [Math.log(.1)]]),
 *   experts: Array(4).fill({ w1: one, w2: one, w3: one }), k: 3, normTopkProb: false,
 * };
 * const v = (x: number) => new Float32Array([x]);
 * const ce = [0, 1, 2, 3].map((e) => (e === 2 ? { c1: v(2), c2: v(.5), c3: v(1) } : { c1: v(1), c2: v(1), c3: v(1) }));
 * const y = compressedExpertsLayer(layer, { nCe: 1, vectors: ce }).forward(one).output.data[0];
 * console.log(y.toFixed(6)); // 0.704638
 * ```
 */
export function compressedExpertsLayer(
  layer: ExpertLayer,
  options: { nCe?: number; vectors?: readonly CeVectors[] } = {},
): CompressedLayer {
  const { E, d } = checkLayer(layer), k = layer.k, nCe = options.nCe ?? Math.floor(k / 2);
  if (!Number.isInteger(nCe) || nCe < 0 || nCe >= k) {
    throw new OptionError("nCe", nCe, `must be an integer in 0..k−1 = ${k - 1}`);
  }
  const f = layer.experts[0].w1.rows;
  const vectors = options.vectors ??
    Array.from(
      { length: E },
      () => ({
        c1: new Float32Array(d).fill(1),
        c2: new Float32Array(f).fill(1),
        c3: new Float32Array(d).fill(1),
      }),
    );
  if (vectors.length !== E) {
    throw new MoekitError(`compressedExpertsLayer: ${vectors.length} CE vector sets for ${E} experts`);
  }
  vectors.forEach((v, e) => {
    if (v.c1.length !== d || v.c3.length !== d || v.c2.length !== f) {
      throw new MoekitError(`CE vectors of expert ${e}: c1, c3 need ${d} entries and c2 ${f}`);
    }
  });
  const main = k - nCe, ceParams = E * (2 * d + f);
  const params = layer.gate.data.length + layer.experts.reduce((s, e) => s + expertParams(e), 0) + ceParams;
  return {
    method: `compressed-experts n_ce=${nCe}`,
    params,
    bytes: params * 4,
    forward(x: Mat) {
      const T = x.rows,
        r = layerRoute(layer, x),
        out = matrix.zeros(T, d),
        activeParams = new Float64Array(T);
      const indices = new Int32Array(T * k).fill(-1);
      const c1 = new Float64Array(d),
        c2 = new Float64Array(f),
        c3 = new Float64Array(d),
        h = new Float64Array(f);
      for (let t = 0; t < T; t++) {
        const slots = Array.from({ length: k }, (_, j) => j).sort((a, b) =>
          r.weights[t * k + b] - r.weights[t * k + a] || r.indices[t * k + a] - r.indices[t * k + b]
        );
        const aux = slots.slice(main);
        let wAux = 0;
        for (const j of aux) wAux += r.weights[t * k + j];
        c1.fill(aux.length ? 0 : 1);
        c2.fill(aux.length ? 0 : 1);
        c3.fill(aux.length ? 0 : 1);
        for (const j of aux) {
          const v = vectors[r.indices[t * k + j]],
            a = wAux > 0 ? r.weights[t * k + j] / wAux : 1 / aux.length;
          for (let i = 0; i < d; i++) {
            c1[i] += a * v.c1[i];
            c3[i] += a * v.c3[i];
          }
          for (let i = 0; i < f; i++) c2[i] += a * v.c2[i];
        }
        let active = layer.gate.data.length + (aux.length ? 2 * d + f : 0);
        for (const j of slots.slice(0, main)) {
          const e = r.indices[t * k + j], ex = layer.experts[e], w = r.weights[t * k + j];
          indices[t * k + j] = e;
          active += expertParams(ex);
          for (let i = 0; i < f; i++) {
            let a = 0, b = 0;
            for (let p = 0; p < d; p++) {
              const xv = x.data[t * d + p];
              a += ex.w1.data[i * d + p] * xv * c1[p];
              b += ex.w3.data[i * d + p] * xv * c3[p];
            }
            h[i] = (a / (1 + Math.exp(-a))) * b * c2[i];
          }
          for (let p = 0; p < d; p++) {
            let s = 0;
            for (let i = 0; i < f; i++) s += ex.w2.data[p * f + i] * h[i];
            out.data[t * d + p] += w * s;
          }
        }
        activeParams[t] = active;
      }
      return { output: out, indices, activeParams };
    },
  };
}
