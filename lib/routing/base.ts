/**
 * BASE layers (Lewis et al. 2021; docs/routing.md, "BASE layers"): an exact balanced assignment in
 * training, greedy argmax at inference. An all-token selector composed with the linear gate.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { sigmoid } from "../core/numeric.ts";
import { munkres } from "../deps.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import { type Selector, topKIndices } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { Router } from "./result.ts";

/**
 * Balanced assignment: each of E experts gets exactly S/E of the S tokens, maximising `Σ_t score[t, a(t)]`,
 * solved exactly by the Hungarian algorithm (npm `munkres`) over duplicated expert columns, O(S³).
 * Returns the expert of each token.
 *
 * @example
 * ```ts
 * import { balancedAssignment, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const s = matrix.fromArrays([[3, 1], [2, 0], [1, 2], [0, 5]]);
 * assert.deepEqual(Array.from(balancedAssignment(s)), [0, 0, 1, 1]);
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
 * The BASE selector (all tokens): in training, tokens are split into groups of `groupSize` (default all,
 * at most 2048 — the exact solver is O(T³)) and each group is assigned with {@link balancedAssignment};
 * at inference, greedy argmax. Weight and score `sigmoid(logit)`.
 *
 * @example
 * ```ts
 * import { baseSelect } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(baseSelect({}).needsAllTokens, true);
 * ```
 */
export function baseSelect(options: { readonly groupSize?: number }): Selector {
  return {
    name: "base",
    k: 1,
    scoreFunction: "sigmoid",
    needsAllTokens: true,
    validate: () => {},
    select(logits, _tokenOffset, out, ctx) {
      const T = logits.rows, E = logits.cols;
      if (ctx.training) {
        const S = options.groupSize ?? T;
        if (!Number.isInteger(S) || S < 1 || T % S !== 0 || S % E !== 0 || S > 2048) {
          throw new OptionError(
            "groupSize",
            S,
            `BASE training needs groups of at most 2048 tokens that divide T = ${T} and are divisible by E = ${E}`,
          );
        }
        if (logits.data.includes(-Infinity)) {
          throw new OptionError(
            "expertMask",
            "with removed experts",
            "BASE training balances over all E experts; route with the full set or at inference",
          );
        }
        for (let g = 0; g < T; g += S) {
          out.indices.set(balancedAssignment(matrix.rowSlice(logits, g, g + S)), g);
        }
      } else {
        for (let t = 0; t < T; t++) topKIndices(logits.data, t * E, E, 1, out.indices, t);
      }
      for (let t = 0; t < T; t++) {
        out.weights[t] = out.scores[t] = sigmoid(logits.data[t * E + out.indices[t]]);
      }
    },
  };
}

/**
 * BASE router: balanced assignment in training, greedy argmax at inference; weight `sigmoid(x·w_a)` (the
 * layer output is `x + sigmoid(x·w_a)·f_a(x)`).
 *
 * @example
 * ```ts
 * import { baseRouter, loadMetrics, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const router = baseRouter({ weight: matrix.randn(4, 8, { seed: 1 }) });
 * const r = router.route(matrix.randn(16, 8, { seed: 2 }), { training: true });
 * assert.deepEqual(Array.from(loadMetrics(r).counts), [4, 4, 4, 4]);
 * ```
 */
export function baseRouter(
  options: {
    readonly weight: Mat;
    readonly backend?: BackendChoice;
    readonly training?: boolean;
    readonly groupSize?: number;
  },
): Router {
  return composeRouter({
    name: "base",
    gate: linearGate({ weight: options.weight, backend: options.backend }),
    selector: baseSelect(options),
    training: options.training,
  });
}
