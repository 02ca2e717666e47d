/**
 * Backend choice for the linear algebra: native BLAS/LAPACK, the WebAssembly GEMM under blocked float64
 * factorisations, or plain JS in float64.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { wasmInfo } from "../kernels/runtime.ts";
import { matmulTFast } from "../kernels/gemm.ts";
import { nativeHas, nativeInfo, NativeLibraryError } from "../kernels/native.ts";
import { gemm64Available, gemm64Wasm, openWorkspace } from "./gemm64.ts";
import type { Kernels64 } from "./symmetric.ts";

/**
 * Where a linear-algebra routine runs: `"native"` (the machine's BLAS/LAPACK through FFI, float32 like
 * numpy on float32 input), `"wasm"` (blocked float64 factorisations whose large products run on moekit's
 * WebAssembly SIMD GEMM — in float32 for Cholesky, QR and the SVD's Gram matrix, in float64 for the
 * symmetric eigensolver), `"js"` (float64 throughout, for small problems and as the reference),
 * or `"auto"` (default): problems small enough to finish in milliseconds (≲ 16 M flops) run in float64 JS,
 * exact to float64; larger ones run native when a library is available (and has the routine), else wasm.
 *
 * @example
 * ```ts
 * import { type LinalgBackend, svd, matrix } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const backend: LinalgBackend = "js";
 * assert.equal(svd(matrix.fromArrays([[3, 0], [4, 5]]), { backend }).s[0].toFixed(4), "6.7082");
 * ```
 */
export type LinalgBackend = "native" | "wasm" | "js" | "auto";

/** A resolved backend. */
export type Resolved = Exclude<LinalgBackend, "auto">;

const NAMES = ["native", "wasm", "js", "auto"];

/** `work` ≈ flops; below this auto uses float64 JS. */
const SMALL_WORK = 1 << 24;

/** Resolves `backend` for one routine (`symbol` is the native routine it needs). */
export function resolveBackend(
  backend: LinalgBackend | undefined,
  symbol: "cblas_sgemm" | "cblas_strsm" | "cblas_strmm" | "sgesdd_" | "ssyevd_" | "spotrf_" | "sgeqrf_",
  work: number,
): Resolved {
  const b = backend ?? "auto";
  if (!NAMES.includes(b)) throw new OptionError("backend", b, `must be one of ${NAMES.join(", ")}`);
  if (b === "native") {
    if (!nativeHas(symbol)) {
      const info = nativeInfo();
      throw new NativeLibraryError(
        info.available ? symbol : "library",
        info.library,
        info.available ? "it is not in the library" : info.reason ?? "not loaded",
      );
    }
    return "native";
  }
  if (b === "wasm" || b === "js") return b;
  if (work < SMALL_WORK) return "js";
  if (nativeHas(symbol) && nativeHas("cblas_sgemm")) return "native";
  return wasmInfo().wasm ? "wasm" : "js";
}

/** `C [m,n] = A [m,k] · B [n,k]ᵀ` in float64 on the JS path (4-wide unrolled dot products). */
function gemmNTjs(a: Float64Array, b: Float64Array, m: number, n: number, k: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ai = i * k;
    for (let j = 0; j < n; j++) {
      const bj = j * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, p = 0;
      for (; p + 3 < k; p += 4) {
        s0 += a[ai + p] * b[bj + p];
        s1 += a[ai + p + 1] * b[bj + p + 1];
        s2 += a[ai + p + 2] * b[bj + p + 2];
        s3 += a[ai + p + 3] * b[bj + p + 3];
      }
      for (; p < k; p++) s0 += a[ai + p] * b[bj + p];
      c[i * n + j] = s0 + s1 + s2 + s3;
    }
  }
  return c;
}

/** `C = A·Bᵀ` (row-major, A [m,k], B [n,k]) in float64 storage on the chosen non-native path. */
export type GemmNT = (a: Float64Array, b: Float64Array, m: number, n: number, k: number) => Float64Array;

/** The float64-storage GEMM of a backend: wasm rounds the operands to float32 for the SIMD kernel. */
export function gemmFor(backend: "wasm" | "js"): GemmNT {
  if (backend === "js") return gemmNTjs;
  return (a, b, m, n, k) => {
    if (m * n * k < 1 << 15) return gemmNTjs(a, b, m, n, k);
    const c = matmulTFast(
      { rows: m, cols: k, data: Float32Array.from(a) },
      { rows: n, cols: k, data: Float32Array.from(b) },
    );
    return Float64Array.from(c.data);
  };
}

/**
 * The float64 kernels of a backend, for the factorisations whose results must keep float64 accuracy (the
 * symmetric eigensolver): moekit's float64 WebAssembly SIMD kernels on wasm (float64 JS for tiny products,
 * for matrices that do not fit in WebAssembly memory, and throughout without WebAssembly), float64 JS on js.
 */
export function kernels64For(backend: "wasm" | "js"): Kernels64 {
  if (backend === "js" || !gemm64Available()) return { gemm: gemmNTjs };
  return {
    gemm: (a, b, m, n, k) =>
      (m * n * k >= 1 << 15 ? gemm64Wasm(a, b, m, n, k) : undefined) ?? gemmNTjs(a, b, m, n, k),
    workspace: openWorkspace,
  };
}

/** `A·Bᵀ` of float32 matrices on wasm (or JS when WebAssembly is missing). */
export function gemmNT32(a: Float32Array, b: Float32Array, m: number, n: number, k: number): Float32Array {
  return matmulTFast({ rows: m, cols: k, data: a }, { rows: n, cols: k, data: b }).data;
}
