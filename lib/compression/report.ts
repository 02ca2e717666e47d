/**
 * One report for any compressed layer against the original on held-out tokens (docs/compression.md,
 * "Metrics and byte accounting").
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { isKept } from "../routing/result.ts";
import type { MoeLayer } from "../moe/layer.ts";
import { type CompressedLayer, forwardOf, layerParams } from "./compressed.ts";

/**
 * What {@link compressionReport} measures.
 *
 * @example
 * ```ts
 * import { type CompressionReport } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const line = (r: CompressionReport) => `${r.method} ${(100 * r.bytesRatio).toFixed(1)} %`;
 * assert.equal(line({ method: "rtn", bytesRatio: 0.25 } as CompressionReport), "rtn 25.0 %");
 * ```
 */
export interface CompressionReport {
  /** The compressed layer's method. */
  readonly method: string;
  /** `‖Y − Ŷ‖_F / ‖Y‖_F`. */
  readonly relativeError: number;
  /** `mean_t #(S ∩ Ŝ)/k`: the share of each token's original experts the compressed layer still computes. */
  readonly routingAgreement: number;
  /** Share of tokens whose original first expert is still computed. */
  readonly top1Agreement: number;
  /** Stored parameters (original, compressed). */
  readonly params: readonly [number, number];
  /** Stored bytes (original at float32, compressed). */
  readonly bytes: readonly [number, number];
  /** Compressed bytes / original bytes. */
  readonly bytesRatio: number;
  /** Mean parameters computed per token (original, compressed). */
  readonly activeParamsPerToken: readonly [number, number];
  /** Estimated FLOPs per token ≈ 2 × active parameters (original, compressed). */
  readonly flopsPerToken: readonly [number, number];
}

/**
 * Compares a compressed layer with the original on tokens X. Expert identities are compared in the
 * original numbering (pruned, skipped and merged layers keep the router's E slots).
 *
 * @example
 * ```ts
 * import { compressionReport, matrix, moeLayer, randomExperts, rtnLayer, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * const r = compressionReport(layer, rtnLayer(layer, 8, 8), matrix.randn(64, 8));
 * assert.ok(r.relativeError < 0.02);
 * assert.equal(r.routingAgreement, 1); // quantising the experts leaves the router alone
 * ```
 */
export function compressionReport(
  original: MoeLayer,
  compressed: CompressedLayer,
  x: Mat,
): CompressionReport {
  const ref = forwardOf(original)(x), got = compressed.forward(x), T = x.rows;
  const k = ref.routing.k, gk = got.routing.k;
  let num = 0, den = 0;
  for (let i = 0; i < ref.output.data.length; i++) {
    num += (ref.output.data[i] - got.output.data[i]) ** 2;
    den += ref.output.data[i] ** 2;
  }
  let agree = 0, top1 = 0;
  for (let t = 0; t < T; t++) {
    const a = new Set<number>();
    for (let j = 0; j < k; j++) if (isKept(ref.routing, t * k + j)) a.add(ref.routing.indices[t * k + j]);
    const b = new Set<number>();
    for (let j = 0; j < gk; j++) if (isKept(got.routing, t * gk + j)) b.add(got.routing.indices[t * gk + j]);
    for (const e of b) if (a.has(e)) agree += 1 / k;
    if (b.has(ref.routing.indices[t * k])) top1++;
  }
  const params = layerParams(original);
  const mean = (v: Float64Array) => v.reduce((s, p) => s + p, 0) / Math.max(1, v.length);
  const active: [number, number] = [mean(ref.activeParams), mean(got.activeParams)];
  return {
    method: compressed.method,
    relativeError: den > 0 ? Math.sqrt(num / den) : Math.sqrt(num),
    routingAgreement: agree / Math.max(1, T),
    top1Agreement: top1 / Math.max(1, T),
    params: [params, compressed.params],
    bytes: [params * 4, compressed.bytes],
    bytesRatio: compressed.bytes / (params * 4),
    activeParamsPerToken: active,
    flopsPerToken: [2 * active[0], 2 * active[1]],
  };
}

/**
 * The original layer as a {@link CompressedLayer} (a baseline row for tables).
 *
 * @example
 * ```ts
 * import { dense, matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * assert.equal(dense(layer).params, 4 * 8 + 4 * 3 * 128); // router + 4 experts of 3·8·16
 * ```
 */
export function dense(layer: MoeLayer): CompressedLayer & { layer: MoeLayer } {
  const params = layerParams(layer);
  return { method: "dense", layer, params, bytes: params * 4, forward: forwardOf(layer) };
}
