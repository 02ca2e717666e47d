/**
 * Selectors: the part of a router that turns a block of logits into top-k choices and weights. Routers
 * are composed as *logit source × selector × capacity policy*; per-token selectors run on small tiles
 * of logits so the full `[T,E]` matrix is never built unless asked for.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import type { Rng } from "../core/random.ts";
import type { RouteOptions, ScoreFunction } from "./result.ts";
import type { EpilogueKind } from "./backend.ts";
import { checkK } from "./checks.ts";
import { registerSelector } from "./registry.ts";

/**
 * Output buffers a selector writes, each `[T·k]`.
 *
 * @example
 * ```ts
 * import { type SelectionBuffers } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out: SelectionBuffers = {
 *   indices: new Int32Array(4), weights: new Float32Array(4), scores: new Float32Array(4),
 * };
 * assert.equal(out.indices.length, 4);
 * ```
 */
export interface SelectionBuffers {
  /** Chosen experts. */
  readonly indices: Int32Array;
  /** Combine weights. */
  readonly weights: Float32Array;
  /** Gate scores of the chosen experts before renormalisation. */
  readonly scores: Float32Array;
  /**
   * Present (all 1 on entry) when the selector has `marksUnkept`: it writes 0 for a choice it names but
   * does not keep (GShard's unsampled second expert); capacity then skips that choice.
   */
  readonly keep?: Uint8Array;
}

/**
 * What a selector may use besides the logits.
 *
 * @example
 * ```ts
 * import { Rng, type SelectContext } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const ctx: SelectContext = { training: false, rng: new Rng(0), tokens: 16 };
 * assert.equal(ctx.tokens, 16);
 * ```
 */
export interface SelectContext {
  /** Training mode (sampling, noise). */
  readonly training: boolean;
  /**
   * The call's seeded generator. Per-token selectors get one stream per tile of tokens
   * (`derive("tile", firstToken)`), the same on every thread; all-token selectors get the call's stream.
   */
  readonly rng: Rng;
  /** Total tokens in this route call. */
  readonly tokens: number;
  /** The route call's options (injected random draws such as `uniforms`, `gumbel`, `noise`). */
  readonly options?: RouteOptions;
  /** Side outputs of the logit source for all tokens (e.g. noisy top-k's clean logits and noise scale). */
  readonly side?: Readonly<Record<string, Mat>>;
  /**
   * Per-call optional outputs the selector fills across tiles (e.g. DeepSeek's `groupIndices`); they are
   * published in the result's `extras`. Present on the calling thread only.
   */
  readonly outputs?: Record<string, Int32Array | Float32Array | Float64Array>;
  /** Precomputed per-row `Σ_e exp(l − max)` of this block of logits (from a vector kernel), if any. */
  readonly softmaxSums?: Float32Array;
  /** Precomputed sigmoid of every logit of this block (from a vector kernel), if any. */
  readonly sigmoid?: Float32Array;
}

/**
 * A serialisable selector description: the factory's name and its options.
 *
 * @example
 * ```ts
 * import { softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const spec = softmaxTopK({ k: 2 }).spec!();
 * assert.equal(spec.kind, "softmaxTopK");
 * assert.deepEqual(spec.options, { k: 2, normTopkProb: true });
 * ```
 */
export interface SelectorSpec {
  /** Registered factory name, e.g. `"softmaxTopK"`. */
  readonly kind: string;
  /** The factory's options (typed arrays as plain arrays). */
  readonly options: Record<string, unknown>;
  /** URL of the module that registers `kind` when it loads (a worker imports it first). */
  readonly module?: string;
}

/**
 * Turns logits into top-k choices.
 *
 * @example
 * ```ts
 * import { matrix, Rng, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const sel = softmaxTopK({ k: 1 });
 * const out = { indices: new Int32Array(1), weights: new Float32Array(1), scores: new Float32Array(1) };
 * sel.select(matrix.fromArrays([[0, 3, 1]]), 0, out, { training: false, rng: new Rng(0), tokens: 1 });
 * assert.equal(out.indices[0], 1);
 * ```
 */
export interface Selector {
  /** Name for tables. */
  readonly name: string;
  /** Choices per token. */
  readonly k: number;
  /** How scores relate to the logits: softmax, sigmoid, or `"none"` (not a gate probability). */
  readonly scoreFunction: ScoreFunction;
  /** True when selection couples tokens (Sinkhorn, expert choice, BASE): it then sees all logits at once. */
  readonly needsAllTokens: boolean;
  /** True when it draws from `ctx.rng` (then it gets a per-tile stream, or the call's stream if all-token). */
  readonly random?: boolean;
  /** The per-expert capacity it applies itself for T tokens (expert choice), reported in the result. */
  capacityOf?(tokens: number, experts: number): number;
  /** Live experts it needs under an expert mask. Default k. */
  readonly minLiveExperts?: number;
  /** True when it marks choices it names but does not keep (writes `out.keep`, see {@link SelectionBuffers}). */
  readonly marksUnkept?: boolean;
  /**
   * Scores it can take precomputed for a tile (`ctx.softmaxSums` or `ctx.sigmoid`), when the compute
   * backend offers that pass; it computes them itself otherwise.
   */
  readonly precomputed?: EpilogueKind;
  /**
   * Set when the selector is plain softmax top-k — experts by descending logit, ties to the lower index,
   * weights `softmax` of the chosen logits over all E (renormalised over the k when `normalize`), computed
   * in float64 as {@link softmaxTopK} does: a compute backend may then select with its own fused kernel
   * straight from its logits buffer (`ParallelJob.selector.fusedTopK`), with the same results.
   */
  readonly fusedTopK?: { readonly k: number; readonly normalize: boolean };
  /**
   * A JSON-serialisable description from which another thread rebuilds the same selector through the
   * selector registry (`registerSelector`); selectors without one run on the calling thread only.
   */
  spec?(): SelectorSpec;
  /** Checks the selector fits E experts (throws otherwise). */
  validate(experts: number): void;
  /** Selects for rows of `logits`, writing token `tokenOffset + i` at `(tokenOffset + i)·k`. */
  select(
    logits: Mat,
    tokenOffset: number,
    out: SelectionBuffers,
    ctx: SelectContext,
  ): Record<string, unknown> | void;
}

/**
 * Top-k of `values[off .. off+n)`: writes the k indices (relative to `off`) into `outIdx[outOff ..]`,
 * sorted by value descending, equal values by ascending index (`np.argsort(-x, kind="stable")[:k]`).
 * Returns nothing; runs in O(n·k) with no allocation.
 *
 * @example
 * ```ts
 * import { topKIndices } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const idx = new Int32Array(2);
 * topKIndices([2, 1, 2, 0], 0, 4, 2, idx, 0);
 * assert.deepEqual(Array.from(idx), [0, 2]);
 * ```
 */
export function topKIndices(
  values: ArrayLike<number>,
  off: number,
  n: number,
  k: number,
  outIdx: Int32Array,
  outOff: number,
): void {
  if (k === 1) {
    let best = 0, bv = values[off];
    for (let i = 1; i < n; i++) {
      const v = values[off + i];
      if (v > bv) {
        bv = v;
        best = i;
      }
    }
    outIdx[outOff] = best;
    return;
  }
  let filled = 0, kth = -Infinity; // kth = the k-th best value so far once `filled === k`
  for (let i = 0; i < n; i++) {
    const v = values[off + i];
    if (filled === k) {
      // strict >: an equal later value never displaces an earlier one (lower index wins ties)
      if (!(v > kth)) continue;
      filled--;
    }
    let p = outOff + filled;
    while (p > outOff && v > values[off + outIdx[p - 1]]) {
      outIdx[p] = outIdx[p - 1];
      p--;
    }
    outIdx[p] = i;
    filled++;
    if (filled === k) kth = values[off + outIdx[outOff + k - 1]];
  }
}

/**
 * Options of {@link softmaxTopK}.
 *
 * @example
 * ```ts
 * import { type SoftmaxTopKOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: SoftmaxTopKOptions = { k: 8, normTopkProb: false }; // OLMoE
 * assert.equal(o.k, 8);
 * ```
 */
export interface SoftmaxTopKOptions {
  /** Choices per token. */
  readonly k: number;
  /** Renormalise the k winners' probabilities to sum to 1. Default true (Mixtral). */
  readonly normTopkProb?: boolean;
}

/**
 * Softmax top-k (Mixtral, Qwen, OLMoE): `p = softmax(logits)`, take the k largest, weights `p` or
 * `p / Σp` over the winners. Top-k runs on the logits (softmax is monotonic) in float64.
 *
 * @example
 * ```ts
 * import { matrix, Rng, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out = { indices: new Int32Array(2), weights: new Float32Array(2), scores: new Float32Array(2) };
 * const logits = matrix.fromArrays([[Math.log(4), Math.log(2), 0, 0]]);
 * softmaxTopK({ k: 2 }).select(logits, 0, out, { training: false, rng: new Rng(0), tokens: 1 });
 * assert.deepEqual(Array.from(out.scores), [0.5, 0.25]);
 * ```
 */
export function softmaxTopK(options: SoftmaxTopKOptions): Selector {
  const k = options.k, norm = options.normTopkProb ?? true;
  return {
    name: norm ? "softmax-topk" : "softmax-topk-raw",
    k,
    scoreFunction: "softmax",
    needsAllTokens: false,
    precomputed: "softmaxSums",
    fusedTopK: { k, normalize: norm },
    spec: () => ({ kind: "softmaxTopK", options: { k, normTopkProb: norm }, module: import.meta.url }),
    validate: (experts) => checkK(k, experts),
    select(logits, tokenOffset, out, ctx) {
      const E = logits.cols, L = logits.data, sums = ctx.softmaxSums;
      for (let i = 0; i < logits.rows; i++) {
        const off = i * E, o = (tokenOffset + i) * k;
        topKIndices(L, off, E, k, out.indices, o);
        const m = L[off + out.indices[o]];
        let z = 0;
        if (sums) z = sums[i];
        else for (let e = 0; e < E; e++) z += Math.exp(L[off + e] - m);
        let zk = 0;
        for (let j = 0; j < k; j++) zk += Math.exp(L[off + out.indices[o + j]] - m);
        for (let j = 0; j < k; j++) {
          const ex = Math.exp(L[off + out.indices[o + j]] - m);
          out.scores[o + j] = ex / z;
          out.weights[o + j] = norm ? ex / zk : ex / z;
        }
      }
    },
  };
}

registerSelector("softmaxTopK", (o) => softmaxTopK(o as unknown as SoftmaxTopKOptions));
