/**
 * Noisy top-k gating (Shazeer et al. 2017; tensor2tensor `noisy_top_k_gating`; docs/routing.md,
 * "Noisy top-k"): a noisy logit source composed with a selector that also estimates the load.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { normalCdf, softplus } from "../core/numeric.ts";
import { linearGate, type LogitSource } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import { type Selector, topKIndices } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";
import { checkK } from "./checks.ts";

/**
 * Options of {@link noisyTopKRouter}.
 *
 * @example
 * ```ts
 * import { matrix, type NoisyTopKRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: NoisyTopKRouterOptions = { weight: matrix.zeros(4, 8), noiseWeight: matrix.zeros(4, 8), k: 2 };
 * assert.equal(o.k, 2);
 * ```
 */
export interface NoisyTopKRouterOptions {
  /** Clean gate `W_g [E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default), `"native"`, `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Noise gate `W_n [E,d]`. Default zeros (noise scale softplus(0) + epsilon). */
  readonly noiseWeight?: Mat;
  /** Choices per token. Default 2. */
  readonly k?: number;
  /** ε in the noise scale `softplus(X·W_nᵀ) + ε`. Default 1e-2 (tensor2tensor). */
  readonly epsilon?: number;
  /** Default training mode. Default false. */
  readonly training?: boolean;
  /** Default seed of the noise. */
  readonly seed?: number;
}

/**
 * A noisy top-k route call may take the standard-normal noise `[T,E]` explicitly (also accepted by
 * every router's {@link RouteOptions}).
 *
 * @example
 * ```ts
 * import { matrix, type NoisyRouteOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: NoisyRouteOptions = { training: true, noise: matrix.zeros(2, 4) };
 * assert.equal(o.training, true);
 * ```
 */
export interface NoisyRouteOptions extends RouteOptions {
  /** Noise `n ~ N(0,1)` `[T,E]`; default drawn from the seed. */
  readonly noise?: Mat;
}

/**
 * The noisy logit source: `H = X·W_gᵀ` at inference; in training `H = X·W_gᵀ + n·(softplus(X·W_nᵀ) + ε)`
 * with `n` from `route(x, { noise })` or drawn from the call's seed. The clean logits and the noise scale
 * go to the selector as side outputs `clean` and `sigma` (training only).
 *
 * @example
 * ```ts
 * import { matrix, noisyGate } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const g = noisyGate({ weight: matrix.identity(2) });
 * assert.deepEqual(Array.from(g.logits(matrix.fromArrays([[1, 2]]), matrix.zeros(1, 2)).data), [1, 2]);
 * ```
 */
export function noisyGate(options: {
  readonly weight: Mat;
  readonly noiseWeight?: Mat;
  readonly epsilon?: number;
  readonly backend?: BackendChoice;
}): LogitSource {
  const clean = linearGate({ weight: options.weight, backend: options.backend });
  const E = clean.experts, d = clean.inputDim, eps = options.epsilon ?? 1e-2;
  if (!(eps >= 0) || !Number.isFinite(eps)) {
    throw new OptionError("epsilon", eps, "must be a finite number ≥ 0");
  }
  const noiseGate = linearGate({
    weight: options.noiseWeight ?? matrix.zeros(E, d),
    backend: options.backend,
  });
  if (noiseGate.experts !== E || noiseGate.inputDim !== d) {
    throw new ShapeError(
      "noiseWeight",
      [E, d],
      [noiseGate.experts, noiseGate.inputDim],
      "W_n has the shape of W_g",
    );
  }
  return {
    experts: E,
    inputDim: d,
    backend: clean.backend,
    logits(x, out, ctx) {
      clean.logits(x, out);
      if (!ctx?.training) return out;
      const T = x.rows;
      let n = ctx.options.noise;
      if (n) {
        matrix.assertShape("noise", n, ctx.tokens, E);
        matrix.assertFinite("noise", n);
        if (ctx.rowOffset !== 0 || T !== ctx.tokens) n = matrix.rowSlice(n, ctx.rowOffset, ctx.rowOffset + T);
      } else n = matrix.randn(T, E, { seed: ctx.rng.derive("noise").nextUint32() });
      const L = matrix.clone(out), sigma = noiseGate.logits(x, matrix.zeros(T, E));
      for (let i = 0; i < T * E; i++) {
        sigma.data[i] = softplus(sigma.data[i]) + eps;
        out.data[i] = L.data[i] + n.data[i] * sigma.data[i];
      }
      ctx.side.clean = L;
      ctx.side.sigma = sigma;
      return out;
    },
  };
}

/**
 * The noisy top-k selector (all tokens): top-k of the (noisy) logits H, gates = softmax over those k
 * (others 0), scores = softmax of H over all experts; `extras.importance = Σ_t gates` and `extras.load`
 * = the smooth estimate `Σ_t Φ((clean − thr)/σ)` (training, k < E; thr = the (k+1)-th largest H when
 * `H_e` exceeds it, else the k-th) or the count of non-zero gates (inference).
 *
 * @example
 * ```ts
 * import { matrix, noisyTopKSelect, Rng } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out = { indices: new Int32Array(2), weights: new Float32Array(2), scores: new Float32Array(2) };
 * noisyTopKSelect({ k: 2 }).select(matrix.fromArrays([[2, 1, 0]]), 0, out, { training: false, rng: new Rng(0), tokens: 1 });
 * assert.deepEqual(Array.from(out.weights).map((w) => w.toFixed(4)), ["0.7311", "0.2689"]);
 * ```
 */
export function noisyTopKSelect(options: { readonly k: number }): Selector {
  const k = options.k;
  return {
    name: "noisy-topk",
    k,
    scoreFunction: "softmax",
    needsAllTokens: true,
    validate: (E) => checkK(k, E),
    select(H, _tokenOffset, out, ctx) {
      const T = H.rows, E = H.cols, clean = ctx.side?.clean, sigma = ctx.side?.sigma;
      const estimate = ctx.training && k < E && clean !== undefined && sigma !== undefined;
      const m = estimate ? k + 1 : k;
      const top = new Int32Array(m), importance = new Float64Array(E), load = new Float64Array(E);
      for (let t = 0; t < T; t++) {
        const off = t * E;
        topKIndices(H.data, off, E, m, top, 0);
        const mx = H.data[off + top[0]];
        let z = 0, zAll = 0;
        for (let j = 0; j < k; j++) z += Math.exp(H.data[off + top[j]] - mx);
        for (let e = 0; e < E; e++) zAll += Math.exp(H.data[off + e] - mx);
        for (let j = 0; j < k; j++) {
          const ex = Math.exp(H.data[off + top[j]] - mx), w = ex / z;
          out.indices[t * k + j] = top[j];
          out.weights[t * k + j] = w;
          out.scores[t * k + j] = ex / zAll;
          importance[top[j]] += w;
          if (!estimate && w > 0) load[top[j]]++;
        }
        if (estimate) {
          const thrIn = H.data[off + top[k]], thrOut = H.data[off + top[k - 1]];
          for (let e = 0; e < E; e++) {
            if (H.data[off + e] === -Infinity) continue; // a masked expert carries no load
            const thr = H.data[off + e] > thrIn ? thrIn : thrOut;
            load[e] += normalCdf((clean.data[off + e] - thr) / sigma.data[off + e]);
          }
        }
      }
      return { importance, load };
    },
  };
}

/**
 * Noisy top-k: in training `H = X·W_gᵀ + n·(softplus(X·W_nᵀ) + ε)`; gates = softmax over the top-k of
 * H (others 0). `extras.importance` and `extras.load` (both `[E]`) feed {@link cvSquaredLoss}; `scores`
 * are the softmax of H over all experts (the selection scores), `logits` (when asked for) are H.
 *
 * @example
 * ```ts
 * import { matrix, noisyTopKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = noisyTopKRouter({ weight: matrix.identity(3), k: 2 }).route(matrix.fromArrays([[2, 1, 0]]));
 * assert.deepEqual(Array.from(r.weights).map((w) => w.toFixed(4)), ["0.7311", "0.2689"]);
 * ```
 */
export function noisyTopKRouter(options: NoisyTopKRouterOptions): Router & {
  route(x: Mat, opts?: NoisyRouteOptions): RoutingResult;
} {
  const gate = noisyGate(options);
  return composeRouter({
    name: "noisy-topk",
    gate,
    selector: noisyTopKSelect({ k: options.k ?? 2 }),
    training: options.training,
    seed: options.seed,
  });
}
