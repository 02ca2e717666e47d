/**
 * GShard / fairseq Top2Gate / HF NLLB-MoE top-2 routing (docs/routing.md, "GShard top-2"): a selector
 * (first expert, second expert by policy) composed with the shared capacity code.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { softmaxInto } from "../core/numeric.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import type { Selector } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { Router } from "./result.ts";
import { checkK } from "./checks.ts";

/**
 * Options of {@link gshardRouter}.
 *
 * @example
 * ```ts
 * import { type GShardRouterOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: GShardRouterOptions = { weight: matrix.zeros(4, 8), secondExpertPolicy: "random" };
 * assert.equal(o.secondExpertPolicy, "random");
 * ```
 */
export interface GShardRouterOptions {
  /** Gate weight `[E,d]`, E ≥ 2. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default), `"native"`, `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Slots per expert. Default `2·ceil(T/E)` (GShard/fairseq); HF NLLB uses 64. */
  readonly capacity?: number;
  /**
   * Second expert: `"all"` always (default, NLLB); `"random"` keep iff `2·p2 > u` (training only);
   * `"sampling"` second expert = argmax(logits + Gumbel) with the first masked (training only). The
   * uniforms `u [T]` and the Gumbel noise `[T,E]` can be passed to `route` (`uniforms`, `gumbel`).
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

const EPS = 2.220446049250313e-16;

/**
 * The GShard top-2 selector: first expert = argmax p, second = argmax of the other logits (plus Gumbel
 * noise under `"sampling"`); under `"random"` the second is kept iff `2·p2 > u`, otherwise it stays in
 * the result with `keep = 0`. Weights are `p1, p2` (renormalised over the survivors by the capacity
 * step), or with `normalizeBeforeDropping` `p1/(p1+p2), p2/(p1+p2)` fixed before dropping (HF keeps the
 * raw `p2` under `"random"`).
 *
 * @example
 * ```ts
 * import { gshardSelect, matrix, Rng } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out = {
 *   indices: new Int32Array(2), weights: new Float32Array(2), scores: new Float32Array(2), keep: new Uint8Array(2),
 * };
 * gshardSelect({}).select(matrix.fromArrays([[0, 2, 1]]), 0, out, { training: false, rng: new Rng(0), tokens: 1 });
 * assert.deepEqual(Array.from(out.indices), [1, 2]);
 * ```
 */
export function gshardSelect(options: {
  readonly secondExpertPolicy?: "all" | "random" | "sampling";
  readonly normalizeBeforeDropping?: boolean;
}): Selector {
  const policy = options.secondExpertPolicy ?? "all", before = options.normalizeBeforeDropping ?? false;
  if (!["all", "random", "sampling"].includes(policy)) {
    throw new OptionError("secondExpertPolicy", policy, `use "all", "random" or "sampling"`);
  }
  return {
    name: "gshard",
    k: 2,
    scoreFunction: "softmax",
    needsAllTokens: false,
    random: policy !== "all",
    marksUnkept: true,
    validate: (E) => checkK(2, E),
    select(logits, tokenOffset, out, ctx) {
      const E = logits.cols, L = logits.data, T = ctx.tokens;
      const p = new Float64Array(E), masked = new Float64Array(E);
      const sampling = ctx.training && policy === "sampling", random = ctx.training && policy === "random";
      const u = random ? ctx.options?.uniforms : undefined, g = sampling ? ctx.options?.gumbel : undefined;
      if (u && u.length !== T) throw new ShapeError("uniforms", [T], [u.length], "one uniform per token");
      if (g && (g.rows !== T || g.cols !== E)) {
        throw new ShapeError("gumbel", [T, E], [g.rows, g.cols], "Gumbel noise per token and expert");
      }
      for (let i = 0; i < logits.rows; i++) {
        const t = tokenOffset + i, off = i * E;
        softmaxInto(L, off, E, p);
        let e1 = 0;
        for (let e = 1; e < E; e++) if (p[e] > p[e1]) e1 = e;
        for (let e = 0; e < E; e++) {
          masked[e] = e === e1
            ? -Infinity
            : L[off + e] + (sampling ? (g ? g.data[t * E + e] : ctx.rng.gumbel()) : 0);
        }
        let e2 = e1 === 0 ? 1 : 0;
        for (let e = 0; e < E; e++) if (masked[e] > masked[e2]) e2 = e;
        const p1 = p[e1], p2 = p[e2], o = 2 * t;
        out.indices[o] = e1;
        out.indices[o + 1] = e2;
        out.scores[o] = p1;
        out.scores[o + 1] = p2;
        let keepSecond = true;
        if (random) {
          const draw = u ? u[t] : ctx.rng.uniform();
          if (!(draw >= 0 && draw < 1)) throw new OptionError(`uniforms[${t}]`, draw, "must lie in [0, 1)");
          keepSecond = 2 * p2 > draw;
        }
        if (out.keep) out.keep[o + 1] = keepSecond ? 1 : 0;
        if (before) {
          const z = Math.max(p1 + p2, EPS);
          out.weights[o] = p1 / z;
          // HF overwrites g2 with the raw probability under the random policy
          out.weights[o + 1] = keepSecond ? (policy === "random" ? p2 : p2 / z) : 0;
        } else {
          out.weights[o] = p1;
          out.weights[o + 1] = keepSecond ? p2 : 0;
        }
      }
    },
  };
}

/**
 * GShard top-2: first expert = argmax p, second = argmax of the rest; positions per expert with the
 * second choices offset by the expert's number of first choices (the shared `position` / `bpr` capacity
 * policy); combine `p1/(p1+p2)`, `p2/(p1+p2)` over the surviving choices (a lone survivor gets 1).
 *
 * @example
 * ```ts
 * import { gshardRouter, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * // docs/routing.md, "GShard top-2" (probabilities as logits through W = I, C = 2)
 * const p = [[.5, .3, .2], [.5, .25, .25], [.2, .6, .2], [.6, .1, .3]];
 * const r = gshardRouter({ weight: matrix.identity(3), capacity: 2 })
 *   .route(matrix.fromArrays(p.map((row) => row.map(Math.log))));
 * assert.deepEqual(Array.from(r.keep!), [1, 1, 1, 0, 1, 0, 0, 1]);
 * ```
 */
export function gshardRouter(options: GShardRouterOptions): Router {
  const gate = linearGate({ weight: options.weight, backend: options.backend });
  checkK(2, gate.experts);
  if (options.capacity !== undefined && (!Number.isInteger(options.capacity) || options.capacity < 0)) {
    throw new OptionError("capacity", options.capacity, "must be an integer ≥ 0");
  }
  const before = options.normalizeBeforeDropping ?? false;
  return composeRouter({
    name: "gshard",
    gate,
    selector: gshardSelect(options),
    capacity: {
      capacity: options.capacity ?? "gshard",
      policy: options.batchPrioritized ? "bpr" : "position",
      combine: before ? "keep" : "renormalize",
    },
    training: options.training,
    seed: options.seed,
  });
}
