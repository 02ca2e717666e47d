/**
 * Calibration statistics from one forward pass of calibration tokens through an MoE layer
 * (docs/compression.md, "Calibration").
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { MoekitError } from "../core/errors.ts";
import { matmul } from "../linalg/factor.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";
import type { MoeLayer } from "../moe/layer.ts";

/**
 * What one calibration pass measures. Counts are over the choices the experts actually computed (kept by
 * capacity, not removed, not skipped).
 *
 * @example
 * ```ts
 * import { type CalibrationStats } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const busiest = (s: CalibrationStats) => s.freq.indexOf(Math.max(...s.freq));
 * assert.equal(busiest({ freq: new Float64Array([0.2, 0.5, 0.3]) } as CalibrationStats), 1);
 * ```
 */
export interface CalibrationStats {
  /** Tokens T. */
  readonly tokens: number;
  /** `count_e`: (token, choice) pairs expert e computed. */
  readonly counts: Float64Array;
  /** `count_e / Σ count`. */
  readonly freq: Float64Array;
  /** `Σ_t score_e(x_t)·[e computed for t]`, with the gate score before renormalisation (MC-MoE). */
  readonly weightSum: Float64Array;
  /** Router logits `[T,E]`. */
  readonly logits: Mat;
  /** The routing of the calibration tokens. */
  readonly routing: RoutingResult;
  /** Per expert: its routed inputs `X_e [T_e,d]`, in token order. */
  readonly routedInputs: readonly Mat[];
  /** Per expert: the gram `X_eᵀX_e [d,d]` (float64 sums, stored as float32). */
  readonly grams: readonly Mat[];
  /** Per expert: its routed intermediates `H_e = act(W1·X_e + b1, W3·X_e + b3)` `[T_e,f]` (they whiten W2). */
  readonly intermediates: readonly Mat[];
}

/**
 * Runs the calibration tokens through the layer (its router, expert mask and skipping; capacity applies)
 * and collects {@link CalibrationStats}.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * const s = calibrate(layer, matrix.randn(100, 8, { seed: 2 }));
 * assert.equal(s.counts.reduce((a, b) => a + b), 200); // 100 tokens × k = 2
 * assert.deepEqual([s.intermediates[0].rows, s.intermediates[0].cols], [s.counts[0], 16]);
 * ```
 */
export function calibrate(layer: MoeLayer, x: Mat): CalibrationStats {
  if (x.rows === 0) throw new MoekitError("calibrate: the calibration set is empty (0 tokens)");
  const { routing, inputs, hidden } = layer.trace(x, { returnLogits: true });
  const E = routing.experts;
  const counts = new Float64Array(E), weightSum = new Float64Array(E);
  for (let i = 0; i < routing.indices.length; i++) {
    if (!isKept(routing, i)) continue;
    const e = routing.indices[i];
    counts[e]++;
    weightSum[e] += routing.scores[i];
  }
  const total = counts.reduce((a, b) => a + b, 0);
  if (!routing.logits) {
    throw new MoekitError(`calibrate: router ${layer.router.name} did not return logits (returnLogits)`);
  }
  return {
    tokens: x.rows,
    counts,
    freq: counts.map((c) => (total > 0 ? c / total : 0)),
    weightSum,
    logits: routing.logits,
    routing,
    routedInputs: inputs,
    grams: inputs.map((xe) => gram(xe)),
    intermediates: hidden,
  };
}

/** `XᵀX` in float64, stored as float32; at real sizes on the native/WebAssembly GEMM (float32). Internal. */
export function gram(x: Mat): Mat {
  if (2 * x.rows * x.cols * x.cols >= 1 << 24) return matmul(x, x, { transA: true });
  const g = gram64(x);
  return { rows: x.cols, cols: x.cols, data: Float32Array.from(g) };
}

/** `XᵀX` `[n,n]` row-major in float64 (the upper triangle accumulated, then mirrored). Internal. */
export function gram64(x: Mat): Float64Array {
  const n = x.cols, g = new Float64Array(n * n);
  for (let t = 0; t < x.rows; t++) {
    const o = t * n;
    for (let i = 0; i < n; i++) {
      const xi = x.data[o + i];
      if (xi === 0) continue;
      for (let j = i; j < n; j++) g[i * n + j] += xi * x.data[o + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) g[i * n + j] = g[j * n + i];
  return g;
}
