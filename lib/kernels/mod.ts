/**
 * Kernels: WebAssembly runtime, token buffers and threads.
 * @module
 */

export * from "../core/mod.ts";
export { allocTokens, freeTokens, kernelInfo } from "./runtime.ts";
export { threadCount, useThreads } from "./threads.ts";
