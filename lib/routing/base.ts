/**
 * BASE layers (Lewis et al. 2021, routing.md §7): an exact balanced assignment in training, greedy
 * argmax at inference.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { sigmoid } from "../core/numeric.ts";
import { munkres } from "../deps.ts";
import { type Backend, linearGate } from "./gate.ts";
import { topKIndices } from "./select.ts";
import { checkTokens } from "./checks.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";

/**
 * Balanced assignment: each of E experts gets exactly S/E of the S tokens, maximising `Σ_t score[t, a(t)]`,
 * solved exactly by the Hungarian algorithm (npm `munkres`) over duplicated expert columns, O(S³).
 * Returns the expert of each token.
 *
 * @example
 * ```ts
 * import { balancedAssignment, matrix } from "@moekit/moekit";
 * const s = matrix.fromArrays([[3, 1], [2, 0], [1, 2], [0, 5]]);
 * console.log(Array.from(balancedAssignment(s))); // [0, 0, 1, 1]
 * ```
 */
export function balancedAssignment(scores: Mat): Int32Array {
  const S = scores.rows, E = scores.cols;
  if (S % E !== 0) throw new OptionError("tokens", S, `a balanced assignment needs T divisible by E = ${E}`);
  const per = S / E;
  const cost: number[][] = [];
  for (let t = 0; t < S; t++) {
    const row = new Array<number>(S);
    for (let col = 0; col < S; col++) row[col] = -scores.data[t * E + Math.floor(col / per)];
    cost.push(row);
  }
  const out = new Int32Array(S);
  for (const [t, col] of munkres(cost)) out[t] = Math.floor(col / per);
  return out;
}

/**
 * BASE router: in training, tokens are split into groups of `groupSize` (default all, at most 2048 — the
 * exact solver is O(T³)) and each group is assigned with {@link balancedAssignment}; at inference, greedy
 * argmax. Weight `sigmoid(x·w_a)` (the layer output is `x + sigmoid(x·w_a)·f_a(x)`).
 *
 * @example
 * ```ts
 * import { baseRouter, loadMetrics, matrix } from "@moekit/moekit";
 * const router = baseRouter({ weight: matrix.randn(4, 8, { seed: 1 }) });
 * const r = router.route(matrix.randn(16, 8, { seed: 2 }), { training: true });
 * console.log(Array.from(loadMetrics(r).counts)); // [4, 4, 4, 4]
 * ```
 */
export function baseRouter(
  options: {
    readonly weight: Mat;
    readonly backend?: Backend | "auto";
    readonly training?: boolean;
    readonly groupSize?: number;
  },
): Router {
  const gate = linearGate({ weight: options.weight, backend: options.backend });
  const E = gate.experts;
  return {
    name: "base",
    experts: E,
    k: 1,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      checkTokens(x, gate.inputDim);
      const T = x.rows, training = opts.training ?? options.training ?? false;
      const logits = gate.logits(x, matrix.zeros(T, E));
      const indices = new Int32Array(T);
      if (training) {
        const S = options.groupSize ?? T;
        if (!Number.isInteger(S) || S < 1 || T % S !== 0 || S % E !== 0 || S > 2048) {
          throw new OptionError(
            "groupSize",
            S,
            `BASE training needs groups of at most 2048 tokens that divide T = ${T} and are divisible by E = ${E}`,
          );
        }
        for (let g = 0; g < T; g += S) indices.set(balancedAssignment(matrix.rowSlice(logits, g, g + S)), g);
      } else {
        for (let t = 0; t < T; t++) topKIndices(logits.data, t * E, E, 1, indices, t);
      }
      const weights = new Float32Array(T);
      for (let t = 0; t < T; t++) weights[t] = sigmoid(logits.data[t * E + indices[t]]);
      return {
        tokens: T,
        experts: E,
        k: 1,
        indices,
        weights,
        scores: weights.slice(),
        scoreFunction: "sigmoid",
        ...(opts.returnLogits ? { logits } : {}),
      };
    },
  };
}
