/**
 * Float64 factorisations for the `"wasm"` and `"js"` backends, blocked so that their O(n³) bulk runs in a
 * GEMM (`GemmNT`: the WebAssembly SIMD kernel or float64 JS): right-looking blocked Cholesky and blocked
 * Householder QR with compact-WY updates. The symmetric eigensolver is in `symmetric.ts`; SVD goes
 * through the Gram matrix on these paths (see `gramSvd`).
 * @module
 */

import { NotPositiveDefiniteError } from "../kernels/native.ts";
import type { GemmNT } from "./backend.ts";

/**
 * Lower Cholesky factor of a symmetric positive definite n×n row-major `a` (float64, not modified),
 * right-looking and blocked: the panel in float64 JS, the trailing update `A22 −= L21·L21ᵀ` in `gemm`.
 */
export function cholesky64(
  a: Float64Array,
  n: number,
  gemm: GemmNT,
  routine: string,
  nb = 128,
): Float64Array {
  const A = a.slice();
  for (let j0 = 0; j0 < n; j0 += nb) {
    const b = Math.min(nb, n - j0);
    // unblocked factor of the diagonal block
    for (let j = j0; j < j0 + b; j++) {
      let s = A[j * n + j];
      for (let p = j0; p < j; p++) s -= A[j * n + p] ** 2;
      if (!(s > 0) || !Number.isFinite(s)) throw new NotPositiveDefiniteError(routine, j + 1);
      const l = Math.sqrt(s);
      A[j * n + j] = l;
      for (let i = j + 1; i < j0 + b; i++) {
        let t = A[i * n + j];
        for (let p = j0; p < j; p++) t -= A[i * n + p] * A[j * n + p];
        A[i * n + j] = t / l;
      }
    }
    const r = n - j0 - b;
    if (r === 0) break;
    // L21 = A21·L11⁻ᵀ, row by row (forward substitution along the row)
    const L21 = new Float64Array(r * b);
    for (let i = 0; i < r; i++) {
      const row = (j0 + b + i) * n;
      for (let j = 0; j < b; j++) {
        let t = A[row + j0 + j];
        const lj = (j0 + j) * n + j0;
        for (let p = 0; p < j; p++) t -= L21[i * b + p] * A[lj + p];
        L21[i * b + j] = t / A[lj + j];
        A[row + j0 + j] = L21[i * b + j];
      }
    }
    const upd = gemm(L21, L21, r, r, b);
    for (let i = 0; i < r; i++) {
      const row = (j0 + b + i) * n + j0 + b;
      for (let j = 0; j <= i; j++) A[row + j] -= upd[i * r + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) A[i * n + j] = 0;
  return A;
}

/**
 * Thin Householder QR of an m×n matrix given as its transpose `at` ([n, m] row-major: row c = column c),
 * blocked with compact-WY trailing updates in `gemm`. Returns `qt` ([k, m]: row i = column i of Q) and
 * `r` ([k, n] row-major), k = min(m, n).
 */
export function qr64(
  at: Float64Array,
  m: number,
  n: number,
  gemm: GemmNT,
  nb = 32,
): { qt: Float64Array; r: Float64Array } {
  const A = at.slice(), k = Math.min(m, n), tau = new Float64Array(k);
  const Ts: Float64Array[] = [];
  for (let j0 = 0; j0 < k; j0 += nb) {
    const b = Math.min(nb, k - j0);
    // panel: unblocked Householder on columns j0..j0+b (rows of A)
    for (let j = j0; j < j0 + b; j++) {
      const col = j * m;
      let xn = 0;
      for (let i = j + 1; i < m; i++) xn += A[col + i] ** 2;
      const alpha = A[col + j];
      if (xn === 0) {
        tau[j] = 0;
      } else {
        const beta = -(alpha >= 0 ? 1 : -1) * Math.sqrt(alpha * alpha + xn);
        tau[j] = (beta - alpha) / beta;
        const sc = 1 / (alpha - beta);
        for (let i = j + 1; i < m; i++) A[col + i] *= sc;
        A[col + j] = beta;
      }
      // apply H_j to the rest of the panel
      if (tau[j] !== 0) {
        for (let c = j + 1; c < j0 + b; c++) {
          const cc = c * m;
          let s = A[cc + j];
          for (let i = j + 1; i < m; i++) s += A[col + i] * A[cc + i];
          s *= tau[j];
          A[cc + j] -= s;
          for (let i = j + 1; i < m; i++) A[cc + i] -= s * A[col + i];
        }
      }
    }
    // V (rows = reflectors, length L = m − j0, unit diagonal) and T (upper triangular, b×b)
    const L = m - j0, V = new Float64Array(b * L), T = new Float64Array(b * b);
    for (let p = 0; p < b; p++) {
      V[p * L + p] = 1;
      for (let i = p + 1; i < L; i++) V[p * L + i] = A[(j0 + p) * m + j0 + i];
    }
    for (let p = 0; p < b; p++) {
      const t = tau[j0 + p];
      T[p * b + p] = t;
      // T[0:p, p] = −t · T[0:p, 0:p] · (V[0:p]·v_p)
      const w = new Float64Array(p);
      for (let q = 0; q < p; q++) {
        let s = 0;
        for (let i = p; i < L; i++) s += V[q * L + i] * V[p * L + i];
        w[q] = s;
      }
      for (let q = 0; q < p; q++) {
        let s = 0;
        for (let z = q; z < p; z++) s += T[q * b + z] * w[z];
        T[q * b + p] = -t * s;
      }
    }
    Ts.push(T);
    const rest = n - j0 - b;
    if (rest > 0) applyBlock(A, m, j0, b, V, T, j0 + b, rest, gemm, true);
  }
  const R = new Float64Array(k * n);
  for (let c = 0; c < n; c++) for (let i = 0; i <= Math.min(c, k - 1); i++) R[i * n + c] = A[c * m + i];
  // Q = H_1…H_k applied to I[:, :k], blocks backwards
  const Q = new Float64Array(k * m);
  for (let i = 0; i < k; i++) Q[i * m + i] = 1;
  for (let bi = Ts.length - 1; bi >= 0; bi--) {
    const j0 = bi * nb, b = Math.min(nb, k - j0), L = m - j0, V = new Float64Array(b * L);
    for (let p = 0; p < b; p++) {
      V[p * L + p] = 1;
      for (let i = p + 1; i < L; i++) V[p * L + i] = A[(j0 + p) * m + j0 + i];
    }
    applyBlock(Q, m, j0, b, V, Ts[bi], j0, k - j0, gemm, false);
  }
  return { qt: Q, r: R };
}

/**
 * Applies `(I − V·T·Vᵀ)` (transposeT: `(I − V·Tᵀ·Vᵀ)`, i.e. Qᵀ) to the columns c0..c0+cols of the
 * column-stored matrix `X` (row c = column c, length m), rows j0..m.
 */
function applyBlock(
  X: Float64Array,
  m: number,
  j0: number,
  b: number,
  V: Float64Array,
  T: Float64Array,
  c0: number,
  cols: number,
  gemm: GemmNT,
  transposeT: boolean,
): void {
  const L = m - j0, C = new Float64Array(cols * L);
  for (let c = 0; c < cols; c++) C.set(X.subarray((c0 + c) * m + j0, (c0 + c) * m + m), c * L);
  const W = gemm(V, C, b, cols, L); // Vᵀ·C as [b, cols]
  const TW = new Float64Array(cols * b); // (op(T)·W)ᵀ as [cols, b]
  for (let p = 0; p < b; p++) {
    for (let c = 0; c < cols; c++) {
      let s = 0;
      if (transposeT) { for (let q = 0; q <= p; q++) s += T[q * b + p] * W[q * cols + c]; }
      else for (let q = p; q < b; q++) s += T[p * b + q] * W[q * cols + c];
      TW[c * b + p] = s;
    }
  }
  const Vt = new Float64Array(L * b);
  for (let p = 0; p < b; p++) for (let i = 0; i < L; i++) Vt[i * b + p] = V[p * L + i];
  const U = gemm(TW, Vt, cols, L, b); // [cols, L]
  for (let c = 0; c < cols; c++) {
    const row = (c0 + c) * m + j0;
    for (let i = 0; i < L; i++) X[row + i] -= U[c * L + i];
  }
}
