/**
 * Expert compression: calibration, low-rank, merged, pruned, skipped, quantised and compressed experts.
 * @module
 */

export * from "../core/mod.ts";
export {
  type CompressedLayer,
  type ExpertLayer,
  forwardWithExperts,
  layerForward,
  type LayerForwardOptions,
  type LayerRouting,
} from "./layer.ts";
export { calibrate, type CalibrationStats } from "./calibrate.ts";
export * from "./svd.ts";
export {
  alignPermutation,
  groupExperts,
  logitSimilarity,
  mergeExperts,
  permuteExpert,
} from "./merge_experts.ts";
export { calibrateSkip, naeeLoss, pruneExperts, type PruneOptions, skipExperts } from "./prune.ts";
export * from "./delta.ts";
export { allocateBits, pmqQuantize, type Quantized, quantizeRTN, rtnLayer } from "./quantize.ts";
export * from "./compeft.ts";
export * from "./compressed_experts.ts";
export * from "./report.ts";
