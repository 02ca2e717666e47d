/**
 * MC-SMoE expert merging (compression.md §4): router-logit similarity, dominant experts by frequency,
 * grouping, neuron-permutation alignment by linear assignment (Hungarian, npm `munkres`), and the
 * frequency-weighted merge. The router keeps its E slots; members point at their group's merged expert.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { munkres } from "../deps.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import {
  checkLayer,
  type CompressedLayer,
  type ExpertLayer,
  expertParams,
  forwardWithExperts,
} from "./layer.ts";

/**
 * Pairwise expert similarity from router logits: `(cos(L[:,i], L[:,j]) + 1)/2`, diagonal 1.
 *
 * @example
 * ```ts
 * import { logitSimilarity, matrix } from "@moekit/moekit";
 * const s = logitSimilarity(matrix.fromArrays([[1, 1, -1], [2, 2, -2]]));
 * console.log(s[0][1].toFixed(3), s[0][2].toFixed(3)); // 1.000 0.000
 * ```
 */
export function logitSimilarity(logits: Mat): number[][] {
  const E = logits.cols, T = logits.rows;
  const col = (e: number) => Array.from({ length: T }, (_, t) => logits.data[t * E + e]);
  const cols = Array.from({ length: E }, (_, e) => col(e));
  const norms = cols.map((c) => Math.sqrt(c.reduce((s, v) => s + v * v, 0)));
  return cols.map((a, i) =>
    cols.map((b, j) => {
      if (i === j) return 1;
      const dot = a.reduce((s, v, t) => s + v * b[t], 0);
      return (dot / Math.max(norms[i] * norms[j], 1e-12) + 1) / 2;
    })
  );
}

/**
 * Groups experts: the `numGroups` most frequent are dominants (ties → lower index), labelled 0..G−1 in
 * that order; every other expert, by descending frequency, joins the most similar dominant (ties →
 * the earlier dominant).
 *
 * @example
 * ```ts
 * import { groupExperts } from "@moekit/moekit";
 * const sim = [[1, .2, .6, .9], [.2, 1, .8, .3], [.6, .8, 1, .5], [.9, .3, .5, 1]];
 * console.log(groupExperts([.4, .1, .3, .2], sim, 2)); // { dominants: [0, 2], labels: [0, 1, 1, 0] }
 * ```
 */
export function groupExperts(
  freq: ArrayLike<number>,
  sim: number[][],
  numGroups: number,
): { dominants: number[]; labels: number[] } {
  const E = freq.length;
  if (!Number.isInteger(numGroups) || numGroups < 1 || numGroups > E) {
    throw new OptionError("numGroups", numGroups, `must be in 1..E = ${E}`);
  }
  const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => freq[b] - freq[a] || a - b);
  const dominants = order.slice(0, numGroups), labels = new Array<number>(E).fill(-1);
  dominants.forEach((e, g) => (labels[e] = g));
  for (const e of order.slice(numGroups)) {
    let best = 0;
    for (let g = 1; g < numGroups; g++) if (sim[e][dominants[g]] > sim[e][dominants[best]]) best = g;
    labels[e] = best;
  }
  return { dominants, labels };
}

/**
 * Permutes an expert's hidden neurons: `(W1[perm,:], W2[:,perm], W3[perm,:])` — the same function.
 *
 * @example
 * ```ts
 * import { matrix, permuteExpert, randomExperts, swigluForward } from "@moekit/moekit";
 * const [e] = randomExperts({ experts: 1, dim: 4, hidden: 3, seed: 1 }), x = matrix.randn(2, 4);
 * const same = swigluForward(permuteExpert(e, [2, 0, 1]), x).data.every((v, i) => Math.abs(v - swigluForward(e, x).data[i]) < 1e-6);
 * console.log(same); // true
 * ```
 */
export function permuteExpert(e: SwiGLUExpert, perm: readonly number[]): SwiGLUExpert {
  const f = e.w1.rows, d = e.w1.cols;
  if (perm.length !== f || new Set(perm).size !== f || perm.some((p) => !(p >= 0 && p < f))) {
    throw new OptionError("perm", `[${perm.slice(0, 8).join(",")}…]`, `must be a permutation of 0..${f - 1}`);
  }
  const rows = (w: Mat) => {
    const out = matrix.zeros(f, d);
    perm.forEach((p, a) => out.data.set(matrix.row(w, p), a * d));
    return out;
  };
  const w2 = matrix.zeros(d, f);
  for (let i = 0; i < d; i++) perm.forEach((p, a) => (w2.data[i * f + a] = e.w2.data[i * f + p]));
  return { w1: rows(e.w1), w3: rows(e.w3), w2 };
}

/**
 * The permutation aligning `target`'s neurons to `ref` (weight matching): maximise `Σ_a C[a, perm[a]]`
 * with `C = W1_ref W1_tgtᵀ + W3_ref W3_tgtᵀ + W2_refᵀ W2_tgt`, solved exactly by the Hungarian method.
 *
 * @example
 * ```ts
 * import { alignPermutation, permuteExpert, randomExperts } from "@moekit/moekit";
 * const [ref] = randomExperts({ experts: 1, dim: 6, hidden: 3, seed: 2 });
 * console.log(alignPermutation(ref, permuteExpert(ref, [2, 0, 1]))); // [1, 2, 0]
 * ```
 */
export function alignPermutation(ref: SwiGLUExpert, target: SwiGLUExpert): number[] {
  const f = ref.w1.rows, d = ref.w1.cols;
  if (target.w1.rows !== f || target.w1.cols !== d) {
    throw new MoekitError(
      `alignPermutation: experts of shapes ${f}×${d} and ${target.w1.rows}×${target.w1.cols}`,
    );
  }
  const c = matrix.matmulT(ref.w1, target.w1), c3 = matrix.matmulT(ref.w3, target.w3);
  const c2 = matrix.matmulT(matrix.transpose(ref.w2), matrix.transpose(target.w2));
  let max = -Infinity;
  for (let i = 0; i < f * f; i++) max = Math.max(max, c.data[i] += c3.data[i] + c2.data[i]);
  const cost = Array.from(
    { length: f },
    (_, a) => Array.from({ length: f }, (_, b) => max - c.data[a * f + b]),
  );
  const perm = new Array<number>(f);
  for (const [a, b] of munkres(cost)) perm[a] = b;
  return perm;
}

/** Frequency-weighted average of experts (uniform when the weights sum to 0). */
export function weightedExpert(experts: readonly SwiGLUExpert[], weights: readonly number[]): SwiGLUExpert {
  const total = weights.reduce((a, b) => a + b, 0),
    w = total > 0 ? weights.map((v) => v / total) : weights.map(() => 1 / weights.length);
  const avg = (pick: (e: SwiGLUExpert) => Mat) => {
    const first = pick(experts[0]), acc = new Float64Array(first.data.length);
    experts.forEach((e, i) => pick(e).data.forEach((v, j) => (acc[j] += w[i] * v)));
    return { rows: first.rows, cols: first.cols, data: Float32Array.from(acc) };
  };
  return { w1: avg((e) => e.w1), w2: avg((e) => e.w2), w3: avg((e) => e.w3) };
}

/**
 * MC-SMoE merge of a layer into `numGroups` experts.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, mergeExperts, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(8, 16, { seed: 1 }), experts: randomExperts({ experts: 8, dim: 16, hidden: 8 }), k: 2 };
 * const merged = mergeExperts(layer, calibrate(layer, matrix.randn(200, 16)), { numGroups: 4 });
 * console.log(new Set(merged.layer.experts).size, merged.labels.length); // 4 8
 * ```
 */
export function mergeExperts(
  layer: ExpertLayer,
  stats: CalibrationStats,
  options: { numGroups: number; align?: boolean; similarity?: number[][] },
): CompressedLayer & { layer: ExpertLayer; labels: number[]; dominants: number[]; groupWeights: number[][] } {
  const { E } = checkLayer(layer);
  if (stats.freq.length !== E) {
    throw new MoekitError(`calibration stats cover ${stats.freq.length} experts, the layer ${E}`);
  }
  const sim = options.similarity ?? logitSimilarity(stats.logits);
  const { dominants, labels } = groupExperts(stats.freq, sim, options.numGroups);
  const merged: SwiGLUExpert[] = [], groupWeights: number[][] = [];
  dominants.forEach((dom, g) => {
    const members = labels.map((l, e) => (l === g ? e : -1)).filter((e) => e >= 0);
    const aligned = members.map((
      e,
    ) => (options.align === false || e === dom
      ? layer.experts[e]
      : permuteExpert(layer.experts[e], alignPermutation(layer.experts[dom], layer.experts[e])))
    );
    const w = members.map((e) => stats.freq[e]);
    merged.push(weightedExpert(aligned, w));
    const total = w.reduce((a, b) => a + b, 0);
    groupWeights.push(w.map((v) => (total > 0 ? v / total : 1 / w.length)));
  });
  const out: ExpertLayer = { ...layer, experts: labels.map((g) => merged[g]) };
  const params = layer.gate.data.length + merged.reduce((s, e) => s + expertParams(e), 0);
  return {
    method: `mc-smoe ${options.numGroups}/${E}`,
    layer: out,
    labels,
    dominants,
    groupWeights,
    params,
    bytes: params * 4,
    forward: (x) => forwardWithExperts(out, x),
  };
}
