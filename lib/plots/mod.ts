/**
 * Plots: Vega-Lite charts rendered to SVG/PNG and shown inline in Jupyter.
 * @module
 */

export * from "../core/mod.ts";
export * from "./plot.ts";
export * from "./charts.ts";
export * from "./placement_charts.ts";
export { FONT_CANDIDATES, pngFont, pngPermissionsMissing } from "./render.ts";
// the routing types the charts take (the routers themselves are in @moekit/moekit/routing)
export type { RouteOptions, Router, RoutingResult, ScoreFunction } from "../routing/result.ts";
export type { LoadMetrics } from "../routing/metrics.ts";
export type { BiasBalancingStep } from "../routing/deepseek.ts";
