/**
 * The public factorisations — `matmul`, `svd`, `symmetricEigen`, `cholesky`, `qr` — on the native,
 * WebAssembly or JS backend. Inputs and outputs are moekit's row-major float32 `Mat`.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { ShapeError } from "../core/errors.ts";
import {
  nativeDsyrk,
  nativeHas,
  nativeQr,
  nativeSgemm,
  nativeSgesdd,
  nativeSpotrf,
  nativeSsyevd,
  nativeStrmmRightLower,
  nativeStrsmRightLower,
  nativeSymTop64,
} from "../kernels/native.ts";
import {
  gemmFor,
  gemmNT32,
  kernels64For,
  type LinalgBackend,
  resolveBackend,
  type Resolved,
} from "./backend.ts";
import { cholesky64, cholQr64, gram64, qr64, transposeInto } from "./dense.ts";
import { symEigen64, symTop64 } from "./symmetric.ts";

/**
 * Options shared by the factorisations.
 *
 * @example
 * ```ts
 * import { type LinalgOptions } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const o: LinalgOptions = { backend: "auto" };
 * assert.equal(o.backend, "auto");
 * ```
 */
export interface LinalgOptions {
  /** `"native" | "wasm" | "js" | "auto"` (default `"auto"`); see {@link LinalgBackend}. */
  readonly backend?: LinalgBackend;
}

/**
 * A thin SVD `A = U·diag(s)·Vᵀ`: `u [m,k]`, `s` (k, descending), `vt [k,n]`, k = min(m, n).
 *
 * @example
 * ```ts
 * import { matrix, svd, type SvdResult } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const r: SvdResult = svd(matrix.identity(3));
 * assert.deepEqual(Array.from(r.s), [1, 1, 1]);
 * ```
 */
export interface SvdResult {
  /** Left singular vectors as columns, `[m, k]`. */
  readonly u: Mat;
  /** Singular values, descending. */
  readonly s: Float64Array;
  /** Right singular vectors as rows, `[k, n]`. */
  readonly vt: Mat;
  /** The backend that ran. */
  readonly backend: Exclude<LinalgBackend, "auto">;
}

/**
 * A symmetric eigendecomposition `A = V·diag(values)·Vᵀ`, eigenvalues ascending (numpy's `eigh` order).
 *
 * @example
 * ```ts
 * import { matrix, symmetricEigen, type EigenResult } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const r: EigenResult = symmetricEigen(matrix.fromArrays([[2, 0], [0, 1]]));
 * assert.deepEqual(Array.from(r.values), [1, 2]);
 * ```
 */
export interface EigenResult {
  /** Eigenvalues, ascending. */
  readonly values: Float64Array;
  /** Eigenvectors as columns, `[n, n]` (column j belongs to `values[j]`). */
  readonly vectors: Mat;
  /** The backend that ran. */
  readonly backend: Exclude<LinalgBackend, "auto">;
}

function finite(what: string, a: Mat): void {
  matrix.assertFinite(what, a);
}

function square(what: string, a: Mat): void {
  if (a.rows !== a.cols) throw new ShapeError(what, [a.rows, a.rows], [a.rows, a.cols], "it must be square");
}

/**
 * `op(A)·op(B)` with `op` = transpose when `transA` / `transB` is set: native `cblas_sgemm`, the
 * WebAssembly SIMD GEMM, or the JS reference (float64 accumulation). Float32 output.
 *
 * @example
 * ```ts
 * import { matmul, matrix } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const a = matrix.fromArrays([[1, 2], [3, 4]]);
 * assert.deepEqual(matrix.toArrays(matmul(a, a, { transB: true })), [[5, 11], [11, 25]]);
 * ```
 */
export function matmul(
  a: Mat,
  b: Mat,
  options: LinalgOptions & { transA?: boolean; transB?: boolean } = {},
): Mat {
  const tA = options.transA ?? false, tB = options.transB ?? false;
  const m = tA ? a.cols : a.rows, k = tA ? a.rows : a.cols;
  const kb = tB ? b.cols : b.rows, n = tB ? b.rows : b.cols;
  if (k !== kb) {
    throw new ShapeError(
      "matmul: B",
      tB ? [-1, k] : [k, -1],
      [b.rows, b.cols],
      `op(A) is ${m}×${k}, so op(B) needs ${k} rows`,
    );
  }
  const backend = resolveBackend(options.backend, "cblas_sgemm", 2 * m * n * k);
  const out = matrix.zeros(m, n);
  if (backend === "native") {
    nativeSgemm(tA, tB, m, n, k, 1, a.data, a.cols, b.data, b.cols, 0, out.data, n);
    return out;
  }
  const A = tA ? matrix.transpose(a) : a, Bt = tB ? b : matrix.transpose(b);
  if (backend === "wasm") return { rows: m, cols: n, data: gemmNT32(A.data, Bt.data, m, n, k) };
  return matrix.matmulT(A, Bt, out);
}

/**
 * `C += op(A)·op(B)` in place (shapes as {@link matmul}): native `cblas_sgemm` with β = 1, so sums of
 * products need no temporaries; other backends add a {@link matmul} result. Internal.
 */
export function matmulAdd(
  c: Mat,
  a: Mat,
  b: Mat,
  options: LinalgOptions & { transA?: boolean; transB?: boolean } = {},
): void {
  const tA = options.transA ?? false, tB = options.transB ?? false;
  const m = tA ? a.cols : a.rows, k = tA ? a.rows : a.cols, n = tB ? b.rows : b.cols;
  if (c.rows !== m || c.cols !== n) throw new ShapeError("matmulAdd: C", [m, n], [c.rows, c.cols]);
  if ((tB ? b.cols : b.rows) !== k) {
    throw new ShapeError("matmulAdd: B", tB ? [n, k] : [k, n], [b.rows, b.cols], `op(A) is ${m}×${k}`);
  }
  if (resolveBackend(options.backend, "cblas_sgemm", 2 * m * n * k) === "native") {
    nativeSgemm(tA, tB, m, n, k, 1, a.data, a.cols, b.data, b.cols, 1, c.data, n);
    return;
  }
  const p = matmul(a, b, options).data, o = c.data;
  for (let i = 0; i < o.length; i++) o[i] += p[i];
}

/**
 * Thin singular value decomposition. Native: LAPACK `sgesdd` (divide and conquer, float32 — numpy's
 * `np.linalg.svd` on float32 input). WebAssembly / JS: the Gram matrix of the smaller side in float64 (the
 * float32 entries' products are exact there; lower half only, on the float64 GEMM), its float64
 * eigendecomposition (blocked tridiagonalisation, divide and conquer, blocked back-transformation, all on a
 * float64 GEMM), the columns `A·vⱼ` on the backend's GEMM (float32 on wasm), normalised, and one float64
 * CholeskyQR pass over them in order of decreasing σ (`U = U₀·L⁻ᵀ`, `L·Lᵀ = U₀ᵀ·U₀`). That pass moves
 * each column only by the rounding its product put along the columns before it, so U and V (the long
 * side's vectors: V for a wide A) are orthonormal to float32 rounding (about 1e-7) and `‖A − U·Σ·Vᵀ‖`
 * stays at float32 rounding; besides the eigensolver that costs `A·V` and, for the pass, one more float64
 * Gram matrix and a triangular solve (about m·n² flops each). σ: on wasm the Gram matrix's `√λⱼ`
 * (float64-accurate) down to 1e-6·σ₁, below that and on js the column's norm after the pass. Columns the
 * pass cannot keep — σ at the rounding level, or zero — are projected off the others, factored by a
 * float64 QR and their small block decomposed again (recursively, relative to its own norm); where σ = 0
 * the basis is completed with seeded Gaussian vectors (fixed seed 0x5eed, reproducible), as numpy
 * completes it. Non-finite input throws `NonFiniteError`.
 *
 * @example
 * ```ts
 * import { matrix, svd } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const { s } = svd(matrix.fromArrays([[3, 0], [4, 5]]));
 * assert.ok(Math.abs(s[0] - Math.sqrt(45)) < 1e-5 && Math.abs(s[1] - Math.sqrt(5)) < 1e-5);
 * ```
 */
export function svd(a: Mat, options: LinalgOptions = {}): SvdResult {
  finite("svd: A", a);
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  const backend = resolveBackend(options.backend, "sgesdd_", 4 * m * n * k + 9 * k ** 3);
  if (k === 0) {
    return { u: matrix.zeros(m, 0), s: new Float64Array(0), vt: matrix.zeros(0, n), backend };
  }
  if (backend === "native") {
    // row-major A is column-major Aᵀ (n×m): its SVD V·Σ·Uᵀ hands back U [m,k] and Vᵀ [k,n] row-major
    const r = nativeSgesdd(n, m, a.data.slice());
    return {
      u: { rows: m, cols: k, data: r.vt },
      s: Float64Array.from(r.s),
      vt: { rows: k, cols: n, data: r.u },
      backend,
    };
  }
  if (m < n) {
    const t = gramSvd(matrix.transpose(a), backend);
    return { u: matrix.transpose(t.vt), s: t.s, vt: matrix.transpose(t.u), backend };
  }
  return gramSvd(a, backend);
}

/**
 * The leading `rank` singular triplets of A and all its singular values: `u [m, rank]`, `vt [rank, n]`,
 * `s` (all min(m, n), descending). Internal: the low-rank compressions use it.
 *
 * Native: the Gram matrix of the smaller side in float64 (`dsyrk` on the float32 entries, exact products),
 * its tridiagonal eigensolver for all eigenvalues and the leading `rank` eigenvectors (`dsytrd`, `dsterf`,
 * `dstemr`, `dormtr`), then the other side's vectors by one float32 GEMM, `A·vⱼ / ‖A·vⱼ‖`. In float64 the
 * Gram matrix loses nothing a float32 SVD keeps: its eigenvalues carry absolute errors near
 * `1e-16·σ₁²·n`, so every σ above about `1e-6·σ₁` is about as accurate as LAPACK's `sgesdd` gives it,
 * and the tail energy `Σ_{i>r} σᵢ²` is a float64 sum. Several times faster than `sgesdd` when the matrix is
 * tall or wide (no QR of the long side, no full U), and only `rank` vectors are formed. Falls back to
 * `sgesdd` when the library lacks a routine or MRRR reports a failure.
 *
 * WebAssembly / JS, small side ≥ 256 and rank ≤ half of it: the same scheme on the backend's GEMM (float32
 * Gram on wasm, so σ below about `3e-4·σ₁` are noise there; {@link svd} resolves them further), with
 * `symTop64`'s inverse iteration in place of MRRR. Otherwise {@link svd}, truncated.
 */
export function svdTop(a: Mat, rank: number, options: LinalgOptions = {}): SvdResult {
  finite("svd: A", a);
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  if (!Number.isInteger(rank) || rank < 0 || rank > k) {
    throw new ShapeError("svdTop: rank", [k], [rank], `the rank must be an integer in 0..${k}`);
  }
  const backend = resolveBackend(options.backend, "sgesdd_", 2 * m * n * k + 9 * k ** 3);
  const gram = backend === "native" && k > 0 &&
    (["cblas_dsyrk", "dsytrd_", "dsterf_", "dstemr_", "dormtr_"] as const).every(nativeHas);
  if (gram) {
    const r = gramTopNative(a, rank);
    if (r) return r;
  }
  // (inverse iteration pays for reorthogonalising large clusters: beyond half the vectors, accumulate them)
  if (backend !== "native" && k >= TOP_MIN && 2 * rank <= k) return gramTopPortable(a, rank, backend);
  const f = svd(a, options), u = matrix.zeros(m, rank);
  for (let i = 0; i < m; i++) u.data.set(f.u.data.subarray(i * k, i * k + rank), i * rank);
  return { u, s: f.s, vt: matrix.rowSlice(f.vt, 0, rank), backend: f.backend };
}

/**
 * From this size of the small side on (and for at most half the vectors), {@link svdTop} off native skips
 * the O(k³) vector accumulation.
 */
const TOP_MIN = 256;

/**
 * {@link svdTop} on wasm / js: the Gram matrix of the small side on the backend's GEMM (float32 on wasm,
 * float64 on js), then `symTop64` — all eigenvalues, and only the leading `rank` eigenvectors (inverse
 * iteration, no O(k³) accumulation) — and the long side's vectors by one more GEMM.
 */
function gramTopPortable(a: Mat, rank: number, backend: "wasm" | "js"): SvdResult {
  const m = a.rows, n = a.cols, tall = m >= n, k = tall ? n : m, len = tall ? m : n;
  const other = tall ? a : matrix.transpose(a); // [len, k]
  const small = tall ? matrix.transpose(a) : a; // [k, len]
  const G = backend === "wasm"
    ? Float64Array.from(gemmNT32(small.data, small.data, k, k, len))
    : gemmFor("js")(Float64Array.from(small.data), Float64Array.from(small.data), k, k, len);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < i; j++) G[i * k + j] = G[j * k + i] = 0.5 * (G[i * k + j] + G[j * k + i]);
  }
  const eig = symTop64(G, k, rank, `svd[${backend}]`, kernels64For(backend));
  const s = new Float64Array(k);
  for (let i = 0; i < k; i++) s[i] = Math.sqrt(Math.max(0, eig.values[k - 1 - i]));
  const v: Mat = { rows: rank, cols: k, data: Float32Array.from(eig.vectors) };
  // the long side, as rows [rank, len]: row j = A·vⱼ (tall) or uⱼᵀ·A (wide)
  const longData = rank === 0
    ? new Float64Array(0)
    : backend === "wasm"
    ? Float64Array.from(gemmNT32(v.data, other.data, rank, len, k))
    : gemmFor("js")(eig.vectors, Float64Array.from(other.data), rank, len, k);
  const long = longSide(longData, rank, len, s, backend);
  return tall
    ? { u: long, s, vt: v, backend }
    : { u: matrix.transpose(v), s, vt: matrix.transpose(long), backend };
}

/** {@link svdTop}'s native path; undefined when MRRR fails. */
function gramTopNative(a: Mat, rank: number): SvdResult | undefined {
  const m = a.rows, n = a.cols, tall = m >= n, k = tall ? n : m;
  const g = new Float64Array(k * k);
  nativeDsyrk(tall, k, tall ? m : n, Float64Array.from(a.data), g);
  const eig = nativeSymTop64(k, g, rank);
  if (!eig) return undefined;
  const s = new Float64Array(k);
  for (let i = 0; i < k; i++) s[i] = Math.sqrt(Math.max(0, eig.values[k - 1 - i]));
  // the small side's vectors as rows, largest first
  const v = matrix.zeros(rank, k);
  for (let j = 0; j < rank; j++) {
    const src = (rank - 1 - j) * k;
    for (let i = 0; i < k; i++) v.data[j * k + i] = eig.z[src + i];
  }
  // the long side as rows [rank, len]: A·vⱼ (tall) or uⱼᵀ·A (wide)
  const len = tall ? m : n, rows = new Float32Array(rank * len);
  if (rank > 0) {
    if (tall) nativeSgemm(false, true, rank, m, n, 1, v.data, n, a.data, n, 0, rows, m);
    else nativeSgemm(false, false, rank, n, m, 1, v.data, m, a.data, n, 0, rows, n);
  }
  const long = longSide(rows, rank, len, s, "native");
  return tall
    ? { u: long, s, vt: v, backend: "native" }
    : { u: matrix.transpose(v), s, vt: matrix.transpose(long), backend: "native" };
}

/**
 * The long side's singular vectors from the rows `A·vⱼ` ([rank, len]) as the columns of a [len, rank]
 * matrix, normalised. The columns with σⱼ < 1e-2·σ₁ carry rounding of about ε·σ₁/σⱼ in their directions
 * (and are noise where σⱼ is below what the Gram matrix resolves): they are projected off the earlier
 * columns twice and re-orthonormalised by a QR in order, which also turns a deficient column into a unit
 * vector orthogonal to all the others.
 */
function longSide(
  rows: Float32Array | Float64Array,
  rank: number,
  len: number,
  s: Float64Array,
  backend: Resolved,
): Mat {
  const out = matrix.zeros(len, rank), o = out.data, o64 = { backend };
  let j0 = 0;
  while (j0 < rank && s[j0] >= 1e-2 * s[0] && s[j0] > 0) j0++;
  for (let j = 0; j < j0; j++) {
    let q = 0;
    for (let i = 0; i < len; i++) q += rows[j * len + i] ** 2;
    const inv = 1 / Math.sqrt(q);
    for (let i = 0; i < len; i++) o[i * rank + j] = rows[j * len + i] * inv;
  }
  const b = rank - j0;
  if (b === 0) return out;
  let c = matrix.zeros(len, b);
  for (let j = 0; j < b; j++) for (let i = 0; i < len; i++) c.data[i * b + j] = rows[(j0 + j) * len + i];
  if (j0 > 0) {
    const head = matrix.zeros(len, j0);
    for (let i = 0; i < len; i++) head.data.set(o.subarray(i * rank, i * rank + j0), i * j0);
    for (let pass = 0; pass < 2; pass++) {
      const p = matmul(head, matmul(head, c, { ...o64, transA: true }), o64);
      for (let i = 0; i < c.data.length; i++) c.data[i] -= p.data[i];
    }
  }
  const f = qr(c, o64), r = f.r;
  c = f.q;
  for (let j = 0; j < b; j++) {
    const sign = r.data[j * b + j] < 0 ? -1 : 1;
    for (let i = 0; i < len; i++) o[i * rank + j0 + j] = sign * c.data[i * b + j];
  }
  return out;
}

/**
 * Thin SVD of a tall A (m ≥ n) through the n×n Gram matrix `AᵀA`, formed in float64 (the float32 entries'
 * products are exact there; with `a64`, A's float64 entries, for the tail's small block), and its float64
 * eigenvectors V (the blocked eigensolver in `symmetric.ts`). The columns `bⱼ = A·vⱼ` (the backend's GEMM:
 * float32 on wasm) are sorted by norm and normalised, and one float64 CholeskyQR pass ({@link cholQr64})
 * makes them orthonormal in that order: the part of `bⱼ` along the earlier columns is the rounding of the
 * product and of V (about `ε·σ₁` and `1e-16·σ₁²/σⱼ`), so removing it keeps `A·V = U·Σ` to that rounding.
 * `σⱼ` is `√λⱼ` where the product was float32 and λⱼ ≥ 1e-12·λ₁, else the norm the column keeps after the
 * pass. The pass stops at the first column that loses more than half its norm there (σ at the rounding
 * level, or zero); from it on {@link orthonormaliseTail} decomposes the rest again.
 */
function gramSvd(a: Mat, backend: "wasm" | "js", a64?: Float64Array): SvdResult {
  const m = a.rows, n = a.cols, kernels = kernels64For(backend);
  const G = gram64((s) => transposeInto(a64 ?? a.data, m, n, s), n, m, kernels);
  const { values, vectors } = symEigen64(G, n, `svd[${backend}]`, kernels);
  // V rows, largest eigenvalue first
  const Vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) Vt.set(vectors.subarray((n - 1 - i) * n, (n - i) * n), i * n);
  // the columns bⱼ = A·vⱼ as rows [n, m]
  const B = a64
    ? kernels.gemm(Vt, a64, n, m, n)
    : backend === "wasm"
    ? gemmNT32(Float32Array.from(Vt), a.data, n, m, n)
    : gemmFor("js")(Vt, Float64Array.from(a.data), n, m, n);
  const norm = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let q = 0;
    for (let i = j * m; i < (j + 1) * m; i++) q += B[i] * B[i];
    norm[j] = Math.sqrt(q);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((p, q) => norm[q] - norm[p] || p - q);
  const u = matrix.zeros(m, n), vt = matrix.zeros(n, n), sv = new Float64Array(n);
  const tiny = (norm[order[0]] || 1) * 1e-30;
  order.forEach((src, j) => {
    sv[j] = norm[src] > tiny ? norm[src] : 0;
    vt.data.set(Vt.subarray(src * n, src * n + n), j * n);
  });
  const fill = (s: Float64Array) => {
    order.forEach((src, j) => {
      const inv = sv[j] > 0 ? 1 / sv[j] : 0;
      for (let i = 0; i < m; i++) s[j * m + i] = B[src * m + i] * inv;
    });
  };
  const head = cholQr64(fill, n, m, kernels, MIN_PIVOT, u.data);
  // float32 products (wasm) bias ‖bⱼ‖ by about (ε·σ₁)²/2σⱼ; the float64 Gram's eigenvalues are exact to
  // about 1e-16·σ₁², so they give the better σ wherever λⱼ ≥ 1e-12·λ₁
  const exact = !a64 && backend === "wasm" ? 1e-12 * values[n - 1] : Infinity;
  for (let j = 0; j < head.order; j++) {
    const lambda = values[n - 1 - order[j]];
    sv[j] = lambda >= exact ? Math.sqrt(lambda) : sv[j] * head.diag[j];
  }
  orthonormaliseTail(u, sv, vt, backend, head.order);
  // the head's σ lost their rounding and the tail's come from its own decomposition: keep them descending
  if (sv.some((v, j) => j > 0 && v > sv[j - 1])) {
    const p = Array.from({ length: n }, (_, i) => i).sort((x, y) => sv[y] - sv[x] || x - y);
    const u2 = matrix.zeros(m, n), vt2 = matrix.zeros(n, n), s2 = p.map((i) => sv[i]);
    p.forEach((src, j) => {
      vt2.data.set(vt.data.subarray(src * n, src * n + n), j * n);
      for (let i = 0; i < m; i++) u2.data[i * n + j] = u.data[i * n + src];
    });
    return { u: u2, s: Float64Array.from(s2), vt: vt2, backend };
  }
  return { u, s: sv, vt, backend };
}

/**
 * {@link gramSvd}'s CholeskyQR keeps a column when at least this fraction of its squared norm lies outside
 * the span of the columns before it (the rest is rounding there; a column below is decomposed again).
 */
const MIN_PIVOT = 0.5;

/** Seed of the random vectors that complete U's basis where a column vanishes (σ = 0, rank deficiency). */
const COMPLETION_SEED = 0x5eed;

/**
 * Makes the last b = k − j0 columns of `u` (m×k, m ≥ k, σ in `s`, `vt` the k×n right vectors; the first
 * j0 columns orthonormal, the others unit or zero) orthonormal at a cost that grows with b: O(m·b² + b³),
 * nothing when b = 0. The block `B = A·V_b` (columns `σⱼ·uⱼ`) is projected off the first j0 columns twice
 * (block classical Gram–Schmidt on the float64 GEMM, `C −= H·(Hᵀ·C)`), then factored `B = Q·M` by a
 * float64 Householder QR; a column of Q that vanishes (σ = 0, or nothing left after the projections) is
 * replaced by a Gaussian vector (seed {@link COMPLETION_SEED} + its index + k·round) and the step
 * repeated, as numpy completes the basis there. The small b×b `M` is itself decomposed by
 * {@link gramSvd} on its float64 entries (relative to its own norm; it recurses on its own tail), and
 * `U_b = Q·U_M`, `V_b ← V_b·V_M`, `σ_b = σ_M`: U orthonormal, and `A·V = U·Σ` kept up to the projections'
 * rounding.
 */
function orthonormaliseTail(
  u: Mat,
  s: Float64Array,
  vt: Mat,
  backend: "wasm" | "js",
  j0: number,
): void {
  const m = u.rows, k = u.cols, n = vt.cols, gemm = kernels64For(backend).gemm;
  const b = k - j0;
  if (b === 0) return;
  // the tail columns as rows C [b, m]; the orthonormal ones as H [m, j0] and Hᵀ [j0, m]
  const C = new Float64Array(b * m), H = new Float64Array(m * j0), Ht = new Float64Array(j0 * m);
  for (let i = 0; i < m; i++) {
    const row = i * k;
    for (let j = 0; j < j0; j++) H[i * j0 + j] = Ht[j * m + i] = u.data[row + j];
    for (let j = 0; j < b; j++) C[j * m + i] = u.data[row + j0 + j];
  }
  let fill: number[] = [];
  for (let j = 0; j < b; j++) if (s[j0 + j] === 0) fill.push(j);
  let qt: Float64Array = C, R: Float64Array = new Float64Array(0), C0: Float64Array | undefined;
  for (let round = 0; round < 4; round++) {
    for (const j of fill) {
      const g = matrix.randn(1, m, { seed: COMPLETION_SEED + j0 + j + k * round }).data;
      let q = 0;
      for (let i = 0; i < m; i++) q += g[i] * g[i];
      const sc = 1 / Math.sqrt(q);
      for (let i = 0; i < m; i++) C[j * m + i] = g[i] * sc;
    }
    if (j0 > 0) {
      for (let pass = 0; pass < 2; pass++) {
        const d = gemm(gemm(C, Ht, b, j0, m), H, b, m, j0);
        for (let i = 0; i < C.length; i++) C[i] -= d[i];
      }
    }
    const f = qr64(C, m, b, gemm);
    qt = f.qt;
    R = f.r;
    fill = [];
    for (let j = 0; j < b; j++) {
      const d = R[j * b + j];
      if (!(Math.abs(d) >= 1e-6)) fill.push(j);
      else if (d < 0) {
        for (let i = 0; i < m; i++) qt[j * m + i] = -qt[j * m + i];
        for (let c = 0; c < b; c++) R[j * b + c] = -R[j * b + c];
      }
    }
    if (fill.length === 0) break;
    C0 ??= C.slice(); // the projected block, for M = Qᵀ·B below
    C.set(qt); // the accepted directions so far; the vanished rows get fresh vectors
  }
  // M = Qᵀ·B [b, b], B's column j = σⱼ·(projected uⱼ)
  const M = C0 ? gemm(qt, C0, b, b, m) : R;
  let any = false;
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < b; j++) any = (M[i * b + j] *= s[j0 + j]) !== 0 || any;
  }
  let ub: Float64Array = qt; // rows = columns of U_b
  if (any) {
    const f = gramSvd({ rows: b, cols: b, data: Float32Array.from(M) }, backend, M);
    // U_bᵀ = U_Mᵀ·Qᵀ [b, m]; V_bᵀ ← V_Mᵀ·V_bᵀ [b, n]
    const qm = new Float64Array(m * b), vb = new Float64Array(n * b);
    for (let j = 0; j < b; j++) for (let i = 0; i < m; i++) qm[i * b + j] = qt[j * m + i];
    for (let j = 0; j < b; j++) for (let c = 0; c < n; c++) vb[c * b + j] = vt.data[(j0 + j) * n + c];
    ub = gemm(Float64Array.from(matrix.transpose(f.u).data), qm, b, m, b);
    vt.data.set(Float32Array.from(gemm(Float64Array.from(f.vt.data), vb, b, n, b)), j0 * n);
    s.set(f.s, j0);
  }
  for (let i = 0; i < m; i++) {
    const row = i * k + j0;
    for (let j = 0; j < b; j++) u.data[row + j] = ub[j * m + i];
  }
}

/**
 * Eigendecomposition of a symmetric matrix (only the upper triangle is read on native; the others
 * symmetrise `(A + Aᵀ)/2`). Native: LAPACK `ssyevd`; WebAssembly / JS: float64 throughout, as LAPACK's
 * `dsyevd` — blocked Householder tridiagonalisation, divide and conquer, blocked back-transformation —
 * with the O(n³) bulk on moekit's float64 WebAssembly SIMD kernels (wasm) or float64 JS (js).
 *
 * @example
 * ```ts
 * import { matrix, symmetricEigen } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const { values, vectors } = symmetricEigen(matrix.fromArrays([[2, 1], [1, 2]]));
 * assert.ok(Math.abs(values[0] - 1) < 1e-6 && Math.abs(values[1] - 3) < 1e-6);
 * assert.ok(Math.abs(Math.abs(vectors.data[1]) - Math.SQRT1_2) < 1e-6); // (1, 1)/√2 for 3
 * ```
 */
export function symmetricEigen(a: Mat, options: LinalgOptions = {}): EigenResult {
  square("symmetricEigen: A", a);
  finite("symmetricEigen: A", a);
  const n = a.rows, backend = resolveBackend(options.backend, "ssyevd_", 9 * n ** 3);
  if (backend === "native") {
    const z = a.data.slice(), w = nativeSsyevd(n, z);
    // column-major Z (eigenvectors as columns) reads as row-major Zᵀ
    return {
      values: Float64Array.from(w),
      vectors: matrix.transpose({ rows: n, cols: n, data: z }),
      backend,
    };
  }
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) g[i * n + j] = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
  }
  const { values, vectors } = symEigen64(g, n, `symmetricEigen[${backend}]`, kernels64For(backend));
  return {
    values,
    vectors: matrix.transpose({ rows: n, cols: n, data: Float32Array.from(vectors) }),
    backend,
  };
}

/**
 * Lower Cholesky factor `L` with `A = L·Lᵀ` (the lower triangle of A is read on wasm/js, the upper on
 * native — the same for a symmetric A). Native: LAPACK `spotrf`; WebAssembly / JS: right-looking blocked
 * float64 with the trailing updates on the GEMM. A matrix that is not positive definite throws
 * `NotPositiveDefiniteError` (with the order of the failing minor).
 *
 * @example
 * ```ts
 * import { cholesky, matrix } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const l = cholesky(matrix.fromArrays([[4, 2], [2, 3]]));
 * assert.deepEqual(matrix.toArrays(l).flat().map((v) => +v.toFixed(5)), [2, 0, 1, 1.41421]);
 * ```
 */
export function cholesky(a: Mat, options: LinalgOptions = {}): Mat {
  square("cholesky: A", a);
  finite("cholesky: A", a);
  const n = a.rows, backend = resolveBackend(options.backend, "spotrf_", n ** 3 / 3);
  if (backend === "native") {
    const c = a.data.slice();
    nativeSpotrf(n, c);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) c[i * n + j] = 0;
    return { rows: n, cols: n, data: c };
  }
  const l = cholesky64(Float64Array.from(a.data), n, gemmFor(backend), `cholesky[${backend}]`);
  return { rows: n, cols: n, data: Float32Array.from(l) };
}

/**
 * Thin QR `A = Q·R`: `q [m,k]` with orthonormal columns, `r [k,n]` upper triangular, k = min(m, n).
 * Native: LAPACK `sgeqrf` + `sorgqr`; WebAssembly / JS: blocked Householder (compact WY) in float64 with
 * the block updates on the GEMM. Signs follow LAPACK (R's diagonal may be negative).
 *
 * @example
 * ```ts
 * import { matrix, qr } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const { q, r } = qr(matrix.fromArrays([[3, 1], [4, 2], [0, 5]]));
 * assert.ok(Math.abs(Math.abs(r.data[0]) - 5) < 1e-5 && q.rows === 3 && r.rows === 2);
 * ```
 */
export function qr(
  a: Mat,
  options: LinalgOptions = {},
): { q: Mat; r: Mat; backend: Exclude<LinalgBackend, "auto"> } {
  finite("qr: A", a);
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  const backend = resolveBackend(options.backend, "sgeqrf_", 4 * m * n * k);
  if (k === 0) return { q: matrix.zeros(m, 0), r: matrix.zeros(0, n), backend };
  const at = matrix.transpose(a); // column-major A
  if (backend === "native") {
    const buf = at.data, q = nativeQr(m, n, buf);
    const r = matrix.zeros(k, n);
    for (let c = 0; c < n; c++) {
      for (let i = 0; i <= Math.min(c, k - 1); i++) r.data[i * n + c] = buf[c * m + i];
    }
    return { q: matrix.transpose({ rows: k, cols: m, data: q }), r, backend };
  }
  const { qt, r } = qr64(Float64Array.from(at.data), m, n, gemmFor(backend));
  return {
    q: matrix.transpose({ rows: k, cols: m, data: Float32Array.from(qt) }),
    r: { rows: k, cols: n, data: Float32Array.from(r) },
    backend,
  };
}

/**
 * `B·L` for a lower-triangular n×n `l` and an r×n `b`: native `cblas_strmm` (half a general product's
 * flops), else the GEMM. Internal (the whitened SVD's `W·S`).
 */
export function multiplyLowerRight(b: Mat, l: Mat, options: LinalgOptions = {}): Mat {
  square("multiplyLowerRight: L", l);
  if (b.cols !== l.rows) throw new ShapeError("multiplyLowerRight: B", [-1, l.rows], [b.rows, b.cols]);
  const backend = resolveBackend(options.backend, "cblas_strmm", b.rows * l.rows * l.rows);
  if (backend !== "native") return matmul(b, l, options);
  const x = b.data.slice();
  nativeStrmmRightLower(b.rows, l.rows, l.data, x);
  return { rows: b.rows, cols: l.rows, data: x };
}

/**
 * `X = B·L⁻¹` (solves `X·L = B`) for a lower-triangular n×n `l` and an r×n `b`: native `cblas_strsm`, or
 * a blocked solve whose bulk runs on the GEMM. Internal (used by the whitened SVD).
 */
export function solveLowerRight(b: Mat, l: Mat, options: LinalgOptions = {}): Mat {
  square("solveLowerRight: L", l);
  const n = l.rows, r = b.rows;
  if (b.cols !== n) throw new ShapeError("solveLowerRight: B", [-1, n], [b.rows, b.cols]);
  const backend = resolveBackend(options.backend, "cblas_strsm", r * n * n);
  if (backend === "native") {
    const x = b.data.slice();
    nativeStrsmRightLower(r, n, l.data, x);
    return { rows: r, cols: n, data: x };
  }
  const gemm = gemmFor(backend), nb = 128, X = new Float64Array(r * n);
  for (let j1 = n; j1 > 0; j1 -= nb) {
    const j0 = Math.max(0, j1 - nb), w = j1 - j0, rest = n - j1;
    const R = new Float64Array(r * w);
    for (let i = 0; i < r; i++) for (let c = 0; c < w; c++) R[i * w + c] = b.data[i * n + j0 + c];
    if (rest > 0) {
      const xr = new Float64Array(r * rest), lt = new Float64Array(w * rest);
      for (let i = 0; i < r; i++) xr.set(X.subarray(i * n + j1, i * n + n), i * rest);
      for (let k = 0; k < rest; k++) {
        for (let c = 0; c < w; c++) lt[c * rest + k] = l.data[(j1 + k) * n + j0 + c];
      }
      const p = gemm(xr, lt, r, w, rest);
      for (let i = 0; i < r * w; i++) R[i] -= p[i];
    }
    for (let i = 0; i < r; i++) {
      for (let c = w - 1; c >= 0; c--) {
        let t = R[i * w + c];
        for (let q = c + 1; q < w; q++) t -= X[i * n + j0 + q] * l.data[(j0 + q) * n + j0 + c];
        X[i * n + j0 + c] = t / l.data[(j0 + c) * n + j0 + c];
      }
    }
  }
  return { rows: r, cols: n, data: Float32Array.from(X) };
}
