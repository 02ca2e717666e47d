/**
 * The float64 symmetric eigensolver of the `"wasm"` and `"js"` backends, blocked so that its O(n³) bulk
 * runs in float64 GEMMs (`Kernels64`: moekit's WebAssembly SIMD kernels of `gemm64_wat.ts`, or float64 JS):
 *
 * - blocked Householder tridiagonalisation `A = Q·T·Qᵀ` (LAPACK `dsytrd` / `dlatrd`, lower): panels of
 *   `nb` reflectors built with one symmetric matrix-vector product each, then the trailing update
 *   `A₂₂ −= V·Wᵀ + W·Vᵀ` as one GEMM per panel;
 * - the tridiagonal eigenproblem by divide and conquer (Cuppen's method with deflation and the
 *   Gu–Eisenstat eigenvectors, as LAPACK's `dstedc`), whose merges are GEMMs; implicit QL (`tridiagonalQL`)
 *   on the leaves and for eigenvalues alone;
 * - the back-transformation `Q·Z` in compact-WY blocks (`dormtr`), two GEMMs per panel.
 *
 * The matrix is stored column-major lower (= row-major upper: row j holds column j from the diagonal on),
 * so every O(n³) loop outside the GEMM runs over contiguous memory.
 * @module
 */

import { LapackError } from "../kernels/native.ts";
import type { GemmNT } from "./backend.ts";
import type { Workspace } from "./gemm64.ts";

const EPS = 2 ** -53;

/** A tridiagonal reduction: `diag`, `off` (`off[i] = T[i][i+1]`, `off[n−1] = 0`) and the reflectors. */
interface Tridiagonal {
  readonly n: number;
  readonly diag: Float64Array;
  readonly off: Float64Array;
  /** Reflector c (`H_c = I − τ_c·v·vᵀ`) in `v[c·n + c + 1 …]`, unit first entry stored, zeros before. */
  readonly v: Float64Array;
  readonly tau: Float64Array;
  readonly nb: number;
}

/**
 * Eigen-decomposition of a symmetric n×n row-major `a` (float64, not modified; the upper triangle is
 * read): eigenvalues ascending, eigenvectors as the ROWS of `vectors` (row i belongs to `values[i]`).
 * Blocked tridiagonalisation, divide and conquer, blocked back-transformation, on the float64 `kernels`.
 */
export function symEigen64(
  a: Float64Array,
  n: number,
  routine: string,
  kernels: Kernels64,
): { values: Float64Array; vectors: Float64Array } {
  const t = tridiagonalize(a, n, kernels);
  const { values, q } = tridiagonalEigen(t.diag, t.off, routine, kernels.gemm);
  const vectors = transpose(q, n, n); // rows = eigenvectors of T
  applyQ(t, vectors, n, kernels);
  return { values, vectors };
}

/**
 * The `r` largest eigenpairs, and all eigenvalues, of a symmetric n×n row-major `a` (float64, not
 * modified), without forming all eigenvectors: blocked tridiagonalisation, every eigenvalue by implicit QL
 * without vectors, the r eigenvectors of the tridiagonal by inverse iteration (reorthogonalised within
 * clusters of close eigenvalues, as LAPACK's `dstein`), then back through the reflectors in compact-WY
 * blocks. `values`: all, ascending; `top`: the r largest, descending; `vectors`: `[r, n]`, row j belonging
 * to `top[j]`.
 */
export function symTop64(
  a: Float64Array,
  n: number,
  r: number,
  routine: string,
  kernels: Kernels64,
): { values: Float64Array; top: Float64Array; vectors: Float64Array } {
  const t = tridiagonalize(a, n, kernels);
  const values = t.diag.slice();
  if (n > 0) tridiagonalQL(values, t.off.slice(), routine);
  values.sort();
  const top = new Float64Array(r), vectors = new Float64Array(r * n);
  for (let j = 0; j < r; j++) top[j] = values[n - 1 - j];
  if (r > 0) {
    inverseIteration(t.diag, t.off, top, vectors, n, routine);
    applyQ(t, vectors, r, kernels);
  }
  return { values, top, vectors };
}

function transpose(x: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = x[i * cols + j];
  return out;
}

/**
 * The float64 kernels the eigensolver runs on: a GEMM for fresh arrays, and optionally a {@link Workspace}
 * in which its large matrices live while symmetric matrix-vector products and in-place GEMM updates run
 * on them (the WebAssembly kernels); without one, float64 JS arrays and loops.
 */
export interface Kernels64 {
  readonly gemm: GemmNT;
  readonly workspace?: (lengths: number[]) => Workspace | undefined;
}

/** A {@link Workspace} of float64 JS arrays, its GEMM on `gemm` (strided operands gathered). */
function jsWorkspace(lengths: number[], gemm: GemmNT): Workspace {
  const arrays = lengths.map((len) => new Float64Array(len));
  const gather = ([i, off, ld]: [number, number, number], rows: number, cols: number) => {
    const x = arrays[i], out = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) out.set(x.subarray(off + r * ld, off + r * ld + cols), r * cols);
    return out;
  };
  return {
    view: (i) => arrays[i],
    symvLower: (ia, n, s0, iv, v, iw, w) => symvLower(arrays[ia], n, s0, arrays[iv], v, arrays[iw], w),
    gemm: (a, b, c, m, n, k, add) => {
      const p = gemm(gather(a, m, k), gather(b, n, k), m, n, k), [ic, off, ld] = c, x = arrays[ic];
      for (let i = 0; i < m; i++) {
        const o = off + i * ld;
        if (add) { for (let j = 0; j < n; j++) x[o + j] += p[i * n + j]; }
        else x.set(p.subarray(i * n, i * n + n), o);
      }
    },
    close: () => {},
  };
}

/**
 * A {@link Workspace} of float64 arrays of the given lengths on `kernels`: inside the WebAssembly kernel
 * memory where it fits, else float64 JS arrays (GEMM operands gathered). Close it when done. Internal.
 *
 * @example
 * ```ts
 * import { workspace64 } from "./symmetric.ts";
 * import { kernels64For } from "./backend.ts";
 * import assert from "node:assert/strict";
 * const ws = workspace64(kernels64For("wasm"), [4, 4, 4]);
 * try {
 *   ws.view(0).set([1, 2, 3, 4]); // A [2, 2]
 *   ws.view(1).set([1, 0, 0, 1]); // B = I
 *   ws.gemm([0, 0, 2], [1, 0, 2], [2, 0, 2], 2, 2, 2, false); // C = A·Bᵀ
 *   assert.deepEqual(Array.from(ws.view(2)), [1, 2, 3, 4]);
 * } finally {
 *   ws.close();
 * }
 * ```
 */
export function workspace64(kernels: Kernels64, lengths: number[]): Workspace {
  return kernels.workspace?.(lengths) ?? jsWorkspace(lengths, kernels.gemm);
}

/**
 * Blocked Householder tridiagonalisation (LAPACK `dsytrd` with `dlatrd`, lower) of the symmetric row-major
 * `a`. Storage: `A(i, j)` (i ≥ j) at `A[j·n + i]` — column j of the lower triangle is row j of `a` from
 * the diagonal on, contiguous. The symmetric products and the trailing updates run in the workspace.
 */
function tridiagonalize(a: Float64Array, n: number, kernels: Kernels64, nb = 32): Tridiagonal {
  const ws = workspace64(kernels, [n * n, nb * n, 2 * nb * n, 2 * nb * n]);
  try {
    const A = ws.view(0), W = ws.view(1), P = ws.view(2), Q = ws.view(3);
    A.set(a.subarray(0, n * n));
    const d = new Float64Array(n), e = new Float64Array(n), tau = new Float64Array(Math.max(0, n - 1));
    const t1 = new Float64Array(nb), t2 = new Float64Array(nb);
    for (let k = 0; k < n - 1; k += nb) {
      const b = Math.min(nb, n - 1 - k);
      for (let i = 0; i < b; i++) {
        const c = k + i, col = c * n;
        // column c, rows c…n, gets the panel's earlier reflectors: −= V·W(c,:)ᵀ + W·V(c,:)ᵀ
        for (let p = 0; p < i; p++) {
          const vp = (k + p) * n, wp = p * n, wc = W[wp + c], vc = A[vp + c];
          for (let r = c; r < n; r++) A[col + r] -= A[vp + r] * wc + W[wp + r] * vc;
        }
        d[c] = A[col + c];
        // Householder reflector (dlarfg) annihilating A(c+2…n, c)
        let xn = 0;
        for (let r = c + 2; r < n; r++) xn += A[col + r] * A[col + r];
        const alpha = A[col + c + 1];
        let beta = alpha, ti = 0;
        if (xn !== 0) {
          beta = -(alpha >= 0 ? 1 : -1) * Math.sqrt(alpha * alpha + xn);
          ti = (beta - alpha) / beta;
          const sc = 1 / (alpha - beta);
          for (let r = c + 2; r < n; r++) A[col + r] *= sc;
        }
        e[c] = beta;
        tau[c] = ti;
        A[col + c + 1] = 1;
        // w = τ·(A₂₂·v − V·(Wᵀv) − W·(Vᵀv)), then w −= ½·τ·(wᵀv)·v, over rows c+1…n
        const w = i * n, s0 = c + 1;
        ws.symvLower(0, n, s0, 0, col, 1, w);
        for (let p = 0; p < i; p++) {
          const vp = (k + p) * n, wp = p * n;
          let x = 0, y = 0;
          for (let r = s0; r < n; r++) {
            x += W[wp + r] * A[col + r];
            y += A[vp + r] * A[col + r];
          }
          t1[p] = x;
          t2[p] = y;
        }
        for (let p = 0; p < i; p++) {
          const vp = (k + p) * n, wp = p * n, x = t1[p], y = t2[p];
          for (let r = s0; r < n; r++) W[w + r] -= A[vp + r] * x + W[wp + r] * y;
        }
        let dot = 0;
        for (let r = s0; r < n; r++) {
          W[w + r] *= ti;
          dot += W[w + r] * A[col + r];
        }
        const al = -0.5 * ti * dot;
        for (let r = s0; r < n; r++) W[w + r] += al * A[col + r];
      }
      // trailing update A(s0…n, s0…n) += [−V −W]·[W V]ᵀ in row chunks of the lower triangle (in place)
      const s0 = k + b, R = n - s0, b2 = 2 * b;
      if (R === 0) continue;
      for (let p = 0; p < b; p++) {
        const vp = (k + p) * n + s0, wp = p * n + s0;
        for (let r = 0; r < R; r++) {
          const v = A[vp + r], x = W[wp + r];
          P[r * b2 + p] = -v;
          P[r * b2 + b + p] = -x;
          Q[r * b2 + p] = x;
          Q[r * b2 + b + p] = v;
        }
      }
      const chunk = 192;
      for (let c0 = 0; c0 < R; c0 += chunk) {
        const c1 = Math.min(R, c0 + chunk);
        ws.gemm(
          [2, c0 * b2, b2],
          [3, c0 * b2, b2],
          [0, (s0 + c0) * n + s0 + c0, n],
          c1 - c0,
          R - c0,
          b2,
          true,
        );
      }
    }
    if (n > 0) d[n - 1] = A[(n - 1) * n + n - 1];
    return { n, diag: d, off: e, v: A.slice(), tau, nb };
  } finally {
    ws.close();
  }
}

/** `W[w + r] = Σ_s A(r, s)·V[v + s]` for r, s in s0…n, reading the lower triangle (column-major) once. */
function symvLower(
  A: Float64Array,
  n: number,
  s0: number,
  V: Float64Array,
  v: number,
  W: Float64Array,
  w: number,
): void {
  for (let r = s0; r < n; r++) W[w + r] = 0;
  for (let j = s0; j < n; j++) {
    const cj = j * n, vj = V[v + j];
    let acc = A[cj + j] * vj;
    for (let r = j + 1; r < n; r++) {
      const x = A[cj + r];
      acc += x * V[v + r];
      W[w + r] += x * vj;
    }
    W[w + j] += acc;
  }
}

/**
 * `E ← E·Qᵀ` for the `rows` row vectors of `E` ([rows, n]): each row y becomes `Q·y`, Q = H₀⋯H_{n−2}
 * applied in compact-WY blocks of `nb` reflectors (`dormtr`), last block first, in the workspace.
 */
function applyQ(t: Tridiagonal, E: Float64Array, rows: number, kernels: Kernels64, nb = 128): void {
  const { n, v, tau } = t;
  if (n < 2 || rows === 0) return;
  const ws = workspace64(kernels, [rows * n, nb * n, n * nb, rows * nb, rows * nb, nb * nb, nb * nb]);
  try {
    const X = ws.view(0), Vr = ws.view(1), Vc = ws.view(2), T = ws.view(5), G = ws.view(6);
    X.set(E.subarray(0, rows * n));
    for (let k = Math.floor((n - 2) / nb) * nb; k >= 0; k -= nb) {
      const b = Math.min(nb, n - 1 - k), r0 = k + 1, L = n - r0;
      // V as rows [b, L] and as [L, b]
      Vr.fill(0, 0, b * L);
      for (let p = 0; p < b; p++) {
        const src = (k + p) * n + r0;
        for (let r = p; r < L; r++) {
          const x = v[src + r];
          Vr[p * L + r] = x;
          Vc[r * b + p] = x;
        }
        for (let r = 0; r < p; r++) Vc[r * b + p] = 0;
      }
      // −T (T upper b×b: H_k⋯H_{k+b−1} = I − V·T·Vᵀ, dlarft forward) from G = Vᵀ·V
      ws.gemm([1, 0, L], [1, 0, L], [6, 0, b], b, b, L, false);
      T.fill(0, 0, b * b);
      for (let p = 0; p < b; p++) {
        const tp = tau[k + p];
        T[p * b + p] = -tp;
        for (let q = 0; q < p; q++) {
          let s = 0;
          for (let z = q; z < p; z++) s += T[q * b + z] * G[z * b + p];
          T[q * b + p] = -tp * s;
        }
      }
      // E₂ += ((E₂·V)·(−T)ᵀ)·Vᵀ, E₂ = E[:, r0…n]
      ws.gemm([0, r0, n], [1, 0, L], [4, 0, b], rows, b, L, false);
      ws.gemm([4, 0, b], [5, 0, b], [3, 0, b], rows, b, b, false);
      ws.gemm([3, 0, b], [2, 0, b], [0, r0, n], rows, L, b, true);
    }
    E.set(X);
  } finally {
    ws.close();
  }
}

/** Subproblems up to this size are solved by implicit QL with vectors. */
const LEAF = 48;

/**
 * All eigenpairs of the symmetric tridiagonal (d, e), `e[i] = T[i][i+1]` (not modified): eigenvalues
 * ascending, `q` row-major n×n with column j the eigenvector of `values[j]`. Divide and conquer on the
 * matrix scaled to unit norm.
 */
function tridiagonalEigen(
  d: Float64Array,
  e: Float64Array,
  routine: string,
  gemm: GemmNT,
): { values: Float64Array; q: Float64Array } {
  const n = d.length;
  let norm = 0;
  for (let i = 0; i < n; i++) norm = Math.max(norm, Math.abs(d[i]), i < n - 1 ? Math.abs(e[i]) : 0);
  if (norm === 0) {
    const q = new Float64Array(n * n);
    for (let i = 0; i < n; i++) q[i * n + i] = 1;
    return { values: new Float64Array(n), q };
  }
  const ds = d.map((x) => x / norm), es = e.map((x) => x / norm);
  const r = divideConquer(ds, es, routine, gemm);
  for (let i = 0; i < n; i++) r.values[i] *= norm;
  return r;
}

function leafEigen(
  d: Float64Array,
  e: Float64Array,
  routine: string,
): { values: Float64Array; q: Float64Array } {
  const n = d.length, W = new Float64Array(n * n), dd = d.slice(), ee = e.slice();
  for (let i = 0; i < n; i++) W[i * n + i] = 1;
  tridiagonalQL(dd, ee, routine, W);
  const order = Array.from({ length: n }, (_, i) => i).sort((p, q) => dd[p] - dd[q] || p - q);
  const values = new Float64Array(n), q = new Float64Array(n * n);
  order.forEach((src, c) => {
    values[c] = dd[src];
    for (let r = 0; r < n; r++) q[r * n + c] = W[src * n + r];
  });
  return { values, q };
}

/**
 * One level of divide and conquer: T = diag(T₁, T₂) + |ρ|·u·uᵀ (ρ = e[n₁−1], u = e_{n₁} ± e_{n₁+1}),
 * both halves solved recursively; then the rank-one update `D + ρ̃·z·zᵀ` is deflated (tiny `z` entries,
 * close pairs rotated together — `dlaed2`), its secular equation solved, its eigenvectors built from the
 * Gu–Eisenstat `ẑ` (orthogonal to working accuracy) and multiplied into the halves' eigenvectors on the
 * GEMM, keeping the block structure (`dlaed3`).
 */
function divideConquer(
  d: Float64Array,
  e: Float64Array,
  routine: string,
  gemm: GemmNT,
): { values: Float64Array; q: Float64Array } {
  const n = d.length;
  if (n <= LEAF) return leafEigen(d, e, routine);
  const n1 = n >> 1, n2 = n - n1, rho = e[n1 - 1], arho = Math.abs(rho);
  const d1 = d.slice(0, n1), d2 = d.slice(n1), e1 = e.slice(0, n1), e2 = e.slice(n1);
  d1[n1 - 1] -= arho;
  d2[0] -= arho;
  e1[n1 - 1] = 0;
  const A = divideConquer(d1, e1, routine, gemm), B = divideConquer(d2, e2, routine, gemm);
  // D, z (unit norm) and ρ̃ > 0; Q = diag(Q₁, Q₂) as columns, kept as two blocks plus their rows
  const D = new Float64Array(n), z = new Float64Array(n), sgn = rho < 0 ? -1 : 1;
  D.set(A.values);
  D.set(B.values, n1);
  for (let j = 0; j < n1; j++) z[j] = A.q[(n1 - 1) * n1 + j] * Math.SQRT1_2;
  for (let j = 0; j < n2; j++) z[n1 + j] = sgn * B.q[j] * Math.SQRT1_2;
  const rt = 2 * arho;
  // the columns of Q as full vectors (length n), top rows 0…n₁, bottom n₁…n
  const Q = new Float64Array(n * n); // row-major
  for (let r = 0; r < n1; r++) Q.set(A.q.subarray(r * n1, r * n1 + n1), r * n);
  for (let r = 0; r < n2; r++) Q.set(B.q.subarray(r * n2, r * n2 + n2), (n1 + r) * n + n1);
  const type = new Uint8Array(n); // 1 = top rows only, 2 = bottom only, 3 = both
  for (let j = 0; j < n; j++) type[j] = j < n1 ? 1 : 2;
  // deflation, in ascending order of D
  const order = Array.from({ length: n }, (_, i) => i).sort((p, q) => D[p] - D[q] || p - q);
  let dmax = 0, zmax = 0;
  for (let j = 0; j < n; j++) {
    dmax = Math.max(dmax, Math.abs(D[j]));
    zmax = Math.max(zmax, Math.abs(z[j]));
  }
  const tol = 8 * 2 * EPS * Math.max(dmax, zmax);
  const kept: number[] = [], deflated: number[] = [];
  let pj = -1;
  for (const nj of order) {
    if (rt * Math.abs(z[nj]) <= tol) {
      deflated.push(nj);
      continue;
    }
    if (pj < 0) {
      pj = nj;
      continue;
    }
    let s = z[pj], c = z[nj];
    const h = Math.hypot(c, s), t = D[nj] - D[pj];
    c /= h;
    s = -s / h;
    if (Math.abs(t * c * s) <= tol) {
      // rotate columns pj, nj so that z[pj] = 0: pj deflates
      z[nj] = h;
      z[pj] = 0;
      for (let r = 0; r < n; r++) {
        const x = Q[r * n + pj], y = Q[r * n + nj];
        Q[r * n + pj] = c * x + s * y;
        Q[r * n + nj] = c * y - s * x;
      }
      type[pj] = type[nj] = type[pj] | type[nj];
      const dp = D[pj] * c * c + D[nj] * s * s;
      D[nj] = D[pj] * s * s + D[nj] * c * c;
      D[pj] = dp;
      deflated.push(pj);
      pj = nj;
    } else {
      kept.push(pj);
      pj = nj;
    }
  }
  if (pj >= 0) kept.push(pj);
  const K = kept.length;
  const dl = new Float64Array(K), zl = new Float64Array(K);
  kept.forEach((j, i) => {
    dl[i] = D[j];
    zl[i] = z[j];
  });
  // the secular equation: root i = dl[org[i]] + tau[i]
  const org = new Int32Array(K), tau = new Float64Array(K);
  secular(dl, zl, rt, org, tau, routine);
  // Gu–Eisenstat ẑ, then the eigenvectors uᵢ[j] = ẑⱼ/(dⱼ − λᵢ), normalised (rows of U)
  const zh = new Float64Array(K);
  for (let i = 0; i < K; i++) {
    let p = (dl[org[i]] - dl[i] + tau[i]) / rt;
    for (let j = 0; j < K; j++) {
      if (j === i) continue;
      p *= (dl[org[j]] - dl[i] + tau[j]) / (dl[j] - dl[i]);
    }
    zh[i] = (zl[i] < 0 ? -1 : 1) * Math.sqrt(Math.max(0, p));
  }
  const U = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    const o = dl[org[i]], row = i * K;
    let s = 0;
    for (let j = 0; j < K; j++) {
      const x = zh[j] / (dl[j] - o - tau[i]);
      U[row + j] = x;
      s += x * x;
    }
    const inv = 1 / Math.sqrt(s);
    for (let j = 0; j < K; j++) U[row + j] *= inv;
  }
  // the kept eigenvectors: top rows from the columns touching the top, bottom rows likewise
  const newCols = (rows0: number, rows1: number, bit: number): Float64Array => {
    const J = [];
    for (let j = 0; j < K; j++) if (type[kept[j]] & bit) J.push(j);
    const m = rows1 - rows0, c = J.length;
    if (c === 0) return new Float64Array(m * K);
    const X = new Float64Array(m * c), Y = new Float64Array(K * c);
    for (let r = 0; r < m; r++) {
      const src = (rows0 + r) * n;
      for (let q = 0; q < c; q++) X[r * c + q] = Q[src + kept[J[q]]];
    }
    for (let i = 0; i < K; i++) for (let q = 0; q < c; q++) Y[i * c + q] = U[i * K + J[q]];
    return gemm(X, Y, m, K, c); // [m, K]
  };
  const top = K > 0 ? newCols(0, n1, 1) : new Float64Array(0);
  const bot = K > 0 ? newCols(n1, n, 2) : new Float64Array(0);
  // all eigenpairs, ascending
  const vals: { v: number; kept: number; src: number }[] = [];
  for (let i = 0; i < K; i++) vals.push({ v: dl[org[i]] + tau[i], kept: i, src: -1 });
  for (const j of deflated) vals.push({ v: D[j], kept: -1, src: j });
  vals.sort((p, q) => p.v - q.v);
  const values = new Float64Array(n), q = new Float64Array(n * n);
  const fromKept = new Int32Array(n), fromQ = new Int32Array(n);
  vals.forEach((x, c) => {
    values[c] = x.v;
    fromKept[c] = x.kept;
    fromQ[c] = x.src;
  });
  for (let r = 0; r < n; r++) {
    const o = r * n, nk = r < n1 ? top : bot, ok = (r < n1 ? r : r - n1) * K;
    for (let c = 0; c < n; c++) q[o + c] = fromKept[c] >= 0 ? nk[ok + fromKept[c]] : Q[o + fromQ[c]];
  }
  return { values, q };
}

/**
 * Roots of the secular equation `1/ρ + Σⱼ zⱼ²/(dⱼ − λ) = 0` for ascending distinct `d` and ρ > 0: root i
 * lies in (dᵢ, dᵢ₊₁) (the last in (d_{K−1}, d_{K−1} + ρ‖z‖²)) and is stored as `d[org[i]] + tau[i]` from
 * the nearer pole, so that `dⱼ − λᵢ` is exact to working accuracy. Each root: a two-pole rational model
 * of both sums fitted at the current point (Bunch–Nielsen–Sorensen), safeguarded by bisection.
 */
function secular(
  d: Float64Array,
  z: Float64Array,
  rho: number,
  org: Int32Array,
  tau: Float64Array,
  routine: string,
): void {
  const K = d.length, z2 = z.map((x) => x * x), delta = new Float64Array(K), irho = 1 / rho;
  let zz = 0;
  for (let j = 0; j < K; j++) zz += z2[j];
  for (let i = 0; i < K; i++) {
    const last = i === K - 1;
    let o = i, lo = 0, hi: number;
    if (last) hi = rho * zz * (1 + 4 * EPS) + Number.MIN_VALUE;
    else {
      const mid = (d[i + 1] - d[i]) / 2;
      let g = irho;
      for (let j = 0; j < K; j++) g += z2[j] / (d[j] - d[i] - mid);
      if (g >= 0) hi = mid;
      else {
        o = i + 1;
        lo = -mid;
        hi = 0;
      }
    }
    for (let j = 0; j < K; j++) delta[j] = d[j] - d[o];
    let t = (lo + hi) / 2, done = false;
    for (let it = 0; it < 400 && !done; it++) {
      let psi = 0, dpsi = 0, phi = 0, dphi = 0;
      for (let j = 0; j <= i; j++) {
        const r = 1 / (delta[j] - t), x = z2[j] * r;
        psi += x;
        dpsi += x * r;
      }
      for (let j = i + 1; j < K; j++) {
        const r = 1 / (delta[j] - t), x = z2[j] * r;
        phi += x;
        dphi += x * r;
      }
      const g = irho + psi + phi;
      if (g === 0) break;
      if (g > 0) hi = t;
      else lo = t;
      const Di = delta[i] - t;
      let eta = NaN;
      if (last) {
        const c = irho + psi - dpsi * Di;
        if (c > 0) eta = Di + (dpsi * Di * Di) / c;
      } else {
        const D1 = delta[i + 1] - t;
        const c = irho + psi - dpsi * Di + phi - dphi * D1;
        const B = c * (Di + D1) + dpsi * Di * Di + dphi * D1 * D1, C = Di * D1 * g;
        const disc = B * B - 4 * c * C;
        if (disc >= 0) {
          // c·η² − B·η + C = 0: q = (B + sign(B)·√disc)/2, roots q/c and C/q
          const q = (B + (B >= 0 ? 1 : -1) * Math.sqrt(disc)) / 2;
          const r1 = c !== 0 ? q / c : NaN, r2 = q !== 0 ? C / q : NaN;
          const ok1 = t + r1 > lo && t + r1 < hi, ok2 = t + r2 > lo && t + r2 < hi;
          eta = ok1 && ok2 ? (Math.abs(r1) < Math.abs(r2) ? r1 : r2) : ok1 ? r1 : r2;
        }
      }
      let next = t + eta;
      if (!(next > lo && next < hi)) next = (lo + hi) / 2;
      done = Math.abs(next - t) <= 4 * EPS * Math.abs(next) || hi - lo <= 4 * EPS * Math.max(-lo, hi);
      t = next;
    }
    if (!Number.isFinite(t)) {
      throw new LapackError(routine, i + 1, `the secular equation did not converge for eigenvalue ${i + 1}`);
    }
    org[i] = o;
    tau[i] = t;
  }
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
