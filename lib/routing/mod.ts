/**
 * Routing: routers (logit source × selector × capacity), results, metrics, losses, RMoE and pre-gating.
 * @module
 */

export * from "../core/mod.ts";
export * from "./result.ts";
export * from "./gate.ts";
export * from "./select.ts";
export * from "./capacity.ts";
export * from "./compose.ts";
export * from "./topk.ts";
export * from "./gshard.ts";
export * from "./deepseek.ts";
export * from "./expert_choice.ts";
export * from "./noisy_topk.ts";
export * from "./hash.ts";
export * from "./sinkhorn.ts";
export * from "./base.ts";
export * from "./metrics.ts";
export * from "./losses.ts";
export * from "./recurrent.ts";
export * from "./pregate.ts";
export * from "./cross_layer.ts";
