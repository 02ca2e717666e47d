/**
 * Noisy top-k gating (Shazeer et al. 2017; tensor2tensor `noisy_top_k_gating`, routing.md §7).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { normalCdf, softplus } from "../core/numeric.ts";
import { type Backend, linearGate } from "./gate.ts";
import { topKIndices } from "./select.ts";
import { scoreMatrix } from "./compose.ts";
import { checkTokens } from "./checks.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";
import { checkK } from "./checks.ts";

/**
 * Options of {@link noisyTopKRouter}.
 *
 * @example
 * ```ts
 * import { matrix, type NoisyTopKRouterOptions } from "@moekit/moekit";
 * const o: NoisyTopKRouterOptions = { weight: matrix.zeros(4, 8), noiseWeight: matrix.zeros(4, 8), k: 2 };
 * console.log(o.k); // 2
 * ```
 */
export interface NoisyTopKRouterOptions {
  /** Clean gate `W_g [E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: Backend | "auto";
  /** Noise gate `W_n [E,d]`. Default zeros (noise scale softplus(0) + 0.01). */
  readonly noiseWeight?: Mat;
  /** Choices per token. Default 2. */
  readonly k?: number;
  /** Default training mode. Default false. */
  readonly training?: boolean;
  /** Default seed of the noise. */
  readonly seed?: number;
}

/**
 * A noisy top-k route call may take the standard-normal noise `[T,E]` explicitly.
 *
 * @example
 * ```ts
 * import { matrix, type NoisyRouteOptions } from "@moekit/moekit";
 * const o: NoisyRouteOptions = { training: true, noise: matrix.zeros(2, 4) };
 * console.log(o.training); // true
 * ```
 */
export interface NoisyRouteOptions extends RouteOptions {
  /** Noise `n ~ N(0,1)` `[T,E]`; default drawn from the seed. */
  readonly noise?: Mat;
}

/**
 * Noisy top-k: in training `H = X·W_gᵀ + n·(softplus(X·W_nᵀ) + 1e-2)`; gates = softmax over the top-k
 * of H (others 0). `extras.importance` = Σ_t gates and `extras.load` = the smooth load estimate
 * `Σ_t Φ((clean − thr)/σ)` (training, k < E) or the count of non-zero gates (eval), both `[E]` — feed
 * them to {@link cvSquaredLoss}.
 *
 * @example
 * ```ts
 * import { matrix, noisyTopKRouter } from "@moekit/moekit";
 * const r = noisyTopKRouter({ weight: matrix.identity(3), k: 2 }).route(matrix.fromArrays([[2, 1, 0]]));
 * console.log(Array.from(r.weights).map((w) => w.toFixed(4))); // ["0.7311", "0.2689"]
 * ```
 */
export function noisyTopKRouter(options: NoisyTopKRouterOptions): Router & {
  route(x: Mat, opts?: NoisyRouteOptions): RoutingResult;
} {
  const clean = linearGate({ weight: options.weight, backend: options.backend });
  const E = clean.experts, d = clean.inputDim, k = options.k ?? 2;
  checkK(k, E);
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
    name: "noisy-topk",
    experts: E,
    k,
    route(x: Mat, opts: NoisyRouteOptions = {}): RoutingResult {
      checkTokens(x, d);
      const T = x.rows, training = opts.training ?? options.training ?? false;
      const L = clean.logits(x, matrix.zeros(T, E));
      let H = L, sigma: Mat | undefined;
      if (training) {
        let n = opts.noise;
        if (n) {
          matrix.assertShape("noise", n, T, E);
          matrix.assertFinite("noise", n);
        } else {n = matrix.randn(T, E, {
            seed: new Rng(opts.seed ?? options.seed ?? 0).derive("noise").nextUint32(),
          });}
        sigma = noiseGate.logits(x, matrix.zeros(T, E));
        H = matrix.zeros(T, E);
        for (let i = 0; i < T * E; i++) {
          sigma.data[i] = softplus(sigma.data[i]) + 1e-2;
          H.data[i] = L.data[i] + n.data[i] * sigma.data[i];
        }
      }
      const m = training && k < E ? k + 1 : k;
      const top = new Int32Array(m), indices = new Int32Array(T * k), weights = new Float32Array(T * k);
      const importance = new Float64Array(E), load = new Float64Array(E);
      for (let t = 0; t < T; t++) {
        const off = t * E;
        topKIndices(H.data, off, E, m, top, 0);
        const mx = H.data[off + top[0]];
        let z = 0;
        for (let j = 0; j < k; j++) z += Math.exp(H.data[off + top[j]] - mx);
        for (let j = 0; j < k; j++) {
          const w = Math.exp(H.data[off + top[j]] - mx) / z;
          indices[t * k + j] = top[j];
          weights[t * k + j] = w;
          importance[top[j]] += w;
          if (!(training && k < E) && w > 0) load[top[j]]++;
        }
        if (training && k < E && sigma) {
          const thrIn = H.data[off + top[k]], thrOut = H.data[off + top[k - 1]];
          for (let e = 0; e < E; e++) {
            const thr = H.data[off + e] > thrIn ? thrIn : thrOut;
            load[e] += normalCdf((L.data[off + e] - thr) / sigma.data[off + e]);
          }
        }
      }
      return {
        tokens: T,
        experts: E,
        k,
        indices,
        weights,
        scores: weights.slice(),
        scoreFunction: "softmax",
        extras: { importance, load },
        ...(opts.returnLogits ? { logits: H } : {}),
        ...(opts.returnProbs ? { probs: scoreMatrix(H, "softmax") } : {}),
      };
    },
  };
}
