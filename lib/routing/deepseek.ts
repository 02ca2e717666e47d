/**
 * DeepSeek routing (docs/routing.md, "DeepSeek-V3 and V2"): V3 sigmoid scores with a selection-only correction bias, group-
 * limited top-k and routed scaling; V2 softmax group-limited greedy; the aux-loss-free bias update and
 * a loop that runs it over batches.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";
import { sigmoid, softmaxInto } from "../core/numeric.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import { type Selector, topKIndices } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";
import { registerSelector } from "./registry.ts";
import { checkK } from "./checks.ts";
import { loadMetrics } from "./metrics.ts";

/**
 * Options of {@link deepseekV3Router}. Defaults are the generic (ungrouped) form; `preset: "deepseek-v3"`
 * sets the 671B config (nGroup 8, topkGroup 4, routedScalingFactor 2.5).
 *
 * @example
 * ```ts
 * import { type DeepSeekV3RouterOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: DeepSeekV3RouterOptions = { weight: matrix.zeros(256, 32), preset: "deepseek-v3" };
 * assert.equal(o.preset, "deepseek-v3");
 * ```
 */
export interface DeepSeekV3RouterOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Choices per token. Default 8 (preset) or min(8, E). */
  readonly k?: number;
  /** Number of expert groups (E divisible by it). Default 1. */
  readonly nGroup?: number;
  /** Groups kept per token. Default nGroup (no limit). */
  readonly topkGroup?: number;
  /** Group score = sum of the top `groupTopN` biased scores in the group. Default 2. */
  readonly groupTopN?: number;
  /**
   * Expert-score correction bias `[E]`, used for selection only. The router keeps this very array, so
   * {@link deepseekBiasUpdate} applied to it changes later routing. Default zeros.
   */
  readonly bias?: Float32Array;
  /** Masked experts' value: `"-inf"` (official, Megatron, default) or `"zero"` (HF). */
  readonly maskValue?: "-inf" | "zero";
  /** Renormalise the k sigmoid scores (with +1e-20). Default true. */
  readonly normTopkProb?: boolean;
  /** Multiply the weights by this. Default 1 (preset 2.5). */
  readonly routedScalingFactor?: number;
  /** The DeepSeek-V3 config. */
  readonly preset?: "deepseek-v3";
}

/** The preset values of {@link deepseekV3Router}. */
const V3_PRESET = { k: 8, nGroup: 8, topkGroup: 4, routedScalingFactor: 2.5 };

function checkGroups(E: number, k: number, nGroup: number, topkGroup: number): void {
  if (!Number.isInteger(nGroup) || nGroup < 1 || E % nGroup !== 0) {
    throw new OptionError("nGroup", nGroup, `must be an integer ≥ 1 that divides E = ${E}`);
  }
  if (!Number.isInteger(topkGroup) || topkGroup < 1 || topkGroup > nGroup) {
    throw new OptionError("topkGroup", topkGroup, `must be an integer in 1..nGroup = ${nGroup}`);
  }
  checkK(k, E);
  if (k > topkGroup * (E / nGroup)) {
    throw new OptionError(
      "k",
      k,
      `k exceeds the ${topkGroup * (E / nGroup)} experts in the ${topkGroup} kept groups`,
    );
  }
}

/** Throws unless `routedScalingFactor` is a finite number > 0 (a NaN or negative scale corrupts every weight). */
function checkScale(scale: number): void {
  if (!(scale > 0) || !Number.isFinite(scale)) {
    throw new OptionError(
      "routedScalingFactor",
      scale,
      "must be a finite number > 0 (DeepSeek-V3: 2.5, V2: 16)",
    );
  }
}

/**
 * Throws unless the correction bias is finite: a NaN bias silently reorders the selection. Checked when the
 * router is built and on every routing, since the bias array is live (updated between batches).
 */
function checkBiasFinite(bias: Float32Array): void {
  for (let e = 0; e < bias.length; e++) {
    if (!Number.isFinite(bias[e])) throw new NonFiniteError("e_score_correction_bias", 0, e, bias[e]);
  }
}

/** The `groupIndices [T·topkGroup]` output buffer when the call asked for it (`returnGroups`). */
function groupOutput(
  ctx: {
    readonly options?: RouteOptions;
    readonly outputs?: Record<string, unknown>;
    readonly tokens: number;
  },
  topkGroup: number,
): Int32Array | undefined {
  if (!ctx.options?.returnGroups || !ctx.outputs) return undefined;
  return (ctx.outputs.groupIndices ??= new Int32Array(ctx.tokens * topkGroup)) as Int32Array;
}

/**
 * Keeps the `topkGroup` best groups of `c[off .. off+E)` by `groupScore` and masks the rest of `c` with
 * `mask` in place (ties → lower group).
 */
function maskGroups(
  c: Float64Array,
  E: number,
  nGroup: number,
  topkGroup: number,
  groupScore: (c: Float64Array, start: number, size: number) => number,
  mask: number,
  gScores: Float64Array,
  gIdx: Int32Array,
  groupsOut: Int32Array | undefined,
  token: number,
): void {
  if (topkGroup >= nGroup && !groupsOut) return;
  const size = E / nGroup;
  for (let g = 0; g < nGroup; g++) gScores[g] = groupScore(c, g * size, size);
  topKIndices(gScores, 0, nGroup, topkGroup, gIdx, 0);
  if (groupsOut) groupsOut.set(gIdx, token * topkGroup);
  if (topkGroup >= nGroup) return;
  for (let g = 0; g < nGroup; g++) {
    let kept = false;
    for (let j = 0; j < topkGroup; j++) if (gIdx[j] === g) kept = true;
    if (!kept) c.fill(mask, g * size, (g + 1) * size);
  }
}

function sumTopN(n: number): (c: Float64Array, start: number, size: number) => number {
  const idx = new Int32Array(n);
  return (c, start, size) => {
    const m = Math.min(n, size);
    topKIndices(c, start, size, m, idx, 0);
    let s = 0;
    for (let j = 0; j < m; j++) s += c[start + idx[j]];
    return s;
  };
}

function groupMax(c: Float64Array, start: number, size: number): number {
  let m = -Infinity;
  for (let i = 0; i < size; i++) if (c[start + i] > m) m = c[start + i];
  return m;
}

/**
 * The DeepSeek-V3 selector: sigmoid scores, bias for selection only, group-limited top-k, unbiased
 * weights, optional renormalisation and routed scaling.
 *
 * @example
 * ```ts
 * import { matrix, Rng, sigmoidGroupedTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out = { indices: new Int32Array(2), weights: new Float32Array(2), scores: new Float32Array(2) };
 * sigmoidGroupedTopK({ k: 2 }).select(matrix.fromArrays([[0, 2, 1]]), 0, out, {
 *   training: false, rng: new Rng(0), tokens: 1,
 * });
 * assert.deepEqual(Array.from(out.indices), [1, 2]);
 * ```
 */
export function sigmoidGroupedTopK(
  options: Omit<DeepSeekV3RouterOptions, "weight" | "preset"> & { readonly k: number },
): Selector {
  const { k } = options;
  const nGroup = options.nGroup ?? 1, topkGroup = options.topkGroup ?? nGroup;
  const scale = options.routedScalingFactor ?? 1, norm = options.normTopkProb ?? true;
  const mask = (options.maskValue ?? "-inf") === "-inf" ? -Infinity : 0;
  if (options.maskValue !== undefined && !["-inf", "zero"].includes(options.maskValue)) {
    throw new OptionError("maskValue", options.maskValue, `use "-inf" or "zero"`);
  }
  const groupTopN = options.groupTopN ?? 2;
  if (!Number.isInteger(groupTopN) || groupTopN < 1) {
    throw new OptionError(
      "groupTopN",
      groupTopN,
      "must be an integer ≥ 1 (DeepSeek-V3: 2; Megatron: k/topkGroup)",
    );
  }
  checkScale(scale);
  const groupScore = sumTopN(groupTopN);
  return {
    name: "deepseek-v3",
    k,
    scoreFunction: "sigmoid",
    needsAllTokens: false,
    precomputed: "sigmoid",
    spec: () => ({
      module: import.meta.url,
      kind: "sigmoidGroupedTopK",
      options: {
        k,
        nGroup,
        topkGroup,
        groupTopN,
        maskValue: options.maskValue ?? "-inf",
        normTopkProb: norm,
        routedScalingFactor: scale,
        ...(options.bias ? { bias: Array.from(options.bias) } : {}),
      },
    }),
    validate(E) {
      checkGroups(E, k, nGroup, topkGroup);
      if (options.bias && options.bias.length !== E) {
        throw new ShapeError("e_score_correction_bias", [E], [options.bias.length], "one bias per expert");
      }
      if (options.bias) checkBiasFinite(options.bias);
    },
    select(logits, tokenOffset, out, ctx) {
      const E = logits.cols, bias = options.bias, pre = ctx.sigmoid;
      if (bias) checkBiasFinite(bias);
      const s = new Float64Array(E), c = new Float64Array(E);
      const gScores = new Float64Array(nGroup), gIdx = new Int32Array(topkGroup);
      const groups = groupOutput(ctx, topkGroup);
      for (let i = 0; i < logits.rows; i++) {
        for (let e = 0; e < E; e++) {
          const l = logits.data[i * E + e];
          s[e] = pre ? pre[i * E + e] : sigmoid(l);
          // a masked expert (logit −∞) stays out of the selection whatever its bias
          c[e] = l === -Infinity ? -Infinity : s[e] + (bias ? bias[e] : 0);
        }
        maskGroups(c, E, nGroup, topkGroup, groupScore, mask, gScores, gIdx, groups, tokenOffset + i);
        const o = (tokenOffset + i) * k;
        topKIndices(c, 0, E, k, out.indices, o);
        let sum = 0;
        for (let j = 0; j < k; j++) sum += s[out.indices[o + j]];
        for (let j = 0; j < k; j++) {
          const v = s[out.indices[o + j]];
          out.scores[o + j] = v;
          out.weights[o + j] = (norm ? v / (sum + 1e-20) : v) * scale;
        }
      }
    },
  };
}

/**
 * DeepSeek-V3 router (`noaux_tc`). The correction bias is live: update it with
 * {@link deepseekBiasUpdate} (or {@link runBiasBalancing}) between batches.
 *
 * @example
 * ```ts
 * import { deepseekV3Router, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * // docs/routing.md, "DeepSeek-V3 and V2": scores s through logit(s), W = I
 * const s = [.9, .1, .6, .5, .7, .65, .2, .3];
 * const router = deepseekV3Router({
 *   weight: matrix.identity(8), k: 2, nGroup: 4, topkGroup: 2, routedScalingFactor: 2.5,
 *   bias: new Float32Array([0, 0, 0, 0, -.3, -.3, 0, 0]),
 * });
 * const r = router.route(matrix.fromArrays([s.map((v) => Math.log(v / (1 - v)))]));
 * assert.deepEqual(Array.from(r.indices), [0, 2]);
 * ```
 */
export function deepseekV3Router(options: DeepSeekV3RouterOptions): Router & { readonly bias: Float32Array } {
  const pre = options.preset === "deepseek-v3" ? V3_PRESET : undefined;
  if (options.preset !== undefined && !pre) {
    throw new OptionError("preset", options.preset, `use "deepseek-v3"`);
  }
  const E = options.weight.rows;
  const bias = options.bias ?? new Float32Array(E);
  const k = options.k ?? pre?.k ?? Math.min(8, E);
  const router = composeRouter({
    name: "deepseek-v3",
    gate: linearGate({ weight: options.weight, backend: options.backend }),
    selector: sigmoidGroupedTopK({
      ...options,
      k,
      bias,
      nGroup: options.nGroup ?? pre?.nGroup,
      topkGroup: options.topkGroup ?? pre?.topkGroup,
      routedScalingFactor: options.routedScalingFactor ?? pre?.routedScalingFactor,
    }),
  });
  return { ...router, route: router.route, bias };
}

/**
 * Options of {@link deepseekV2Router}.
 *
 * @example
 * ```ts
 * import { type DeepSeekV2RouterOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: DeepSeekV2RouterOptions = { weight: matrix.zeros(160, 8), k: 6, nGroup: 8, topkGroup: 3 };
 * assert.equal(o.topkGroup, 3);
 * ```
 */
export interface DeepSeekV2RouterOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Choices per token. Default min(6, E). */
  readonly k?: number;
  /** `"group_limited_greedy"` (default) or `"greedy"` (no group limit, V2-Lite). */
  readonly method?: "group_limited_greedy" | "greedy";
  /** Number of groups. Default 1. */
  readonly nGroup?: number;
  /** Groups kept per token (by group max). Default nGroup. */
  readonly topkGroup?: number;
  /** Renormalise when k > 1 (then no scaling). Default false. */
  readonly normTopkProb?: boolean;
  /** Scale when not renormalising. Default 1 (V2: 16). */
  readonly routedScalingFactor?: number;
}

/**
 * The DeepSeek-V2 selector: softmax, groups scored by their max, others masked 0, top-k, then
 * `k > 1 && norm ? w/(Σw + 1e-20) : w·scale`.
 *
 * @example
 * ```ts
 * import { matrix, Rng, softmaxGroupedTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const out = { indices: new Int32Array(1), weights: new Float32Array(1), scores: new Float32Array(1) };
 * softmaxGroupedTopK({ k: 1, nGroup: 2, topkGroup: 1 }).select(matrix.fromArrays([[0, 1, 3, 2]]), 0, out, {
 *   training: false, rng: new Rng(0), tokens: 1,
 * });
 * assert.equal(out.indices[0], 2);
 * ```
 */
export function softmaxGroupedTopK(
  options: Omit<DeepSeekV2RouterOptions, "weight"> & { readonly k: number },
): Selector {
  const k = options.k, greedy = options.method === "greedy";
  if (options.method !== undefined && !["group_limited_greedy", "greedy"].includes(options.method)) {
    throw new OptionError("method", options.method, `use "group_limited_greedy" or "greedy"`);
  }
  const nGroup = greedy ? 1 : options.nGroup ?? 1, topkGroup = greedy ? 1 : options.topkGroup ?? nGroup;
  const norm = options.normTopkProb ?? false, scale = options.routedScalingFactor ?? 1;
  checkScale(scale);
  return {
    name: "deepseek-v2",
    k,
    scoreFunction: "softmax",
    needsAllTokens: false,
    spec: () => ({
      module: import.meta.url,
      kind: "softmaxGroupedTopK",
      options: {
        k,
        method: greedy ? "greedy" : "group_limited_greedy",
        nGroup,
        topkGroup,
        normTopkProb: norm,
        routedScalingFactor: scale,
      },
    }),
    validate: (E) => checkGroups(E, k, nGroup, topkGroup),
    select(logits, tokenOffset, out, ctx) {
      const E = logits.cols, s = new Float64Array(E), c = new Float64Array(E);
      const gScores = new Float64Array(nGroup), gIdx = new Int32Array(topkGroup);
      const groups = groupOutput(ctx, topkGroup);
      for (let i = 0; i < logits.rows; i++) {
        softmaxInto(logits.data, i * E, E, s);
        c.set(s);
        // a masked expert has probability 0 and stays out of the selection
        for (let e = 0; e < E; e++) if (logits.data[i * E + e] === -Infinity) c[e] = -Infinity;
        maskGroups(c, E, nGroup, topkGroup, groupMax, 0, gScores, gIdx, groups, tokenOffset + i);
        const o = (tokenOffset + i) * k;
        topKIndices(c, 0, E, k, out.indices, o);
        let sum = 0;
        for (let j = 0; j < k; j++) sum += s[out.indices[o + j]];
        for (let j = 0; j < k; j++) {
          const v = s[out.indices[o + j]];
          out.scores[o + j] = v;
          out.weights[o + j] = k > 1 && norm ? v / (sum + 1e-20) : v * scale;
        }
      }
    },
  };
}

/**
 * DeepSeek-V2 router (softmax, group-limited greedy).
 *
 * @example
 * ```ts
 * import { deepseekV2Router, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = deepseekV2Router({ weight: matrix.randn(16, 8, { seed: 1 }), k: 3, nGroup: 4, topkGroup: 2 })
 *   .route(matrix.randn(4, 8, { seed: 2 }));
 * assert.equal(r.k, 3);
 * ```
 */
export function deepseekV2Router(options: DeepSeekV2RouterOptions): Router {
  return composeRouter({
    name: "deepseek-v2",
    gate: linearGate({ weight: options.weight, backend: options.backend }),
    selector: softmaxGroupedTopK({ ...options, k: options.k ?? Math.min(6, options.weight.rows) }),
  });
}

/**
 * The aux-loss-free bias update: `b_e += γ·sign(mean(c) − c_e)` with `sign(0) = 0`, in place. Returns
 * the change Δb.
 *
 * @example
 * ```ts
 * import { deepseekBiasUpdate } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const bias = new Float32Array(4);
 * const delta = deepseekBiasUpdate(bias, [5, 3, 3, 1], 0.001); // docs/routing.md, "DeepSeek-V3 and V2"
 * assert.deepEqual(Array.from(delta), [-0.001, 0, 0, 0.001]);
 * ```
 */
export function deepseekBiasUpdate(
  bias: Float32Array,
  counts: ArrayLike<number>,
  gamma = 0.001,
): Float64Array {
  if (counts.length !== bias.length) throw new ShapeError("expert counts", [bias.length], [counts.length]);
  if (!(gamma >= 0) || !Number.isFinite(gamma)) {
    throw new OptionError("gamma", gamma, "must be a finite number ≥ 0");
  }
  for (let e = 0; e < counts.length; e++) {
    if (!(counts[e] >= 0) || !Number.isFinite(counts[e])) {
      throw new OptionError(
        `counts[${e}]`,
        counts[e],
        "expert counts must be finite numbers ≥ 0 (the bias is unchanged)",
      );
    }
  }
  let mean = 0;
  for (let e = 0; e < counts.length; e++) mean += counts[e];
  mean /= counts.length;
  const delta = new Float64Array(bias.length);
  for (let e = 0; e < bias.length; e++) {
    delta[e] = gamma * Math.sign(mean - counts[e]);
    bias[e] += delta[e];
  }
  return delta;
}

/**
 * One step of {@link runBiasBalancing}.
 *
 * @example
 * ```ts
 * import { type BiasBalancingStep } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const s: BiasBalancingStep = { step: 0, maxVio: 0.5, counts: new Float64Array(2) };
 * assert.equal(s.maxVio, 0.5);
 * ```
 */
export interface BiasBalancingStep {
  /** Step number from 0. */
  readonly step: number;
  /** MaxVio of this batch's routing (before the update). */
  readonly maxVio: number;
  /** Expert counts of this batch. */
  readonly counts: Float64Array;
}

/**
 * Routes batches one after another, updating the router's bias after each (the DeepSeek-V3 training
 * loop without the backbone), and records MaxVio per step — it falls toward 0 for a skewed router.
 *
 * @example
 * ```ts
 * import { deepseekV3Router, matrix, runBiasBalancing } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const router = deepseekV3Router({ weight: matrix.randn(8, 4, { seed: 1 }), k: 2 });
 * const batch = matrix.randn(64, 4, { seed: 2 });
 * const steps = runBiasBalancing(router, Array(20).fill(batch), { gamma: 0.01 });
 * assert.equal(steps.length, 20);
 * ```
 */
export function runBiasBalancing(
  router: Router & { readonly bias: Float32Array },
  batches: Iterable<Mat>,
  options: { readonly gamma?: number } = {},
): BiasBalancingStep[] {
  const history: BiasBalancingStep[] = [];
  let step = 0;
  for (const batch of batches) {
    const r: RoutingResult = router.route(batch);
    const m = loadMetrics(r);
    history.push({ step: step++, maxVio: m.maxVio, counts: m.counts });
    deepseekBiasUpdate(router.bias, m.counts, options.gamma ?? 0.001);
  }
  return history;
}

registerSelector("sigmoidGroupedTopK", (o) =>
  sigmoidGroupedTopK(
    {
      ...o,
      ...(o.bias ? { bias: Float32Array.from(o.bias as number[]) } : {}),
    } as unknown as Parameters<typeof sigmoidGroupedTopK>[0],
  ));
registerSelector(
  "softmaxGroupedTopK",
  (o) => softmaxGroupedTopK(o as unknown as Parameters<typeof softmaxGroupedTopK>[0]),
);
