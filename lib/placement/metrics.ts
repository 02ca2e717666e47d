/**
 * Expected per-GPU and per-node load of a placement, and its balancedness, assuming each expert's tokens
 * split evenly among its replicas; and a sweep of balancedness over the number of redundant experts.
 * @module
 */

import { OptionError, ShapeError } from "../core/errors.ts";
import { type LoadMatrix, type PlacementLike, readLoads, readPlacement, topologyOf } from "./checks.ts";
import { type PlacementPolicy, rebalanceExperts } from "./eplb.ts";

/**
 * What {@link placementMetrics} returns (float64, one entry or row per layer).
 *
 * @example
 * ```ts
 * import { identityPlacement, type PlacementMetrics, placementMetrics } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const m: PlacementMetrics = placementMetrics([[3, 1]], identityPlacement({ layers: 1, experts: 2, numGpus: 2, numNodes: 1 }));
 * assert.deepEqual(Array.from(m.gpuLoad[0]), [3, 1]);
 * ```
 */
export interface PlacementMetrics {
  /** `[L][P]`: Σ over the GPU's slots of `weight[l][e] / logcnt[l][e]`. */
  readonly gpuLoad: Float64Array[];
  /** `[L][N]`: Σ of the node's GPU loads. */
  readonly nodeLoad: Float64Array[];
  /** `[L]`: the busiest GPU's load. */
  readonly maxGpuLoad: Float64Array;
  /** `[L]`: the mean GPU load. */
  readonly meanGpuLoad: Float64Array;
  /** `[L]`: mean / max GPU load ∈ (0, 1]; 1 when max = 0. */
  readonly balancedness: Float64Array;
  /** `[L]`: max / mean GPU load ≥ 1; 1 when mean = 0. */
  readonly imbalance: Float64Array;
  /** `[L]`: mean / max node load; 1 when max = 0. */
  readonly nodeBalancedness: Float64Array;
  /** Mean over layers of `balancedness`. */
  readonly meanBalancedness: number;
  /** `Σ_l mean / Σ_l max` (vLLM's figure); 1 when the denominator is 0. */
  readonly overallBalancedness: number;
  /** GPUs P. */
  readonly numGpus: number;
  /** Nodes N. */
  readonly numNodes: number;
}

/** mean / max of `v`, 1 when max = 0; also returns both. */
export function meanOverMax(v: ArrayLike<number>): { mean: number; max: number; ratio: number } {
  let sum = 0, max = 0;
  for (let i = 0; i < v.length; i++) {
    sum += v[i];
    if (v[i] > max) max = v[i];
  }
  const mean = sum / v.length;
  return { mean, max, ratio: max === 0 ? 1 : mean / max };
}

/**
 * Expected load of every GPU and node under a placement (each expert's load split evenly among its
 * replicas), with balancedness `mean / max` and imbalance `max / mean` per layer. `numGpus` and
 * `numNodes` default to the placement's own.
 *
 * @example
 * ```ts
 * import { placementMetrics, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const w = [[10, 2, 3, 1, 4]];
 * const m = placementMetrics(w, rebalanceExperts(w, { numReplicas: 6, numGroups: 1, numNodes: 1, numGpus: 2 }));
 * assert.deepEqual(Array.from(m.gpuLoad[0]), [10, 10]);
 * assert.equal(m.balancedness[0], 1);
 * ```
 */
export function placementMetrics(
  weight: LoadMatrix,
  placement: PlacementLike,
  options: { readonly numGpus?: number; readonly numNodes?: number } = {},
): PlacementMetrics {
  const { L, E, w } = readLoads(weight);
  const { P, N } = topologyOf(placement, options);
  const { R, phy } = readPlacement(placement, L, E, P, `weight [${L}, ${E}]`);
  const S = R / P, Pn = P / N;
  const gpuLoad: Float64Array[] = [], nodeLoad: Float64Array[] = [];
  const maxGpuLoad = new Float64Array(L), meanGpuLoad = new Float64Array(L);
  const balancedness = new Float64Array(L), imbalance = new Float64Array(L);
  const nodeBalancedness = new Float64Array(L);
  const cnt = new Int32Array(E);
  let sumMean = 0, sumMax = 0, sumBal = 0;
  for (let l = 0; l < L; l++) {
    cnt.fill(0);
    for (let s = 0; s < R; s++) cnt[phy[l * R + s]]++;
    const gl = new Float64Array(P), nl = new Float64Array(N);
    for (let g = 0; g < P; g++) {
      let sum = 0;
      for (let s = g * S; s < (g + 1) * S; s++) {
        const e = phy[l * R + s];
        sum += w[l * E + e] / cnt[e];
      }
      gl[g] = sum;
    }
    for (let g = 0; g < P; g++) nl[Math.floor(g / Pn)] += gl[g];
    const gm = meanOverMax(gl);
    maxGpuLoad[l] = gm.max;
    meanGpuLoad[l] = gm.mean;
    balancedness[l] = gm.ratio;
    imbalance[l] = gm.mean === 0 ? 1 : gm.max / gm.mean;
    nodeBalancedness[l] = meanOverMax(nl).ratio;
    gpuLoad.push(gl);
    nodeLoad.push(nl);
    sumMean += gm.mean;
    sumMax += gm.max;
    sumBal += gm.ratio;
  }
  return {
    gpuLoad,
    nodeLoad,
    maxGpuLoad,
    meanGpuLoad,
    balancedness,
    imbalance,
    nodeBalancedness,
    meanBalancedness: sumBal / L,
    overallBalancedness: sumMax === 0 ? 1 : sumMean / sumMax,
    numGpus: P,
    numNodes: N,
  };
}

/**
 * One point of {@link redundancySweep}.
 *
 * @example
 * ```ts
 * import type { RedundancyPoint } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const pt: RedundancyPoint = { policy: "global", redundant: 32, replicas: 288, balancedness: 0.9, meanBalancedness: 0.91 };
 * assert.equal(pt.replicas - pt.redundant, 256);
 * ```
 */
export interface RedundancyPoint {
  /** The policy that was applied. */
  readonly policy: "hierarchical" | "global";
  /** Redundant experts per layer `R − E`. */
  readonly redundant: number;
  /** Slots per layer R. */
  readonly replicas: number;
  /** `overallBalancedness` of the placement. */
  readonly balancedness: number;
  /** `meanBalancedness` of the placement. */
  readonly meanBalancedness: number;
}

/**
 * Places the same loads with each number of redundant experts (and each policy) and reports the
 * balancedness: the data of the balancedness-vs-redundancy plot. Policies default to both when
 * `numGroups % numNodes = 0`, else global only.
 *
 * @example
 * ```ts
 * import { redundancySweep } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const rows = redundancySweep([[6, 2, 2, 2]], { numGroups: 1, numNodes: 1, numGpus: 2, redundant: [0, 2], policies: ["global"] });
 * assert.deepEqual(rows.map((r) => r.balancedness), [0.75, 1]); // GPU loads 8 | 4, then 6 | 6
 * ```
 */
export function redundancySweep(
  weight: LoadMatrix,
  options: {
    /** Expert groups G. */
    readonly numGroups: number;
    /** Nodes N. */
    readonly numNodes: number;
    /** GPUs P. */
    readonly numGpus: number;
    /** Redundant experts per layer to try (each `E + r` a multiple of numGpus). */
    readonly redundant: readonly number[];
    /** Policies to try. */
    readonly policies?: readonly Exclude<PlacementPolicy, "auto">[];
  },
): RedundancyPoint[] {
  const { E } = readLoads(weight);
  const { numGroups: G, numNodes: N, numGpus: P } = options;
  if (!Array.isArray(options.redundant) || options.redundant.length === 0) {
    throw new OptionError("redundant", options.redundant, "pass a non-empty list of redundant-expert counts");
  }
  options.redundant.forEach((r, i) => {
    if (!Number.isInteger(r) || r < 0) {
      throw new OptionError(`redundant[${i}]`, r, "must be an integer ≥ 0");
    }
    if (Number.isInteger(P) && P > 0 && (E + r) % P !== 0) {
      throw new OptionError(
        `redundant[${i}]`,
        r,
        `E + redundant = ${E + r} slots must be a multiple of numGpus = ${P}`,
      );
    }
  });
  const policies = options.policies ??
    (Number.isInteger(G) && Number.isInteger(N) && G % N === 0 ? ["hierarchical", "global"] : ["global"]);
  if (!Array.isArray(policies) || policies.length === 0) {
    throw new ShapeError("policies", [-1], [0], `give at least one of "hierarchical", "global"`);
  }
  const rows: RedundancyPoint[] = [];
  for (const policy of policies) {
    for (const r of options.redundant) {
      const p = rebalanceExperts(weight, {
        numReplicas: E + r,
        numGroups: G,
        numNodes: N,
        numGpus: P,
        policy,
      });
      const m = placementMetrics(weight, p);
      rows.push({
        policy: p.policy as "hierarchical" | "global",
        redundant: r,
        replicas: E + r,
        balancedness: m.overallBalancedness,
        meanBalancedness: m.meanBalancedness,
      });
    }
  }
  return rows;
}
