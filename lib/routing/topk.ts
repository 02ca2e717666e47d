/**
 * The softmax top-k family: Mixtral/Qwen/OLMoE presets, Switch top-1 with capacity and jitter, and the
 * generic top-k with capacity factor and the four drop policies.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { linearGate } from "./gate.ts";
import type { BackendChoice } from "./backend.ts";
import { softmaxTopK } from "./select.ts";
import { composeRouter } from "./compose.ts";
import { type CapacityOptions, DROP_POLICIES, type DropPolicy } from "./capacity.ts";
import type { Router } from "./result.ts";

/**
 * Model presets of the softmax top-k router (docs/routing.md, "Softmax top-k").
 *
 * @example
 * ```ts
 * import { TOPK_PRESETS } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.deepEqual(TOPK_PRESETS.olmoe, { experts: 64, k: 8, normTopkProb: false, auxCoef: 0.01 });
 * ```
 */
export const TOPK_PRESETS = {
  mixtral: { experts: 8, k: 2, normTopkProb: true, auxCoef: 0.001 },
  qwen2_moe: { experts: 60, k: 4, normTopkProb: false, auxCoef: 0.001 },
  qwen3_moe: { experts: 128, k: 8, normTopkProb: true, auxCoef: 0.001 },
  olmoe: { experts: 64, k: 8, normTopkProb: false, auxCoef: 0.01 },
} as const;

/**
 * Options of {@link topKRouter}.
 *
 * @example
 * ```ts
 * import { matrix, type TopKRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: TopKRouterOptions = { weight: matrix.zeros(64, 16), preset: "olmoe" };
 * assert.equal(o.preset, "olmoe");
 * ```
 */
export interface TopKRouterOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Optional gate bias `[E]`. */
  readonly bias?: ArrayLike<number>;
  /** Choices per token. Default: the preset's k, else 2. */
  readonly k?: number;
  /** Renormalise the winners. Default: the preset's flag, else true. */
  readonly normTopkProb?: boolean;
  /** Model preset (sets k and normTopkProb unless given). qwen3_moe follows the released 30B/235B (true). */
  readonly preset?: keyof typeof TOPK_PRESETS;
  /** Capacity and dropping; omit for none. */
  readonly capacity?: CapacityOptions;
  /** Multiplicative router-input jitter in training (Mixtral: 0). */
  readonly jitter?: number;
  /** Default training mode. */
  readonly training?: boolean;
  /** Default seed. */
  readonly seed?: number;
}

/**
 * Softmax top-k router (Mixtral `normTopkProb = true`, Qwen/OLMoE `false`).
 *
 * @example
 * ```ts
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * // docs/routing.md, "Softmax top-k": W = I₄, logits ln[4,2,1,1] and ln[4,1,2,1]
 * const x = matrix.fromArrays([[4, 2, 1, 1], [4, 1, 2, 1]].map((r) => r.map(Math.log)));
 * const r = topKRouter({ weight: matrix.identity(4), k: 2 }).route(x);
 * assert.deepEqual(Array.from(r.indices), [0, 1, 0, 2]);
 * ```
 */
export function topKRouter(options: TopKRouterOptions): Router {
  const preset = options.preset === undefined ? undefined : TOPK_PRESETS[options.preset];
  if (options.preset !== undefined && !preset) {
    throw new OptionError("preset", options.preset, `use one of ${Object.keys(TOPK_PRESETS).join(", ")}`);
  }
  const k = options.k ?? preset?.k ?? 2;
  const normTopkProb = options.normTopkProb ?? preset?.normTopkProb ?? true;
  return composeRouter({
    name: options.preset ?? (normTopkProb ? "topk" : "topk-raw"),
    gate: linearGate(options),
    selector: softmaxTopK({ k, normTopkProb }),
    capacity: options.capacity,
    jitter: options.jitter,
    training: options.training,
    seed: options.seed,
  });
}

/**
 * Options of {@link switchRouter}.
 *
 * @example
 * ```ts
 * import { matrix, type SwitchRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: SwitchRouterOptions = { weight: matrix.zeros(8, 16), capacityFactor: 1.25, policy: "bpr" };
 * assert.equal(o.policy, "bpr");
 * ```
 */
export interface SwitchRouterOptions {
  /** Gate weight `[E,d]` (no bias, as in HF Switch). */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Capacity factor. Default 1. */
  readonly capacityFactor?: number;
  /** Fixed capacity or formula (see {@link CapacityOptions}); HF Switch uses a fixed 64. */
  readonly capacity?: CapacityOptions["capacity"];
  /** `"position"` (token order, HF/flax, default) or `"bpr"` (batch-prioritised). */
  readonly policy?: Extract<DropPolicy, "position" | "bpr">;
  /** Tokens per capacity group. Default: all tokens. */
  readonly groupSize?: number;
  /** Router-input jitter ε in training. Default 0.01. */
  readonly jitter?: number;
  /** Default training mode. Default false. */
  readonly training?: boolean;
  /** Default seed. */
  readonly seed?: number;
}

/**
 * Switch Transformer top-1: softmax, argmax, gate = max probability (no renorm), expert capacity per
 * group, multiplicative jitter in training, position or BPR priority. Dropped tokens get weight 0.
 *
 * @example
 * ```ts
 * import { matrix, switchRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = switchRouter({ weight: matrix.randn(4, 8, { seed: 1 }), capacityFactor: 0.5 })
 *   .route(matrix.randn(16, 8, { seed: 2 }));
 * assert.equal(r.capacity, 2);
 * assert.equal(r.k, 1);
 * ```
 */
export function switchRouter(options: SwitchRouterOptions): Router {
  if (options.policy !== undefined && options.policy !== "position" && options.policy !== "bpr") {
    throw new OptionError(
      "policy",
      options.policy,
      `Switch keeps tokens by "position" (HF, flaxformer) or "bpr"${
        DROP_POLICIES.includes(options.policy) ? `; capacityRouter takes "${options.policy}"` : ""
      }`,
    );
  }
  return composeRouter({
    name: options.policy === "bpr" ? "switch-bpr" : "switch",
    gate: linearGate({ weight: options.weight, backend: options.backend }),
    selector: softmaxTopK({ k: 1, normTopkProb: false }),
    capacity: {
      capacityFactor: options.capacityFactor ?? 1,
      capacity: options.capacity,
      policy: options.policy ?? "position",
      groupSize: options.groupSize,
    },
    jitter: options.jitter ?? 0.01,
    training: options.training,
    seed: options.seed,
  });
}

/**
 * Options of {@link capacityRouter}.
 *
 * @example
 * ```ts
 * import { type CapacityRouterOptions, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: CapacityRouterOptions = { weight: matrix.zeros(8, 4), k: 2, capacityFactor: 1, policy: "probs" };
 * assert.equal(o.k, 2);
 * ```
 */
export interface CapacityRouterOptions extends CapacityOptions {
  /** Gate weight `[E,d]`. */
  readonly weight: Mat;
  /** Gate GEMM backend: `"auto"` (default: WebAssembly SIMD where available), `"wasm"` or `"js"`. */
  readonly backend?: BackendChoice;
  /** Optional gate bias `[E]`. */
  readonly bias?: ArrayLike<number>;
  /** Choices per token. Default 2. */
  readonly k?: number;
  /** Renormalise the winners before dropping. Default true. */
  readonly normTopkProb?: boolean;
  /** Default seed. */
  readonly seed?: number;
}

/**
 * Generic token-choice top-k with capacity `ceil(k·T·cf/E)` (Megatron/DeepSpeed) and any of the four
 * drop policies of docs/routing.md, "Capacity and token dropping".
 *
 * @example
 * ```ts
 * import { capacityRouter, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = capacityRouter({ weight: matrix.randn(4, 8, { seed: 3 }), k: 2, capacityFactor: 0, policy: "probs" })
 *   .route(matrix.randn(6, 8, { seed: 4 }));
 * assert.ok(r.keep!.every((v) => v === 0)); // cf = 0 drops everything
 * ```
 */
export function capacityRouter(options: CapacityRouterOptions): Router {
  const k = options.k ?? 2, normTopkProb = options.normTopkProb ?? true;
  return composeRouter({
    name: `topk-cap-${options.policy ?? "position"}`,
    gate: linearGate(options),
    selector: softmaxTopK({ k, normTopkProb }),
    capacity: options,
    seed: options.seed,
  });
}
