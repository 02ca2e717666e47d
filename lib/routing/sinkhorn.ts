/**
 * Sinkhorn / S-BASE routing (Megatron `sinkhorn`; docs/routing.md, "Sinkhorn"): balanced selection by Sinkhorn-Knopp
 * scaling in training, plain top-k at inference.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { sigmoid, softmaxInto } from "../core/numeric.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import { type Selector, topKIndices } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { Router } from "./result.ts";
import { checkK } from "./checks.ts";

/** The stopping rule's options, checked: `tol` finite > 0 (default 1e-4), `maxIterations` integer ≥ 1 (10000). */
function sinkhornStop(options: { readonly tol?: number; readonly maxIterations?: number }) {
  const tol = options.tol ?? 1e-4, maxIt = options.maxIterations ?? 10000;
  if (!(tol > 0) || !Number.isFinite(tol)) throw new OptionError("tol", tol, "must be a finite number > 0");
  if (!Number.isInteger(maxIt) || maxIt < 1) {
    throw new OptionError("maxIterations", maxIt, "must be an integer ≥ 1 (default 10000)");
  }
  return { tol, maxIt };
}

/**
 * Sinkhorn-Knopp scaling of `exp(logits)` exactly as Megatron: `d0 = (1/T)/(c·d1 + 1e-8)`,
 * `d1 = (1/E)/(cᵀd0 + 1e-8)` until `mean|d1_prev − d1| ≤ tol`. Returns the scaled matrix `d1·c·d0` and
 * the iteration count; stops with `converged: false` after `maxIterations`.
 *
 * @example
 * ```ts
 * import { matrix, sinkhorn } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const { iterations, converged } = sinkhorn(matrix.fromArrays([[.2, 0], [.1, 0], [.3, 0], [.4, 0]]));
 * assert.ok(converged);
 * assert.ok(iterations > 0);
 * ```
 */
export function sinkhorn(
  logits: Mat,
  options: { readonly tol?: number; readonly maxIterations?: number } = {},
): { scaled: Float64Array; iterations: number; converged: boolean } {
  const T = logits.rows, E = logits.cols, { tol, maxIt } = sinkhornStop(options);
  const c = new Float64Array(T * E);
  for (let i = 0; i < c.length; i++) {
    c[i] = Math.exp(logits.data[i]);
    if (!Number.isFinite(c[i])) {
      throw new MoekitError(
        `sinkhorn: exp(logit) overflows at row ${Math.floor(i / E)}, col ${i % E} (logit ${logits.data[i]})`,
      );
    }
  }
  const d0 = new Float64Array(T).fill(1),
    d1 = new Float64Array(E).fill(1),
    d1Old = new Float64Array(E).fill(1);
  let error = Infinity, it = 0;
  while (error > tol && it < maxIt) {
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let e = 0; e < E; e++) s += d1[e] * c[t * E + e];
      d0[t] = 1 / T / (s + 1e-8);
    }
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let t = 0; t < T; t++) s += d0[t] * c[t * E + e];
      d1[e] = 1 / E / (s + 1e-8);
    }
    error = 0;
    for (let e = 0; e < E; e++) error += Math.abs(d1Old[e] - d1[e]) / E;
    d1Old.set(d1);
    it++;
  }
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) c[t * E + e] *= d1[e] * d0[t];
  return { scaled: c, iterations: it, converged: error <= tol };
}

/**
 * The Sinkhorn selector: in training, top-k of the Sinkhorn-balanced matrix; at inference, top-k of the
 * activation. Weights are `sigmoid(logit)` (k = 1) or `softmax(logits)` (k > 1) of the chosen experts.
 *
 * @example
 * ```ts
 * import { sinkhornSelect } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.ok(sinkhornSelect({ k: 1 }).needsAllTokens);
 * ```
 */
export function sinkhornSelect(
  options: { readonly k: number; readonly tol?: number; readonly maxIterations?: number },
): Selector {
  const k = options.k;
  sinkhornStop(options);
  return {
    name: "sinkhorn",
    k,
    scoreFunction: k === 1 ? "sigmoid" : "softmax",
    needsAllTokens: true,
    validate: (E) => checkK(k, E),
    select(logits, tokenOffset, out, ctx) {
      const T = logits.rows, E = logits.cols;
      const act = new Float64Array(T * E);
      for (let t = 0; t < T; t++) {
        if (k === 1) { for (let e = 0; e < E; e++) act[t * E + e] = sigmoid(logits.data[t * E + e]); }
        else softmaxInto(logits.data, t * E, E, act, t * E);
      }
      let rank: Float64Array = act, extras: Record<string, unknown> = {};
      if (ctx.training) {
        const s = sinkhorn(logits, options);
        rank = s.scaled;
        extras = { iterations: s.iterations, converged: s.converged };
      }
      for (let t = 0; t < T; t++) {
        const o = (tokenOffset + t) * k;
        topKIndices(rank, t * E, E, k, out.indices, o);
        for (let j = 0; j < k; j++) out.weights[o + j] = out.scores[o + j] = act[t * E + out.indices[o + j]];
      }
      return extras;
    },
  };
}

/**
 * Sinkhorn router (S-BASE). Balanced in training mode; `route(x, { training: true })` or
 * `{ training: true }` at construction.
 *
 * @example
 * ```ts
 * import { matrix, sinkhornRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[.2], [.1], [.3], [.4]]);
 * const router = sinkhornRouter({ weight: matrix.fromArrays([[1], [0]]), k: 1 });
 * assert.deepEqual(Array.from(router.route(x, { training: true }).indices), [1, 1, 0, 0]);
 * assert.deepEqual(Array.from(router.route(x).indices), [0, 0, 0, 0]);
 * ```
 */
export function sinkhornRouter(options: {
  readonly weight: Mat;
  readonly backend?: BackendChoice;
  readonly k?: number;
  readonly training?: boolean;
  readonly tol?: number;
  readonly maxIterations?: number;
}): Router {
  return composeRouter({
    name: "sinkhorn",
    gate: linearGate({ weight: options.weight, backend: options.backend }),
    selector: sinkhornSelect({ k: options.k ?? 1, tol: options.tol, maxIterations: options.maxIterations }),
    training: options.training,
  });
}
