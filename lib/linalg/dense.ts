/**
 * Float64 factorisations for the `"wasm"` and `"js"` backends, blocked so that their O(n³) bulk runs in a
 * GEMM (`GemmNT`: the WebAssembly SIMD kernel or float64 JS): right-looking blocked Cholesky, blocked
 * Householder QR with compact-WY updates, and the symmetric eigensolver (Householder tridiagonalisation +
 * implicit QL, with the matrix stored so that every inner loop runs over contiguous memory). SVD goes
 * through the Gram matrix on these paths (see `gramSvd`).
 * @module
 */

import { LapackError, NotPositiveDefiniteError } from "../kernels/native.ts";
import type { GemmNT } from "./backend.ts";

/**
 * Eigen-decomposition of a symmetric n×n row-major `a` (float64, not modified): eigenvalues ascending,
 * eigenvectors as the ROWS of `vectors` (row i belongs to `values[i]`). Householder tridiagonalisation
 * and implicit QL (the EISPACK tred2/tql2 pair) on the transposed storage, so every O(n³) loop is
 * contiguous.
 */
export function symEigen64(
  a: Float64Array,
  n: number,
  routine: string,
): { values: Float64Array; vectors: Float64Array } {
  // W = Vᵀ of the classic formulation (V[r][c] ≡ W[c*n + r]); d holds the reflectors' h until accumulated
  const { W, off: e, h: d } = tridiagonalize(a, n);
  if (n === 0) return { values: d, vectors: W };
  // accumulate the transformations
  for (let i = 0; i < n - 1; i++) {
    W[i * n + n - 1] = W[i * n + i];
    W[i * n + i] = 1;
    const h = d[i + 1], next = (i + 1) * n;
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = W[next + k] / h;
      for (let j = 0; j <= i; j++) {
        const row = j * n;
        let g = 0;
        for (let k = 0; k <= i; k++) g += W[next + k] * W[row + k];
        for (let k = 0; k <= i; k++) W[row + k] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) W[next + k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = W[j * n + n - 1];
    W[j * n + n - 1] = 0;
  }
  W[(n - 1) * n + n - 1] = 1;
  // implicit QL on the tridiagonal (d, e = off-diagonal, e[n − 1] = 0); rotations update two rows of W
  tridiagonalQL(d, e, routine, W);
  const order = Array.from({ length: n }, (_, i) => i).sort((p, q) => d[p] - d[q] || p - q);
  const values = new Float64Array(n), vectors = new Float64Array(n * n);
  order.forEach((src, i) => {
    values[i] = d[src];
    vectors.set(W.subarray(src * n, src * n + n), i * n);
  });
  return { values, vectors };
}

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

/**
 * The `r` largest eigenpairs, and all eigenvalues, of a symmetric n×n row-major `a` (float64, not
 * modified), without the O(n³) eigenvector accumulation of {@link symEigen64}: Householder
 * tridiagonalisation (tred2's reduction, the reflectors kept), every eigenvalue by implicit QL without
 * vectors, the r eigenvectors of the tridiagonal by inverse iteration (reorthogonalised within clusters of
 * close eigenvalues, as LAPACK's `dstein`), then back through the reflectors. `values`: all, ascending;
 * `top`: the r largest, descending; `vectors`: `[r, n]`, row j belonging to `top[j]`.
 */
export function symTop64(
  a: Float64Array,
  n: number,
  r: number,
  routine: string,
): { values: Float64Array; top: Float64Array; vectors: Float64Array } {
  const { W, diag, off, h } = tridiagonalize(a, n);
  // all eigenvalues (QL without vectors on copies)
  const values = diag.slice();
  tridiagonalQL(values, off.slice(), routine);
  values.sort();
  const top = new Float64Array(r), vectors = new Float64Array(r * n);
  for (let j = 0; j < r; j++) top[j] = values[n - 1 - j];
  inverseIteration(diag, off, top, vectors, n, routine);
  // x = P₁·P₂⋯ applied as P_{n−1}(…(P₁·y)): vectors in groups that stay in cache, reflectors streamed
  const group = 16;
  for (let j0 = 0; j0 < r; j0 += group) {
    const j1 = Math.min(r, j0 + group);
    for (let i = 1; i < n; i++) {
      const hi = h[i];
      if (hi === 0) continue;
      const u = i * n;
      for (let j = j0; j < j1; j++) {
        const y = j * n;
        let g = 0;
        for (let k = 0; k < i; k++) g += W[u + k] * vectors[y + k];
        g /= hi;
        if (g === 0) continue;
        for (let k = 0; k < i; k++) vectors[y + k] -= g * W[u + k];
      }
    }
  }
  return { values, top, vectors };
}

/**
 * Householder reduction `A = Q·T·Qᵀ` (tred2's first half, on the transposed storage so the loops are
 * contiguous): `diag`, `off` (`off[i] = T[i][i+1]`), and the reflectors `Pᵢ = I − uᵢuᵢᵀ/hᵢ`, i = 1..n−1,
 * with `uᵢ` = row i of `W` (entries 0..i−1), `Q = P_{n−1}⋯P₁`.
 */
function tridiagonalize(
  a: Float64Array,
  n: number,
): { W: Float64Array; diag: Float64Array; off: Float64Array; h: Float64Array } {
  const W = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) W[j * n + i] = a[i * n + j];
  const d = new Float64Array(n), e = new Float64Array(n);
  for (let j = 0; j < n; j++) d[j] = W[j * n + n - 1];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = W[j * n + i - 1];
        W[j * n + i] = 0;
        W[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1], g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        W[i * n + j] = f;
        const row = j * n;
        g = e[j] + W[row + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const w = W[row + k];
          g += w * d[k];
          e[k] += w * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        const row = j * n;
        for (let k = j; k <= i - 1; k++) W[row + k] -= f * e[k] + g * d[k];
        d[j] = W[row + i - 1];
        W[row + i] = 0;
      }
    }
    d[i] = h;
  }
  const diag = new Float64Array(n), off = new Float64Array(n);
  for (let j = 0; j < n; j++) diag[j] = W[j * n + j];
  for (let i = 1; i < n; i++) off[i - 1] = e[i];
  return { W, diag, off, h: d };
}

/**
 * Implicit QL (EISPACK tql2) on the symmetric tridiagonal (d, e), `e[i] = T[i][i+1]`: the eigenvalues
 * overwrite `d` (unsorted), `e` is destroyed. With `W` (n×n, row i = a vector), every rotation is also
 * applied to rows i and i + 1 of W, which accumulates the eigenvectors as its rows.
 */
function tridiagonalQL(d: Float64Array, e: Float64Array, routine: string, W?: Float64Array): void {
  const n = d.length, eps = 2 ** -52;
  let f = 0, tst1 = 0;
  e[n - 1] = 0;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) {
          throw new LapackError(routine, l + 1, `the QL iteration did not converge for eigenvalue ${l + 1}`);
        }
        let g = d[l], p = (d[l + 1] - g) / (2 * e[l]), r = Math.sqrt(p * p + 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1, c2 = c, c3 = c, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.sqrt(p * p + e[i] * e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          if (!W) continue;
          const ri = i * n, rj = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const hk = W[rj + k], wk = W[ri + k];
            W[rj + k] = s * wk + c * hk;
            W[ri + k] = c * wk - s * hk;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}

/**
 * Eigenvectors of the symmetric tridiagonal (diag, off) for the eigenvalues `w` (descending), into the rows
 * of `z`: inverse iteration with a partial-pivoting LU of `T − λI` (LAPACK's `dstein` scheme: close
 * eigenvalues nudged apart by `10·ε·|λ|`, vectors of a cluster — eigenvalues within `1e-3·‖T‖₁` —
 * reorthogonalised at every step, up to 5 steps plus 2 after convergence, deterministic start vectors).
 */
function inverseIteration(
  diag: Float64Array,
  off: Float64Array,
  w: Float64Array,
  z: Float64Array,
  n: number,
  routine: string,
): void {
  const eps = 2 ** -53;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    norm = Math.max(norm, Math.abs(diag[i]) + (i > 0 ? Math.abs(off[i - 1]) : 0) + Math.abs(off[i] || 0));
  }
  if (n === 1) {
    for (let j = 0; j < w.length; j++) z[j] = 1;
    return;
  }
  const ortol = 1e-3 * norm, crit = Math.sqrt(0.1 / n), tiny = eps * Math.max(norm, Number.MIN_VALUE);
  // LU of T − xI with partial pivoting: U has diagonal u0, superdiagonals u1, u2; multipliers l, pivots piv
  const u0 = new Float64Array(n), u1 = new Float64Array(n), u2 = new Float64Array(n);
  const l = new Float64Array(n), piv = new Uint8Array(n), b = new Float64Array(n);
  let seed = 0x9e3779b9, first = 0;
  let prev = Infinity;
  for (let j = 0; j < w.length; j++) {
    let x = w[j];
    if (j > 0 && prev - x < 10 * eps * Math.abs(x) + Number.MIN_VALUE) x = prev - 10 * eps * Math.abs(x);
    if (j > 0 && w[j - 1] - w[j] > ortol) first = j; // a new cluster starts
    prev = x;
    // factor
    let a0 = diag[0] - x, a1 = off[0];
    for (let i = 0; i < n - 1; i++) {
      const c = off[i], d1 = diag[i + 1] - x, e1 = i + 1 < n - 1 ? off[i + 1] : 0;
      if (Math.abs(a0) >= Math.abs(c)) {
        piv[i] = 0;
        const p = a0 === 0 ? tiny : a0;
        u0[i] = p;
        u1[i] = a1;
        u2[i] = 0;
        l[i] = c / p;
        a0 = d1 - l[i] * a1;
        a1 = e1;
      } else {
        piv[i] = 1;
        u0[i] = c;
        u1[i] = d1;
        u2[i] = e1;
        l[i] = a0 / c;
        a0 = a1 - l[i] * d1;
        a1 = -l[i] * e1;
      }
    }
    u0[n - 1] = a0 === 0 ? tiny : a0;
    for (let i = 0; i < n; i++) {
      if (Math.abs(u0[i]) < tiny) u0[i] = u0[i] < 0 ? -tiny : tiny;
    }
    // deterministic start
    for (let i = 0; i < n; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      b[i] = seed / 4294967296 - 0.5;
    }
    const y = z.subarray(j * n, (j + 1) * n);
    let extra = -1;
    for (let it = 0; it < 8; it++) {
      let bInf = 0;
      for (let i = 0; i < n; i++) bInf = Math.max(bInf, Math.abs(b[i]));
      // solve L·U·y = P·b
      for (let i = 0; i < n - 1; i++) {
        if (piv[i]) {
          const t = b[i];
          b[i] = b[i + 1];
          b[i + 1] = t - l[i] * b[i];
        } else b[i + 1] -= l[i] * b[i];
      }
      y[n - 1] = b[n - 1] / u0[n - 1];
      y[n - 2] = (b[n - 2] - u1[n - 2] * y[n - 1]) / u0[n - 2];
      for (let i = n - 3; i >= 0; i--) y[i] = (b[i] - u1[i] * y[i + 1] - u2[i] * y[i + 2]) / u0[i];
      // reorthogonalise against the cluster's vectors already found
      for (let q = first; q < j; q++) {
        const v = q * n;
        let dot = 0;
        for (let i = 0; i < n; i++) dot += y[i] * z[v + i];
        for (let i = 0; i < n; i++) y[i] -= dot * z[v + i];
      }
      let s = 0, big = 0;
      for (let i = 0; i < n; i++) s += y[i] * y[i];
      const nrm = Math.sqrt(s);
      if (!(nrm > 0) || !Number.isFinite(nrm)) {
        throw new LapackError(routine, j + 1, `inverse iteration broke down for eigenvalue ${j + 1}`);
      }
      for (let i = 0; i < n; i++) {
        y[i] /= nrm;
        big = Math.max(big, Math.abs(y[i]));
      }
      // converged once a step grows the vector by ≥ √(0.1/n) / (n·‖T‖·ε): residual ≤ n·ε·‖T‖/√(0.1/n)
      if (extra < 0 && big * nrm * n * eps * norm >= crit * bInf) extra = 0;
      if (extra >= 0 && ++extra > 2) break;
      b.set(y);
    }
  }
}
