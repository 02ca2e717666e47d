/**
 * The `"native"` compute backend for routing: the gate GEMM through the machine's `cblas_sgemm` (see
 * `native.ts`); each 64-token tile of logits lands in a buffer inside the WebAssembly kernel memory, so
 * that moekit's SIMD epilogues (softmax sums, sigmoid) and the selectors run on it at once — the
 * `[T,E]` logits are never built. Each block of 1024 tokens is one GEMM (with the library's own threads,
 * set by `setNativeThreads`): 64-token GEMMs would re-pack the weight per tile and split badly over threads.
 * The block's 64-token tiles then run the epilogue and selection on the calling thread. Gates with ≤ 16
 * experts use the WebAssembly GEMM and its Workers (`useThreads`), which measured as fast on that
 * memory-bound shape and scale with Workers. Registered when this module loads; available only with
 * `--allow-ffi` and a library (otherwise `"auto"` keeps picking WebAssembly, with no prompt).
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
import { nativeInfo, nativeSgemm } from "./native.ts";
import { wasmGemm } from "./gemm.ts";
import { wasmInfo } from "./runtime.ts";
import { parallelSelect } from "./threads.ts";

let cached: BackendStatus | undefined;

/** Gates with at most this many experts multiply on the WebAssembly kernel (as fast, and it has Workers). */
const SMALL_E = 16;

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
    const E = weight.rows, d = weight.cols, w = weight.data.slice();
    // With few experts (Mixtral's 8) the product is a tall-skinny, memory-bound GEMV-like shape where
    // BLAS packing costs more than it saves: the WebAssembly kernel (weight in its memory) runs those.
    const small = E <= SMALL_E && wasmInfo().wasm;
    // tile buffers and vector epilogues from the WebAssembly runtime (no weight copy unless small)
    const epi = wasmInfo().wasm
      ? wasmGemm(small ? weight : { rows: E, cols: 0, data: new Float32Array(0) })
      : undefined;
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
      nativeSgemm(false, true, x.rows, E, d, 1, x.data, d, w, d, 0, out.data, E);
      return out;
    };
    const runParallel = (job: ParallelJob): boolean => {
      if (small) return parallelSelect(epi!.weightPtr, E, job);
      const T = job.x.rows;
      if (T <= job.tileTokens) return false;
      const B = Math.max(job.tileTokens, Math.floor(BLOCK / job.tileTokens) * job.tileTokens);
      if (blockBuf.length < B * E) blockBuf = new Float32Array(B * E);
      try {
        for (let t0 = 0; t0 < T; t0 += B) {
          const t1 = Math.min(T, t0 + B), n = t1 - t0;
          const xs = job.x.data.subarray(t0 * d, t1 * d);
          nativeSgemm(false, true, n, E, d, 1, xs, d, w, d, 0, blockBuf, E);
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
          release: () => epi.release(),
        }
        : {}),
    };
  },
};

registerBackend(nativeBackend);
