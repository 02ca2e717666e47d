/**
 * MC-SMoE expert merging (docs/compression.md, "Merging experts"): router-logit similarity, dominant
 * experts by frequency, grouping, neuron-permutation alignment by linear assignment, and the
 * frequency-weighted merge. The router keeps its E slots; members point at their group's merged expert.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { linearAssignment } from "../linalg/assignment.ts";
import { matmul, matmulAdd } from "../linalg/factor.ts";
import type { MoeLayer, SwiGLUExpert } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import { type CompressedLayer, forwardOf, layerParams, withExperts } from "./compressed.ts";

/**
 * Pairwise expert similarity from router logits: `(cos(L[:,i], L[:,j]) + 1)/2` (cosine denominator clamped
 * at 1e-12), diagonal 1.
 *
 * @example
 * ```ts
 * import { logitSimilarity, matrix } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const s = logitSimilarity(matrix.fromArrays([[1, 1, -1], [2, 2, -2]]));
 * assert.deepEqual([s[0][1], s[0][2]].map((v) => +v.toFixed(6)), [1, 0]); // parallel, opposite columns
 * ```
 */
export function logitSimilarity(logits: Mat): number[][] {
  const E = logits.cols, T = logits.rows;
  // a removed expert's logits are −∞: it counts as a zero column (similarity ½ with every other expert)
  const col = (e: number) =>
    Array.from(
      { length: T },
      (_, t) => (Number.isFinite(logits.data[t * E + e]) ? logits.data[t * E + e] : 0),
    );
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
 * import { groupExperts } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const sim = [[1, .2, .6, .9], [.2, 1, .8, .3], [.6, .8, 1, .5], [.9, .3, .5, 1]];
 * assert.deepEqual(groupExperts([.4, .1, .3, .2], sim, 2), { dominants: [0, 2], labels: [0, 1, 1, 0] });
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
 * Permutes an expert's hidden neurons: `(W1[perm,:], W2[:,perm], W3[perm,:])`, and b1, b3 like the rows
 * of W1, W3 — the same function.
 *
 * @example
 * ```ts
 * import { matrix, permuteExpert, randomExperts, swigluForward } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const [e] = randomExperts({ experts: 1, dim: 4, hidden: 3, seed: 1 }), x = matrix.randn(2, 4);
 * const y = swigluForward(e, x).data, yp = swigluForward(permuteExpert(e, [2, 0, 1]), x).data;
 * assert.ok(yp.every((v, i) => Math.abs(v - y[i]) < 1e-6));
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
  const pick = (b: Float32Array) => Float32Array.from(perm, (p) => b[p]);
  return {
    w1: rows(e.w1),
    w3: rows(e.w3),
    w2,
    ...(e.b1 ? { b1: pick(e.b1) } : {}),
    ...(e.b3 ? { b3: pick(e.b3) } : {}),
    ...(e.b2 ? { b2: e.b2 } : {}),
  };
}

/**
 * The permutation aligning `target`'s neurons to `ref` (weight matching): maximise `Σ_a C[a, perm[a]]`
 * with `C = W1_ref W1_tgtᵀ + W3_ref W3_tgtᵀ + W2_refᵀ W2_tgt`, solved exactly by linear assignment
 * (shortest augmenting paths, `linearAssignment`).
 *
 * @example
 * ```ts
 * import { alignPermutation, permuteExpert, randomExperts } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const [ref] = randomExperts({ experts: 1, dim: 6, hidden: 3, seed: 2 });
 * assert.deepEqual(alignPermutation(ref, permuteExpert(ref, [2, 0, 1])), [1, 2, 0]); // the inverse
 * ```
 */
export function alignPermutation(ref: SwiGLUExpert, target: SwiGLUExpert): number[] {
  const f = ref.w1.rows, d = ref.w1.cols;
  if (target.w1.rows !== f || target.w1.cols !== d) {
    throw new MoekitError(
      `alignPermutation: experts of shapes ${f}×${d} and ${target.w1.rows}×${target.w1.cols}`,
    );
  }
  // three products accumulated into one f×f buffer (native: sgemm with β = 1, no temporaries)
  const c = matmul(ref.w1, target.w1, { transB: true });
  matmulAdd(c, ref.w3, target.w3, { transB: true });
  matmulAdd(c, ref.w2, target.w2, { transA: true });
  return Array.from(linearAssignment(c, { maximize: true }));
}

/**
 * Weighted average of experts (weights normalised to sum 1; uniform when they sum to 0), matrix by matrix
 * and bias by bias, in float64. Internal.
 */
export function weightedExpert(experts: readonly SwiGLUExpert[], weights: readonly number[]): SwiGLUExpert {
  const total = weights.reduce((a, b) => a + b, 0),
    w = total > 0 ? weights.map((v) => v / total) : weights.map(() => 1 / weights.length);
  const avg = (pick: (e: SwiGLUExpert) => Float32Array) => {
    const acc = new Float64Array(pick(experts[0]).length);
    experts.forEach((e, i) => {
      const x = pick(e), wi = w[i];
      for (let j = 0; j < acc.length; j++) acc[j] += wi * x[j];
    });
    return Float32Array.from(acc);
  };
  const mat = (key: "w1" | "w2" | "w3") => ({
    rows: experts[0][key].rows,
    cols: experts[0][key].cols,
    data: avg((e) => e[key].data),
  });
  const bias = (key: "b1" | "b2" | "b3") => {
    const n = experts.filter((e) => e[key]).length;
    if (n === 0) return {};
    if (n !== experts.length) {
      throw new MoekitError(
        `merging experts: ${n} of ${experts.length} experts have a ${key} bias (all or none)`,
      );
    }
    return { [key]: avg((e) => e[key]!) };
  };
  return { w1: mat("w1"), w2: mat("w2"), w3: mat("w3"), ...bias("b1"), ...bias("b2"), ...bias("b3") };
}

/**
 * Options of {@link mergeExperts}.
 *
 * @example
 * ```ts
 * import { type MergeExpertsOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: MergeExpertsOptions = { numGroups: 4, align: false };
 * assert.equal(o.numGroups, 4);
 * ```
 */
export interface MergeExpertsOptions {
  /** Merged experts G (groups). */
  readonly numGroups: number;
  /** Align every member's neurons to its group's dominant before averaging. Default true. */
  readonly align?: boolean;
  /** Expert similarity `[E][E]`. Default: {@link logitSimilarity} of the calibration logits. */
  readonly similarity?: number[][];
}

/**
 * MC-SMoE merge of a layer into `numGroups` experts: group by router-logit similarity around the most used
 * experts, align each member to its dominant, average with the calibration frequencies. The router is
 * unchanged: every member's slot points at its group's merged expert.
 *
 * @example
 * ```ts
 * import { calibrate, matrix, mergeExperts, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 8, dim: 16, hidden: 8 }),
 * });
 * const merged = mergeExperts(layer, calibrate(layer, matrix.randn(200, 16)), { numGroups: 4 });
 * assert.deepEqual([new Set(merged.layer.experts).size, merged.labels.length], [4, 8]);
 * ```
 */
export function mergeExperts(
  layer: MoeLayer,
  stats: CalibrationStats,
  options: MergeExpertsOptions,
): CompressedLayer & { layer: MoeLayer; labels: number[]; dominants: number[]; groupWeights: number[][] } {
  const E = layer.router.experts;
  if (stats.freq.length !== E) {
    throw new MoekitError(`calibration stats cover ${stats.freq.length} experts, the layer ${E}`);
  }
  const sim = options.similarity ?? logitSimilarity(stats.logits);
  const { dominants, labels } = groupExperts(stats.freq, sim, options.numGroups);
  const merged: SwiGLUExpert[] = [], groupWeights: number[][] = [];
  dominants.forEach((dom, g) => {
    const members = labels.map((l, e) => (l === g ? e : -1)).filter((e) => e >= 0);
    const aligned = members.map((e) =>
      options.align === false || e === dom
        ? layer.experts[e]
        : permuteExpert(layer.experts[e], alignPermutation(layer.experts[dom], layer.experts[e]))
    );
    const w = members.map((e) => stats.freq[e]);
    merged.push(weightedExpert(aligned, w));
    const total = w.reduce((a, b) => a + b, 0);
    groupWeights.push(w.map((v) => (total > 0 ? v / total : 1 / w.length)));
  });
  const out = withExperts(layer, labels.map((g) => merged[g]));
  const params = layerParams(out);
  return {
    method: `mc-smoe ${options.numGroups}/${E}`,
    layer: out,
    labels,
    dominants,
    groupWeights,
    params,
    bytes: params * 4,
    forward: forwardOf(out),
  };
}
