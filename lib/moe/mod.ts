/**
 * MoE layers: experts, dispatch, the layer forward (with expert masks, dynamic skipping and shared
 * experts) and stacks. Re-exports routing (`@moekit/moekit/routing`) and core.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
 * });
 * assert.equal(layer.forward(matrix.randn(3, 8)).output.rows, 3);
 * ```
 * @module
 */

import "../kernels/mod.ts"; // registers the WebAssembly and native backends
export * from "../routing/mod.ts";
export * from "./dispatch.ts";
export {
  addSharedExperts,
  type ExpertActivation,
  expertHidden,
  expertsForward,
  type MoeLayer,
  moeLayer,
  type MoeLayerOptions,
  type MoeTrace,
  randomExperts,
  runMoeStack,
  runRoutedStack,
  type SharedExperts,
  type SkipOptions,
  type SwiGLUExpert,
  swigluForward,
} from "./layer.ts";
