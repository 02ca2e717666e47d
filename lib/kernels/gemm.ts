/**
 * `X·Wᵀ` on the WebAssembly SIMD kernel: the gate weight is copied into kernel memory once; token
 * tiles are read in place when they live there (see `allocTokens`) and staged otherwise.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import type { SelectionBuffers } from "../routing/backend.ts";
import { MoekitError } from "../core/errors.ts";
import { allocBytes, freeBytes, heapF32, inKernelMemory, requireRuntime, wasmInfo } from "./runtime.ts";

/** A weight resident in kernel memory, multiplying tiles of tokens. */
export interface WasmGemm {
  /** Byte offset of the weight `[E,d]` in kernel memory. */
  readonly weightPtr: number;
  /** Writes `x·Wᵀ` into `out [x.rows, E]`. */
  logits(x: Mat, out: Mat): Mat;
  /** A `[rows, E]` matrix in kernel memory for the kernel to write in place (owned by the gate: reused). */
  scratch(rows: number): Mat;
  /**
   * Vector epilogue on logits held in kernel memory (the scratch): `"softmaxSums"` gives one
   * `Σ_e exp(l − max)` per row, `"sigmoid"` the sigmoid of every logit. Views, valid until the next call.
   */
  epilogue(kind: "softmaxSums" | "sigmoid", logits: Mat): Float32Array | undefined;
  /**
   * The fused softmax top-k epilogue (routing's `softmaxTopK` selector, computed in the kernel) over
   * logits rows held in kernel memory: writes token `t0 + i`'s k experts, weights and scores at
   * `(t0 + i)·k` of `out`. Returns false, writing nothing, when a row's softmax sum is not finite (a
   * non-finite logit: the caller checks the tile and throws).
   */
  softmaxTopK(logits: Mat, k: number, norm: boolean, out: SelectionBuffers, t0: number): boolean;
  /** Frees the kernel memory now (otherwise it is freed when the gemm is garbage-collected). */
  release(): void;
}

/**
 * Writes rows `t0 …` of a softmax top-k selection into `out`: the experts `idx [rows·k]` chosen from
 * `logits [rows, E]` and their weights and scores, computed exactly as routing's `softmaxTopK` selector
 * does (float64 `exp(l − max)`, summed in order; scores divided by the row's softmax sum `sums`, weights
 * renormalised over the k when `norm`), so the fused path gives the selector's results bit for bit.
 */
export function topKWeights(
  logits: Float32Array,
  E: number,
  k: number,
  norm: boolean,
  sums: Float32Array,
  idx: Int32Array,
  out: SelectionBuffers,
  t0: number,
): void {
  const ex = new Float64Array(k), rows = sums.length;
  for (let i = 0; i < rows; i++) {
    const off = i * E, o = (t0 + i) * k, io = i * k, m = logits[off + idx[io]], z = sums[i];
    let zk = 0;
    for (let j = 0; j < k; j++) zk += ex[j] = Math.exp(logits[off + idx[io + j]] - m);
    for (let j = 0; j < k; j++) {
      out.indices[o + j] = idx[io + j];
      out.scores[o + j] = ex[j] / z;
      out.weights[o + j] = norm ? ex[j] / zk : ex[j] / z;
    }
  }
}

const registry = new FinalizationRegistry<() => void>((release) => release());

/** Copies `weight [E,d]` into kernel memory and returns its multiplier. */
export function wasmGemm(weight: Mat): WasmGemm {
  const rt = requireRuntime();
  const E = weight.rows, d = weight.cols;
  const wPtr = allocBytes(rt, E * d * 4);
  heapF32(rt).set(weight.data, wPtr / 4);
  let stage = { ptr: 0, floats: 0 }, outStage = { ptr: 0, floats: 0 }, scratch = { ptr: 0, floats: 0 };
  let epi = { ptr: 0, floats: 0 }, sel = { ptr: 0, floats: 0 };
  const ensure = (s: { ptr: number; floats: number }, floats: number) => {
    if (s.floats >= floats) return s;
    if (s.floats > 0) freeBytes(rt, s.ptr);
    return { ptr: allocBytes(rt, floats * 4), floats };
  };
  const gemm: WasmGemm = {
    release: () => {},
    weightPtr: wPtr,
    logits(x, out) {
      let xPtr: number;
      if (inKernelMemory(rt, x)) xPtr = x.data.byteOffset;
      else {
        stage = ensure(stage, x.data.length);
        heapF32(rt).set(x.data, stage.ptr / 4);
        xPtr = stage.ptr;
      }
      if (inKernelMemory(rt, out)) {
        rt.kernel.gemm_nt(xPtr, wPtr, out.data.byteOffset, x.rows, d, E);
      } else {
        outStage = ensure(outStage, out.data.length);
        rt.kernel.gemm_nt(xPtr, wPtr, outStage.ptr, x.rows, d, E);
        out.data.set(heapF32(rt).subarray(outStage.ptr / 4, outStage.ptr / 4 + out.data.length));
      }
      return out;
    },
    epilogue(kind, logits) {
      if (!inKernelMemory(rt, logits)) return undefined;
      const n = kind === "softmaxSums" ? logits.rows : logits.data.length;
      epi = ensure(epi, n + 4); // sigmoid_map writes whole f32x4 lanes
      if (kind === "softmaxSums") {
        rt.kernel.softmax_sums(logits.data.byteOffset, logits.rows, logits.cols, epi.ptr);
      } else rt.kernel.sigmoid_map(logits.data.byteOffset, n, epi.ptr);
      return heapF32(rt).subarray(epi.ptr / 4, epi.ptr / 4 + n);
    },
    softmaxTopK(logits, k, norm, out, t0) {
      const rows = logits.rows;
      if (!inKernelMemory(rt, logits) || logits.cols !== E) {
        throw new MoekitError("softmaxTopK: the logits must be [rows, E] in kernel memory (use scratch)");
      }
      // sums [rows], then indices [rows·k], then max(k, 16) floats of scratch
      sel = ensure(sel, rows + rows * k + Math.max(k, 16) + 4);
      const s = sel.ptr, ip = s + rows * 4;
      rt.kernel.softmax_sums(logits.data.byteOffset, rows, E, s);
      const heap = heapF32(rt), sums = heap.subarray(s / 4, s / 4 + rows);
      for (let i = 0; i < rows; i++) if (!(sums[i] > 0 && sums[i] < Infinity)) return false;
      rt.kernel.topk_rows(logits.data.byteOffset, rows, E, k, ip, ip + rows * k * 4);
      const idx = new Int32Array(heap.buffer, ip, rows * k);
      topKWeights(logits.data, E, k, norm, sums, idx, out, t0);
      return true;
    },
    scratch(rows) {
      scratch = ensure(scratch, rows * E);
      return { rows, cols: E, data: heapF32(rt).subarray(scratch.ptr / 4, scratch.ptr / 4 + rows * E) };
    },
  };
  let released = false;
  const free = () => {
    if (released) return;
    released = true;
    freeBytes(rt, wPtr);
    for (const b of [stage, outStage, scratch, epi, sel]) if (b.floats > 0) freeBytes(rt, b.ptr);
  };
  gemm.release = () => {
    registry.unregister(gemm);
    free();
  };
  registry.register(gemm, free, gemm);
  return gemm;
}

/**
 * `A·Bᵀ` on the WebAssembly kernel when it is available (B is copied into kernel memory for the call),
 * else on the JS reference; for large one-off products such as randomized-SVD sketches.
 */
export function matmulTFast(a: Mat, b: Mat): Mat {
  if (!wasmInfo().wasm || a.cols !== b.cols) return matrix.matmulT(a, b);
  const gemm = wasmGemm(b), out = matrix.zeros(a.rows, b.rows);
  const tile = Math.max(1, Math.min(a.rows, Math.floor((1 << 22) / Math.max(1, a.cols)))); // stage ≤ 16 MB of A at a time
  for (let r0 = 0; r0 < a.rows; r0 += tile) {
    const r1 = Math.min(a.rows, r0 + tile);
    gemm.logits(matrix.rowSlice(a, r0, r1), matrix.rowSlice(out, r0, r1));
  }
  gemm.release();
  return out;
}
