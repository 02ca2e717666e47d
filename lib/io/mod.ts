/**
 * I/O: safetensors files, dtypes and sharded checkpoints.
 * @module
 */

export * from "../core/mod.ts";
export * from "./dtype.ts";
export * from "./safetensors.ts";
export * from "./checkpoint.ts";
