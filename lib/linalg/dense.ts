/**
 * Float64 factorisations for the `"wasm"` and `"js"` backends, blocked so that their O(n³) bulk runs in a
 * GEMM (`GemmNT`: the WebAssembly SIMD kernel or float64 JS): right-looking blocked Cholesky and blocked
 * Householder QR with compact-WY updates. The symmetric eigensolver is in `symmetric.ts`; SVD goes
 * through the Gram matrix on these paths (see `gramSvd`).
 * @module
 */

import { NotPositiveDefiniteError } from "../kernels/native.ts";
import type { GemmNT } from "./backend.ts";
import type { Workspace } from "./gemm64.ts";
import { type Kernels64, workspace64 } from "./symmetric.ts";

/**
 * Lower Cholesky factor of a symmetric positive definite n×n row-major `a` (float64, not modified; the
 * lower triangle is read), right-looking and blocked: the panel in float64 JS, the trailing update
 * `A22 −= L21·L21ᵀ` in `gemm`. Not positive definite → `NotPositiveDefiniteError` (`routine`, the order of
 * the failing minor).
 */
export function cholesky64(
  a: Float64Array,
  n: number,
  gemm: GemmNT,
  routine: string,
  nb = 128,
): Float64Array {
  const { l, order } = choleskyPrefix64(a, n, gemm, 0, nb);
  if (order < n) throw new NotPositiveDefiniteError(routine, order + 1);
  return l;
}

/**
 * {@link cholesky64} that stops at the first column whose pivot (its diagonal entry minus the squares
 * before it) is not above `minPivot` (or is not finite): `order` columns are factored, and the leading
 * order×order block of `l` is their Cholesky factor (the rest is scratch; the upper triangle is zero).
 * Internal.
 *
 * @example
 * ```ts
 * import { choleskyPrefix64 } from "./dense.ts";
 * import { gemmFor } from "./backend.ts";
 * import assert from "node:assert/strict";
 * // [[4, 2], [2, 1]]: the second pivot is 1 − 1² = 0, so one column passes
 * assert.equal(choleskyPrefix64(Float64Array.of(4, 2, 2, 1), 2, gemmFor("js"), 0).order, 1);
 * // [[4, 2], [2, 2]] = L·Lᵀ with L = [[2, 0], [1, 1]]; with minPivot 1 the second pivot (1) stops it
 * const full = choleskyPrefix64(Float64Array.of(4, 2, 2, 2), 2, gemmFor("js"), 0);
 * assert.deepEqual([full.order, Array.from(full.l)], [2, [2, 0, 1, 1]]);
 * assert.equal(choleskyPrefix64(Float64Array.of(4, 2, 2, 2), 2, gemmFor("js"), 1).order, 1);
 * ```
 */
export function choleskyPrefix64(
  a: Float64Array,
  n: number,
  gemm: GemmNT,
  minPivot: number,
  nb = 128,
): { l: Float64Array; order: number } {
  const A = a.slice();
  const done = (order: number) => {
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) A[i * n + j] = 0;
    return { l: A, order };
  };
  for (let j0 = 0; j0 < n; j0 += nb) {
    const b = Math.min(nb, n - j0);
    // unblocked factor of the diagonal block
    for (let j = j0; j < j0 + b; j++) {
      let s = A[j * n + j];
      for (let p = j0; p < j; p++) s -= A[j * n + p] ** 2;
      if (!(s > minPivot) || !Number.isFinite(s)) return done(j);
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
  return done(n);
}

/** The lower block triangle of `C = S·Sᵀ` (n×n, workspace array `c`) for `S` [n, m] (array `s`). */
function gramLower(ws: Workspace, s: number, c: number, n: number, m: number, nb = 256): void {
  for (let i0 = 0; i0 < n; i0 += nb) {
    const i1 = Math.min(n, i0 + nb);
    ws.gemm([s, i0 * m, m], [s, 0, m], [c, i0 * n, n], i1 - i0, i1, m, false);
  }
}

/**
 * The Gram matrix `S·Sᵀ` (n×n, both triangles) of the rows of an n×m float64 `S` that `fill` writes into
 * the kernel workspace (so a large S is not copied again): only the lower block triangle is multiplied
 * (about half a GEMM's flops), on the float64 kernels. Internal.
 *
 * @example
 * ```ts
 * import { gram64 } from "./dense.ts";
 * import { kernels64For } from "./backend.ts";
 * import assert from "node:assert/strict";
 * // rows (1, 2, 0) and (3, 4, 5)
 * const g = gram64((s) => s.set([1, 2, 0, 3, 4, 5]), 2, 3, kernels64For("js"));
 * assert.deepEqual(Array.from(g), [5, 11, 11, 50]);
 * ```
 */
export function gram64(
  fill: (s: Float64Array) => void,
  n: number,
  m: number,
  kernels: Kernels64,
): Float64Array {
  const ws = workspace64(kernels, [n * m, n * n]);
  try {
    fill(ws.view(0));
    gramLower(ws, 0, 1, n, m);
    const g = ws.view(1).slice();
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) g[i * n + j] = g[j * n + i];
    return g;
  } finally {
    ws.close();
  }
}

/**
 * One CholeskyQR pass in float64 over the columns of `U₀` [m, n] in order, given as the rows of
 * `S = U₀ᵀ` [n, m] that `fill` writes into the kernel workspace (unit or zero rows): `W = U₀ᵀ·U₀` (lower
 * block triangle on the GEMM), its Cholesky factor `L` up to the first column whose pivot — the part of its
 * squared norm outside the span of the columns before it — is not above `minPivot` (`order` columns
 * pass), then `X = U₀·L⁻ᵀ` for those columns by a blocked triangular solve whose bulk is GEMM
 * (`X_J = (U₀_J − X_{<J}·L_{J,<J}ᵀ)·L_JJ⁻ᵀ`, `nb` columns a block). Writes X into `out` [m, n] (float32),
 * and U₀ itself in the columns from `order` on; returns `order` and `diag` (L's diagonal: each passed
 * column's norm after the projections). In float64, X's columns are orthonormal to about
 * `1e-16·cond(U₀)²` before the float32 rounding of `out`. Internal.
 *
 * @example
 * ```ts
 * import { cholQr64 } from "./dense.ts";
 * import { kernels64For } from "./backend.ts";
 * import assert from "node:assert/strict";
 * // U₀ = [e₁, (e₁ + e₂)/√2, e₁]: the second column keeps half its squared norm (its e₂ part), the third
 * // nothing, so the pass stops there (minPivot 0.25) and leaves that column as it was
 * const r = Math.SQRT1_2, out = new Float32Array(9);
 * const pass = cholQr64((s) => s.set([1, 0, 0, r, r, 0, 1, 0, 0]), 3, 3, kernels64For("js"), 0.25, out);
 * assert.equal(pass.order, 2);
 * assert.ok(Math.abs(pass.diag[0] - 1) < 1e-15 && Math.abs(pass.diag[1] - r) < 1e-15);
 * // X (columns) = [e₁, e₂, U₀'s third column e₁], row-major [3, 3]
 * assert.deepEqual(Array.from(out, (v) => Math.round(v * 1e6) / 1e6 + 0), [1, 0, 1, 0, 1, 0, 0, 0, 0]);
 * ```
 */
export function cholQr64(
  fill: (s: Float64Array) => void,
  n: number,
  m: number,
  kernels: Kernels64,
  minPivot: number,
  out: Float32Array,
  nb = 128,
): { order: number; diag: Float64Array } {
  const ws = workspace64(kernels, [n * m, m * n, n * n, nb * n, nb * nb, m * nb]);
  try {
    fill(ws.view(0));
    gramLower(ws, 0, 2, n, m);
    const { l, order } = choleskyPrefix64(ws.view(2), n, kernels.gemm, minPivot);
    transposeInto(ws.view(0), n, m, ws.view(1));
    for (let j0 = 0; j0 < order; j0 += nb) {
      const w = Math.min(nb, order - j0);
      if (j0 > 0) {
        // X_J += X_{<J}·(−L_{J,<J})ᵀ
        const nl = ws.view(3);
        for (let r = 0; r < w; r++) for (let c = 0; c < j0; c++) nl[r * j0 + c] = -l[(j0 + r) * n + c];
        ws.gemm([1, 0, n], [3, 0, j0], [1, j0, n], m, w, j0, true);
      }
      // X_J = T·L_JJ⁻ᵀ with T the current X_J
      const t = ws.view(5), x = ws.view(1);
      for (let i = 0; i < m; i++) t.set(x.subarray(i * n + j0, i * n + j0 + w), i * w);
      lowerInverse(l, n, j0, w, ws.view(4));
      ws.gemm([5, 0, w], [4, 0, w], [1, j0, n], m, w, w, false);
    }
    out.set(ws.view(1));
    const diag = new Float64Array(order);
    for (let j = 0; j < order; j++) diag[j] = l[j * n + j];
    return { order, diag };
  } finally {
    ws.close();
  }
}

/**
 * The transpose of the rows×cols row-major `s` into `out` (cols×rows, float64), `tile` source rows at a
 * time. Internal.
 *
 * @example
 * ```ts
 * import { transposeInto } from "./dense.ts";
 * import assert from "node:assert/strict";
 * const out = new Float64Array(6);
 * transposeInto(Float32Array.of(1, 2, 3, 4, 5, 6), 2, 3, out);
 * assert.deepEqual(Array.from(out), [1, 4, 2, 5, 3, 6]);
 * ```
 */
export function transposeInto(
  s: Float32Array | Float64Array,
  rows: number,
  cols: number,
  out: Float64Array,
  tile = 16,
): void {
  for (let i0 = 0; i0 < rows; i0 += tile) {
    const i1 = Math.min(rows, i0 + tile);
    for (let j = 0; j < cols; j++) {
      const o = j * rows;
      for (let i = i0; i < i1; i++) out[o + i] = s[i * cols + j];
    }
  }
}

/** The inverse of the w×w lower-triangular diagonal block of `l` (n×n) at (j0, j0), row-major into `inv`. */
function lowerInverse(l: Float64Array, n: number, j0: number, w: number, inv: Float64Array): void {
  inv.fill(0, 0, w * w);
  for (let c = 0; c < w; c++) {
    // column c of L⁻¹: forward substitution of L·x = e_c
    inv[c * w + c] = 1 / l[(j0 + c) * n + j0 + c];
    for (let r = c + 1; r < w; r++) {
      let t = 0;
      const row = (j0 + r) * n + j0;
      for (let p = c; p < r; p++) t -= l[row + p] * inv[p * w + c];
      inv[r * w + c] = t / l[row + r];
    }
  }
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
