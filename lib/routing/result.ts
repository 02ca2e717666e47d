/**
 * The routing result every router returns, and the router interface. One shape for all routers, so
 * metrics, losses, dispatch, caches and plots work on any of them.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { checkRoutingIndices } from "./checks.ts";

/**
 * How a router turns logits into gate scores (used by losses that recompute them).
 *
 * @example
 * ```ts
 * import { type ScoreFunction } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const f: ScoreFunction = "sigmoid"; // DeepSeek-V3
 * assert.equal(f, "sigmoid");
 * ```
 */
export type ScoreFunction = "softmax" | "sigmoid" | "none";

/**
 * Which experts each token goes to, and with what weight.
 *
 * Entry `t*k + j` is token t's j-th choice, ordered by selection score (ties → lower expert index).
 * `indices` is −1 for an empty choice (expert choice routing, where a token may get fewer than k).
 *
 * @example
 * ```ts
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(4), k: 2 })
 *   .route(matrix.fromArrays([[Math.log(4), Math.log(2), 0, 0]]));
 * assert.deepEqual(Array.from(r.indices), [0, 1]);
 * assert.ok(Math.abs(r.weights[0] - 2 / 3) < 1e-6);
 * ```
 */
export interface RoutingResult {
  /** Number of tokens T. */
  readonly tokens: number;
  /** Number of experts E. */
  readonly experts: number;
  /** Choices per token k. */
  readonly k: number;
  /** Expert of each choice `[T·k]`, best first; −1 = no expert. */
  readonly indices: Int32Array;
  /** Combine weight of each choice `[T·k]` (0 for dropped or empty choices). */
  readonly weights: Float32Array;
  /** Gate score of each choice `[T·k]` before renormalisation (softmax prob or sigmoid). */
  readonly scores: Float32Array;
  /** 1 where the choice survived capacity `[T·k]`; absent when no capacity was applied. */
  readonly keep?: Uint8Array;
  /** Slot of each kept choice in its expert's buffer `[T·k]`, −1 when dropped. */
  readonly slot?: Int32Array;
  /** Per-expert capacity that was applied. */
  readonly capacity?: number;
  /** Router logits `[T,E]`, when asked for with `returnLogits`. */
  readonly logits?: Mat;
  /** Gate scores over all experts `[T,E]`, when asked for with `returnProbs`. */
  readonly probs?: Mat;
  /** The score function, so losses can recompute probabilities from logits. */
  readonly scoreFunction: ScoreFunction;
  /** Router-specific extras (noisy top-k load, Sinkhorn iterations, …). */
  readonly extras?: Readonly<Record<string, unknown>>;
}

/**
 * Options accepted by every `route` call.
 *
 * @example
 * ```ts
 * import { type RouteOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const opts: RouteOptions = { returnLogits: true, training: false };
 * assert.ok(opts.returnLogits);
 * ```
 */
export interface RouteOptions {
  /** Keep the `[T,E]` logits in the result (needed by balance/z losses). Default false. */
  readonly returnLogits?: boolean;
  /** Keep the `[T,E]` gate scores in the result. Default false. */
  readonly returnProbs?: boolean;
  /** Training mode: jitter, noise and sampling apply only when true. Default: the router's setting. */
  readonly training?: boolean;
  /** Seed for this call's random draws (jitter, noise, sampling). Default: the router's seed. */
  readonly seed?: number;
  /** Token ids, for routers that route by id (hash routing). */
  readonly tokenIds?: ArrayLike<number>;
  /**
   * Expert mask `[E]`: 0 = the expert is removed (its logit is −∞ before scoring, for every selector and
   * backend); fewer live experts than the selector needs (k) is an error. Expert pruning uses it.
   */
  readonly expertMask?: Uint8Array;
  /** Router-input jitter factors `[T,d]` in `[1−ε, 1+ε]` (training; default drawn from the seed). */
  readonly jitter?: Mat;
  /** GShard `random` policy: one uniform in [0, 1) per token `[T]` (default drawn from the seed). */
  readonly uniforms?: ArrayLike<number>;
  /** GShard `sampling` policy: Gumbel noise `[T,E]` (default drawn from the seed). */
  readonly gumbel?: Mat;
  /** Noisy top-k: standard-normal noise `[T,E]` (default drawn from the seed). */
  readonly noise?: Mat;
  /** Recurrent routers: the routing state before this layer `[T,r]` (RMoE's `routeLayer` passes it). */
  readonly state?: Mat;
  /** Group-limited routers (DeepSeek): put the kept groups `[T·topkGroup]` in `extras.groupIndices`. */
  readonly returnGroups?: boolean;
  /**
   * A previous result of this router for the same number of tokens, whose `indices`, `weights` and `scores`
   * arrays (and `keep`, where the selector marks choices) this call overwrites and returns in its new
   * result instead of allocating fresh ones: a serving loop's way to route batch after batch without fresh
   * memory (on some machines every fresh page costs microseconds). Read nothing from the old result
   * afterwards. Its token count, k and E must match (else a `ShapeError`).
   */
  readonly into?: RoutingResult;
}

/**
 * A router: holds its gate weights, maps hidden states `X [T,d]` to a {@link RoutingResult}.
 *
 * @example
 * ```ts
 * import { matrix, type Router, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const router: Router = topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 });
 * assert.equal(router.route(matrix.randn(5, 16, { seed: 2 })).indices.length, 10);
 * ```
 */
export interface Router {
  /** A short name for tables and plots. */
  readonly name: string;
  /** Number of experts E. */
  readonly experts: number;
  /** Choices per token k. */
  readonly k: number;
  /** Routes tokens `X [T,d]`. */
  route(x: Mat, options?: RouteOptions): RoutingResult;
}

/**
 * Whether choice `i` (a flat `t*k + j` position) is a real, kept assignment.
 *
 * @example
 * ```ts
 * import { isKept, matrix, switchRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = switchRouter({ weight: matrix.identity(2), capacity: 1 }).route(matrix.fromArrays([[1, 0], [2, 0]]));
 * assert.ok(isKept(r, 0));
 * assert.equal(isKept(r, 1), false);
 * ```
 */
export function isKept(r: RoutingResult, i: number): boolean {
  return r.indices[i] >= 0 && (r.keep === undefined || r.keep[i] === 1);
}

/**
 * The dense combine matrix `C [T,E]`, `C[t,e] = Σ_j w[t,j]·[idx[t,j] = e]` over kept choices. Use it to
 * compare with upstream code that returns unsorted top-k.
 *
 * @example
 * ```ts
 * import { combineMatrix, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(3), k: 1 }).route(matrix.fromArrays([[0, 2, 1]]));
 * assert.deepEqual(Array.from(combineMatrix(r).data), [0, 1, 0]);
 * ```
 */
export function combineMatrix(r: RoutingResult): Mat {
  checkRoutingIndices(r);
  const c = matrix.zeros(r.tokens, r.experts);
  for (let i = 0; i < r.indices.length; i++) {
    if (isKept(r, i)) c.data[Math.floor(i / r.k) * r.experts + r.indices[i]] += r.weights[i];
  }
  return c;
}
