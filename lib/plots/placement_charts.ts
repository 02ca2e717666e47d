/**
 * Plots of expert placement: GPU load per layer before and after rebalancing, the GPU × GPU dispatch
 * traffic heatmap with node boundaries, and balancedness vs the number of redundant experts.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import type { PlacementMetrics, RedundancyPoint } from "../placement/metrics.ts";
import type { DispatchTraffic } from "../placement/dispatch.ts";
import { Plot } from "./plot.ts";

export type { DispatchTraffic, PlacementMetrics, RedundancyPoint };

/** Rule marks at node boundaries on a quantitative [0, P) GPU axis (both axes when `both`). */
function nodeRules(P: number, N: number, both: boolean): Record<string, unknown>[] {
  if (N <= 1) return [];
  const at = Array.from({ length: N - 1 }, (_, i) => ({ at: ((i + 1) * P) / N }));
  const rule = (ch: "x" | "y") => ({
    data: { values: at },
    mark: { type: "rule", color: "firebrick", strokeWidth: 1.5 },
    encoding: { [ch]: { field: "at", type: "quantitative" } },
  });
  return both ? [rule("x"), rule("y")] : [rule("x")];
}

function gpuAxis(P: number, title: string): Record<string, unknown> {
  return {
    field: "gpu",
    type: "quantitative",
    title,
    scale: { domain: [0, P], nice: false },
    axis: {
      tickMinStep: 1,
      values: Array.from({ length: P }, (_, g) => g + 0.5),
      labelExpr: "floor(datum.value)",
    },
  };
}

function named<T extends object>(
  input: T | Record<string, T>,
  probe: string,
  fallback: string,
): Record<string, T> {
  return probe in input ? { [fallback]: input as T } : input as Record<string, T>;
}

/**
 * GPU load per layer for one or more placements (say, before and after rebalancing), as heatmaps one
 * above the other: x = GPU (red lines: node boundaries), y = layer, colour = GPU load / the layer's mean GPU load
 * (1 = balanced), on one shared colour scale.
 *
 * @example
 * ```ts
 * import { gpuLoadPlot } from "@moekit/moekit/plots";
 * import { identityPlacement, placementMetrics, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const w = [[8, 1, 1, 2], [1, 1, 5, 1]];
 * const before = placementMetrics(w, identityPlacement({ layers: 2, experts: 4, numGpus: 2, numNodes: 1 }));
 * const after = placementMetrics(w, rebalanceExperts(w, { numReplicas: 6, numGroups: 1, numNodes: 1, numGpus: 2 }));
 * assert.ok((await gpuLoadPlot({ before, after }).toSVG()).includes("load / layer mean"));
 * ```
 */
export function gpuLoadPlot(
  runs: PlacementMetrics | Record<string, PlacementMetrics>,
  options: { title?: string } = {},
): Plot {
  const all = named(runs, "gpuLoad", "placement");
  const entries = Object.entries(all);
  if (!entries.length) throw new MoekitError("gpuLoadPlot: no placement metrics given");
  const panels = entries.map(([name, m]) => {
    const P = m.numGpus, L = m.gpuLoad.length, values: Record<string, unknown>[] = [];
    m.gpuLoad.forEach((row, layer) => {
      const mean = m.meanGpuLoad[layer];
      row.forEach((load, gpu) =>
        values.push({ layer, gpu, gpu2: gpu + 1, load, relative: mean > 0 ? load / mean : 1 })
      );
    });
    return {
      title: `${name} (balancedness ${m.overallBalancedness.toFixed(3)})`,
      width: Math.min(640, Math.max(200, P * 16)),
      height: Math.max(60, Math.min(600, L * 10)),
      layer: [
        {
          data: { values },
          mark: { type: "rect", tooltip: true },
          encoding: {
            x: gpuAxis(P, "GPU"),
            x2: { field: "gpu2" },
            y: {
              field: "layer",
              type: "ordinal",
              title: "layer",
              axis: L > 24 ? { labelExpr: "datum.value % 8 === 0 ? datum.label : ''" } : {},
            },
            color: {
              field: "relative",
              type: "quantitative",
              title: "load / layer mean",
              scale: { scheme: "redblue", reverse: true, domainMid: 1 },
            },
          },
        },
        ...nodeRules(P, m.numNodes, false),
      ],
    };
  });
  return new Plot({
    title: options.title ?? "expected GPU load per layer (red lines: node boundaries)",
    vconcat: panels,
    resolve: { scale: { color: "shared" } },
  });
}

/**
 * The dispatch all-to-all as a GPU × GPU heatmap (row = source GPU, column = destination, colour = bytes)
 * with red lines at node boundaries; several traffics side by side on one colour scale.
 *
 * @example
 * ```ts
 * import { trafficHeatmap } from "@moekit/moekit/plots";
 * import { dispatchTraffic, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const p = rebalanceExperts([[1, 1, 1, 1]], { numReplicas: 4, numGroups: 2, numNodes: 2, numGpus: 2 });
 * const routing = {
 *   tokens: 2, experts: 4, k: 2, scoreFunction: "softmax" as const,
 *   indices: new Int32Array([0, 3, 1, 2]), weights: new Float32Array(4), scores: new Float32Array(4),
 * };
 * const svg = await trafficHeatmap(dispatchTraffic(routing, p, { bytesPerToken: 7168 })).toSVG();
 * assert.ok(svg.includes("destination GPU") && svg.includes("source GPU"));
 * ```
 */
export function trafficHeatmap(
  traffic: DispatchTraffic | Record<string, DispatchTraffic>,
  options: { title?: string } = {},
): Plot {
  const all = named(traffic, "dispatchBytes", "dispatch");
  const entries = Object.entries(all);
  if (!entries.length) throw new MoekitError("trafficHeatmap: no dispatch traffic given");
  const panels = entries.map(([name, t]) => {
    const P = t.numGpus, values: Record<string, unknown>[] = [];
    t.dispatchBytes.forEach((row, src) =>
      row.forEach((bytes, dst) => values.push({ src, src2: src + 1, gpu: dst, gpu2: dst + 1, bytes }))
    );
    const inter = t.interNodeBytes, total = t.localBytes + t.intraNodeBytes + inter;
    const side = Math.min(420, Math.max(180, P * 10));
    return {
      title: `${name} (inter-node ${(total > 0 ? (100 * inter) / total : 0).toFixed(1)} % of bytes)`,
      width: side,
      height: side,
      layer: [
        {
          data: { values },
          mark: { type: "rect", tooltip: true },
          encoding: {
            x: gpuAxis(P, "destination GPU"),
            x2: { field: "gpu2" },
            y: {
              ...gpuAxis(P, "source GPU"),
              field: "src",
              scale: { domain: [0, P], nice: false, reverse: true },
            },
            y2: { field: "src2" },
            color: { field: "bytes", type: "quantitative", title: "bytes", scale: { scheme: "blues" } },
          },
        },
        ...nodeRules(P, t.numNodes, true),
      ],
    };
  });
  return new Plot({
    title: options.title ?? "dispatch bytes, source GPU → destination GPU (red lines: node boundaries)",
    hconcat: panels,
    resolve: { scale: { color: "shared" } },
  });
}

/**
 * Balancedness (mean / max GPU load) vs the number of redundant experts, one line per policy (or series).
 *
 * @example
 * ```ts
 * import { redundancyPlot } from "@moekit/moekit/plots";
 * import { redundancySweep } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const rows = redundancySweep([[6, 2, 2, 2]], { numGroups: 1, numNodes: 1, numGpus: 2, redundant: [0, 2, 4] });
 * assert.ok((await redundancyPlot(rows).toSVG()).includes("redundant experts per layer"));
 * ```
 */
export function redundancyPlot(
  rows: readonly (RedundancyPoint | { series: string; redundant: number; balancedness: number })[],
  options: { title?: string } = {},
): Plot {
  if (!rows.length) throw new MoekitError("redundancyPlot: no rows given");
  const values = rows.map((r) => ({
    series: "series" in r ? r.series : r.policy,
    redundant: r.redundant,
    balancedness: r.balancedness,
  }));
  return new Plot({
    title: options.title ?? "balancedness vs redundant experts",
    data: { values },
    mark: { type: "line", point: true, tooltip: true },
    width: 360,
    height: 220,
    encoding: {
      x: { field: "redundant", type: "quantitative", title: "redundant experts per layer" },
      y: {
        field: "balancedness",
        type: "quantitative",
        title: "balancedness (mean / max GPU load)",
        scale: { zero: false },
      },
      color: { field: "series", type: "nominal", title: "policy" },
    },
  });
}
