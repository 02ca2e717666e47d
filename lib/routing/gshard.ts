/**
 * GShard / fairseq Top2Gate / HF NLLB-MoE top-2 routing (routing.md §5).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { softmaxInto } from "../core/numeric.ts";
import { type Backend, linearGate } from "./gate.ts";
import { scoreMatrix } from "./compose.ts";
import { checkTokens } from "./checks.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";
import { checkK } from "./checks.ts";

/**
 * Options of {@link gshardRouter}.
 *
 * @example
 * ```ts
 * import { type GShardRouterOptions, matrix } from "@moekit/moekit";
 * const o: GShardRouterOptions = { weight: matrix.zeros(4, 8), secondExpertPolicy: "random" };
 * console.log(o.secondExpertPolicy); // random
 * ```
 */
export interface GShardRouterOptions {
  /** Gate weight `[E,d]`, E ≥ 2. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: Backend | "auto";
  /** Slots per expert. Default `2·ceil(T/E)` (GShard/fairseq); HF NLLB uses 64. */
  readonly capacity?: number;
  /**
   * Second expert: `"all"` always (default, NLLB); `"random"` keep iff `2·p2 > u` (training only);
   * `"sampling"` second expert = argmax(logits + Gumbel) with the first masked (training only).
   */
  readonly secondExpertPolicy?: "all" | "random" | "sampling";
  /** Order claims by top-1 probability (BPR) instead of token order. Default false. */
  readonly batchPrioritized?: boolean;
  /** Renormalise `p1, p2` before dropping (HF `normalize_router_prob_before_dropping`). Default false. */
  readonly normalizeBeforeDropping?: boolean;
  /** Default training mode. Default false. */
  readonly training?: boolean;
  /** Default seed of the uniforms / Gumbel draws. */
  readonly seed?: number;
}

/**
 * GShard top-2: first expert = argmax p, second = argmax of the rest; positions per expert with the
 * second choices offset by the expert's number of first choices; combine `p1/(p1+p2)`, `p2/(p1+p2)` over
 * the surviving choices (a lone survivor gets 1).
 *
 * @example
 * ```ts
 * import { gshardRouter, matrix } from "@moekit/moekit";
 * // routing.md Example D (probabilities as logits through W = I, C = 2)
 * const p = [[.5, .3, .2], [.5, .25, .25], [.2, .6, .2], [.6, .1, .3]];
 * const r = gshardRouter({ weight: matrix.identity(3), capacity: 2 })
 *   .route(matrix.fromArrays(p.map((row) => row.map(Math.log))));
 * console.log(Array.from(r.keep!)); // [1, 1, 1, 0, 1, 0, 0, 1]
 * ```
 */
export function gshardRouter(options: GShardRouterOptions): Router {
  const gate = linearGate({ weight: options.weight, backend: options.backend });
  const E = gate.experts;
  checkK(2, E);
  const policy = options.secondExpertPolicy ?? "all";
  if (!["all", "random", "sampling"].includes(policy)) {
    throw new OptionError("secondExpertPolicy", policy, `use "all", "random" or "sampling"`);
  }
  return {
    name: "gshard",
    experts: E,
    k: 2,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      checkTokens(x, gate.inputDim);
      const T = x.rows, training = opts.training ?? options.training ?? false;
      const rng = new Rng(opts.seed ?? options.seed ?? 0);
      const C = options.capacity ?? 2 * Math.ceil(T / E);
      if (!Number.isInteger(C) || C < 0) throw new OptionError("capacity", C, "must be an integer ≥ 0");
      const logits = gate.logits(x, matrix.zeros(T, E));
      const p = new Float64Array(E), masked = new Float64Array(E);
      const idx = new Int32Array(2 * T).fill(-1), score = new Float64Array(2 * T);
      for (let t = 0; t < T; t++) {
        softmaxInto(logits.data, t * E, E, p);
        let e1 = 0;
        for (let e = 1; e < E; e++) if (p[e] > p[e1]) e1 = e;
        for (let e = 0; e < E; e++) {
          masked[e] = e === e1
            ? -Infinity
            : logits.data[t * E + e] + (training && policy === "sampling" ? rng.gumbel() : 0);
        }
        let e2 = e1 === 0 ? 1 : 0;
        for (let e = 0; e < E; e++) if (masked[e] > masked[e2]) e2 = e;
        idx[2 * t] = e1;
        score[2 * t] = p[e1];
        score[2 * t + 1] = p[e2];
        const keepSecond = !(training && policy === "random") || 2 * p[e2] > rng.uniform();
        idx[2 * t + 1] = keepSecond ? e2 : -1;
      }
      const order = Array.from({ length: T }, (_, t) => t);
      if (options.batchPrioritized) order.sort((a, b) => score[2 * b] - score[2 * a] || a - b);
      const keep = new Uint8Array(2 * T), slot = new Int32Array(2 * T).fill(-1), count = new Int32Array(E);
      for (let j = 0; j < 2; j++) {
        for (const t of order) {
          const e = idx[2 * t + j];
          if (e < 0) continue;
          const pos = count[e]++; // second choices start after all first choices of e
          if (pos < C) {
            keep[2 * t + j] = 1;
            slot[2 * t + j] = pos;
          }
        }
      }
      const weights = new Float32Array(2 * T);
      for (let t = 0; t < T; t++) {
        const i = 2 * t, p1 = score[i], p2 = idx[i + 1] >= 0 ? score[i + 1] : 0;
        if (options.normalizeBeforeDropping) {
          const z = Math.max(p1 + p2, 2.220446049250313e-16);
          weights[i] = keep[i] ? p1 / z : 0;
          // HF overwrites g2 with the raw probability under the random policy
          weights[i + 1] = keep[i + 1] ? (policy === "random" ? p2 : p2 / z) : 0;
        } else {
          const a = keep[i] ? p1 : 0, b = keep[i + 1] ? p2 : 0, z = Math.max(a + b, 2.220446049250313e-16);
          weights[i] = a / z;
          weights[i + 1] = b / z;
        }
      }
      return {
        tokens: T,
        experts: E,
        k: 2,
        indices: idx,
        weights,
        scores: Float32Array.from(score),
        keep,
        slot,
        capacity: C,
        scoreFunction: "softmax",
        ...(opts.returnLogits ? { logits } : {}),
        ...(opts.returnProbs ? { probs: scoreMatrix(logits, "softmax") } : {}),
      };
    },
  };
}
