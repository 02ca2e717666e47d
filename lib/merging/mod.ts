/**
 * Merging: task vectors, sparsification, the merge-method registry, mergekit configs and checkpoint
 * merges.
 *
 * @example
 * ```ts
 * import { merge } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const base = { shape: [2], data: new Float64Array([0, 0]) };
 * const out = merge({ method: "task_arithmetic", base, models: [{ tensor: { shape: [2], data: new Float64Array([1, -1]) }, params: { weight: 0.5 } }] });
 * assert.deepEqual(Array.from(out.data), [0.5, -0.5]);
 * ```
 * @module
 */

export * from "../core/mod.ts";
export { asTensor, type Tensor, type TensorInput } from "../io/tensor.ts";
export type { Checkpoint, ExtraFile } from "../io/checkpoint.ts";
export type { TensorInfo } from "../io/safetensors.ts";
export type { Dtype } from "../io/dtype.ts";
export {
  dellaProbabilities,
  type RescaleNorm,
  sparsify,
  type SparsifyMethod,
  type SparsifyOptions,
} from "./sparsify.ts";
export type { MergeParams, ModelParams, ParamSpec } from "./params.ts";
export {
  type MergeMethod,
  mergeMethod,
  mergeMethods,
  type MergeVariant,
  type MethodInput,
  validateMergeParams,
} from "./methods.ts";
export { merge, type MergeOptions, taskVector } from "./merge.ts";
export { evaluateParam, type MergeConfig, type ParamValue, parseMergeConfig } from "./config.ts";
export {
  type MergePlan,
  type MergeProgress,
  planCheckpointMerge,
  type PlannedTensor,
  planOutputFiles,
  runCheckpointMerge,
} from "./checkpoint_merge.ts";
export { finalizeCheckpointMerge } from "./merge_run.ts";
