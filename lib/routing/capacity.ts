/**
 * Expert capacity and token dropping (docs/routing.md, "Capacity and token dropping"): the capacity formulas, and the four priority
 * policies that decide which (token, choice) claims an over-full expert keeps.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { roundHalfEven } from "../core/numeric.ts";

/**
 * Which claims an over-full expert keeps:
 * `position` — choice-major, tokens in order (flaxformer, GShard, HF Switch; default);
 * `bpr` — as position, tokens ordered by top-1 score descending (V-MoE);
 * `probs` — per expert the largest combine weights (Megatron default);
 * `megatron_position` — per expert the lowest token indices.
 *
 * @example
 * ```ts
 * import { type DropPolicy } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const p: DropPolicy = "bpr";
 * assert.equal(p, "bpr");
 * ```
 */
export type DropPolicy = "position" | "bpr" | "probs" | "megatron_position";

/**
 * All drop policies, for option validation and sweeps.
 *
 * @example
 * ```ts
 * import { DROP_POLICIES } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(DROP_POLICIES.length, 4);
 * ```
 */
export const DROP_POLICIES: readonly DropPolicy[] = ["position", "bpr", "probs", "megatron_position"];

/**
 * Capacity settings.
 *
 * @example
 * ```ts
 * import { type CapacityOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const c: CapacityOptions = { capacityFactor: 1.25, policy: "probs" };
 * assert.equal(c.policy, "probs");
 * ```
 */
export interface CapacityOptions {
  /** Capacity factor cf ≥ 0. Default 1. */
  readonly capacityFactor?: number;
  /**
   * Formula or fixed value (S = tokens per group):
   * `"ceil"` (default) = `ceil(S·k·cf/E)` in float64, evaluated as written (no epsilon): the Megatron-LM /
   * DeepSpeed token-choice capacity (S = 100, E = 10, k = 1, cf = 1.1 → 12);
   * `"flax"` = `max(round_half_even(cf·S/E), minCapacity = 4)`, k not multiplied: flaxformer / T5X /
   * TF Model Garden (Switch, ST-MoE);
   * `"gshard"` = `2·ceil(S/E)`: fairseq Top2Gate and the GShard paper (HF NLLB-MoE with no capacity set);
   * a number = that many slots per expert (HF Switch and NLLB-MoE `expert_capacity`, e.g. 64).
   */
  readonly capacity?: number | "ceil" | "flax" | "gshard";
  /** Lower bound on the capacity. Default 0 (4 for `"flax"`). */
  readonly minCapacity?: number;
  /** Drop policy. Default `"position"`. */
  readonly policy?: DropPolicy;
  /**
   * Tokens per group; capacity applies per group (HF Switch: one batch row). Default: all tokens. When T
   * is not a multiple of it, the last group holds the rest and its capacity is computed from its own size.
   */
  readonly groupSize?: number;
  /** `"keep"`: survivors keep their pre-drop weights (default); `"renormalize"`: survivors re-sum to 1. */
  readonly combine?: "keep" | "renormalize";
}

/**
 * Checks capacity options before any routing (routers built with a capacity call it when they are made):
 * a bad capacity factor, fixed capacity, minimum, drop policy, group size or combine rule is an
 * {@link OptionError} naming the option and what it accepts.
 *
 * @example
 * ```ts
 * import { checkCapacityOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * checkCapacityOptions({ capacityFactor: 1.25, policy: "bpr", groupSize: 64, combine: "renormalize" });
 * assert.throws(() => checkCapacityOptions({ capacityFactor: -1 }), /capacityFactor = -1/);
 * assert.throws(() => checkCapacityOptions({ combine: "renormalise" as "renormalize" }), /combine/);
 * ```
 */
export function checkCapacityOptions(options: CapacityOptions): void {
  const policy = options.policy ?? "position";
  if (!DROP_POLICIES.includes(policy)) {
    throw new OptionError("policy", policy, `use one of ${DROP_POLICIES.join(", ")}`);
  }
  const S = options.groupSize;
  if (S !== undefined && (!Number.isInteger(S) || S < 1)) {
    throw new OptionError("groupSize", S, "must be an integer ≥ 1");
  }
  const combine = options.combine ?? "keep";
  if (combine !== "keep" && combine !== "renormalize") {
    throw new OptionError("combine", combine, `use "keep" or "renormalize"`);
  }
  expertCapacity(1, 1, 1, options); // the factor, a fixed capacity and the minimum
}

/**
 * The per-expert capacity for S tokens per group.
 *
 * @example
 * ```ts
 * import { expertCapacity } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(expertCapacity(36, 8, 2, { capacityFactor: 1 }), 9);
 * assert.equal(expertCapacity(36, 8, 1, { capacity: "flax", minCapacity: 0 }), 4); // round half to even
 * assert.equal(expertCapacity(36, 8, 1, { capacity: "gshard" }), 10);
 * ```
 */
export function expertCapacity(
  groupTokens: number,
  experts: number,
  k: number,
  options: CapacityOptions = {},
): number {
  const cf = options.capacityFactor ?? 1, kind = options.capacity ?? "ceil";
  if (!(cf >= 0) || !Number.isFinite(cf)) {
    throw new OptionError("capacityFactor", cf, "must be a finite number ≥ 0");
  }
  if (typeof kind === "number") {
    if (!Number.isInteger(kind) || kind < 0) {
      throw new OptionError("capacity", kind, "a fixed capacity must be an integer ≥ 0");
    }
    return kind;
  }
  const minCap = options.minCapacity ?? (kind === "flax" ? 4 : 0);
  if (!Number.isInteger(minCap) || minCap < 0) {
    throw new OptionError("minCapacity", minCap, "must be an integer ≥ 0");
  }
  let c: number;
  if (kind === "ceil") c = Math.ceil((groupTokens * k * cf) / experts);
  else if (kind === "flax") c = roundHalfEven((cf * groupTokens) / experts);
  else if (kind === "gshard") c = 2 * Math.ceil(groupTokens / experts);
  else throw new OptionError("capacity", kind, `use a number, "ceil", "flax" or "gshard"`);
  return Math.max(c, minCap);
}

/**
 * The selection a capacity policy works on (a routing result before dropping).
 *
 * @example
 * ```ts
 * import { type Claims } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const c: Claims = {
 *   tokens: 1, experts: 2, k: 1,
 *   indices: new Int32Array([0]), weights: new Float32Array([1]), scores: new Float32Array([0.7]),
 * };
 * assert.equal(c.k, 1);
 * ```
 */
export interface Claims {
  /** Tokens T. */
  readonly tokens: number;
  /** Experts E. */
  readonly experts: number;
  /** Choices per token. */
  readonly k: number;
  /** `[T·k]` experts, −1 = none. */
  readonly indices: Int32Array;
  /** `[T·k]` pre-drop combine weights. */
  readonly weights: Float32Array;
  /** `[T·k]` gate scores (BPR orders tokens by their first score). */
  readonly scores: Float32Array;
  /** `[T·k]` 0 = the selector named this choice but did not keep it (it claims no slot). Default all 1. */
  readonly active?: Uint8Array;
}

/**
 * What a capacity policy decided.
 *
 * @example
 * ```ts
 * import { applyCapacity } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const d = applyCapacity({
 *   tokens: 2, experts: 1, k: 1,
 *   indices: new Int32Array([0, 0]), weights: new Float32Array([1, 1]), scores: new Float32Array([1, 1]),
 * }, { capacity: 1 });
 * assert.deepEqual(Array.from(d.keep), [1, 0]);
 * assert.deepEqual(Array.from(d.slot), [0, -1]);
 * ```
 */
export interface CapacityDecision {
  /** `[T·k]` 1 = kept. */
  readonly keep: Uint8Array;
  /** `[T·k]` slot in the expert's buffer, −1 = dropped. */
  readonly slot: Int32Array;
  /** `[T·k]` combine weights after the drop (dropped = 0). */
  readonly weights: Float32Array;
  /**
   * The capacity that was applied per group of `groupSize` tokens (a last, shorter group when T is not a
   * multiple of `groupSize` gets the capacity of its own size).
   */
  readonly capacity: number;
}

/**
 * Applies capacity and a drop policy to a selection. The number dropped, `Σ_e max(0, load_e − C)`, is
 * the same for every policy; only which claims go differs.
 *
 * @example
 * ```ts
 * import { applyCapacity } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * // docs/routing.md, "Capacity and token dropping": Switch, E = 2, C = 2, position priority
 * const d = applyCapacity({
 *   tokens: 5, experts: 2, k: 1,
 *   indices: new Int32Array([0, 0, 1, 0, 0]),
 *   weights: new Float32Array([.6, .9, .7, .8, .55]),
 *   scores: new Float32Array([.6, .9, .7, .8, .55]),
 * }, { capacity: 2 });
 * assert.deepEqual(Array.from(d.keep), [1, 1, 1, 0, 0]);
 * ```
 */
export function applyCapacity(claims: Claims, options: CapacityOptions = {}): CapacityDecision {
  const { tokens: T, experts: E, k, indices } = claims;
  checkCapacityOptions(options);
  const policy = options.policy ?? "position";
  const S = options.groupSize ?? T;
  const capacity = expertCapacity(Math.min(S, Math.max(T, 1)), E, k, options);
  const keep = new Uint8Array(T * k), slot = new Int32Array(T * k).fill(-1);
  for (let g0 = 0; g0 < T; g0 += S) {
    const g1 = Math.min(T, g0 + S);
    // a last group shorter than S (T not a multiple of S) gets the capacity of its own size
    const C = g1 - g0 < S ? expertCapacity(g1 - g0, E, k, options) : capacity;
    if (policy === "position" || policy === "bpr") {
      choiceMajor(claims, g0, g1, C, policy === "bpr", keep, slot);
    } else {
      perExpertRanked(claims, g0, g1, C, policy, keep, slot);
    }
  }
  const weights = new Float32Array(T * k);
  const renorm = (options.combine ?? "keep") === "renormalize";
  for (let t = 0; t < T; t++) {
    let sum = 0;
    for (let j = 0; j < k; j++) if (keep[t * k + j]) sum += claims.weights[t * k + j];
    const denom = renorm ? Math.max(sum, 2.220446049250313e-16) : 1;
    for (let j = 0; j < k; j++) {
      const i = t * k + j;
      weights[i] = keep[i] && indices[i] >= 0 ? claims.weights[i] / denom : 0;
    }
  }
  return { keep, slot, weights, capacity };
}

function choiceMajor(
  c: Claims,
  g0: number,
  g1: number,
  C: number,
  byScore: boolean,
  keep: Uint8Array,
  slot: Int32Array,
): void {
  const order = Array.from({ length: g1 - g0 }, (_, i) => g0 + i);
  if (byScore) order.sort((a, b) => c.scores[b * c.k] - c.scores[a * c.k] || a - b);
  const count = new Int32Array(c.experts);
  for (let j = 0; j < c.k; j++) {
    for (const t of order) {
      const i = t * c.k + j, e = c.indices[i];
      if (e < 0 || (c.active && !c.active[i])) continue;
      const pos = count[e]++;
      if (pos < C) {
        keep[i] = 1;
        slot[i] = pos;
      }
    }
  }
}

function perExpertRanked(
  c: Claims,
  g0: number,
  g1: number,
  C: number,
  policy: DropPolicy,
  keep: Uint8Array,
  slot: Int32Array,
): void {
  const lists: number[][] = Array.from({ length: c.experts }, () => []);
  for (let i = g0 * c.k; i < g1 * c.k; i++) {
    if (c.indices[i] >= 0 && (!c.active || c.active[i])) lists[c.indices[i]].push(i);
  }
  for (const list of lists) {
    // flat positions i = t·k + j increase with t, so i breaks ties by lower token
    if (policy === "probs") list.sort((a, b) => c.weights[b] - c.weights[a] || a - b);
    for (let r = 0; r < Math.min(C, list.length); r++) {
      keep[list[r]] = 1;
      slot[list[r]] = r;
    }
  }
}
