/**
 * Base + delta compression (D²-MoE-lite, docs/compression.md, "Base + low-rank deltas"): a
 * frequency-weighted base per matrix and per-expert low-rank deltas (plain, activation-whitened or
 * randomized SVD), optionally with one shared V (an SVD of the stacked deltas).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
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
import { weightedExpert } from "./merge_experts.ts";
import { type LowRank, lowRankProduct, rankForRatio, svdCompress, whitenedSvdCompress } from "./svd.ts";
import { whiteningInputs } from "./lowrank.ts";

/**
 * Options of {@link deltaCompress}.
 *
 * @example
 * ```ts
 * import { type DeltaOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: DeltaOptions = { ratio: 0.25, base: "frequency", sharedV: true };
 * assert.equal(o.ratio, 0.25);
 * ```
 */
export interface DeltaOptions {
  /** Delta rank as a parameter ratio ρ_Δ (`⌊ρ·m·n/(m+n)⌋`). Default 0.25 when no rank is given. */
  readonly ratio?: number;
  /** Or an explicit delta rank (capped at min(m, n)). */
  readonly rank?: number;
  /**
   * Base weights λ: `"frequency"` (calibration frequencies; the default when stats are given), `"mean"`
   * (the default without stats), or explicit per-expert weights `[E]`.
   */
  readonly base?: "frequency" | "mean" | readonly number[];
  /** One SVD of the vertically stacked deltas: V shared, a U block per expert. Default false. */
  readonly sharedV?: boolean;
  /**
   * Whiten each delta with what its matrix sees (SVD-LLM): W1, W3 with the expert's routed inputs, W2 with
   * its routed intermediates (needs stats). Not with `sharedV`. Default false.
   */
  readonly whitened?: boolean;
  /** Whitening jitter ε (see `whitenedSvdCompress`). Default 0 (with the automatic retry). */
  readonly epsilon?: number;
  /** Randomized SVD of the deltas (Halko et al.), for large experts. Default false. */
  readonly randomized?: boolean;
  /** Seed of the randomized sketches. Default 0. */
  readonly seed?: number;
}

/**
 * Compresses a layer as `W_e ≈ W_base + A_e·B_e` for each matrix (biases stay dense). Full-rank deltas
 * reconstruct exactly; identical experts give zero deltas.
 *
 * @example
 * ```ts
 * import { calibrate, deltaCompress, matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * const stats = calibrate(layer, matrix.randn(100, 8));
 * assert.ok(deltaCompress(layer, stats, { rank: 8 }).maxWeightError < 1e-5); // full rank: exact
 * assert.ok(deltaCompress(layer, stats, { rank: 8, whitened: true }).maxWeightError < 1e-4);
 * ```
 */
export function deltaCompress(
  layer: MoeLayer,
  stats: CalibrationStats | undefined,
  options: DeltaOptions,
): CompressedLayer & { layer: MoeLayer; maxWeightError: number } {
  const E = layer.router.experts, groups = distinctExperts(layer);
  if (options.whitened && !stats) {
    throw new OptionError("whitened", true, "needs calibration stats (the routed inputs and intermediates)");
  }
  if (options.whitened && options.sharedV) {
    throw new OptionError(
      "sharedV",
      true,
      "cannot be combined with whitened: each expert's delta is whitened with its own inputs",
    );
  }
  if (stats && stats.freq.length !== E) {
    throw new MoekitError(`calibration stats cover ${stats.freq.length} experts, the layer ${E}`);
  }
  const slotLambda = options.base === "mean" || options.base === undefined && !stats
    ? Array(E).fill(1)
    : Array.isArray(options.base)
    ? [...options.base]
    : Array.from(stats!.freq);
  if (slotLambda.length !== E) {
    throw new MoekitError(`deltaCompress: ${slotLambda.length} base weights for ${E} experts`);
  }
  const lambda = groups.map((g) => g.slots.reduce((s, e) => s + slotLambda[e], 0));
  const base = weightedExpert(groups.map((g) => g.expert), lambda);
  const inputs = options.whitened ? whiteningInputs(layer, stats!, groups) : undefined;
  let params = routerParams(layer) + sharedParams(layer), maxWeightError = 0;
  const parts: Record<"w1" | "w2" | "w3", Mat[]> = { w1: [], w2: [], w3: [] };
  const svd = (w: Mat, r: number, x?: Mat): LowRank =>
    x && x.rows > 0
      ? whitenedSvdCompress(w, x, { rank: r, epsilon: options.epsilon })
      : svdCompress(w, { rank: r, randomized: options.randomized, seed: options.seed });
  for (const key of ["w1", "w2", "w3"] as const) {
    const b = base[key], m = b.rows, n = b.cols;
    const r = options.rank ?? rankForRatio(m, n, options.ratio ?? 0.25);
    params += m * n;
    const delta = (g: number): Mat => {
      const w = groups[g].expert[key].data, out = new Float32Array(m * n);
      for (let i = 0; i < out.length; i++) out[i] = w[i] - b.data[i];
      return { rows: m, cols: n, data: out };
    };
    /** `base + rc` as expert g's matrix, tracking the largest weight error. */
    const rebuild = (g: number, rc: Float32Array) => {
      const w = groups[g].expert[key].data, out = matrix.zeros(m, n), o = out.data;
      let worst = maxWeightError;
      for (let i = 0; i < o.length; i++) {
        const v = (o[i] = b.data[i] + rc[i]), err = Math.abs(v - w[i]);
        if (err > worst) worst = err;
      }
      maxWeightError = worst;
      parts[key].push(out);
    };
    if (options.sharedV) {
      const stacked = matrix.vstack(groups.map((_, g) => delta(g))),
        lr = svd(stacked, Math.min(r, stacked.rows, n));
      const prod = lowRankProduct(lr);
      groups.forEach((_, g) => rebuild(g, prod.data.subarray(g * m * n, (g + 1) * m * n)));
      params += lr.rank * n + groups.length * m * lr.rank;
    } else {
      // one expert at a time: its delta, factorisation and product are freed before the next
      groups.forEach((_, g) => {
        const lr = svd(delta(g), Math.min(r, m, n), inputs?.[g][key === "w2" ? "hidden" : "input"]);
        params += lr.params;
        rebuild(g, lowRankProduct(lr).data);
      });
    }
  }
  const experts: SwiGLUExpert[] = layer.experts.slice();
  groups.forEach(({ expert, slots }, g) => {
    const { b1, b2, b3 } = expert;
    params += (b1?.length ?? 0) + (b2?.length ?? 0) + (b3?.length ?? 0);
    const approx = {
      w1: parts.w1[g],
      w2: parts.w2[g],
      w3: parts.w3[g],
      ...(b1 ? { b1 } : {}),
      ...(b2 ? { b2 } : {}),
      ...(b3 ? { b3 } : {}),
    };
    for (const e of slots) experts[e] = approx;
  });
  const out = withExperts(layer, experts);
  const how = [
    options.sharedV && "shared-V",
    options.whitened && "whitened",
    options.randomized && "randomized",
  ]
    .filter(Boolean).join(" ");
  return {
    method: `d2-moe ${how ? how + " " : ""}${
      options.rank !== undefined ? `rank ${options.rank}` : `ρ ${options.ratio ?? 0.25}`
    }`,
    layer: out,
    maxWeightError,
    params,
    bytes: params * 4,
    forward: forwardOf(out),
  };
}
