/**
 * The `"native"` compute backend for routing: the gate GEMM through the machine's `cblas_sgemm` (see
 * `native.ts`), written straight into the WebAssembly kernel memory, where moekit's SIMD epilogues and
 * the selectors run on it at once — the `[T,E]` logits are never built.
 *
 * - One thread: one GEMM per block of 1024 tokens (with the library's own threads, `setNativeThreads`),
 *   then softmax top-k selectors run the kernel's fused epilogue over the whole block, and other
 *   selectors run over its 64-token tiles.
 * - With Workers (`useThreads(n)`) and a softmax top-k selector: each thread multiplies its own 512-token
 *   tiles with a 1-thread GEMM and selects them, so the epilogue is split too (faster than the library's
 *   threads, which split only the GEMM).
 * - Gates with ≤ 16 experts use the WebAssembly GEMM and its Workers, which measured as fast on that
 *   memory-bound shape.
 *
 * Registered when this module loads; available only with `--allow-ffi` and a library (otherwise `"auto"`
 * keeps picking WebAssembly, with no prompt).
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import type {
  BackendStatus,
  ComputeBackend,
  EpilogueKind,
  GateGemm,
  ParallelJob,
} from "../routing/backend.ts";
import { registerBackend } from "../routing/backend.ts";
import { nativeInfo, nativeSgemm, setNativeThreads } from "./native.ts";
import { wasmGemm } from "./gemm.ts";
import { wasmInfo } from "./runtime.ts";
import { fusedTopK, parallelSelect, serialFused, threadCount } from "./threads.ts";

let cached: BackendStatus | undefined;

/** Gates with at most this many experts multiply on the WebAssembly kernel (as fast, and it has Workers). */
const SMALL_E = 16;

/** Tokens per WebAssembly GEMM + fused-epilogue block for small gates on one thread. */
const SMALL_BLOCK = 256;

/** Tokens per tile when Workers each run their own GEMM (large enough for BLAS, small enough to share out). */
const WORKER_TILE = 512;

/** Tokens per GEMM block (the weight is packed once per block; measured 1.3–2× faster than 64-token tiles). */
const BLOCK = 1024;

/** The native backend (priority 20: above wasm and js). */
export const nativeBackend: ComputeBackend = {
  name: "native",
  priority: 20,
  status() {
    if (cached) return cached;
    const i = nativeInfo();
    cached = i.available
      ? {
        available: true,
        reason: `${i.library} (${i.corename ?? i.vendor}${i.threads ? `, ${i.threads} threads` : ""})`,
        detail: { library: i.library, vendor: i.vendor, config: i.config, threads: i.threads },
      }
      : { available: false, reason: i.reason ?? "not loaded" };
    return cached;
  },
  bind(weight): GateGemm {
    const E = weight.rows, d = weight.cols, wt = new Float32Array(d * E);
    // Wᵀ [d,E]: C = X·Wᵀ as a plain NoTrans product, measured a few % faster than the transposed-B call
    // (and much faster on small blocks)
    for (let e = 0; e < E; e++) for (let j = 0; j < d; j++) wt[j * E + e] = weight.data[e * d + j];
    // With few experts (Mixtral's 8) the product is a tall-skinny, memory-bound GEMV-like shape where
    // BLAS packing costs more than it saves: the WebAssembly kernel (weight in its memory) runs those.
    const small = E <= SMALL_E && wasmInfo().wasm;
    // tile buffers and vector epilogues in the WebAssembly runtime (the weight too when small), and a copy
    // of Wᵀ there that the Workers read
    const epi = wasmInfo().wasm
      ? wasmGemm(small ? weight : { rows: E, cols: 0, data: new Float32Array(0) })
      : undefined;
    const shared = wasmInfo().wasm && !small ? wasmGemm({ rows: d, cols: E, data: wt }) : undefined;
    const sgemm = (x: Float32Array, rows: number, out: Float32Array) =>
      nativeSgemm(false, false, rows, E, d, 1, x, d, wt, E, 0, out, E);
    // runParallel: one GEMM per block of BLOCK tokens (multi-threaded when the library is), then the tiles
    // of that block select from it on this thread (the tile's gemm call copies its rows out of the block)
    let block: { x: Mat; t0: number; t1: number; logits: Float32Array } | undefined;
    let blockBuf = new Float32Array(0);
    const gemm = (x: Mat, out: Mat): Mat => {
      if (small) return epi!.logits(x, out);
      if (block && x.data.buffer === block.x.data.buffer) {
        const r0 = (x.data.byteOffset - block.x.data.byteOffset) / 4 / d;
        if (Number.isInteger(r0) && r0 >= block.t0 && r0 + x.rows <= block.t1) {
          const o = (r0 - block.t0) * E;
          out.data.set(block.logits.subarray(o, o + x.rows * E));
          return out;
        }
      }
      sgemm(x.data, x.rows, out.data);
      return out;
    };
    const runParallel = (job: ParallelJob): boolean => {
      if (small) {
        return parallelSelect(epi!.weightPtr, E, job) ||
          serialFused(epi!, job, (x, out) => epi!.logits(x, out), SMALL_BLOCK);
      }
      const T = job.x.rows;
      if (T <= job.tileTokens) return false;
      const B = Math.max(job.tileTokens, Math.floor(BLOCK / job.tileTokens) * job.tileTokens);
      // softmax top-k with Workers: every thread multiplies its own tiles (1 library thread each) and
      // selects them at once, so the epilogue runs in parallel too
      if (shared && threadCount() > 1 && fusedTopK(job)) {
        const was = nativeInfo().threads;
        if (was !== 1) setNativeThreads(1);
        try {
          if (parallelSelect(shared.weightPtr, E, job, { native: true, tile: WORKER_TILE })) return true;
        } finally {
          if (was !== undefined && was !== 1) setNativeThreads(was);
        }
      }
      // softmax top-k: each block's GEMM writes straight into kernel memory, selected there in one call
      if (epi && serialFused(epi, job, (x, out) => sgemm(x.data, x.rows, out.data), B)) return true;
      if (blockBuf.length < B * E) blockBuf = new Float32Array(B * E);
      try {
        for (let t0 = 0; t0 < T; t0 += B) {
          const t1 = Math.min(T, t0 + B), n = t1 - t0;
          const xs = job.x.data.subarray(t0 * d, t1 * d);
          sgemm(xs, n, blockBuf);
          block = { x: job.x, t0, t1, logits: blockBuf };
          job.runTiles(t0, t1, job.out);
        }
      } finally {
        block = undefined;
      }
      return true;
    };
    return {
      backend: "native",
      experts: E,
      inputDim: d,
      gemm,
      runParallel,
      ...(epi
        ? {
          scratch: (rows: number) => epi.scratch(rows),
          epilogue: (kind: EpilogueKind, logits: Mat) => epi.epilogue(kind, logits),
          release: () => {
            epi.release();
            shared?.release();
          },
        }
        : {}),
    };
  },
};

registerBackend(nativeBackend);
