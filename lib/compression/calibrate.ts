/**
 * Calibration statistics from one pass of calibration tokens through an MoE layer (compression.md §2).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError } from "../core/errors.ts";
import { checkLayer, type ExpertLayer, layerRoute } from "./layer.ts";

/**
 * What one calibration pass measures.
 *
 * @example
 * ```ts
 * import { type CalibrationStats } from "@moekit/moekit";
 * const busiest = (s: CalibrationStats) => s.freq.indexOf(Math.max(...s.freq));
 * console.log(typeof busiest); // function
 * ```
 */
export interface CalibrationStats {
  /** Tokens T. */
  readonly tokens: number;
  /** `count_e`: (token, slot) pairs routed to e. */
  readonly counts: Float64Array;
  /** `count_e / Σ count`. */
  readonly freq: Float64Array;
  /** `Σ_t p_e(x_t)·[e ∈ S(x_t)]` with the probability before renormalisation. */
  readonly weightSum: Float64Array;
  /** Router logits `[T,E]`. */
  readonly logits: Mat;
  /** Per expert: the routed inputs `X_e [T_e, d]`. */
  readonly routedInputs: readonly Mat[];
  /** Per expert: the gram `X_eᵀX_e [d,d]`. */
  readonly grams: readonly Mat[];
}

/**
 * Runs the calibration tokens through the router and collects {@link CalibrationStats}.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * const s = calibrate(layer, matrix.randn(100, 8, { seed: 2 }));
 * console.log(s.counts.reduce((a, b) => a + b)); // 200
 * ```
 */
export function calibrate(layer: ExpertLayer, x: Mat): CalibrationStats {
  const { E, d } = checkLayer(layer), T = x.rows, k = layer.k;
  if (T === 0) throw new MoekitError("calibrate: the calibration set is empty (0 tokens)");
  const routing = layerRoute(layer, x);
  const counts = new Float64Array(E),
    weightSum = new Float64Array(E),
    members: number[][] = Array.from({ length: E }, () => []);
  for (let i = 0; i < T * k; i++) {
    const e = routing.indices[i], t = Math.floor(i / k);
    counts[e]++;
    weightSum[e] += routing.probs[t * E + e];
    members[e].push(t);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const routedInputs = members.map((rows) => {
    const m = matrix.zeros(rows.length, d);
    rows.forEach((t, r) => m.data.set(matrix.row(x, t), r * d));
    return m;
  });
  return {
    tokens: T,
    counts,
    freq: counts.map((c) => c / total),
    weightSum,
    logits: matrix.matmulT(x, layer.gate),
    routedInputs,
    grams: routedInputs.map((xe) => gram(xe)),
  };
}

/** `XᵀX` in float64, stored as float32. */
export function gram(x: Mat): Mat {
  const g = gram64(x);
  return { rows: x.cols, cols: x.cols, data: Float32Array.from(g) };
}

/** `XᵀX` `[n,n]` row-major in float64 (the upper triangle accumulated, then mirrored). */
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
