/**
 * Logit sources: what turns hidden states into router logits. The linear gate `X·Wᵀ (+ b)` with the
 * weight in nn.Linear layout `[E,d]` is the common one; noisy top-k, recurrent and pre-gating routers
 * bring others.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import type { Rng } from "../core/random.ts";
import { NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";
import { type Backend, type BackendChoice, bindGemm, type GateGemm } from "./backend.ts";
import type { RouteOptions } from "./result.ts";

/**
 * What a logit source may use besides the tokens: the route call's settings and a place for side
 * outputs that the selector reads (sources that need them are used with all-token selectors).
 *
 * @example
 * ```ts
 * import { type LogitContext, Rng } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const ctx: LogitContext = { training: false, rng: new Rng(0), tokens: 4, rowOffset: 0, options: {}, side: {} };
 * assert.equal(ctx.tokens, 4);
 * ```
 */
export interface LogitContext {
  /** Training mode of the call. */
  readonly training: boolean;
  /** The call's seeded root stream: derive a labelled sub-stream for the source's own draws. */
  readonly rng: Rng;
  /** Tokens T of the whole call. */
  readonly tokens: number;
  /** Row of the call's X where this block of tokens starts. */
  readonly rowOffset: number;
  /** The route call's options (injected draws, recurrent state, …). */
  readonly options: RouteOptions;
  /** Side outputs the source writes for the selector (`[T, ·]` matrices, by name). */
  readonly side: Record<string, Mat>;
}

/**
 * Anything that maps `X [T,d]` to logits `[T,E]`.
 *
 * @example
 * ```ts
 * import { type LogitSource, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const src: LogitSource = {
 *   experts: 2, inputDim: 2,
 *   logits: (x, out) => matrix.matmulT(x, matrix.identity(2), out),
 * };
 * assert.equal(src.experts, 2);
 * ```
 */
export interface LogitSource {
  /** Number of experts E. */
  readonly experts: number;
  /** Input width d (−1: any width, for sources that ignore X, such as hash routing). */
  readonly inputDim: number;
  /** Writes the logits of `x` into `out [x.rows, E]`. */
  logits(x: Mat, out: Mat, ctx?: LogitContext): Mat;
  /**
   * Present when the source is a plain linear gate on a compute backend: its bound GEMM and bias, so
   * `composeRouter` can tile, fuse and thread it (see `backend.ts`).
   */
  readonly linear?: { readonly gemm: GateGemm; readonly bias?: Float64Array };
  /** The compute backend in use. */
  readonly backend?: Backend;
  /** Names of side outputs (see {@link LogitContext}) to publish in the result's `extras`. */
  readonly publishes?: readonly string[];
}

/**
 * Options of {@link linearGate}.
 *
 * @example
 * ```ts
 * import { type LinearGateOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: LinearGateOptions = { weight: matrix.zeros(8, 32) };
 * assert.equal(o.weight.rows, 8);
 * ```
 */
export interface LinearGateOptions {
  /** Gate weight `[E,d]` (nn.Linear layout; transpose `[d,E]` weights from flax/t2t first). */
  readonly weight: Mat;
  /** Optional bias `[E]`. */
  readonly bias?: ArrayLike<number>;
  /** `"auto"` (default: the fastest available registered backend), `"native"`, `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
}

/**
 * The linear gate `logits = X·Wᵀ (+ b)`.
 *
 * @example
 * ```ts
 * import { linearGate, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const gate = linearGate({ weight: matrix.fromArrays([[1, 0], [0, 1], [1, 1]]), bias: [0, 0, 1] });
 * const out = gate.logits(matrix.fromArrays([[2, 3]]), matrix.zeros(1, 3));
 * assert.deepEqual(Array.from(out.data), [2, 3, 6]);
 * ```
 */
export function linearGate(options: LinearGateOptions): LogitSource {
  const { weight } = options;
  matrix.assertShape("gate weight", weight, -1, -1);
  if (weight.rows < 1) {
    throw new ShapeError("gate weight", [-1, weight.cols], [weight.rows, weight.cols], "E ≥ 1");
  }
  matrix.assertFinite("gate weight", weight);
  if (options.bias !== undefined && options.bias.length !== weight.rows) {
    throw new ShapeError("gate bias", [weight.rows], [options.bias.length], "one bias per expert");
  }
  const choice = options.backend ?? "auto";
  if (typeof choice !== "string") throw new OptionError("backend", choice, `use "auto" or a backend name`);
  const gemm = bindGemm(weight, choice);
  const bias = options.bias === undefined ? undefined : Float64Array.from(options.bias);
  // a non-finite bias would surface as non-finite logits, blamed on X·Wᵀ: name it here
  for (let e = 0; bias && e < bias.length; e++) {
    if (!Number.isFinite(bias[e])) throw new NonFiniteError("gate bias", 0, e, bias[e]);
  }
  return {
    experts: weight.rows,
    inputDim: weight.cols,
    backend: gemm.backend,
    linear: { gemm, ...(bias ? { bias } : {}) },
    logits(x, out) {
      if (x.cols !== weight.cols) {
        throw new ShapeError(
          "hidden states X",
          [-1, weight.cols],
          [x.rows, x.cols],
          `the gate weight is [${weight.rows},${weight.cols}] (nn.Linear layout [E,d])`,
        );
      }
      gemm.gemm(x, out);
      if (bias) matrix.addRowVector(out, bias);
      return out;
    },
  };
}
