/**
 * Expert compression of an MoE layer built by `moeLayer` (any router, shared experts, capacity):
 * calibration, low-rank (plain, randomized, whitened), MC-SMoE merging, NAEE pruning and skipping,
 * base + low-rank deltas, RTN / PMQ quantisation, ComPEFT, Compressed Experts, and one report for all.
 * Re-exports the MoE layer (`@moekit/moekit/moe`, with routing and core). See docs/compression.md.
 *
 * @example
 * ```ts
 * import { calibrate, compressionReport, matrix, mergeExperts, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 8, dim: 16, hidden: 32, seed: 2 }),
 * });
 * const x = matrix.randn(256, 16, { seed: 3 });
 * const report = compressionReport(layer, mergeExperts(layer, calibrate(layer, x), { numGroups: 4 }), x);
 * assert.ok(report.bytesRatio < 0.6); // 4 of 8 experts stored
 * ```
 * @module
 */

export * from "../moe/mod.ts";
export {
  activeParams,
  type ActiveParamsOptions,
  type CompressedForward,
  type CompressedLayer,
  expertParams,
  type ExpertShape,
} from "./compressed.ts";
export { calibrate, type CalibrationStats } from "./calibrate.ts";
export * from "./svd.ts";
export type { LinalgBackend } from "../linalg/mod.ts"; // the SVDs' `backend` option
export { type LowRankLayer, type LowRankLayerOptions, svdLayer, whitenedSvdLayer } from "./lowrank.ts";
export {
  alignPermutation,
  groupExperts,
  logitSimilarity,
  mergeExperts,
  type MergeExpertsOptions,
  permuteExpert,
} from "./merge_experts.ts";
export {
  calibrateSkip,
  naeeLoss,
  PRUNE_METHODS,
  pruneExperts,
  type PruneOptions,
  skipExperts,
  type SkipExpertsOptions,
} from "./prune.ts";
export { deltaCompress, type DeltaOptions } from "./delta.ts";
export {
  allocateBits,
  type PmqOptions,
  pmqQuantize,
  type Quantized,
  quantizeRTN,
  rtnLayer,
} from "./quantize.ts";
export {
  binaryEntropy,
  type Compeft,
  compeft,
  compeftDecode,
  compeftEncode,
  compeftIdealBits,
} from "./compeft.ts";
export {
  type CeVectors,
  compressedExpertsLayer,
  type CompressedExpertsOptions,
} from "./compressed_experts.ts";
export { type CompressionReport, compressionReport, dense } from "./report.ts";
