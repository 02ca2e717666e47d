/**
 * Expert-choice routing (Zhou et al. 2022; docs/routing.md, "Expert choice"): each expert takes its
 * top-C tokens. An all-token selector composed with the linear gate.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { roundHalfEven, softmaxInto } from "../core/numeric.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import type { Selector } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { Router } from "./result.ts";

/**
 * Options of {@link expertChoiceRouter}.
 *
 * @example
 * ```ts
 * import { type ExpertChoiceRouterOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: ExpertChoiceRouterOptions = { weight: matrix.zeros(4, 8), capacityFactor: 2 };
 * assert.equal(o.capacityFactor, 2);
 * ```
 */
export interface ExpertChoiceRouterOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default), `"native"`, `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** c in `C = round_half_even(c·T/E)`. Default 2. */
  readonly capacityFactor?: number;
  /** Explicit tokens per expert (overrides the factor; capped at T). */
  readonly capacity?: number;
}

/**
 * The expert-choice selector (all tokens): `S = softmax_E(logits)`; every live expert takes the C tokens
 * with the largest `S[:,e]` (ties → lower token), combine weight `S[t,e]`. The result has `k = E` choices
 * per token, best first, padded with −1; `extras.expertTokens [E·C]` lists each expert's tokens (−1 for a
 * masked expert).
 *
 * @example
 * ```ts
 * import { expertChoiceSelect } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const sel = expertChoiceSelect({ experts: 4, capacity: 1 });
 * assert.equal(sel.capacityOf!(10, 4), 1);
 * ```
 */
export function expertChoiceSelect(
  options: { readonly experts: number; readonly capacityFactor?: number; readonly capacity?: number },
): Selector {
  const E = options.experts, c = options.capacityFactor ?? 2, fixed = options.capacity;
  if (!(c >= 0) || !Number.isFinite(c)) {
    throw new OptionError("capacityFactor", c, "must be a finite number ≥ 0");
  }
  if (fixed !== undefined && (!Number.isInteger(fixed) || fixed < 0)) {
    throw new OptionError("capacity", fixed, "must be an integer ≥ 0");
  }
  const capacityOf = (T: number, experts: number) => Math.min(T, fixed ?? roundHalfEven((c * T) / experts));
  return {
    name: "expert-choice",
    k: E,
    scoreFunction: "softmax",
    needsAllTokens: true,
    minLiveExperts: 1,
    capacityOf,
    validate(experts) {
      if (experts !== E) throw new OptionError("experts", E, `the gate has ${experts} experts`);
    },
    select(logits, _tokenOffset, out) {
      const T = logits.rows, C = capacityOf(T, E), L = logits.data;
      const S = new Float64Array(T * E);
      for (let t = 0; t < T; t++) softmaxInto(L, t * E, E, S, t * E);
      const expertTokens = new Int32Array(E * C).fill(-1);
      const chosen = new Uint8Array(T * E);
      const order = Array.from({ length: T }, (_, t) => t);
      for (let e = 0; e < E; e++) {
        if (T > 0 && L[e] === -Infinity) continue; // a masked expert takes no tokens
        order.sort((a, b) => S[b * E + e] - S[a * E + e] || a - b);
        for (let j = 0; j < C; j++) {
          expertTokens[e * C + j] = order[j];
          chosen[order[j] * E + e] = 1;
        }
      }
      out.indices.fill(-1);
      const experts: number[] = [];
      for (let t = 0; t < T; t++) {
        experts.length = 0;
        for (let e = 0; e < E; e++) if (chosen[t * E + e]) experts.push(e);
        experts.sort((a, b) => S[t * E + b] - S[t * E + a] || a - b);
        experts.forEach((e, j) => {
          out.indices[t * E + j] = e;
          out.weights[t * E + j] = out.scores[t * E + j] = S[t * E + e];
        });
      }
      return { expertTokens };
    },
  };
}

/**
 * Expert choice: `S = softmax_E(X·Wᵀ)`; expert e takes the C tokens with the largest `S[:,e]` (ties →
 * lower token), combine weight `S[t,e]`. A token may get 0..E experts, so the result has `k = E` choices
 * per token, best first, padded with index −1. `extras.expertTokens` is `[E·C]`, each expert's tokens.
 *
 * @example
 * ```ts
 * import { expertChoiceRouter, loadMetrics, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const S = [[.7, .1, .1, .1], [.1, .5, .3, .1], [.4, .2, .2, .2], [.25, .25, .25, .25]];
 * const r = expertChoiceRouter({ weight: matrix.identity(4), capacity: 1 })
 *   .route(matrix.fromArrays(S.map((row) => row.map(Math.log))));
 * assert.deepEqual(Array.from(r.extras!.expertTokens as Int32Array), [0, 1, 1, 3]);
 * assert.deepEqual(Array.from(loadMetrics(r).counts), [1, 1, 1, 1]);
 * ```
 */
export function expertChoiceRouter(options: ExpertChoiceRouterOptions): Router {
  const gate = linearGate({ weight: options.weight, backend: options.backend });
  return composeRouter({
    name: "expert-choice",
    gate,
    selector: expertChoiceSelect({ ...options, experts: gate.experts }),
  });
}
