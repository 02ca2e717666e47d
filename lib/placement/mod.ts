/**
 * Expert placement across GPUs: DeepSeek's expert-parallel load balancer (replicate the heaviest experts,
 * pack the copies onto GPUs, keep each expert group on one node), the expected GPU and node load of a
 * placement, replica dispatch of routed tokens with the all-to-all bytes between GPUs and nodes, and the
 * `[L, E]` load matrix straight from routing results.
 *
 * @example
 * ```ts
 * import { placementMetrics, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const loads = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]];
 * const p = rebalanceExperts(loads, { numReplicas: 16, numGroups: 4, numNodes: 2, numGpus: 8 });
 * assert.deepEqual(Array.from(p.phy2log[0]), [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]);
 * assert.ok(placementMetrics(loads, p).balancedness[0] > 0.8);
 * ```
 * @module
 */

export * from "../core/mod.ts";
export {
  identityPlacement,
  type LoadMatrix,
  type Placement,
  type PlacementLike,
  type PlacementPolicy,
  rebalanceExperts,
  type RebalanceOptions,
} from "./eplb.ts";
export { type PlacementMetrics, placementMetrics, type RedundancyPoint, redundancySweep } from "./metrics.ts";
export { type DispatchOptions, type DispatchTraffic, dispatchTraffic } from "./dispatch.ts";
export { expertLoadMatrix, type ExpertLoadOptions } from "./loads.ts";
export type { RoutingResult, ScoreFunction } from "../routing/result.ts";
