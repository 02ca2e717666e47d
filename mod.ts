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

export * from "./lib/core/mod.ts";
export * from "./lib/routing/mod.ts";
export * from "./lib/moe/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/cache/mod.ts";
export * from "./lib/kernels/mod.ts";
export * from "./lib/linalg/mod.ts";
export * from "./lib/io/mod.ts";
export * from "./lib/merging/mod.ts";
export * from "./lib/compression/mod.ts";
export * from "./lib/placement/mod.ts";
export * from "./lib/plots/mod.ts";
export * from "./lib/checkpoints/mod.ts";
export { runMergeCli } from "./lib/cli/merge_cli.ts";
export { inspectModel, runModelCli } from "./lib/cli/model_cli.ts";

// `deno run -A mod.ts merge <config.yaml> <out-dir>`: the merge CLI (loaded only when run as a program)
if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "merge") Deno.exit(await (await import("./lib/cli/merge_cli.ts")).runMergeCli(rest));
  if (command === "inspect" || command === "route" || command === "compress") {
    Deno.exit(await (await import("./lib/cli/model_cli.ts")).runModelCli(command, rest));
  }
  const usage =
    "usage: deno run -A mod.ts merge <config.yaml> <out-dir> [--dry-run] [--overwrite] [--out-shard-size 5B] [--seed N]\n" +
    "                [--shard i/n]   |   deno run -A mod.ts merge --finalize <out-dir>   (--help for the rest)\n" +
    "       deno run -A mod.ts inspect|route|compress <model-dir> … (--help for each)";
  // --help asked for the usage: stdout, exit 0 (as every example and command does); anything else is a usage error
  if (command === "--help" || command === "-h") {
    console.log(usage);
    Deno.exit(0);
  }
  if (command !== undefined) {
    console.error(`error: unknown command "${command}" (commands: merge, inspect, route, compress)\n`);
  }
  console.error(usage);
  Deno.exit(2);
}
