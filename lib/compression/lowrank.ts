/**
 * Low-rank compression of a whole MoE layer (docs/compression.md, "Low-rank SVD"): every expert matrix
 * replaced by a rank-r factorisation — plain or randomized SVD, or activation-whitened SVD (SVD-LLM) with
 * W1 and W3 whitened by the expert's routed inputs and W2 by its routed intermediates.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError } from "../core/errors.ts";
import type { MoeLayer, SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import {
  type CompressedLayer,
  distinctExperts,
  forwardOf,
  routerParams,
  sharedParams,
  withExperts,
} from "./compressed.ts";
import { type LowRank, lowRankProduct, svdCompress, whitenedSvdCompress } from "./svd.ts";

/**
 * Options of {@link svdLayer} and {@link whitenedSvdLayer}: a rank, or a parameter ratio per matrix.
 *
 * @example
 * ```ts
 * import { type LowRankLayerOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: LowRankLayerOptions = { ratio: 0.25, randomized: true, seed: 1 };
 * assert.equal(o.ratio, 0.25);
 * ```
 */
export interface LowRankLayerOptions {
  /** Rank of every matrix (at most min(m, n)). */
  readonly rank?: number;
  /** Or the parameter ratio ρ of every matrix: rank `⌊ρ·m·n/(m+n)⌋`. */
  readonly ratio?: number;
  /** Randomized SVD (plain SVD only). Default false. */
  readonly randomized?: boolean;
  /** Seed of the randomized sketches. Default 0. */
  readonly seed?: number;
  /** Whitening jitter ε (whitened only). Default 0, with the automatic retry. */
  readonly epsilon?: number;
}

/** A layer whose expert matrices are low-rank products, with each distinct expert's factors. */
export type LowRankLayer = CompressedLayer & {
  /** The compressed layer (the products `A·B` as dense matrices, same router). */
  layer: MoeLayer;
  /** Per distinct routable expert: the slots that use it and the factors of W1, W2, W3. */
  factors: { slots: number[]; w1: LowRank; w2: LowRank; w3: LowRank }[];
};

function build(
  name: string,
  layer: MoeLayer,
  factorize: (w: Mat, key: "w1" | "w2" | "w3", group: number) => LowRank,
): LowRankLayer {
  const groups = distinctExperts(layer), experts: SwiGLUExpert[] = layer.experts.slice();
  let params = routerParams(layer) + sharedParams(layer);
  const factors = groups.map(({ expert, slots }, g) => {
    const f = {
      slots,
      w1: factorize(expert.w1, "w1", g),
      w2: factorize(expert.w2, "w2", g),
      w3: factorize(expert.w3, "w3", g),
    };
    const { b1, b2, b3 } = expert;
    params += f.w1.params + f.w2.params + f.w3.params + (b1?.length ?? 0) + (b2?.length ?? 0) +
      (b3?.length ?? 0);
    const approx: SwiGLUExpert = {
      w1: lowRankProduct(f.w1),
      w2: lowRankProduct(f.w2),
      w3: lowRankProduct(f.w3),
      ...(b1 ? { b1 } : {}),
      ...(b2 ? { b2 } : {}),
      ...(b3 ? { b3 } : {}),
    };
    for (const e of slots) experts[e] = approx;
    return f;
  });
  const out = withExperts(layer, experts);
  return { method: name, layer: out, factors, params, bytes: params * 4, forward: forwardOf(out) };
}

/**
 * Every expert matrix of the layer as a truncated (or randomized) SVD, `W ≈ A·B` with
 * `‖W − AB‖_F² = Σ_{i>r} σ_i²`. Bytes: `r(m+n)·4` per matrix, plus the router (and biases, shared experts).
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, svdLayer, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * const c = svdLayer(layer, { rank: 2 });
 * assert.equal(c.params, 4 * 8 + 4 * 3 * 2 * (16 + 8)); // router + 12 rank-2 factorisations
 * ```
 */
export function svdLayer(layer: MoeLayer, options: LowRankLayerOptions): LowRankLayer {
  const what = options.rank !== undefined ? `rank ${options.rank}` : `ρ=${options.ratio}`;
  return build(
    `${options.randomized ? "randomized " : ""}svd ${what}`,
    layer,
    (w) =>
      svdCompress(w, {
        rank: options.rank,
        ratio: options.ratio,
        randomized: options.randomized,
        seed: options.seed,
      }),
  );
}

/** Per distinct expert: its routed inputs and intermediates (the members' rows stacked). Internal. */
export function whiteningInputs(
  layer: MoeLayer,
  stats: CalibrationStats,
  groups = distinctExperts(layer),
): { input: Mat; hidden: Mat }[] {
  const E = layer.router.experts;
  if (stats.routedInputs.length !== E || stats.intermediates?.length !== E) {
    throw new MoekitError(
      `whitening: the calibration stats cover ${stats.routedInputs.length} experts (with ${
        stats.intermediates?.length ?? 0
      } intermediates); the layer has ${E} — calibrate this layer with calibrate(layer, x)`,
    );
  }
  const stack = (ms: Mat[], cols: number) => {
    const nonEmpty = ms.filter((m) => m.rows > 0);
    return nonEmpty.length === 0
      ? matrix.zeros(0, cols)
      : nonEmpty.length === 1
      ? nonEmpty[0]
      : matrix.vstack(nonEmpty);
  };
  return groups.map(({ expert, slots }) => ({
    input: stack(slots.map((e) => stats.routedInputs[e]), layer.dim),
    hidden: stack(slots.map((e) => stats.intermediates[e]), expert.w1.rows),
  }));
}

/**
 * Activation-whitened SVD of the whole layer (SVD-LLM, as in D²-MoE and MoE-SVD): W1 and W3 of expert e are
 * whitened with its routed inputs `X_e`, W2 with its routed intermediates `H_e`, so each truncation minimises
 * the error of what that matrix outputs on the calibration tokens. An expert that received no calibration
 * tokens falls back to the plain SVD. Bytes as {@link svdLayer}.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, moeLayer, randomExperts, svdLayer, topKRouter, whitenedSvdLayer } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
 * });
 * const x = matrix.randn(200, 8, { seed: 3 }), stats = calibrate(layer, x);
 * const y = layer.forward(x).output.data;
 * const err = (yHat: Float32Array) => y.reduce((s, v, i) => s + (v - yHat[i]) ** 2, 0);
 * const whitened = whitenedSvdLayer(layer, stats, { rank: 3 }).forward(x).output.data;
 * assert.ok(err(whitened) < err(svdLayer(layer, { rank: 3 }).forward(x).output.data));
 * ```
 */
export function whitenedSvdLayer(
  layer: MoeLayer,
  stats: CalibrationStats,
  options: LowRankLayerOptions,
): LowRankLayer & { epsilon: number } {
  const inputs = whiteningInputs(layer, stats);
  let epsilon = 0;
  const what = options.rank !== undefined ? `rank ${options.rank}` : `ρ=${options.ratio}`;
  const c = build(`whitened svd ${what}`, layer, (w, key, g) => {
    const x = key === "w2" ? inputs[g].hidden : inputs[g].input;
    if (x.rows === 0) return svdCompress(w, { rank: options.rank, ratio: options.ratio });
    const lr = whitenedSvdCompress(w, x, {
      rank: options.rank,
      ratio: options.ratio,
      epsilon: options.epsilon,
    });
    epsilon = Math.max(epsilon, lr.epsilon ?? 0);
    return lr;
  });
  return { ...c, epsilon };
}
