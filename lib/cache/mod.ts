/**
 * Expert caches: access traces, cache simulation and expert-aware batching.
 * @module
 */

export * from "../core/mod.ts";
export * from "./trace.ts";
export * from "./simulate.ts";
export * from "./batching.ts";
// the routing types the functions above take (the routers themselves are in @moekit/moekit/routing)
export type { RouteOptions, Router, RoutingResult, ScoreFunction } from "../routing/result.ts";
