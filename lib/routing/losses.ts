/**
 * Auxiliary losses (docs/routing.md, "Auxiliary losses"), returned without their coefficient and computed in float64 from the
 * router logits (route with `{ returnLogits: true }`).
 * @module
 */

import { MoekitError, NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";
import { logSumExp, sigmoid, softmaxInto } from "../core/numeric.ts";
import { isKept, type RoutingResult } from "./result.ts";

function logitsOf(r: RoutingResult, what: string): Float32Array {
  if (!r.logits) {
    throw new MoekitError(`${what} needs the router logits: route with { returnLogits: true }`);
  }
  return r.logits.data;
}

/**
 * Writes token t's gate scores over all experts into `p`: softmax, or (sigmoid routers) the sigmoid
 * scores divided by their sum (DeepSeek-V3's s'), so every convention keeps its balanced value.
 */
function scoresInto(r: RoutingResult, L: Float32Array, t: number, p: Float64Array): void {
  const E = r.experts;
  if (r.scoreFunction === "none") {
    throw new MoekitError(
      'this router\'s scores are not gate probabilities (scoreFunction "none"): no logit-based loss',
    );
  }
  if (r.scoreFunction === "softmax") {
    softmaxInto(L, t * E, E, p);
    return;
  }
  let s = 0;
  for (let e = 0; e < E; e++) s += p[e] = sigmoid(L[t * E + e]);
  for (let e = 0; e < E; e++) p[e] /= s;
}

function sameExperts(results: readonly RoutingResult[]): { E: number; k: number } {
  if (results.length === 0) throw new MoekitError("a loss needs at least one routing result");
  const { experts: E, k } = results[0];
  for (const [l, r] of results.entries()) {
    if (r.experts !== E || r.k !== k) {
      throw new MoekitError(
        `routing result ${l} has E = ${r.experts}, k = ${r.k}; result 0 has E = ${E}, k = ${k}`,
      );
    }
  }
  return { E, k };
}

/**
 * Options of {@link balanceLoss}.
 *
 * @example
 * ```ts
 * import { type BalanceLossOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: BalanceLossOptions = { convention: "hf" };
 * assert.equal(o.convention, "hf");
 * ```
 */
export interface BalanceLossOptions {
  /**
   * `"megatron"` (default; balanced value 1): `E/(k·T²)·Σ_e (Σ_t p[t,e])·c_e`, averaged over layers;
   * `"hf"` (balanced value k): layers concatenated, `E·Σ_{j,e} f[j,e]·P[e]` over all top-k choices;
   * `"switch"` (= GShard `l_aux`, balanced value 1): per group, `E²·mean_e(f·P)` with f the pre-drop first choice.
   */
  readonly convention?: "hf" | "megatron" | "switch";
  /** Megatron counts: `"kept"` assignments (default) or all `"selected"` ones. */
  readonly counts?: "kept" | "selected";
  /** Switch: tokens per group. Default all tokens. */
  readonly groupSize?: number;
  /**
   * Attention mask `[T]` (1 = real token, 0 = padding; HF's `[B,S]` flattened), applied to every layer's
   * result: padding rows leave both the token fractions and the mean probabilities (as HF's
   * `load_balancing_loss_func`). Default: every row counts.
   */
  readonly attentionMask?: ArrayLike<number>;
  /**
   * Switch convention only: count a dropped token as routed to expert 0, as HF Switch does (it passes
   * `argmax(router_mask)`, which is 0 for a token with no expert). Default false (flaxformer: the
   * pre-drop first choice).
   */
  readonly auxLossHfDroppedAsExpert0?: boolean;
}

/**
 * Load-balancing auxiliary loss of one layer or several (HF concatenates layers).
 *
 * @example
 * ```ts
 * import { balanceLoss, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[4, 2, 1, 1], [4, 1, 2, 1]].map((r) => r.map(Math.log)));
 * const r = topKRouter({ weight: matrix.identity(4), k: 2 }).route(x, { returnLogits: true });
 * assert.equal(balanceLoss(r, { convention: "hf" }).toFixed(4), "2.7500");
 * assert.equal(balanceLoss(r).toFixed(4), "1.3750");
 * ```
 */
export function balanceLoss(
  results: RoutingResult | readonly RoutingResult[],
  options: BalanceLossOptions = {},
): number {
  const list = Array.isArray(results) ? results as readonly RoutingResult[] : [results as RoutingResult];
  const { E, k } = sameExperts(list);
  const convention = options.convention ?? "megatron";
  const mask = options.attentionMask;
  if (mask !== undefined) {
    for (const r of list) {
      if (mask.length !== r.tokens) {
        throw new ShapeError("attentionMask", [r.tokens], [mask.length], "one entry per token of each layer");
      }
    }
    for (let t = 0; t < mask.length; t++) {
      if (mask[t] !== 0 && mask[t] !== 1) {
        throw new OptionError(`attentionMask[${t}]`, mask[t], "must be 0 or 1");
      }
    }
  }
  const real = (t: number) => mask === undefined || mask[t] === 1;
  const realRows = (T: number) => {
    if (mask === undefined) return T;
    let n = 0;
    for (let t = 0; t < T; t++) n += mask[t];
    return n;
  };
  if (options.auxLossHfDroppedAsExpert0 && convention !== "switch") {
    throw new OptionError("auxLossHfDroppedAsExpert0", true, `applies to convention "switch" only`);
  }
  const p = new Float64Array(E);
  if (convention === "hf") {
    const P = new Float64Array(E), f = new Float64Array(k * E);
    let rows = 0;
    for (const r of list) {
      const L = logitsOf(r, "balanceLoss");
      for (let t = 0; t < r.tokens; t++) {
        if (!real(t)) continue;
        scoresInto(r, L, t, p);
        for (let e = 0; e < E; e++) P[e] += p[e];
        for (let j = 0; j < k; j++) if (r.indices[t * k + j] >= 0) f[j * E + r.indices[t * k + j]]++;
      }
      rows += realRows(r.tokens);
    }
    let s = 0;
    for (let j = 0; j < k; j++) for (let e = 0; e < E; e++) s += f[j * E + e] * P[e];
    return rows > 0 ? (E * s) / (rows * rows) : 0;
  }
  if (convention === "megatron") {
    let total = 0;
    for (const r of list) {
      const L = logitsOf(r, "balanceLoss"), P = new Float64Array(E), c = new Float64Array(E);
      for (let t = 0; t < r.tokens; t++) {
        if (!real(t)) continue;
        scoresInto(r, L, t, p);
        for (let e = 0; e < E; e++) P[e] += p[e];
        for (let j = 0; j < k; j++) {
          const i = t * k + j;
          if (options.counts === "selected" ? r.indices[i] >= 0 : isKept(r, i)) c[r.indices[i]]++;
        }
      }
      let s = 0;
      for (let e = 0; e < E; e++) s += P[e] * c[e];
      const n = realRows(r.tokens);
      total += n > 0 ? (E * s) / (k * n * n) : 0;
    }
    return total / list.length;
  }
  if (convention === "switch") {
    let total = 0, groups = 0;
    for (const r of list) {
      const L = logitsOf(r, "balanceLoss"), S = options.groupSize ?? r.tokens;
      if (!Number.isInteger(S) || S < 1) throw new OptionError("groupSize", S, "must be an integer ≥ 1");
      for (let g0 = 0; g0 < r.tokens; g0 += S) {
        const g1 = Math.min(r.tokens, g0 + S);
        let n = 0;
        for (let t = g0; t < g1; t++) if (real(t)) n++;
        if (n === 0) continue;
        const P = new Float64Array(E), f = new Float64Array(E);
        for (let t = g0; t < g1; t++) {
          if (!real(t)) continue;
          scoresInto(r, L, t, p);
          for (let e = 0; e < E; e++) P[e] += p[e] / n;
          const first = options.auxLossHfDroppedAsExpert0 && !isKept(r, t * k) ? 0 : r.indices[t * k];
          f[first] += 1 / n;
        }
        let s = 0;
        for (let e = 0; e < E; e++) s += f[e] * P[e];
        total += (s / E) * E * E;
        groups++;
      }
    }
    return groups > 0 ? total / groups : 0;
  }
  throw new OptionError("convention", convention, `use "hf", "megatron" or "switch"`);
}

/**
 * ST-MoE router z-loss `mean_t (logsumexp_e logits[t,e])²` (over all tokens of all given layers).
 *
 * @example
 * ```ts
 * import { matrix, topKRouter, zLoss } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[4, 2, 1, 1]].map((r) => r.map(Math.log)));
 * const r = topKRouter({ weight: matrix.identity(4), k: 2 }).route(x, { returnLogits: true });
 * assert.equal(zLoss(r).toFixed(4), "4.3241"); // (ln 8)²
 * ```
 */
export function zLoss(results: RoutingResult | readonly RoutingResult[]): number {
  const list = Array.isArray(results) ? results as readonly RoutingResult[] : [results as RoutingResult];
  let s = 0, n = 0;
  for (const r of list) {
    const L = logitsOf(r, "zLoss");
    for (let t = 0; t < r.tokens; t++) s += logSumExp(L, t * r.experts, r.experts) ** 2;
    n += r.tokens;
  }
  return n > 0 ? s / n : 0;
}

/**
 * DeepSeek sequence-wise auxiliary loss: per sequence b, `ce[b,e] = count_b(e)/(S·k/E)`, loss
 * `mean_b Σ_e ce[b,e]·mean_s s'[b,s,e]` with s' = softmax (V2) or the sigmoid scores divided by their sum
 * (V3). `sequenceLength = T` (default) gives the batch-wise form.
 *
 * @example
 * ```ts
 * import { matrix, seqAuxLoss, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[4, 2, 1, 1], [4, 1, 2, 1]].map((r) => r.map(Math.log)));
 * const r = topKRouter({ weight: matrix.identity(4), k: 2 }).route(x, { returnLogits: true });
 * assert.equal(seqAuxLoss(r).toFixed(4), "1.3750");
 * ```
 */
export function seqAuxLoss(r: RoutingResult, options: { readonly sequenceLength?: number } = {}): number {
  const L = logitsOf(r, "seqAuxLoss"), E = r.experts, k = r.k, S = options.sequenceLength ?? r.tokens;
  if (!Number.isInteger(S) || S < 1 || r.tokens % S !== 0) {
    throw new OptionError("sequenceLength", S, `must be an integer ≥ 1 dividing T = ${r.tokens}`);
  }
  const p = new Float64Array(E), P = new Float64Array(E), ce = new Float64Array(E);
  let total = 0;
  const B = r.tokens / S;
  for (let b = 0; b < B; b++) {
    P.fill(0);
    ce.fill(0);
    for (let t = b * S; t < (b + 1) * S; t++) {
      scoresInto(r, L, t, p);
      for (let e = 0; e < E; e++) P[e] += p[e] / S;
      for (let j = 0; j < k; j++) if (r.indices[t * k + j] >= 0) ce[r.indices[t * k + j]] += E / (S * k);
    }
    for (let e = 0; e < E; e++) total += ce[e] * P[e];
  }
  return B > 0 ? total / B : 0;
}

/**
 * Shazeer et al. 2017 balance loss `cv²(importance) + cv²(load)` with `cv² = popVar/(mean² + 1e-10)`
 * (the coefficient, 1e-2 in tensor2tensor, is not applied).
 *
 * @example
 * ```ts
 * import { cvSquaredLoss } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(cvSquaredLoss([1, 1, 1], [2, 2, 2]), 0);
 * assert.equal(cvSquaredLoss([2, 0], [1, 1]).toFixed(6), "1.000000");
 * ```
 */
export function cvSquaredLoss(importance: ArrayLike<number>, load: ArrayLike<number>): number {
  if (importance.length !== load.length) {
    throw new ShapeError("load", [importance.length], [load.length], "one value per expert, like importance");
  }
  for (const [name, v] of [["importance", importance], ["load", load]] as const) {
    for (let e = 0; e < v.length; e++) {
      if (!Number.isFinite(v[e])) throw new NonFiniteError(name, 0, e, v[e]);
    }
  }
  return cvSquared(importance) + cvSquared(load);
}

function cvSquared(v: ArrayLike<number>): number {
  if (v.length < 2) return 0;
  let mean = 0;
  for (let i = 0; i < v.length; i++) mean += v[i];
  mean /= v.length;
  let varSum = 0;
  for (let i = 0; i < v.length; i++) varSum += (v[i] - mean) ** 2;
  return varSum / v.length / (mean * mean + 1e-10);
}
