/**
 * Dynamic expert skipping (NAEE, Lu et al. 2024; docs/routing.md, "Expert masks and skipping"): a
 * transform of a routing result, so it works after any router.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import type { RoutingResult } from "./result.ts";

/**
 * NAEE dynamic skipping: choice j ≥ 1 of a token is skipped (`keep` 0, weight 0) when its score is below
 * `β·score` of the token's first choice. With `renormalize` (use it when the router renormalises its
 * top-k, e.g. Mixtral) the surviving weights of the token are rescaled to their pre-skip sum, so a token
 * left with one expert gets that sum (1 for a renormalised router). β = 0 changes nothing; β > 1 skips
 * every later choice. Choices already dropped stay dropped; slots are not recomputed.
 *
 * @example
 * ```ts
 * import { matrix, skipChoices, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[Math.log(0.6), Math.log(0.1), Math.log(0.3)]]);
 * const r = topKRouter({ weight: matrix.identity(3), k: 2 }).route(x); // scores .6, .3
 * const s = skipChoices(r, { beta: 0.6, renormalize: true });
 * assert.deepEqual(Array.from(s.keep!), [1, 0]);
 * assert.ok(Math.abs(s.weights[0] - 1) < 1e-6);
 * ```
 */
export function skipChoices(
  r: RoutingResult,
  options: { readonly beta: number; readonly renormalize?: boolean },
): RoutingResult {
  const beta = options.beta;
  if (!(beta >= 0) || !Number.isFinite(beta)) {
    throw new OptionError("beta", beta, "must be a finite number ≥ 0");
  }
  const { tokens: T, k } = r;
  const keep = r.keep ? r.keep.slice() : new Uint8Array(T * k).fill(1);
  const weights = r.weights.slice(), slot = r.slot?.slice();
  for (let t = 0; t < T; t++) {
    const o = t * k;
    if (r.indices[o] < 0) continue;
    const first = r.scores[o];
    let before = 0, after = 0;
    for (let j = 0; j < k; j++) {
      if (r.indices[o + j] < 0 || !keep[o + j]) continue;
      before += weights[o + j];
      if (j >= 1 && r.scores[o + j] < beta * first) {
        keep[o + j] = 0;
        weights[o + j] = 0;
        if (slot) slot[o + j] = -1;
      } else after += weights[o + j];
    }
    if (options.renormalize && after > 0 && after !== before) {
      for (let j = 0; j < k; j++) if (keep[o + j]) weights[o + j] = (weights[o + j] / after) * before;
    }
  }
  return { ...r, keep, weights, ...(slot ? { slot } : {}) };
}
