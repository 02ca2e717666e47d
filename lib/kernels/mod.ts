/**
 * Kernels: the compute backends routing runs its gate GEMM on — WebAssembly SIMD and the native BLAS
 * backend (both registered with routing's backend registry when this module loads; native is used only
 * with a library and `--allow-ffi`) — token buffers in kernel memory, Worker threads, and what was
 * detected (`kernelInfo`).
 * @module
 */

export * from "../core/mod.ts";
import "./wasm_backend.ts";
import "./native_backend.ts";
export { allocTokens, freeTokens, kernelInfo } from "./runtime.ts";
export { nativeInfo } from "./native.ts";
export { threadCount, type ThreadOptions, useThreads } from "./threads.ts";
