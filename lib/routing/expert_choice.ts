/**
 * Expert-choice routing (Zhou et al. 2022, routing.md §7): each expert takes its top-C tokens.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { roundHalfEven, softmaxInto } from "../core/numeric.ts";
import { type Backend, linearGate } from "./gate.ts";
import { scoreMatrix } from "./compose.ts";
import { checkTokens } from "./checks.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";

/**
 * Options of {@link expertChoiceRouter}.
 *
 * @example
 * ```ts
 * import { type ExpertChoiceRouterOptions, matrix } from "@moekit/moekit";
 * const o: ExpertChoiceRouterOptions = { weight: matrix.zeros(4, 8), capacityFactor: 2 };
 * console.log(o.capacityFactor); // 2
 * ```
 */
export interface ExpertChoiceRouterOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: Backend | "auto";
  /** c in `C = round_half_even(c·T/E)`. Default 2. */
  readonly capacityFactor?: number;
  /** Explicit tokens per expert (overrides the factor; capped at T). */
  readonly capacity?: number;
}

/**
 * Expert choice: `S = softmax_E(X·Wᵀ)`; expert e takes the C tokens with the largest `S[:,e]` (ties →
 * lower token), combine weight `S[t,e]`. A token may get 0..E experts, so the result has `k = E` choices
 * per token, best first, padded with index −1. `extras.expertTokens` is `[E·C]`, each expert's tokens.
 *
 * @example
 * ```ts
 * import { expertChoiceRouter, loadMetrics, matrix } from "@moekit/moekit";
 * const S = [[.7, .1, .1, .1], [.1, .5, .3, .1], [.4, .2, .2, .2], [.25, .25, .25, .25]];
 * const r = expertChoiceRouter({ weight: matrix.identity(4), capacity: 1 })
 *   .route(matrix.fromArrays(S.map((row) => row.map(Math.log))));
 * console.log(Array.from(r.extras!.expertTokens as Int32Array)); // [0, 1, 1, 3]
 * console.log(Array.from(loadMetrics(r).counts)); // [1, 1, 1, 1]
 * ```
 */
export function expertChoiceRouter(options: ExpertChoiceRouterOptions): Router {
  const gate = linearGate({ weight: options.weight, backend: options.backend });
  const E = gate.experts, c = options.capacityFactor ?? 2;
  if (!(c >= 0) || !Number.isFinite(c)) {
    throw new OptionError("capacityFactor", c, "must be a finite number ≥ 0");
  }
  const fixed = options.capacity;
  if (fixed !== undefined && (!Number.isInteger(fixed) || fixed < 0)) {
    throw new OptionError("capacity", fixed, "must be an integer ≥ 0");
  }
  return {
    name: "expert-choice",
    experts: E,
    k: E,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      checkTokens(x, gate.inputDim);
      const T = x.rows, C = Math.min(T, fixed ?? roundHalfEven((c * T) / E));
      const logits = gate.logits(x, matrix.zeros(T, E));
      const S = new Float64Array(T * E);
      for (let t = 0; t < T; t++) softmaxInto(logits.data, t * E, E, S, t * E);
      const expertTokens = new Int32Array(E * C);
      const chosen = new Uint8Array(T * E);
      const order = Array.from({ length: T }, (_, t) => t);
      for (let e = 0; e < E; e++) {
        order.sort((a, b) => S[b * E + e] - S[a * E + e] || a - b);
        for (let j = 0; j < C; j++) {
          expertTokens[e * C + j] = order[j];
          chosen[order[j] * E + e] = 1;
        }
      }
      const indices = new Int32Array(T * E).fill(-1), weights = new Float32Array(T * E);
      const scores = new Float32Array(T * E), experts: number[] = [];
      for (let t = 0; t < T; t++) {
        experts.length = 0;
        for (let e = 0; e < E; e++) if (chosen[t * E + e]) experts.push(e);
        experts.sort((a, b) => S[t * E + b] - S[t * E + a] || a - b);
        experts.forEach((e, j) => {
          indices[t * E + j] = e;
          weights[t * E + j] = scores[t * E + j] = S[t * E + e];
        });
      }
      return {
        tokens: T,
        experts: E,
        k: E,
        indices,
        weights,
        scores,
        capacity: C,
        scoreFunction: "softmax",
        extras: { expertTokens },
        ...(opts.returnLogits ? { logits } : {}),
        ...(opts.returnProbs ? { probs: scoreMatrix(logits, "softmax") } : {}),
      };
    },
  };
}
