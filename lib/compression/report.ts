/**
 * One report for any compressed layer against the original on calibration tokens (compression.md §10).
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import {
  checkLayer,
  type CompressedLayer,
  type ExpertLayer,
  expertParams,
  forwardWithExperts,
} from "./layer.ts";

/**
 * What {@link compressionReport} measures.
 *
 * @example
 * ```ts
 * import { type CompressionReport } from "@moekit/moekit";
 * const line = (r: CompressionReport) => `${r.method} ${(100 * r.bytesRatio).toFixed(1)} %`;
 * console.log(typeof line); // function
 * ```
 */
export interface CompressionReport {
  /** The compressed layer's method. */
  readonly method: string;
  /** `‖Y − Ŷ‖_F / ‖Y‖_F`. */
  readonly relativeError: number;
  /** `mean_t #(S ∩ Ŝ)/k` over computed experts. */
  readonly routingAgreement: number;
  /** Share of tokens whose top-1 expert is unchanged. */
  readonly top1Agreement: number;
  /** Stored parameters (original, compressed). */
  readonly params: readonly [number, number];
  /** Stored bytes (original, compressed). */
  readonly bytes: readonly [number, number];
  /** Compressed bytes / original bytes. */
  readonly bytesRatio: number;
  /** Mean parameters computed per token (original, compressed). */
  readonly activeParamsPerToken: readonly [number, number];
  /** Estimated FLOPs per token ≈ 2 × active parameters (original, compressed). */
  readonly flopsPerToken: readonly [number, number];
}

/**
 * Compares a compressed layer with the original on tokens X.
 *
 * @example
 * ```ts
 * import { compressionReport, matrix, randomExperts, rtnLayer } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * const r = compressionReport(layer, rtnLayer(layer, 8, 8), matrix.randn(64, 8));
 * console.log(r.relativeError < 0.02, r.routingAgreement); // true 1
 * ```
 */
export function compressionReport(
  original: ExpertLayer,
  compressed: CompressedLayer,
  x: Mat,
): CompressionReport {
  checkLayer(original);
  const ref = forwardWithExperts(original, x), got = compressed.forward(x), k = original.k, T = x.rows;
  let num = 0, den = 0;
  for (let i = 0; i < ref.output.data.length; i++) {
    num += (ref.output.data[i] - got.output.data[i]) ** 2;
    den += ref.output.data[i] ** 2;
  }
  let agree = 0, top1 = 0;
  const gk = got.indices.length / T;
  for (let t = 0; t < T; t++) {
    const a = new Set(Array.from(ref.indices.subarray(t * k, t * k + k)));
    const b = Array.from(got.indices.subarray(t * gk, t * gk + gk)).filter((e) => e >= 0);
    agree += b.filter((e) => a.has(e)).length / k;
    if (b.includes(ref.indices[t * k])) top1++;
  }
  const params = original.gate.data.length + original.experts.reduce((s, e) => s + expertParams(e), 0);
  const mean = (v: Float64Array) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
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
 * import { dense, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * console.log(dense(layer).params); // 4·8 + 4·3·128 = 1568
 * ```
 */
export function dense(layer: ExpertLayer): CompressedLayer {
  checkLayer(layer);
  const params = layer.gate.data.length + layer.experts.reduce((s, e) => s + expertParams(e), 0);
  return { method: "dense", params, bytes: params * 4, forward: (x) => forwardWithExperts(layer, x) };
}
