/**
 * `composeRouter`: a router built from a logit source, a selector and an optional capacity policy.
 * Every token-choice router in moekit is one of these compositions.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { checkLogitsFinite, checkTokenShape } from "./checks.ts";
import { parallelSelect } from "../kernels/threads.ts";
import { Rng } from "../core/random.ts";
import { sigmoid, softmaxInto } from "../core/numeric.ts";
import type { LogitSource } from "./gate.ts";
import type { SelectionBuffers, Selector } from "./select.ts";
import { applyCapacity, type CapacityOptions } from "./capacity.ts";
import type { RouteOptions, Router, RoutingResult, ScoreFunction } from "./result.ts";

/**
 * Parts and settings of a composed router.
 *
 * @example
 * ```ts
 * import { type ComposeOptions, linearGate, matrix, softmaxTopK } from "@moekit/moekit";
 * const o: ComposeOptions = {
 *   gate: linearGate({ weight: matrix.randn(4, 8, { seed: 1 }) }),
 *   selector: softmaxTopK({ k: 2 }),
 *   capacity: { capacityFactor: 1.25 },
 * };
 * console.log(o.selector.k); // 2
 * ```
 */
export interface ComposeOptions {
  /** Name for tables. Default: the selector's name. */
  readonly name?: string;
  /** Where logits come from. */
  readonly gate: LogitSource;
  /** How logits become choices. */
  readonly selector: Selector;
  /** Capacity and drop policy; omit for no dropping. */
  readonly capacity?: CapacityOptions;
  /** Multiplicative router-input jitter ε: `x ← x·U(1−ε, 1+ε)`, training only (Switch: 0.01). Default 0. */
  readonly jitter?: number;
  /** Default training mode of `route`. Default false. */
  readonly training?: boolean;
  /** Default seed of `route`'s random draws. Default 0. */
  readonly seed?: number;
  /** Tokens per logits tile in the fused path. Default 64. */
  readonly tileTokens?: number;
}

/**
 * Builds a router from a logit source × selector × capacity policy.
 *
 * @example
 * ```ts
 * import { composeRouter, linearGate, matrix, softmaxTopK } from "@moekit/moekit";
 * const router = composeRouter({
 *   gate: linearGate({ weight: matrix.randn(8, 16, { seed: 1 }) }),
 *   selector: softmaxTopK({ k: 2, normTopkProb: false }),
 *   capacity: { capacityFactor: 1, policy: "probs" },
 * });
 * const r = router.route(matrix.randn(32, 16, { seed: 2 }));
 * console.log(r.capacity); // 8 = ceil(2·32·1/8)
 * ```
 */
export function composeRouter(options: ComposeOptions): Router {
  const { gate, selector, capacity } = options;
  selector.validate(gate.experts);
  const jitter = options.jitter ?? 0;
  if (!(jitter >= 0 && jitter < 1)) throw new OptionError("jitter", jitter, "must be in [0, 1)");
  const tile = options.tileTokens ?? 64;
  if (!Number.isInteger(tile) || tile < 1) {
    throw new OptionError("tileTokens", tile, "must be an integer ≥ 1");
  }
  const E = gate.experts, k = selector.k;
  return {
    name: options.name ?? selector.name,
    experts: E,
    k,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      checkTokenShape(x, gate.inputDim);
      const training = opts.training ?? options.training ?? false;
      const rng = new Rng(opts.seed ?? options.seed ?? 0);
      const input = training && jitter > 0 ? jittered(x, jitter, rng.derive("jitter")) : x;
      const T = x.rows;
      const out: SelectionBuffers = {
        indices: new Int32Array(T * k),
        weights: new Float32Array(T * k),
        scores: new Float32Array(T * k),
      };
      const ctx = { training, rng: rng.derive("select"), tokens: T };
      let logits: Mat | undefined;
      let extras: Record<string, unknown> | undefined;
      if (selector.needsAllTokens || opts.returnLogits || opts.returnProbs) {
        logits = gate.logits(input, matrix.zeros(T, E));
        checkLogitsFinite(logits, x, 0);
        extras = selector.select(logits, 0, out, ctx) ?? undefined;
      } else {
        // the fused path: logits of one tile of tokens at a time, selected at once; never [T,E]
        const runTiles = (from: number, to: number, buffers: SelectionBuffers) => {
          const scratch = gate.scratch?.(Math.min(tile, T)) ?? matrix.zeros(Math.min(tile, T), E);
          for (let t0 = from; t0 < to; t0 += tile) {
            const n = Math.min(tile, to - t0);
            const view = n === scratch.rows ? scratch : matrix.rowSlice(scratch, 0, n);
            gate.logits(matrix.rowSlice(input, t0, t0 + n), view);
            const pre = selector.epilogue && gate.epilogue?.(selector.epilogue, view);
            // non-finite tokens make a softmax sum NaN or ∞, so finite sums spare the full logits scan
            if (!(pre && selector.epilogue === "softmaxSums" && allPositiveFinite(pre))) {
              checkLogitsFinite(view, matrix.rowSlice(x, t0, t0 + n), t0);
            }
            selector.select(view, t0, buffers, pre ? { ...ctx, [selector.epilogue!]: pre } : ctx);
          }
        };
        if (!parallelSelect(gate, selector, input, out, tile, runTiles)) runTiles(0, T, out);
      }
      const base = {
        tokens: T,
        experts: E,
        k,
        indices: out.indices,
        scores: out.scores,
        scoreFunction: selector.scoreFunction,
        ...(opts.returnLogits && logits ? { logits } : {}),
        ...(opts.returnProbs && logits ? { probs: scoreMatrix(logits, selector.scoreFunction) } : {}),
        ...(extras ? { extras } : {}),
      };
      if (!capacity) return { ...base, weights: out.weights };
      const d = applyCapacity({ ...base, weights: out.weights }, capacity);
      return { ...base, weights: d.weights, keep: d.keep, slot: d.slot, capacity: d.capacity };
    },
  };
}

/**
 * The gate scores over all experts (softmax or sigmoid of each logit row), as a new `[T,E]` matrix.
 *
 * @example
 * ```ts
 * import { matrix, scoreMatrix } from "@moekit/moekit";
 * console.log(Array.from(scoreMatrix(matrix.fromArrays([[0, 0]]), "softmax").data)); // [0.5, 0.5]
 * ```
 */
export function scoreMatrix(logits: Mat, fn: ScoreFunction): Mat {
  const p = matrix.zeros(logits.rows, logits.cols);
  if (fn === "softmax") {
    for (let t = 0; t < logits.rows; t++) {
      softmaxInto(logits.data, t * logits.cols, logits.cols, p.data, t * logits.cols);
    }
  } else {
    for (let i = 0; i < p.data.length; i++) p.data[i] = sigmoid(logits.data[i]);
  }
  return p;
}

function allPositiveFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (!(v[i] > 0 && v[i] < Infinity)) return false;
  return true;
}

function jittered(x: Mat, eps: number, rng: Rng): Mat {
  const y = matrix.clone(x);
  for (let i = 0; i < y.data.length; i++) y.data[i] *= 1 - eps + 2 * eps * rng.uniform();
  return y;
}
