/**
 * Real MoE checkpoints: open Hugging Face MoE models (Mixtral, OLMoE, Qwen2/3-MoE, DeepSeek-V2/V3,
 * GPT-OSS) as moekit routers and MoE layers, bring captured activations in, and write compressed
 * experts back.
 * @module
 */

import "../kernels/mod.ts"; // the routers `router(l)` builds run on the WebAssembly / native gate kernels
export * from "../core/mod.ts";
export type {
  ExpertActivation,
  MoeLayer,
  MoeLayerOptions,
  MoeTrace,
  SharedExperts,
  SkipOptions,
  SwiGLUExpert,
} from "../moe/layer.ts";
export type { RouteOptions, Router, RoutingResult, ScoreFunction } from "../routing/result.ts";
export type { Checkpoint, Dtype, Tensor, TensorInfo } from "../io/mod.ts";
export {
  EXPERT_COUNT_KEYS,
  MOE_FAMILIES,
  type MoeConfig,
  type MoeFamily,
  normalizeConfig,
} from "./config.ts";
export {
  decodeMxfp4,
  type DeltaMatrix,
  isDense,
  type LowRankMatrix,
  materializeExpert,
  materializeMatrix,
  type QuantizedMatrix,
  quantizedMatrix,
  type StoredExpert,
  type StoredMatrix,
} from "./formats.ts";
export {
  type ExpertLayout,
  type LayerInfo,
  type MoekitLayerManifest,
  type MoeModel,
  openMoeModel,
  type OpenMoeModelOptions,
} from "./model.ts";
export { loadTensor, TensorFileError } from "./tensors.ts";
export {
  type LayerEdit,
  materialize,
  MOEKIT_FORMAT,
  saveMoeModel,
  type SaveMoeModelOptions,
  type SaveResult,
} from "./save.ts";
