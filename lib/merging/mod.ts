/**
 * Merging: task vectors, sparsification, merge methods, mergekit configs and checkpoint merges.
 * @module
 */

export * from "../core/mod.ts";
export * from "./tensor.ts";
export * from "./selection.ts";
export * from "./sparsify.ts";
export * from "./methods.ts";
export * from "./merge.ts";
export * from "./config.ts";
export * from "./checkpoint_merge.ts";
