/**
 * The plots of moekit results: expert load bars with the balanced line, the layer × expert load heatmap,
 * dropped fraction vs capacity factor, the expert co-activation heatmap, bias-balancing convergence,
 * cache hit rate vs cache size and compression error vs bytes. Large E stays legible: heatmaps instead
 * of bar forests, and thinned axis labels.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import type { Mat } from "../core/matrix.ts";
import type { Router, RoutingResult } from "../routing/result.ts";
import { type LoadMetrics, loadMetrics } from "../routing/metrics.ts";
import type { BiasBalancingStep } from "../routing/deepseek.ts";
import { Plot } from "./plot.ts";

/**
 * What load plots accept: a routing result, or its metrics.
 *
 * @example
 * ```ts
 * import { loadPlot, type Routed } from "@moekit/moekit/plots";
 * import { loadMetrics, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(2), k: 1 }).route(matrix.identity(2));
 * const both: Routed[] = [r, loadMetrics(r)];
 * assert.deepEqual(loadPlot({ a: both[0], b: both[1] }).spec.data, loadPlot({ a: r, b: r }).spec.data);
 * ```
 */
export type Routed = RoutingResult | LoadMetrics;

function metricsOf(r: Routed): LoadMetrics {
  return "indices" in r ? loadMetrics(r) : r;
}

/** An expert axis that labels every n-th expert when there are many. */
function expertAxis(E: number, title = "expert"): Record<string, unknown> {
  const every = E <= 32 ? 1 : E <= 64 ? 4 : E <= 128 ? 8 : 16;
  return {
    title,
    ...(every > 1 ? { labelExpr: `datum.value % ${every} === 0 ? datum.label : ''`, labelAngle: 0 } : {}),
  };
}

/**
 * Per-expert load (share of kept assignments) with the balanced share 1/E as a rule; several routers are
 * stacked as rows.
 *
 * @example
 * ```ts
 * import { loadPlot } from "@moekit/moekit/plots";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }).route(matrix.randn(256, 16, { seed: 2 }));
 * const rows = (loadPlot({ topk: r }).spec.data as { values: { share: number }[] }).values;
 * assert.equal(rows.length, 8); // one bar per expert
 * assert.ok(Math.abs(rows.reduce((s, v) => s + v.share, 0) - 1) < 1e-9); // shares sum to 1
 * ```
 */
export function loadPlot(input: Routed | Record<string, Routed>, options: { title?: string } = {}): Plot {
  const named: Record<string, Routed> = "indices" in input || "counts" in input
    ? { router: input as Routed }
    : input as Record<string, Routed>;
  const values: Record<string, unknown>[] = [];
  let E = 0;
  for (const [router, r] of Object.entries(named)) {
    const m = metricsOf(r);
    E = Math.max(E, m.counts.length);
    m.fraction.forEach((share, expert) => values.push({ router, expert, share, count: m.counts[expert] }));
  }
  if (!values.length) throw new MoekitError("loadPlot: no routing results given");
  const layer = {
    layer: [
      {
        mark: { type: "bar", tooltip: true },
        encoding: {
          x: { field: "expert", type: "ordinal", axis: expertAxis(E) },
          y: { field: "share", type: "quantitative", title: "share of assignments" },
        },
      },
      {
        mark: { type: "rule", color: "firebrick", strokeDash: [4, 3] },
        encoding: { y: { datum: 1 / E } },
      },
    ],
    width: Math.min(900, Math.max(240, E * 12)),
    height: 140,
  };
  return new Plot({
    title: options.title ?? "expert load (dashed: balanced 1/E)",
    data: { values },
    ...(Object.keys(named).length > 1
      ? { facet: { row: { field: "router", type: "nominal", title: "router" } }, spec: layer }
      : layer),
  });
}

/**
 * Layer × expert heatmap of the load share.
 *
 * @example
 * ```ts
 * import { layerLoadHeatmap } from "@moekit/moekit/plots";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const rs = [1, 2, 3].map((s) => topKRouter({ weight: matrix.randn(64, 8, { seed: s }), k: 4 }).route(matrix.randn(128, 8)));
 * const cells = (layerLoadHeatmap(rs).spec.data as { values: { layer: number }[] }).values;
 * assert.equal(cells.length, 3 * 64); // layer × expert
 * ```
 */
export function layerLoadHeatmap(routings: readonly Routed[], options: { title?: string } = {}): Plot {
  if (!routings.length) throw new MoekitError("layerLoadHeatmap: needs at least one layer");
  const values: Record<string, unknown>[] = [];
  let E = 0;
  routings.forEach((r, layer) => {
    const m = metricsOf(r);
    E = Math.max(E, m.counts.length);
    m.fraction.forEach((share, expert) => values.push({ layer, expert, share }));
  });
  return new Plot({
    title: options.title ?? "load share per layer and expert",
    data: { values },
    mark: { type: "rect", tooltip: true },
    width: Math.min(900, Math.max(240, E * 8)),
    height: Math.max(80, routings.length * 18),
    encoding: {
      x: { field: "expert", type: "ordinal", axis: expertAxis(E) },
      y: { field: "layer", type: "ordinal", title: "layer" },
      color: { field: "share", type: "quantitative", title: "share", scale: { scheme: "viridis" } },
    },
  });
}

/**
 * Dropped fraction vs capacity factor, one line per series.
 *
 * @example
 * ```ts
 * import { dropCurve, dropVsCapacityPlot } from "@moekit/moekit/plots";
 * import { matrix, switchRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const w = matrix.randn(8, 16, { seed: 1 }), x = matrix.randn(256, 16, { seed: 2 });
 * const rows = dropCurve("switch", (cf) => switchRouter({ weight: w, capacityFactor: cf }), x, [0.5, 1, 1.5, 2]);
 * assert.ok(rows.every((r, i) => i === 0 || r.droppedFraction <= rows[i - 1].droppedFraction)); // more room, fewer drops
 * assert.deepEqual((dropVsCapacityPlot(rows).spec.data as { values: unknown[] }).values, rows);
 * ```
 */
export function dropVsCapacityPlot(
  rows: readonly { series: string; capacityFactor: number; droppedFraction: number }[],
  options: { title?: string } = {},
): Plot {
  return new Plot({
    title: options.title ?? "tokens dropped vs capacity factor",
    data: { values: rows },
    mark: { type: "line", point: true, tooltip: true },
    width: 360,
    height: 220,
    encoding: {
      x: { field: "capacityFactor", type: "quantitative", title: "capacity factor" },
      y: {
        field: "droppedFraction",
        type: "quantitative",
        title: "dropped fraction",
        scale: { domain: [0, 1] },
      },
      color: { field: "series", type: "nominal", title: "router / policy" },
    },
  });
}

/**
 * Routes `x` with `make(cf)` for each capacity factor and returns the dropped fractions (for
 * {@link dropVsCapacityPlot}).
 *
 * @example
 * ```ts
 * import { dropCurve } from "@moekit/moekit/plots";
 * import { capacityRouter, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const rows = dropCurve("probs", (cf) => capacityRouter({ weight: matrix.randn(4, 8, { seed: 1 }), capacityFactor: cf, policy: "probs" }), matrix.randn(64, 8), [0, 4]);
 * assert.deepEqual(rows.map((r) => r.droppedFraction), [1, 0]);
 * ```
 */
export function dropCurve(
  series: string,
  make: (capacityFactor: number) => Router,
  x: Mat,
  factors: readonly number[],
): { series: string; capacityFactor: number; droppedFraction: number }[] {
  return factors.map((capacityFactor) => ({
    series,
    capacityFactor,
    droppedFraction: loadMetrics(make(capacityFactor).route(x)).droppedFraction,
  }));
}

/**
 * Expert co-activation heatmap: share of tokens whose kept experts include both i and j.
 *
 * @example
 * ```ts
 * import { coactivationPlot } from "@moekit/moekit/plots";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(2), k: 2 }).route(matrix.fromArrays([[1, 0], [0, 1], [1, 0]]));
 * const cells = (coactivationPlot(r).spec.data as { values: { i: number; j: number; tokens: number }[] }).values;
 * assert.deepEqual(cells.map((c) => c.tokens), [3, 3, 3, 3]); // k = E = 2: every token uses both experts
 * ```
 */
export function coactivationPlot(input: Routed, options: { title?: string } = {}): Plot {
  const m = metricsOf(input),
    E = m.counts.length,
    tokens = "tokens" in input ? (input as RoutingResult).tokens : 0;
  const values: Record<string, unknown>[] = [];
  for (let i = 0; i < E; i++) {
    for (let j = 0; j < E; j++) {
      const c = m.coactivation.data[i * E + j];
      values.push({ i, j, tokens: c, share: tokens ? c / tokens : c });
    }
  }
  return new Plot({
    title: options.title ?? "expert co-activation (diagonal: load)",
    data: { values },
    mark: { type: "rect", tooltip: true },
    width: Math.min(720, Math.max(200, E * 10)),
    height: Math.min(720, Math.max(200, E * 10)),
    encoding: {
      x: { field: "j", type: "ordinal", axis: expertAxis(E, "expert") },
      y: { field: "i", type: "ordinal", axis: expertAxis(E, "expert") },
      color: {
        field: "share",
        type: "quantitative",
        title: tokens ? "share of tokens" : "tokens",
        scale: { scheme: "blues" },
      },
    },
  });
}

/**
 * MaxVio per step of aux-loss-free bias balancing (one line per run).
 *
 * @example
 * ```ts
 * import { biasConvergencePlot } from "@moekit/moekit/plots";
 * import { deepseekV3Router, matrix, runBiasBalancing } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const steps = runBiasBalancing(deepseekV3Router({ weight: matrix.randn(8, 4, { seed: 1 }), k: 2 }), Array(10).fill(matrix.randn(64, 4)));
 * const points = (biasConvergencePlot({ "γ = 0.001": steps }).spec.data as { values: { maxVio: number }[] }).values;
 * assert.deepEqual(points.map((p) => p.maxVio), steps.map((s) => s.maxVio));
 * ```
 */
export function biasConvergencePlot(
  runs: Record<string, readonly BiasBalancingStep[]>,
  options: { title?: string } = {},
): Plot {
  const values = Object.entries(runs).flatMap(([run, steps]) =>
    steps.map((s) => ({ run, step: s.step, maxVio: s.maxVio }))
  );
  return new Plot({
    title: options.title ?? "aux-loss-free balancing: MaxVio per step",
    data: { values },
    mark: { type: "line", tooltip: true },
    width: 400,
    height: 220,
    encoding: {
      x: { field: "step", type: "quantitative", title: "step" },
      y: { field: "maxVio", type: "quantitative", title: "MaxVio" },
      color: { field: "run", type: "nominal", title: "run" },
    },
  });
}

/**
 * Cache hit rate vs cache size, one line per policy (and a column per router when given).
 *
 * @example
 * ```ts
 * import { cacheHitRatePlot } from "@moekit/moekit/plots";
 * import { CACHE_POLICIES, simulateCache } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * const trace = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 0, 1];
 * const rows = CACHE_POLICIES.flatMap((policy) => [1, 2, 3].map((capacity) => ({ policy, capacity, hitRate: simulateCache(trace, { capacity, policy }).hitRate })));
 * const p = cacheHitRatePlot(rows, { title: "hit rate" });
 * assert.equal(p.spec.title, "hit rate");
 * assert.equal((p.spec.data as { values: unknown[] }).values.length, 5 * 3);
 * ```
 */
export function cacheHitRatePlot(
  rows: readonly { policy: string; capacity: number; hitRate: number; router?: string }[],
  options: { title?: string } = {},
): Plot {
  const line = {
    mark: { type: "line", point: true, tooltip: true },
    width: 260,
    height: 200,
    encoding: {
      x: { field: "capacity", type: "quantitative", title: "cache size (experts)" },
      y: { field: "hitRate", type: "quantitative", title: "hit rate", scale: { domain: [0, 1] } },
      color: { field: "policy", type: "nominal", title: "policy" },
    },
  };
  const byRouter = rows.some((r) => r.router !== undefined);
  return new Plot({
    title: options.title ?? "expert-cache hit rate",
    data: { values: rows },
    ...(byRouter
      ? { facet: { column: { field: "router", type: "nominal", title: "router" } }, spec: line }
      : line),
  });
}

/**
 * Compression: relative output error vs bytes, one series per method.
 *
 * @example
 * ```ts
 * import { compressionPlot } from "@moekit/moekit/plots";
 * import assert from "node:assert/strict";
 * const p = compressionPlot([{ method: "svd", bytes: 1e6, error: 0.1 }, { method: "svd", bytes: 2e6, error: 0.05 }]);
 * const svg = await p.toSVG();
 * assert.ok(svg.includes("relative output error") && svg.includes("svd"));
 * ```
 */
export function compressionPlot(
  rows: readonly { method: string; bytes: number; error: number }[],
  options: { title?: string } = {},
): Plot {
  return new Plot({
    title: options.title ?? "compression: error vs size",
    data: { values: rows },
    mark: { type: "line", point: true, tooltip: true },
    width: 380,
    height: 240,
    encoding: {
      x: { field: "bytes", type: "quantitative", title: "bytes", scale: { type: "log" } },
      y: { field: "error", type: "quantitative", title: "relative output error" },
      color: { field: "method", type: "nominal", title: "method" },
    },
  });
}
