/**
 * Round-to-nearest group quantisation (round half to even) at 1–8 bits with per-group scale and zero,
 * and MC-MoE-style per-expert bit allocation under a bit budget (docs/compression.md, "Quantisation").
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { roundHalfEven } from "../core/numeric.ts";
import type { MoeLayer, SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import {
  type CompressedLayer,
  denseExtrasBytes,
  distinctExperts,
  forwardOf,
  layerParams,
  liveExperts,
  withExperts,
} from "./compressed.ts";
import { naeeLoss } from "./prune.ts";

/**
 * A quantised matrix.
 *
 * @example
 * ```ts
 * import { matrix, type Quantized, quantizeRTN } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const q: Quantized = quantizeRTN(matrix.randn(4, 256, { seed: 1 }), 4, 128);
 * assert.equal(q.bytes, 544); // 4·256·4/8 + 4 rows × 2 groups × (2 + 2)
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
 * import { matrix, quantizeRTN } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const w = matrix.fromArrays([[-1, -0.25, 0.5, 2]]);
 * assert.deepEqual(Array.from(quantizeRTN(w, 2, 4).values.data), [-1, 0, 0, 2]); // round(.5) = 0 (half to even)
 * assert.deepEqual(Array.from(quantizeRTN(w, 4, 4).values.data, (v) => +v.toFixed(6)), [-1, -0.2, 0.4, 2]);
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

/** Quantises the three matrices of an expert (biases stay float32). Internal. */
export function quantizeExpert(
  e: SwiGLUExpert,
  bits: number,
  groupSize = 128,
): { expert: SwiGLUExpert; bytes: number } {
  const q = [e.w1, e.w2, e.w3].map((w) => quantizeRTN(w, bits, groupSize));
  const { b1, b2, b3 } = e;
  return {
    expert: {
      w1: q[0].values,
      w2: q[1].values,
      w3: q[2].values,
      ...(b1 ? { b1 } : {}),
      ...(b2 ? { b2 } : {}),
      ...(b3 ? { b3 } : {}),
    },
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
 * import { allocateBits } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const cost = [[5, 2, 1], [4, 3, 2], [1, .5, .4]]; // bits 1, 2, 3 of three experts
 * assert.deepEqual(allocateBits(cost, 6).bits, [2, 3, 1]); // ties with (3, 2, 1) at 5: lexicographic
 * assert.deepEqual(allocateBits(cost, 7).bits, [2, 3, 2]);
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
 * Options of {@link pmqQuantize}.
 *
 * @example
 * ```ts
 * import { type PmqOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: PmqOptions = { budgetBits: 20, groupSize: 64, numBatches: 4 };
 * assert.equal(o.budgetBits, 20);
 * ```
 */
export interface PmqOptions {
  /** Total bits over the routable experts (`Σ b_e ≤ budgetBits`). */
  readonly budgetBits: number;
  /** RTN group size (columns). Default 128. */
  readonly groupSize?: number;
  /** Exponent α of frequency and loss. Default 1. */
  readonly alpha?: number;
  /** Exponent β of the soft count. Default 1.5. */
  readonly beta?: number;
  /** NAEE loss partition: contiguous token batches (as in {@link pruneExperts}). Default 1. */
  readonly numBatches?: number;
  /** Bit widths that must each be used at least once. Default [3, 2]. */
  readonly require?: readonly number[];
}

/**
 * MC-MoE PMQ (precision_solver): for each routable expert e and b ∈ {1, 2, 3}, `q_e(b)` = the NAEE loss of
 * the layer when only expert e is RTN-quantised at b bits; cost `φ_e^α·w_e^β·q_e(b)^α` (φ the calibration
 * frequency, w the soft count, both normalised; an unused expert costs 0); then {@link allocateBits}.
 * Returns the mixed-precision layer, the bits, the costs and the losses `[E][3]` (bits 1, 2, 3).
 *
 * @example
 * ```ts
 * import { calibrate, matrix, moeLayer, pmqQuantize, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * const x = matrix.randn(64, 8);
 * const q = pmqQuantize(layer, x, calibrate(layer, x), { budgetBits: 9, groupSize: 8 });
 * assert.ok(q.bits.reduce((a, b) => a + b) <= 9);
 * assert.ok(q.losses.every(([l1, , l3]) => l1 >= l3)); // fewer bits, larger loss
 * ```
 */
export function pmqQuantize(
  layer: MoeLayer,
  x: Mat,
  stats: CalibrationStats,
  options: PmqOptions,
): CompressedLayer & { layer: MoeLayer; bits: number[]; costs: number[][]; losses: number[][] } {
  const g = options.groupSize ?? 128, alpha = options.alpha ?? 1, beta = options.beta ?? 1.5;
  const nb = options.numBatches ?? 1, E = layer.router.experts, live = liveExperts(layer);
  if (stats.counts.length !== E) {
    throw new MoekitError(`calibration stats cover ${stats.counts.length} experts, the layer ${E}`);
  }
  if (x.rows === 0) throw new MoekitError("pmqQuantize: the calibration set is empty (0 tokens)");
  if (!Number.isInteger(nb) || nb < 1) throw new OptionError("numBatches", nb, "must be an integer ≥ 1");
  const y = layer.forward(x).output;
  const totalCount = stats.counts.reduce((a, b) => a + b, 0),
    totalW = stats.weightSum.reduce((a, b) => a + b, 0);
  const quantized = live.map((e) => [1, 2, 3].map((b) => quantizeExpert(layer.experts[e], b, g)));
  const losses: number[][] = [], costs: number[][] = [];
  live.forEach((e, i) => {
    const phi = totalCount ? stats.counts[e] / totalCount : 0, w = totalW ? stats.weightSum[e] / totalW : 0;
    const l = [0, 1, 2].map((bi) => {
      const experts = layer.experts.map((ex, j) => (j === e ? quantized[i][bi].expert : ex));
      return naeeLoss(y, withExperts(layer, experts).forward(x).output, nb);
    });
    losses.push(l);
    costs.push(l.map((q) => (phi === 0 ? 0 : phi ** alpha * w ** beta * q ** alpha)));
  });
  const { bits } = allocateBits(costs, options.budgetBits, options.require);
  const experts = layer.experts.slice();
  live.forEach((e, i) => (experts[e] = quantized[i][bits[i] - 1].expert));
  const out = withExperts(layer, experts);
  const bytes = denseExtrasBytes(layer, live.map((e) => layer.experts[e])) +
    bits.reduce((s, b, i) => s + quantized[i][b - 1].bytes, 0);
  return {
    method: `pmq ${options.budgetBits} bits`,
    layer: out,
    bits,
    costs,
    losses,
    params: layerParams(layer),
    bytes,
    forward: forwardOf(out),
  };
}

/**
 * The whole layer RTN-quantised at one bit width (the routed experts; router, biases and shared experts stay
 * float32), as a compressed layer.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, rtnLayer, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * // per expert, three 8×16 / 16×8 matrices: 4 bits × 128 entries = 64 bytes + (fp16 scale + zero) per group of 8
 * assert.equal(rtnLayer(layer, 4, 8).bytes, 4 * 8 * 4 + 4 * 3 * (64 + 16 * 4));
 * ```
 */
export function rtnLayer(
  layer: MoeLayer,
  bits: number,
  groupSize = 128,
): CompressedLayer & { layer: MoeLayer } {
  const groups = distinctExperts(layer), experts = layer.experts.slice();
  let bytes = denseExtrasBytes(layer, groups.map((g) => g.expert));
  for (const { expert, slots } of groups) {
    const q = quantizeExpert(expert, bits, groupSize);
    bytes += q.bytes;
    for (const e of slots) experts[e] = q.expert;
  }
  const out = withExperts(layer, experts);
  return {
    method: `rtn ${bits}-bit g${groupSize}`,
    layer: out,
    params: layerParams(layer),
    bytes,
    forward: forwardOf(out),
  };
}
