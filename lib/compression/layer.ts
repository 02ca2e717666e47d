/**
 * The MoE layer compression works on (compression.md §1): a linear top-k router `Wr [E,d]` and E SwiGLU
 * experts, with a forward pass that supports dropped experts, skipping and per-slot expert overrides;
 * plus the interface every compressed layer implements.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, ShapeError } from "../core/errors.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";
import { swigluForward } from "../moe/layer.ts";
import { softmaxInto } from "../core/numeric.ts";
import { topKIndices } from "../routing/select.ts";

/**
 * An MoE layer for compression.
 *
 * @example
 * ```ts
 * import { type ExpertLayer, matrix, randomExperts } from "@moekit/moekit";
 * const layer: ExpertLayer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * console.log(layer.experts.length); // 4
 * ```
 */
export interface ExpertLayer {
  /** Router weight `Wr [E,d]`. */
  readonly gate: Mat;
  /** E experts (slots may share one expert object after merging). */
  readonly experts: readonly SwiGLUExpert[];
  /** Choices per token. */
  readonly k: number;
  /** Renormalise the top-k weights (Mixtral; default true). */
  readonly normTopkProb?: boolean;
}

/** Parameters of one SwiGLU expert. */
export function expertParams(e: SwiGLUExpert): number {
  return e.w1.data.length + e.w2.data.length + e.w3.data.length;
}

/** Validates a layer's shapes; returns (E, d, f). */
export function checkLayer(layer: ExpertLayer): { E: number; d: number } {
  const E = layer.gate.rows, d = layer.gate.cols;
  if (layer.experts.length !== E) {
    throw new MoekitError(`the router has ${E} experts but ${layer.experts.length} were given`);
  }
  if (!Number.isInteger(layer.k) || layer.k < 1 || layer.k > E) {
    throw new MoekitError(`k = ${layer.k} must be in 1..E = ${E}`);
  }
  layer.experts.forEach((e, i) => {
    const f = e.w1.rows;
    matrix.assertShape(`expert ${i} w1`, e.w1, f, d, "mismatched expert shapes");
    matrix.assertShape(`expert ${i} w3`, e.w3, f, d, "mismatched expert shapes");
    matrix.assertShape(`expert ${i} w2`, e.w2, d, f, "mismatched expert shapes");
  });
  return { E, d };
}

/**
 * The per-token routing of a layer forward: chosen slots and weights, plus the raw probabilities.
 *
 * @example
 * ```ts
 * import { layerForward, type LayerRouting, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }), k: 2 };
 * const r: LayerRouting = layerForward(layer, matrix.randn(3, 8)).routing;
 * console.log(r.indices.length); // 6
 * ```
 */
export interface LayerRouting {
  /** `[T·k]` slots, −1 = skipped. */
  readonly indices: Int32Array;
  /** `[T·k]` combine weights. */
  readonly weights: Float64Array;
  /** `[T,E]` softmax probabilities (dropped experts 0). */
  readonly probs: Float64Array;
}

/**
 * Options of {@link layerForward}.
 *
 * @example
 * ```ts
 * import { type LayerForwardOptions } from "@moekit/moekit";
 * const o: LayerForwardOptions = { dropped: new Set([3]), skipBeta: 0.4 };
 * console.log(o.dropped!.has(3)); // true
 * ```
 */
export interface LayerForwardOptions {
  /** Experts removed: their logits are −∞ before the softmax (NAEE masking). */
  readonly dropped?: ReadonlySet<number>;
  /** Dynamic skipping: drop choices j ≥ 1 with `p(j) < β·p(1)` (then renormalise if the layer does). */
  readonly skipBeta?: number;
  /** Run these experts instead of the layer's (slot e → expert), e.g. quantised or merged ones. */
  readonly experts?: readonly SwiGLUExpert[];
}

/** Routes X through the layer's router (with masking and skipping). */
export function layerRoute(layer: ExpertLayer, x: Mat, options: LayerForwardOptions = {}): LayerRouting {
  const { E } = checkLayer(layer), T = x.rows, k = layer.k, norm = layer.normTopkProb ?? true;
  if (x.cols !== layer.gate.cols) {
    throw new ShapeError("calibration tokens X", [-1, layer.gate.cols], [x.rows, x.cols]);
  }
  const logits = matrix.matmulT(x, layer.gate), probs = new Float64Array(T * E);
  const idx = new Int32Array(T * k), weights = new Float64Array(T * k), row = new Float64Array(E);
  const live = E - (options.dropped?.size ?? 0);
  if (live < k) throw new MoekitError(`only ${live} experts remain for top-${k} routing`);
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) row[e] = options.dropped?.has(e) ? -Infinity : logits.data[t * E + e];
    softmaxInto(row, 0, E, probs, t * E);
    topKIndices(probs, t * E, E, k, idx, t * k);
    const p1 = probs[t * E + idx[t * k]];
    let sum = 0;
    for (let j = 0; j < k; j++) {
      const p = probs[t * E + idx[t * k + j]];
      if (j > 0 && options.skipBeta !== undefined && p < options.skipBeta * p1) idx[t * k + j] = -1;
      else sum += p;
    }
    for (let j = 0; j < k; j++) {
      const e = idx[t * k + j];
      weights[t * k + j] = e < 0 ? 0 : norm ? probs[t * E + e] / sum : probs[t * E + e];
    }
  }
  return { indices: idx, weights, probs };
}

/**
 * Layer forward `Y = Σ_j w_j E_j(x)` (float64 accumulation), with the routing used.
 *
 * @example
 * ```ts
 * import { layerForward, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * console.log(layerForward(layer, matrix.randn(5, 8)).output.rows); // 5
 * ```
 */
export function layerForward(
  layer: ExpertLayer,
  x: Mat,
  options: LayerForwardOptions = {},
): { output: Mat; routing: LayerRouting } {
  const routing = layerRoute(layer, x, options), experts = options.experts ?? layer.experts;
  const { E, d } = checkLayer(layer), T = x.rows, k = layer.k;
  const out = new Float64Array(T * d);
  for (let e = 0; e < E; e++) {
    const rows: number[] = [], w: number[] = [];
    for (let i = 0; i < T * k; i++) {
      if (routing.indices[i] === e) {
        rows.push(Math.floor(i / k));
        w.push(routing.weights[i]);
      }
    }
    if (!rows.length) continue;
    const xe = matrix.zeros(rows.length, d);
    rows.forEach((t, r) => xe.data.set(matrix.row(x, t), r * d));
    const ye = swigluForward(experts[e], xe);
    rows.forEach((t, r) => {
      for (let c = 0; c < d; c++) out[t * d + c] += w[r] * ye.data[r * d + c];
    });
  }
  return { output: { rows: T, cols: d, data: Float32Array.from(out) }, routing };
}

/**
 * A compressed layer: a forward pass and its size accounting.
 *
 * @example
 * ```ts
 * import { type CompressedLayer } from "@moekit/moekit";
 * const describe = (c: CompressedLayer) => `${c.method}: ${c.bytes} bytes`;
 * console.log(typeof describe); // function
 * ```
 */
export interface CompressedLayer {
  /** Method name. */
  readonly method: string;
  /** Stored bytes of the experts (router included). */
  readonly bytes: number;
  /** Stored parameters (router included). */
  readonly params: number;
  /** Forward pass: output, the slots each token used (−1 = none) and the parameters computed per token. */
  forward(x: Mat): { output: Mat; indices: Int32Array; activeParams: Float64Array };
}

/**
 * A layer forward in {@link CompressedLayer} form — output, computed slots, parameters computed per token —
 * optionally with replacement experts (quantised, low-rank, merged).
 *
 * @example
 * ```ts
 * import { forwardWithExperts, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }), k: 2 };
 * console.log(forwardWithExperts(layer, matrix.randn(3, 8)).activeParams[0]); // 4·8 + 2·3·64 = 416
 * ```
 */
export function forwardWithExperts(
  layer: ExpertLayer,
  x: Mat,
  options: LayerForwardOptions = {},
): { output: Mat; indices: Int32Array; activeParams: Float64Array } {
  const { output, routing } = layerForward(layer, x, options);
  const experts = options.experts ?? layer.experts, k = layer.k, router = layer.gate.data.length;
  const activeParams = new Float64Array(x.rows);
  for (let t = 0; t < x.rows; t++) {
    let p = router;
    for (let j = 0; j < k; j++) {
      const e = routing.indices[t * k + j];
      if (e >= 0) p += expertParams(experts[e]);
    }
    activeParams[t] = p;
  }
  return { output, indices: routing.indices, activeParams };
}
