/**
 * Linear algebra for compression and merging: SVD, symmetric eigendecomposition, Cholesky, QR,
 * randomized SVD, GEMM and linear assignment, on the machine's BLAS/LAPACK (`"native"`, with
 * `--allow-ffi`), moekit's WebAssembly GEMM (`"wasm"`) or plain JS (`"js"`); `"auto"` picks the fastest
 * available. {@link nativeInfo} says which library is in use, or why none is.
 * @module
 */

export * from "../core/mod.ts";
export {
  LapackError,
  type NativeInfo,
  nativeInfo,
  NativeLibraryError,
  NotPositiveDefiniteError,
  setNativeThreads,
} from "../kernels/native.ts";
export type { LinalgBackend } from "./backend.ts";
export {
  cholesky,
  type EigenResult,
  type LinalgOptions,
  matmul,
  qr,
  svd,
  type SvdResult,
  symmetricEigen,
} from "./factor.ts";
export { rsvd, type RsvdOptions } from "./randomized.ts";
export { linearAssignment } from "./assignment.ts";
