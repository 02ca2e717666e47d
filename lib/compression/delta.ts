/**
 * Base + delta compression (D²-MoE-lite, compression.md §6): a frequency-weighted base per matrix and
 * per-expert low-rank deltas, optionally with one shared V (an SVD of the stacked deltas).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError } from "../core/errors.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import { checkLayer, type CompressedLayer, type ExpertLayer, forwardWithExperts } from "./layer.ts";
import { weightedExpert } from "./merge_experts.ts";
import { lowRankProduct, rankForRatio, svdCompress } from "./svd.ts";

/**
 * Options of {@link deltaCompress}.
 *
 * @example
 * ```ts
 * import { type DeltaOptions } from "@moekit/moekit";
 * const o: DeltaOptions = { ratio: 0.25, base: "frequency", sharedV: true };
 * console.log(o.ratio); // 0.25
 * ```
 */
export interface DeltaOptions {
  /** Delta rank as a parameter ratio ρ_Δ (`⌊ρ·m·n/(m+n)⌋`). */
  readonly ratio?: number;
  /** Or an explicit delta rank. */
  readonly rank?: number;
  /** `"frequency"` (default), `"mean"`, or explicit per-expert weights. */
  readonly base?: "frequency" | "mean" | readonly number[];
  /** One SVD of the vertically stacked deltas: V shared, a U block per expert. Default false. */
  readonly sharedV?: boolean;
}

/**
 * Compresses a layer as `W_e ≈ W_base + A_e·B_e` for each matrix.
 *
 * @example
 * ```ts
 * import { calibrate, deltaCompress, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * const c = deltaCompress(layer, calibrate(layer, matrix.randn(100, 8)), { rank: 8 }); // full rank: exact
 * console.log(c.maxWeightError < 1e-5); // true
 * ```
 */
export function deltaCompress(
  layer: ExpertLayer,
  stats: CalibrationStats | undefined,
  options: DeltaOptions,
): CompressedLayer & { layer: ExpertLayer; maxWeightError: number } {
  const { E } = checkLayer(layer);
  const lambda = options.base === "mean" || options.base === undefined && !stats
    ? Array(E).fill(1)
    : Array.isArray(options.base)
    ? [...options.base]
    : Array.from(stats!.freq);
  if (lambda.length !== E) {
    throw new MoekitError(`deltaCompress: ${lambda.length} base weights for ${E} experts`);
  }
  const base = weightedExpert(layer.experts, lambda);
  let params = layer.gate.data.length, maxWeightError = 0;
  const parts: Record<"w1" | "w2" | "w3", Mat[]> = { w1: [], w2: [], w3: [] };
  for (const key of ["w1", "w2", "w3"] as const) {
    const b = base[key], m = b.rows, n = b.cols;
    const r = options.rank ?? rankForRatio(m, n, options.ratio ?? 0.25);
    params += m * n;
    const deltas = layer.experts.map((e) => ({
      rows: m,
      cols: n,
      data: e[key].data.map((v, i) => v - b.data[i]),
    }));
    let recon: Mat[];
    if (options.sharedV) {
      const stacked = matrix.vstack(deltas),
        lr = svdCompress(stacked, { rank: Math.min(r, stacked.rows, n) });
      const prod = lowRankProduct(lr);
      recon = deltas.map((_, e) => matrix.rowSlice(prod, e * m, (e + 1) * m));
      params += lr.rank * n + E * m * lr.rank;
    } else {
      recon = deltas.map((dlt) => {
        const lr = svdCompress(dlt, { rank: Math.min(r, m, n) });
        params += lr.params;
        return lowRankProduct(lr);
      });
    }
    recon.forEach((rc, e) => {
      const w = layer.experts[e][key], out = matrix.zeros(m, n);
      for (let i = 0; i < out.data.length; i++) {
        out.data[i] = b.data[i] + rc.data[i];
        maxWeightError = Math.max(maxWeightError, Math.abs(out.data[i] - w.data[i]));
      }
      parts[key].push(out);
    });
  }
  const experts: SwiGLUExpert[] = layer.experts.map((_, e) => ({
    w1: parts.w1[e],
    w2: parts.w2[e],
    w3: parts.w3[e],
  }));
  const out: ExpertLayer = { ...layer, experts };
  return {
    method: `d2-moe ${options.sharedV ? "shared-V " : ""}${
      options.rank !== undefined ? `rank ${options.rank}` : `ρ ${options.ratio ?? 0.25}`
    }`,
    layer: out,
    maxWeightError,
    params,
    bytes: params * 4,
    forward: (x) => forwardWithExperts(out, x),
  };
}
