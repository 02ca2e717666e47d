/**
 * Logit sources: what turns hidden states into router logits. The linear gate `X·Wᵀ (+ b)` with the
 * weight in nn.Linear layout `[E,d]` is the common one; recurrent and pre-gating routers bring others.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { kernelInfo } from "../kernels/runtime.ts";
import { wasmGemm } from "../kernels/gemm.ts";

/**
 * Anything that maps `X [T,d]` to logits `[T,E]`.
 *
 * @example
 * ```ts
 * import { type LogitSource, matrix } from "@moekit/moekit";
 * const src: LogitSource = {
 *   experts: 2, inputDim: 2,
 *   logits: (x, out) => matrix.matmulT(x, matrix.identity(2), out),
 * };
 * console.log(src.experts); // 2
 * ```
 */
export interface LogitSource {
  /** Number of experts E. */
  readonly experts: number;
  /** Input width d. */
  readonly inputDim: number;
  /** Writes the logits of `x` into `out [x.rows, E]`. */
  logits(x: Mat, out: Mat): Mat;
  /** Optional: a `[rows, E]` logits buffer the source writes fastest (e.g. in WebAssembly memory). */
  scratch?(rows: number): Mat;
  /**
   * Optional: a vectorised epilogue on a logits buffer from `scratch` — `"softmaxSums"`, one
   * `Σ_e exp(l − max)` per row, or `"sigmoid"` of every logit — or undefined when not available.
   */
  epilogue?(kind: "softmaxSums" | "sigmoid", logits: Mat): Float32Array | undefined;
  /** The compute backend in use. */
  readonly backend?: Backend;
  /** Optional: the weight's place in kernel memory and the bias, so worker threads can run this gate. */
  readonly kernel?: { readonly weightPtr: number; readonly bias?: ArrayLike<number> };
}

/**
 * Where the gate GEMM runs: `"wasm"` (WebAssembly SIMD, the default where available) or `"js"` (the
 * readable reference). `"auto"` picks the fastest available.
 *
 * @example
 * ```ts
 * import { type Backend, kernelInfo } from "@moekit/moekit";
 * const b: Backend = kernelInfo().wasm ? "wasm" : "js";
 * console.log(b === "wasm" || b === "js"); // true
 * ```
 */
export type Backend = "wasm" | "js";

/**
 * Options of {@link linearGate}.
 *
 * @example
 * ```ts
 * import { type LinearGateOptions, matrix } from "@moekit/moekit";
 * const o: LinearGateOptions = { weight: matrix.zeros(8, 32) };
 * console.log(o.weight.rows); // 8
 * ```
 */
export interface LinearGateOptions {
  /** Gate weight `[E,d]` (nn.Linear layout; transpose `[d,E]` weights from flax/t2t first). */
  readonly weight: Mat;
  /** Optional bias `[E]`. */
  readonly bias?: ArrayLike<number>;
  /** `"auto"` (default: wasm where available), `"wasm"` or `"js"`. */
  readonly backend?: Backend | "auto";
}

/**
 * The linear gate `logits = X·Wᵀ (+ b)`.
 *
 * @example
 * ```ts
 * import { linearGate, matrix } from "@moekit/moekit";
 * const gate = linearGate({ weight: matrix.fromArrays([[1, 0], [0, 1], [1, 1]]), bias: [0, 0, 1] });
 * const out = matrix.zeros(1, 3);
 * gate.logits(matrix.fromArrays([[2, 3]]), out);
 * console.log(Array.from(out.data)); // [2, 3, 6]
 * ```
 */
export function linearGate(options: LinearGateOptions): LogitSource {
  const { weight, bias } = options;
  matrix.assertShape("gate weight", weight, -1, -1);
  if (weight.rows < 1) {
    throw new ShapeError("gate weight", [-1, weight.cols], [weight.rows, weight.cols], "E ≥ 1");
  }
  matrix.assertFinite("gate weight", weight);
  if (bias !== undefined && bias.length !== weight.rows) {
    throw new ShapeError("gate bias", [weight.rows], [bias.length], "one bias per expert");
  }
  const choice = options.backend ?? "auto";
  if (!["auto", "wasm", "js"].includes(choice)) {
    throw new OptionError("backend", choice, `use "auto", "wasm" or "js"`);
  }
  const backend: Backend = choice === "auto" ? (kernelInfo().wasm ? "wasm" : "js") : choice;
  const fast = backend === "wasm" ? wasmGemm(weight) : undefined;
  return {
    experts: weight.rows,
    inputDim: weight.cols,
    backend,
    ...(fast
      ? { scratch: fast.scratch, epilogue: fast.epilogue, kernel: { weightPtr: fast.weightPtr, bias } }
      : {}),
    logits(x, out) {
      if (x.cols !== weight.cols) {
        throw new ShapeError(
          "hidden states X",
          [-1, weight.cols],
          [x.rows, x.cols],
          `the gate weight is [${weight.rows},${weight.cols}] (nn.Linear layout [E,d])`,
        );
      }
      if (fast) fast.logits(x, out);
      else matrix.matmulT(x, weight, out);
      if (bias) matrix.addRowVector(out, bias);
      return out;
    },
  };
}
