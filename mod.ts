/**
 * moekit — Mixture-of-Experts routing and model-merging toolkit for Deno.
 *
 * Routers over row-major float32 matrices (softmax top-k, Switch, capacity top-k, GShard, DeepSeek-V3/V2,
 * expert choice, noisy top-k, hash, Sinkhorn, BASE), the layerwise recurrent router (RMoE) and
 * pre-gating (Read-ME, Pre-gated MoE), load and cross-layer metrics, auxiliary losses, dispatch, a
 * SwiGLU MoE layer and an expert-cache simulator.
 *
 * @example
 * ```ts
 * import { loadMetrics, matrix, topKRouter } from "@moekit/moekit";
 * const router = topKRouter({ weight: matrix.randn(8, 64, { seed: 1, std: 0.125 }), preset: "mixtral" });
 * const r = router.route(matrix.randn(512, 64, { seed: 2 }));
 * console.log(loadMetrics(r).cv < 1); // true
 * ```
 * @module
 */

export * from "./lib/core/errors.ts";
export * from "./lib/core/random.ts";
export * from "./lib/core/matrix.ts";
export {
  fromMlMatrix,
  fromNdarray,
  type MlMatrixLike,
  type NdArrayLike,
  toMlMatrix,
  toNdarray,
} from "./lib/core/interop.ts";
export * from "./lib/routing/result.ts";
export * from "./lib/routing/gate.ts";
export * from "./lib/routing/select.ts";
export * from "./lib/routing/capacity.ts";
export * from "./lib/routing/compose.ts";
export * from "./lib/routing/topk.ts";
export * from "./lib/routing/gshard.ts";
export * from "./lib/routing/deepseek.ts";
export * from "./lib/routing/expert_choice.ts";
export * from "./lib/routing/noisy_topk.ts";
export * from "./lib/routing/hash.ts";
export * from "./lib/routing/sinkhorn.ts";
export * from "./lib/routing/base.ts";
export * from "./lib/routing/metrics.ts";
export * from "./lib/routing/losses.ts";
export * from "./lib/moe/dispatch.ts";
export * from "./lib/moe/layer.ts";
export * from "./lib/data/synthetic.ts";
export * from "./lib/routing/recurrent.ts";
export * from "./lib/routing/pregate.ts";
export * from "./lib/routing/cross_layer.ts";
export * from "./lib/cache/trace.ts";
export * from "./lib/cache/simulate.ts";
export * from "./lib/cache/batching.ts";
export { allocTokens, freeTokens, kernelInfo } from "./lib/kernels/runtime.ts";
export { threadCount, useThreads } from "./lib/kernels/threads.ts";
export * from "./lib/merging/tensor.ts";
export * from "./lib/merging/selection.ts";
export * from "./lib/merging/sparsify.ts";
export * from "./lib/merging/methods.ts";
export * from "./lib/merging/merge.ts";
export * from "./lib/io/dtype.ts";
export * from "./lib/io/safetensors.ts";
export * from "./lib/io/checkpoint.ts";
export * from "./lib/merging/config.ts";
export * from "./lib/merging/checkpoint_merge.ts";
export { runMergeCli } from "./lib/cli/merge_cli.ts";
export * from "./lib/plots/plot.ts";
export * from "./lib/plots/charts.ts";
export { FONT_CANDIDATES, pngFont } from "./lib/plots/render.ts";

export {
  type CompressedLayer,
  type ExpertLayer,
  forwardWithExperts,
  layerForward,
  type LayerForwardOptions,
  type LayerRouting,
} from "./lib/compression/layer.ts";
export { calibrate, type CalibrationStats } from "./lib/compression/calibrate.ts";
export * from "./lib/compression/svd.ts";
export {
  alignPermutation,
  groupExperts,
  logitSimilarity,
  mergeExperts,
  permuteExpert,
} from "./lib/compression/merge_experts.ts";
export {
  calibrateSkip,
  naeeLoss,
  pruneExperts,
  type PruneOptions,
  skipExperts,
} from "./lib/compression/prune.ts";
export * from "./lib/compression/delta.ts";
export {
  allocateBits,
  pmqQuantize,
  type Quantized,
  quantizeRTN,
  rtnLayer,
} from "./lib/compression/quantize.ts";
export * from "./lib/compression/compeft.ts";
export * from "./lib/compression/compressed_experts.ts";
export * from "./lib/compression/report.ts";

// `deno run -A mod.ts merge <config.yaml> <out-dir>`: the merge CLI (loaded only when run as a program)
if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "merge") Deno.exit(await (await import("./lib/cli/merge_cli.ts")).runMergeCli(rest));
  console.error(
    "usage: deno run -A mod.ts merge <config.yaml> <out-dir> [--dry-run] [--out-shard-size 5B] [--seed N]",
  );
  Deno.exit(2);
}
