/**
 * Routing: routers composed as logit source × selector × capacity, the one `RoutingResult` they return,
 * metrics, losses, RMoE, pre-gating, and the compute-backend interface kernels implement. The rules are
 * in docs/routing.md.
 * @module
 */

export * from "../core/mod.ts";
export * from "./result.ts";
export {
  type Backend,
  type BackendChoice,
  backendReport,
  type BackendStatus,
  bindGemm,
  checkLogitsFinite,
  type ComputeBackend,
  type EpilogueKind,
  type GateGemm,
  listBackends,
  type ParallelJob,
  registerBackend,
  resolveBackend,
} from "./backend.ts";
export { createSelector, registerSelector } from "./registry.ts";
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
export * from "./skip.ts";
export * from "./metrics.ts";
export * from "./losses.ts";
export * from "./recurrent.ts";
export * from "./pregate.ts";
export * from "./cross_layer.ts";
