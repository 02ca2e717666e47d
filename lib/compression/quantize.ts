/**
 * Round-to-nearest group quantisation (round half to even) at 1–8 bits with per-group scale and zero,
 * and MC-MoE-style per-expert bit allocation under a bit budget (compression.md §7).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { roundHalfEven } from "../core/numeric.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import {
  checkLayer,
  type CompressedLayer,
  type ExpertLayer,
  expertParams,
  forwardWithExperts,
  layerForward,
} from "./layer.ts";
import { naeeLoss } from "./prune.ts";

/**
 * A quantised matrix.
 *
 * @example
 * ```ts
 * import { type Quantized } from "@moekit/moekit";
 * const levels = (q: Quantized) => 2 ** q.bits;
 * console.log(typeof levels); // function
 * ```
 */
export interface Quantized {
  /** The dequantised values. */
  readonly values: Mat;
  /** Bits per weight. */
  readonly bits: number;
  /** Columns per group. */
  readonly groupSize: number;
  /** Per row-group scale (b ≥ 2) or mean |x| (b = 1), `[m·⌈n/g⌉]`. */
  readonly scale: Float32Array;
  /** Per row-group zero point (b ≥ 2). */
  readonly zero: Float32Array;
  /** On-disk bytes: `⌈m·n·b/8⌉ + m·⌈n/g⌉·4` (b ≥ 2) or `⌈m·n/8⌉ + m·⌈n/g⌉·2` (b = 1). */
  readonly bytes: number;
}

/**
 * RTN quantisation of `W` with groups of `groupSize` consecutive columns per row.
 *
 * @example
 * ```ts
 * import { matrix, quantizeRTN } from "@moekit/moekit";
 * const w = matrix.fromArrays([[-1, -0.25, 0.5, 2]]);
 * console.log(Array.from(quantizeRTN(w, 2, 4).values.data), Array.from(quantizeRTN(w, 4, 4).values.data, (v) => +v.toFixed(6)));
 * // [-1, 0, 0, 2] [-1, -0.2, 0.4, 2]
 * ```
 */
export function quantizeRTN(w: Mat, bits: number, groupSize = 128): Quantized {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new OptionError("bits", bits, "RTN supports 1 to 8 bits");
  }
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new OptionError("groupSize", groupSize, "must be an integer ≥ 1");
  }
  const m = w.rows, n = w.cols, groups = Math.ceil(n / groupSize), out = matrix.zeros(m, n);
  const scale = new Float32Array(m * groups), zero = new Float32Array(m * groups), qmax = 2 ** bits - 1;
  for (let i = 0; i < m; i++) {
    for (let g = 0; g < groups; g++) {
      const a = i * n + g * groupSize, b = i * n + Math.min(n, (g + 1) * groupSize);
      if (bits === 1) {
        let mean = 0;
        for (let j = a; j < b; j++) mean += Math.abs(w.data[j]) / (b - a);
        scale[i * groups + g] = mean;
        for (let j = a; j < b; j++) out.data[j] = (w.data[j] >= 0 ? 1 : -1) * mean;
        continue;
      }
      let lo = 0, hi = 0;
      for (let j = a; j < b; j++) {
        lo = Math.min(lo, w.data[j]);
        hi = Math.max(hi, w.data[j]);
      }
      if (lo === 0 && hi === 0) {
        lo = -1;
        hi = 1;
      }
      const s = (hi - lo) / qmax, z = roundHalfEven(-lo / s);
      scale[i * groups + g] = s;
      zero[i * groups + g] = z;
      for (let j = a; j < b; j++) {
        const q = Math.min(qmax, Math.max(0, roundHalfEven(w.data[j] / s) + z));
        out.data[j] = s * (q - z);
      }
    }
  }
  const bytes = bits === 1
    ? Math.ceil((m * n) / 8) + m * groups * 2
    : Math.ceil((m * n * bits) / 8) + m * groups * 4;
  return { values: out, bits, groupSize, scale, zero, bytes };
}

/** Quantises all three matrices of an expert. */
export function quantizeExpert(
  e: SwiGLUExpert,
  bits: number,
  groupSize = 128,
): { expert: SwiGLUExpert; bytes: number } {
  const q = [e.w1, e.w2, e.w3].map((w) => quantizeRTN(w, bits, groupSize));
  return {
    expert: { w1: q[0].values, w2: q[1].values, w3: q[2].values },
    bytes: q.reduce((s, x) => s + x.bytes, 0),
  };
}

/**
 * Exact bit allocation: choose `b_e ∈ {1,2,3}` minimising `Σ cost[e][b_e − 1]` with `Σ b_e ≤ budget`
 * and at least one expert at each bit width in `require` (default [3, 2]); among equal objectives the
 * lexicographically smallest bit vector wins. Throws when infeasible.
 *
 * @example
 * ```ts
 * import { allocateBits } from "@moekit/moekit";
 * const cost = [[5, 2, 1], [4, 3, 2], [1, .5, .4]]; // compression.md §7
 * console.log(allocateBits(cost, 6).bits, allocateBits(cost, 7).bits); // [2, 3, 1] [2, 3, 2]
 * ```
 */
export function allocateBits(
  cost: readonly (readonly number[])[],
  budget: number,
  require: readonly number[] = [3, 2],
): { bits: number[]; objective: number } {
  const E = cost.length, options = [1, 2, 3];
  cost.forEach((c, e) => {
    if (c.length !== 3 || c.some((v) => !Number.isFinite(v))) {
      throw new MoekitError(`allocateBits: cost[${e}] must hold 3 finite costs (1, 2, 3 bits)`);
    }
  });
  const reqMask = (b: number) => require.reduce((m, r, i) => (r === b ? m | (1 << i) : m), 0),
    full = (1 << require.length) - 1;
  // best[e][used][mask]: the minimal cost of experts e..E−1 given bits used so far and requirements met
  const memo = new Map<string, number>();
  const best = (e: number, used: number, mask: number): number => {
    if (used > budget) return Infinity;
    if (e === E) return mask === full ? 0 : Infinity;
    const key = `${e},${used},${mask}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    let v = Infinity;
    for (const b of options) v = Math.min(v, cost[e][b - 1] + best(e + 1, used + b, mask | reqMask(b)));
    memo.set(key, v);
    return v;
  };
  const objective = best(0, 0, 0);
  if (!Number.isFinite(objective)) {
    throw new MoekitError(
      `allocateBits: no assignment of 1–3 bits to ${E} experts fits ${budget} bits with ${
        require.join(" and ")
      } required`,
    );
  }
  const bits: number[] = [];
  let used = 0, mask = 0;
  for (let e = 0; e < E; e++) {
    for (const b of options) {
      // the smallest b that keeps the optimum reachable (lexicographic tie rule)
      const rest = best(e + 1, used + b, mask | reqMask(b));
      if (Math.abs(cost[e][b - 1] + rest - best(e, used, mask)) <= 1e-12 * Math.max(1, Math.abs(objective))) {
        bits.push(b);
        used += b;
        mask |= reqMask(b);
        break;
      }
    }
  }
  return { bits, objective };
}

/**
 * MC-MoE PMQ: per-expert costs `φ_e·w_e^1.5·q_e(b)` (q = the NAEE loss when only expert e is quantised at
 * b bits), then {@link allocateBits}; returns the mixed-precision layer.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, pmqQuantize, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * const x = matrix.randn(64, 8);
 * const q = pmqQuantize(layer, x, calibrate(layer, x), { budgetBits: 9, groupSize: 8 });
 * console.log(q.bits.reduce((a, b) => a + b) <= 9); // true
 * ```
 */
export function pmqQuantize(
  layer: ExpertLayer,
  x: Mat,
  stats: CalibrationStats,
  options: { budgetBits: number; groupSize?: number; alpha?: number; beta?: number },
): CompressedLayer & { bits: number[]; costs: number[][] } {
  checkLayer(layer);
  const g = options.groupSize ?? 128, alpha = options.alpha ?? 1, beta = options.beta ?? 1.5;
  const y = layerForward(layer, x).output;
  const totalCount = stats.counts.reduce((a, b) => a + b, 0),
    totalW = stats.weightSum.reduce((a, b) => a + b, 0);
  const quantized = layer.experts.map((e) => [1, 2, 3].map((b) => quantizeExpert(e, b, g)));
  const costs = layer.experts.map((_, e) => {
    const phi = totalCount ? stats.counts[e] / totalCount : 0, w = totalW ? stats.weightSum[e] / totalW : 0;
    return [0, 1, 2].map((bi) => {
      if (phi === 0) return 0;
      const experts = layer.experts.map((ex, i) => (i === e ? quantized[e][bi].expert : ex));
      const q = naeeLoss(y, layerForward(layer, x, { experts }).output);
      return phi ** alpha * w ** beta * q ** alpha;
    });
  });
  const { bits } = allocateBits(costs, options.budgetBits);
  const experts = bits.map((b, e) => quantized[e][b - 1].expert);
  const bytes = layer.gate.data.length * 4 + bits.reduce((s, b, e) => s + quantized[e][b - 1].bytes, 0);
  return {
    method: `pmq ${options.budgetBits} bits`,
    bits,
    costs,
    params: layer.gate.data.length + layer.experts.reduce((s, e) => s + expertParams(e), 0),
    bytes,
    forward: (xs) => forwardWithExperts(layer, xs, { experts }),
  };
}

/**
 * The whole layer RTN-quantised at one bit width, as a compressed layer.
 *
 * @example
 * ```ts
 * import { matrix, randomExperts, rtnLayer } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }), k: 2 };
 * console.log(rtnLayer(layer, 4, 8).bytes < 4 * 4 * 3 * 8 * 16); // true
 * ```
 */
export function rtnLayer(layer: ExpertLayer, bits: number, groupSize = 128): CompressedLayer {
  checkLayer(layer);
  const q = layer.experts.map((e) => quantizeExpert(e, bits, groupSize)), experts = q.map((x) => x.expert);
  return {
    method: `rtn ${bits}-bit g${groupSize}`,
    params: layer.gate.data.length + layer.experts.reduce((s, e) => s + expertParams(e), 0),
    bytes: layer.gate.data.length * 4 + q.reduce((s, x) => s + x.bytes, 0),
    forward: (x) => forwardWithExperts(layer, x, { experts }),
  };
}
