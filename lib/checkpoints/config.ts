/**
 * `config.json` of a Hugging Face MoE model, normalised across families: the expert count, top-k, sizes,
 * which layers are MoE, shared experts, scoring, grouping and scaling, with every key alias the
 * `transformers` versions use. Families moekit does not load are recognised and refused by name.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import type { ExpertActivation } from "../moe/layer.ts";

/**
 * The MoE families moekit opens.
 *
 * @example
 * ```ts
 * import { MOE_FAMILIES } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * assert.ok(MOE_FAMILIES.includes("deepseek_v3"));
 * ```
 */
export const MOE_FAMILIES = [
  "mixtral",
  "olmoe",
  "qwen2_moe",
  "qwen3_moe",
  "deepseek_v2",
  "deepseek_v3",
  "gpt_oss",
] as const;

/**
 * One of {@link MOE_FAMILIES} (the `model_type` of `config.json`).
 *
 * @example
 * ```ts
 * import { type MoeFamily } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const f: MoeFamily = "olmoe";
 * assert.equal(f, "olmoe");
 * ```
 */
export type MoeFamily = typeof MOE_FAMILIES[number];

/** model_types recognised but not loaded, with what they are. */
const REFUSED: Record<string, string> = {
  granitemoe: "Granite-MoE (top-k on logits, then softmax over k)",
  granitemoeshared: "Granite-MoE with shared experts",
  granitemoehybrid: "Granite-MoE hybrid",
  jamba: "Jamba (Mamba–attention hybrid; softmax, no renormalisation, MoE every expert_layer_period layers)",
  llama4: "Llama-4 (top-k on logits, sigmoid score scaling the expert input)",
  llama4_text: "Llama-4 (top-k on logits, sigmoid score scaling the expert input)",
  dbrx: "DBRX (softmax → top-k → p-norm renormalisation)",
  switch_transformers: "Switch Transformers (encoder–decoder, top-1 with capacity)",
  nllb_moe: "NLLB-MoE (encoder–decoder, top-2 with capacity)",
  phimoe: "PhiMoE (sparsemixer routing)",
  qwen3_next: "Qwen3-Next (hybrid attention)",
  minimax: "MiniMax",
  deepseek_v32: "DeepSeek-V3.2",
  glm4_moe: "GLM-4-MoE",
  ernie4_5_moe: "ERNIE-4.5-MoE",
  hunyuan_v1_moe: "Hunyuan-MoE",
  gpt_bigcode: "GPT-BigCode (not an MoE)",
};

/**
 * A family's `config.json`, normalised. Sizes follow the checkpoint: `experts` is E, `expertHidden` the
 * routed experts' f, `moeLayers` the decoder layers whose MLP is an MoE block.
 *
 * @example
 * ```ts
 * import { normalizeConfig } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const c = normalizeConfig({
 *   model_type: "olmoe", num_hidden_layers: 2, hidden_size: 8, intermediate_size: 4,
 *   num_experts: 4, num_experts_per_tok: 2,
 * });
 * assert.deepEqual([c.family, c.experts, c.topK, c.moeLayers], ["olmoe", 4, 2, [0, 1]]);
 * ```
 */
export interface MoeConfig {
  /** The family (`model_type`). */
  readonly family: MoeFamily;
  /** Decoder layers. */
  readonly layers: number;
  /** Routed experts E. */
  readonly experts: number;
  /** Experts per token k. */
  readonly topK: number;
  /** Model width d. */
  readonly hidden: number;
  /** A routed expert's intermediate size f. */
  readonly expertHidden: number;
  /** Decoder layers with an MoE block (the others have a dense MLP). */
  readonly moeLayers: readonly number[];
  /** Intermediate size of the dense MLP layers, when there are any. */
  readonly denseHidden?: number;
  /** Shared experts: one SwiGLU MLP of size `hidden` run on every token, `gated` by a sigmoid (Qwen2-MoE). */
  readonly shared?: { readonly hidden: number; readonly gated: boolean };
  /** Gate scores: softmax (all but DeepSeek-V3) or sigmoid (DeepSeek-V3). */
  readonly scoring: "softmax" | "sigmoid";
  /** Top-k on the logits then softmax over the k (GPT-OSS); equal to softmax → top-k → renormalise. */
  readonly softmaxOverTopK: boolean;
  /** Whether the k weights are renormalised to sum to 1. */
  readonly normTopkProb: boolean;
  /** Multiplier of the routing weights (DeepSeek), else 1. */
  readonly routedScalingFactor: number;
  /** Group-limited selection (DeepSeek): groups, kept groups, V2's method. */
  readonly grouping?: { readonly nGroup: number; readonly topkGroup: number; readonly method: string };
  /** The router has a bias `[E]` (GPT-OSS). */
  readonly routerBias: boolean;
  /** DeepSeek-V3's selection-only `e_score_correction_bias`. */
  readonly correctionBias: boolean;
  /** Expert activation (GPT-OSS: clamped SwiGLU). */
  readonly activation: ExpertActivation;
  /** Weights dtype from `dtype` (newer) or `torch_dtype` (older), as written. */
  readonly dtype: string;
  /** The `config.json` as read. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A key of `raw` that must be a number, with aliases (the first one found wins). */
function num(
  raw: Record<string, unknown>,
  keys: readonly string[],
  source: string,
  fallback?: number,
): number {
  for (const k of keys) {
    const v = raw[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new MoekitError(`${source}: ${k} = ${JSON.stringify(v)} must be a number`);
    }
    return v;
  }
  if (fallback !== undefined) return fallback;
  throw new MoekitError(
    `${source}: none of ${keys.join(" / ")} is set; the ${raw.model_type} loader needs it`,
  );
}

function posInt(v: number, key: string, source: string): number {
  if (!Number.isInteger(v) || v < 1) throw new MoekitError(`${source}: ${key} = ${v} must be an integer ≥ 1`);
  return v;
}

function bool(raw: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = raw[key];
  return typeof v === "boolean" ? v : fallback;
}

const EXPERT_KEYS: Record<MoeFamily, readonly string[]> = {
  mixtral: ["num_local_experts", "num_experts", "n_routed_experts"],
  olmoe: ["num_experts", "num_local_experts", "n_routed_experts"],
  qwen2_moe: ["num_experts", "num_local_experts", "n_routed_experts"],
  qwen3_moe: ["num_experts", "num_local_experts", "n_routed_experts"],
  deepseek_v2: ["n_routed_experts", "num_local_experts", "num_experts"],
  deepseek_v3: ["n_routed_experts", "num_local_experts", "num_experts"],
  gpt_oss: ["num_local_experts", "num_experts", "n_routed_experts"],
};

/** Every config key that may hold the expert count (all are updated when experts are pruned). */
export const EXPERT_COUNT_KEYS: readonly string[] = ["num_local_experts", "num_experts", "n_routed_experts"];

/**
 * Normalises a `config.json` object. Throws a {@link MoekitError} naming the `model_type` for families
 * moekit does not load, and naming the key for missing or malformed sizes.
 *
 * @example
 * ```ts
 * import { normalizeConfig } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * assert.throws(() => normalizeConfig({ model_type: "dbrx" }), /DBRX/);
 * const q = normalizeConfig({
 *   model_type: "qwen2_moe", num_hidden_layers: 4, hidden_size: 8, intermediate_size: 32,
 *   moe_intermediate_size: 4, shared_expert_intermediate_size: 16, num_experts: 4, num_experts_per_tok: 2,
 *   decoder_sparse_step: 2,
 * });
 * assert.deepEqual([q.moeLayers, q.shared], [[1, 3], { hidden: 16, gated: true }]);
 * ```
 */
export function normalizeConfig(raw: Record<string, unknown>, source = "config.json"): MoeConfig {
  const type = raw.model_type;
  if (typeof type !== "string") {
    throw new MoekitError(`${source}: no model_type; is this a Hugging Face config?`);
  }
  if (!(MOE_FAMILIES as readonly string[]).includes(type)) {
    const what = REFUSED[type];
    throw new MoekitError(
      what
        ? `${source}: model_type "${type}" — ${what} — is not supported by moekit's checkpoint loader; supported: ${
          MOE_FAMILIES.join(", ")
        }`
        : `${source}: unknown model_type "${type}"; moekit loads ${MOE_FAMILIES.join(", ")}`,
    );
  }
  const family = type as MoeFamily;
  const n = (keys: readonly string[], fallback?: number) => num(raw, keys, source, fallback);
  const layers = posInt(n(["num_hidden_layers", "n_layers", "num_layers"]), "num_hidden_layers", source);
  const hidden = posInt(n(["hidden_size", "d_model"]), "hidden_size", source);
  const experts = posInt(n(EXPERT_KEYS[family]), "the expert count", source);
  const topK = posInt(
    n(["num_experts_per_tok", "experts_per_token", "moe_topk"]),
    "num_experts_per_tok",
    source,
  );
  if (topK > experts) {
    throw new MoekitError(`${source}: num_experts_per_tok = ${topK} exceeds the ${experts} experts`);
  }
  const dtype = String(raw.dtype ?? raw.torch_dtype ?? "float32");
  const all = Array.from({ length: layers }, (_, i) => i);
  const base = {
    family,
    layers,
    experts,
    topK,
    hidden,
    dtype,
    raw,
    scoring: "softmax" as const,
    softmaxOverTopK: false,
    routedScalingFactor: 1,
    routerBias: false,
    correctionBias: false,
    activation: { kind: "silu" } as ExpertActivation,
  };
  switch (family) {
    case "mixtral":
      return { ...base, expertHidden: n(["intermediate_size"]), moeLayers: all, normTopkProb: true };
    case "olmoe":
      return {
        ...base,
        expertHidden: n(["intermediate_size"]),
        moeLayers: all,
        normTopkProb: bool(raw, "norm_topk_prob", false),
      };
    case "qwen2_moe":
    case "qwen3_moe": {
      const step = posInt(n(["decoder_sparse_step"], 1), "decoder_sparse_step", source);
      const mlpOnly = Array.isArray(raw.mlp_only_layers) ? raw.mlp_only_layers as number[] : [];
      const moeLayers = all.filter((i) => (i + 1) % step === 0 && !mlpOnly.includes(i));
      const sharedHidden = family === "qwen2_moe" ? n(["shared_expert_intermediate_size"], 0) : 0;
      return {
        ...base,
        expertHidden: n(["moe_intermediate_size"]),
        moeLayers,
        ...(moeLayers.length < layers ? { denseHidden: n(["intermediate_size"]) } : {}),
        ...(sharedHidden > 0 ? { shared: { hidden: sharedHidden, gated: true } } : {}),
        normTopkProb: bool(raw, "norm_topk_prob", false),
      };
    }
    case "deepseek_v2":
    case "deepseek_v3": {
      const v3 = family === "deepseek_v3";
      const firstDense = n(["first_k_dense_replace"], v3 ? 3 : 0);
      const moeLayers = all.filter((i) => i >= firstDense);
      const f = n(["moe_intermediate_size"]);
      const nShared = n(["n_shared_experts"], v3 ? 1 : 0);
      const nGroup = n(["n_group"], v3 ? 8 : 1), topkGroup = n(["topk_group"], v3 ? 4 : nGroup);
      const method = v3 ? "noaux_tc" : String(raw.topk_method ?? "greedy");
      if (!v3 && !["greedy", "group_limited_greedy"].includes(method)) {
        throw new MoekitError(
          `${source}: topk_method "${method}" is not one DeepSeek-V2 uses (greedy, group_limited_greedy)`,
        );
      }
      const grouped = v3 ? nGroup > 1 && topkGroup < nGroup : method === "group_limited_greedy";
      return {
        ...base,
        expertHidden: f,
        moeLayers,
        ...(moeLayers.length < layers ? { denseHidden: n(["intermediate_size"]) } : {}),
        ...(nShared > 0 ? { shared: { hidden: f * nShared, gated: false } } : {}),
        scoring: v3 ? "sigmoid" : "softmax",
        // transformers' DeepSeek-V2 never renormalises, whatever norm_topk_prob says
        normTopkProb: v3 ? bool(raw, "norm_topk_prob", true) : false,
        routedScalingFactor: n(["routed_scaling_factor"], v3 ? 2.5 : 1),
        ...(grouped ? { grouping: { nGroup, topkGroup, method } } : {}),
        correctionBias: v3,
      };
    }
    case "gpt_oss":
      return {
        ...base,
        expertHidden: n(["intermediate_size"]),
        moeLayers: all,
        softmaxOverTopK: true,
        normTopkProb: true,
        routerBias: true,
        activation: { kind: "clamped_swiglu", alpha: 1.702, limit: n(["swiglu_limit"], 7) },
      };
  }
}
