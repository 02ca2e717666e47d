/**
 * `X·Wᵀ` on the WebAssembly SIMD kernel: the gate weight is copied into kernel memory once; token
 * tiles are read in place when they live there (see `allocTokens`) and staged otherwise.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
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
  /** Frees the kernel memory now (otherwise it is freed when the gemm is garbage-collected). */
  release(): void;
}

const registry = new FinalizationRegistry<() => void>((release) => release());

/** Copies `weight [E,d]` into kernel memory and returns its multiplier. */
export function wasmGemm(weight: Mat): WasmGemm {
  const rt = requireRuntime();
  const E = weight.rows, d = weight.cols;
  const wPtr = allocBytes(rt, E * d * 4);
  heapF32(rt).set(weight.data, wPtr / 4);
  let stage = { ptr: 0, floats: 0 }, outStage = { ptr: 0, floats: 0 }, scratch = { ptr: 0, floats: 0 };
  let epi = { ptr: 0, floats: 0 };
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
    for (const b of [stage, outStage, scratch, epi]) if (b.floats > 0) freeBytes(rt, b.ptr);
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
