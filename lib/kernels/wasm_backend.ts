/**
 * The `"wasm"` compute backend: the WebAssembly SIMD gate GEMM (`gemm.ts`), its vector epilogues and
 * the Worker threads (`threads.ts`), registered with routing's backend registry when this module loads.
 * @module
 */

import type { ComputeBackend, GateGemm } from "../routing/backend.ts";
import { registerBackend } from "../routing/backend.ts";
import { wasmGemm } from "./gemm.ts";
import { parallelSelect, serialFused } from "./threads.ts";
import { wasmInfo } from "./runtime.ts";

/** Tokens per GEMM + fused-epilogue block on one thread (the block's logits stay in L2). */
const SERIAL_BLOCK = 256;

/** The WebAssembly backend (priority 10: above js, below native). */
export const wasmBackend: ComputeBackend = {
  name: "wasm",
  priority: 10,
  status() {
    const info = wasmInfo();
    return info.wasm
      ? {
        available: true,
        reason: `WebAssembly SIMD (${info.simd === "relaxed" ? "relaxed-SIMD FMA" : "plain SIMD"})`,
        detail: { simd: info.simd, memoryBytes: info.memoryBytes },
      }
      : { available: false, reason: "this runtime lacks WebAssembly SIMD or SharedArrayBuffer" };
  },
  bind(weight): GateGemm {
    const fast = wasmGemm(weight), E = weight.rows;
    return {
      backend: "wasm",
      experts: E,
      inputDim: weight.cols,
      gemm: (x, out) => fast.logits(x, out),
      scratch: (rows) => fast.scratch(rows),
      epilogue: (kind, logits) => fast.epilogue(kind, logits),
      runParallel: (job) =>
        parallelSelect(fast.weightPtr, E, job) ||
        serialFused(fast, job, (x, out) => fast.logits(x, out), SERIAL_BLOCK),
      release: () => fast.release(),
    };
  },
};

registerBackend(wasmBackend);
