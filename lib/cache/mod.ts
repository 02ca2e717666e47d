/**
 * Expert caches: access traces, cache simulation and expert-aware batching.
 * @module
 */

export * from "../core/mod.ts";
export * from "./trace.ts";
export * from "./simulate.ts";
export * from "./batching.ts";
