/**
 * The `"native"` compute backend for routing, available with `--allow-ffi` and a BLAS library (see
 * `native.ts`). Its gate GEMM is, in order of preference:
 *
 * - moekit's own native gate kernel (`native/gate.c`, built for this CPU by `deno task build:native`):
 *   the weight packed once per router, X read in place, logits of 256-token blocks selected at once by
 *   the kernel's own softmax top-k epilogue (softmax top-k selectors; other selectors run over the block's
 *   tiles). With Workers (`useThreads(n)`) every thread multiplies and selects its own 256-token tiles,
 *   for every selector. It measured 1.05–2× faster than `cblas_sgemm` on the gate shapes (Mixtral's 8
 *   experts most), and is used for every shape when it is built for AVX-512; built for AVX2 or less, only
 *   for gates with ≤ 16 experts (on larger ones OpenBLAS's AVX2 kernels were as fast or faster);
 * - else the library's `cblas_sgemm`, written straight into the WebAssembly kernel memory, where moekit's
 *   SIMD epilogues and the selectors run on it at once — the `[T,E]` logits are never built:
 *   - one thread: one GEMM per block of 1024 tokens (with the library's own threads, `setNativeThreads`),
 *     then softmax top-k selectors run the kernel's fused epilogue over the whole block, and other
 *     selectors run over its 64-token tiles;
 *   - with Workers and a softmax top-k selector: each thread multiplies its own 512-token tiles with a
 *     1-thread GEMM and selects them, so the epilogue is split too (faster than the library's threads,
 *     which split only the GEMM);
 *   - gates with ≤ 16 experts use the WebAssembly GEMM and its Workers, which measured as fast on that
 *     memory-bound shape.
 *
 * Registered when this module loads; available only with `--allow-ffi` and a library (otherwise `"auto"`
 * keeps picking WebAssembly, with no prompt).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import type {
  BackendStatus,
  ComputeBackend,
  EpilogueKind,
  GateGemm,
  ParallelJob,
} from "../routing/backend.ts";
import { checkLogitsFinite, registerBackend } from "../routing/backend.ts";
import { nativeInfo, nativeSgemm, setNativeThreads } from "./native.ts";
import { wasmGemm } from "./gemm.ts";
import { allocBytes, freeBytes, heapF32, requireRuntime, wasmInfo } from "./runtime.ts";
import {
  GATE_MAX_K,
  gateInfo,
  gateLogits,
  gatePack,
  gatePackedFloats,
  gateSoftmaxTopK,
} from "./native/gate.ts";
import { fusedTopK, parallelSelect, serialFused, threadCount } from "./threads.ts";

let cached: BackendStatus | undefined;

/** Gates with at most this many experts multiply on the WebAssembly kernel (as fast, and it has Workers). */
const SMALL_E = 16;

/** Tokens per WebAssembly GEMM + fused-epilogue block for small gates on one thread. */
const SMALL_BLOCK = 256;

/** Tokens per tile when Workers each run their own GEMM (large enough for BLAS, small enough to share out). */
const WORKER_TILE = 512;

/** Tokens per tile for Workers on the own gate kernel (it packs nothing per call: smaller tiles share out better). */
const OWN_WORKER_TILE = 256;

/** The smallest of the own gate kernel's shrinking softmax top-k tiles on Workers (see `guidedTiles`). */
const OWN_MIN_TILE = 32;

/** Tokens per GEMM block (the weight is packed once per block; measured 1.3–2× faster than 64-token tiles). */
const BLOCK = 1024;

/** Tokens per block of the own gate kernel on one thread (no packing per call: the logits stay in L2). */
const OWN_BLOCK = 256;

/** The native backend (priority 20: above wasm and js). */
export const nativeBackend: ComputeBackend = {
  name: "native",
  priority: 20,
  status() {
    if (cached) return cached;
    const i = nativeInfo(), g = gateInfo();
    cached = i.available
      ? {
        available: true,
        reason: `${i.library} (${i.corename ?? i.vendor}${
          i.threads ? `, ${i.threads} threads` : ""
        }); gate GEMM: ${
          g.available
            ? `moekit's native gate kernel (${g.isa}${
              g.isa === "avx512" ? "" : `; gates with ≤ ${SMALL_E} experts, cblas_sgemm above`
            })`
            : `cblas_sgemm (own gate kernel: ${g.reason})`
        }`,
        detail: { library: i.library, vendor: i.vendor, config: i.config, threads: i.threads, gate: g },
      }
      : { available: false, reason: i.reason ?? "not loaded" };
    return cached;
  },
  bind(weight): GateGemm {
    const E = weight.rows, d = weight.cols;
    // moekit's own gate kernel when it is built (`deno task build:native`)
    // (built for AVX-512, or a thin gate: the AVX2 build trailed OpenBLAS's AVX2 kernels by 3–16 % on the
    // larger gates, and led by 1.4× on 8–13 experts)
    const g = gateInfo();
    const own = g.available && wasmInfo().wasm && (g.isa === "avx512" || E <= SMALL_E);
    // its packed weight goes straight into kernel memory, where the Workers read it too (at a 64-byte
    // boundary, as every allocation there: a vector load that straddles two cache lines costs two)
    const packedLength = own ? gatePackedFloats(E, d) : 0;
    const packedPtr = own ? allocBytes(requireRuntime(), packedLength * 4) : 0;
    const packedView = () => heapF32(requireRuntime()).subarray(packedPtr / 4, packedPtr / 4 + packedLength);
    if (own) gatePack(weight.data, E, d, packedView());
    // else Wᵀ [d,E]: C = X·Wᵀ as a plain NoTrans product, measured a few % faster than the transposed-B
    // call (and much faster on small blocks)
    const wt = own ? new Float32Array(0) : new Float32Array(d * E);
    if (!own) {
      for (let e = 0; e < E; e++) {
        for (let j = 0; j < d; j++) wt[j * E + e] = weight.data[e * d + j];
      }
    }
    // With few experts (Mixtral's 8) and no own kernel, the product is a tall-skinny, memory-bound
    // GEMV-like shape where BLAS packing costs more than it saves: the WebAssembly kernel runs those.
    const small = !own && E <= SMALL_E && wasmInfo().wasm;
    // tile buffers and vector epilogues in the WebAssembly runtime (the weight too when small), and a copy
    // of the transposed weight there that the Workers read (the packed one is there already)
    const epi = wasmInfo().wasm
      ? wasmGemm(small ? weight : { rows: E, cols: 0, data: new Float32Array(0) })
      : undefined;
    const shared = !own && wasmInfo().wasm && !small ? wasmGemm({ rows: d, cols: E, data: wt }) : undefined;
    const sgemm = own
      ? (x: Float32Array, rows: number, out: Float32Array) => gateLogits(x, rows, d, packedView(), E, out, E)
      : (x: Float32Array, rows: number, out: Float32Array) =>
        nativeSgemm(false, false, rows, E, d, 1, x, d, wt, E, 0, out, E);
    // runParallel: one GEMM per block of BLOCK tokens (multi-threaded when the library is), then the tiles
    // of that block select from it on this thread (the tile's gemm call copies its rows out of the block)
    let block: { x: Mat; t0: number; t1: number; logits: Float32Array } | undefined;
    let blockBuf = new Float32Array(0), lbuf = new Float32Array(0);
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
      if (own) {
        // every thread multiplies its own tiles with the gate kernel and selects them (any selector; other
        // selectors than softmax top-k keep the router's tiles, which their random streams are keyed by)
        const tile = fusedTopK(job) ? OWN_WORKER_TILE : job.tileTokens;
        // softmax top-k selects row by row, so its tiles may shrink towards the end (same bits)
        const guided = { max: OWN_WORKER_TILE, min: OWN_MIN_TILE };
        if (parallelSelect(packedPtr, E, job, { native: "gate", tile, guided })) return true;
        const f = fusedTopK(job);
        if (f && f.k <= GATE_MAX_K) {
          // softmax top-k: each block's logits are selected at once by the kernel's own epilogue
          if (lbuf.length < OWN_BLOCK * E) lbuf = new Float32Array(OWN_BLOCK * E);
          const { indices, weights, scores } = job.out;
          for (let t0 = 0; t0 < T; t0 += OWN_BLOCK) {
            const t1 = Math.min(T, t0 + OWN_BLOCK), n = t1 - t0, xs = job.x.data.subarray(t0 * d, t1 * d);
            sgemm(xs, n, lbuf);
            const o0 = t0 * f.k, o1 = t1 * f.k;
            const bad = gateSoftmaxTopK(
              lbuf,
              n,
              E,
              f.k,
              f.norm,
              indices.subarray(o0, o1),
              weights.subarray(o0, o1),
              scores.subarray(o0, o1),
            );
            if (bad >= 0) {
              checkLogitsFinite(
                { rows: n, cols: E, data: lbuf.subarray(0, n * E) },
                matrix.rowSlice(job.x, t0, t1),
                t0,
              );
              job.runTiles(t0, t1, job.out);
            }
          }
          return true;
        }
        if (epi && serialFused(epi, job, (x, out) => sgemm(x.data, x.rows, out.data), OWN_BLOCK)) return true;
      }
      const B = Math.max(job.tileTokens, Math.floor(BLOCK / job.tileTokens) * job.tileTokens);
      // softmax top-k with Workers: every thread multiplies its own tiles (1 library thread each) and
      // selects them at once, so the epilogue runs in parallel too
      if (!own && shared && threadCount() > 1 && fusedTopK(job)) {
        const was = nativeInfo().threads;
        if (was !== 1) setNativeThreads(1);
        try {
          if (parallelSelect(shared.weightPtr, E, job, { native: "blas", tile: WORKER_TILE })) return true;
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
            if (own) freeBytes(requireRuntime(), packedPtr);
          },
        }
        : {}),
    };
  },
};

registerBackend(nativeBackend);
