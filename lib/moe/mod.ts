/**
 * MoE layers: experts, dispatch, the layer forward and stacks.
 * @module
 */

export * from "../routing/mod.ts";
export * from "./dispatch.ts";
export * from "./layer.ts";
