/**
 * Low-rank expert compression (compression.md §3): truncated SVD, activation-whitened SVD (SVD-LLM:
 * Cholesky of XᵀX with jitter retry), rank-for-ratio, and a randomized SVD for real expert sizes.
 * Factorisations use ml-matrix in float64; the randomized path multiplies with moekit's kernels.
 * @module
 */

import { CholeskyDecomposition, Matrix, SingularValueDecomposition } from "../deps.ts";
import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { fromMlMatrix, mlMatrixOf } from "../core/interop.ts";
import { gram64 } from "./calibrate.ts";
import { matmulTFast } from "../kernels/gemm.ts";

/**
 * A rank-r factorisation `W ≈ A·B`.
 *
 * @example
 * ```ts
 * import { type LowRank } from "@moekit/moekit";
 * const size = (l: LowRank) => l.a.data.length + l.b.data.length;
 * console.log(typeof size); // function
 * ```
 */
export interface LowRank {
  /** `[m, r]`. */
  readonly a: Mat;
  /** `[r, n]`. */
  readonly b: Mat;
  /** The rank r. */
  readonly rank: number;
  /** All singular values (of W, or of W·S when whitened), descending. */
  readonly singularValues: Float64Array;
  /** `Σ_{i>r} σ_i²`: ‖W − AB‖_F² (plain) or ‖(W − AB)Xᵀ‖_F² (whitened). */
  readonly tailEnergy: number;
  /** `sqrt(tail / Σσ²)`. */
  readonly relativeError: number;
  /** `r(m+n)` parameters. */
  readonly params: number;
  /** `r(m+n)·4` bytes (float32). */
  readonly bytes: number;
  /** Whitening jitter ε actually used (0 when none was needed). */
  readonly epsilon?: number;
}

/**
 * The rank that keeps a fraction ρ of an m×n matrix's parameters: `⌊ρ·m·n/(m+n)⌋` (default) or `⌈·⌉`.
 *
 * @example
 * ```ts
 * import { rankForRatio } from "@moekit/moekit";
 * console.log(rankForRatio(14336, 4096, 0.5), rankForRatio(14336, 4096, 0.5, "ceil")); // 1592 1593
 * ```
 */
export function rankForRatio(
  m: number,
  n: number,
  ratio: number,
  rounding: "floor" | "ceil" = "floor",
): number {
  if (!(ratio >= 0) || !Number.isFinite(ratio)) {
    throw new OptionError("ratio", ratio, "must be a finite number ≥ 0");
  }
  const r = (ratio * m * n) / (m + n);
  return Math.min(m, n, rounding === "ceil" ? Math.ceil(r) : Math.floor(r));
}

function resolveRank(m: number, n: number, o: { rank?: number; ratio?: number }): number {
  const r = o.rank ?? (o.ratio !== undefined ? rankForRatio(m, n, o.ratio) : undefined);
  if (r === undefined) throw new MoekitError("give rank or ratio");
  if (!Number.isInteger(r) || r < 0 || r > Math.min(m, n)) {
    throw new OptionError(
      "rank",
      r,
      `must be an integer in 0..min(m, n) = ${Math.min(m, n)} for a ${m}×${n} matrix`,
    );
  }
  return r;
}

/** Thin SVD in float64: U [m,k], σ [k], V [n,k], k = min(m,n), σ descending. */
function thinSvd(
  w: InstanceType<typeof Matrix>,
): { u: InstanceType<typeof Matrix>; s: number[]; v: InstanceType<typeof Matrix> } {
  const svd = new SingularValueDecomposition(w, { autoTranspose: true });
  return { u: svd.leftSingularVectors, s: svd.diagonal, v: svd.rightSingularVectors };
}

function lowRank(a: Mat, b: Mat, r: number, s: ArrayLike<number>, extra: Partial<LowRank> = {}): LowRank {
  const sv = Float64Array.from(s);
  let tail = 0, total = 0;
  sv.forEach((v, i) => {
    total += v * v;
    if (i >= r) tail += v * v;
  });
  const params = r * (a.rows + b.cols);
  return {
    a,
    b,
    rank: r,
    singularValues: sv,
    tailEnergy: tail,
    relativeError: total > 0 ? Math.sqrt(tail / total) : 0,
    params,
    bytes: params * 4,
    ...extra,
  };
}

/**
 * Truncated SVD: `A = U_r√Σ_r`, `B = √Σ_r V_rᵀ`; `‖W − AB‖_F² = Σ_{i>r} σ_i²` (Eckart–Young).
 *
 * @example
 * ```ts
 * import { matrix, svdCompress } from "@moekit/moekit";
 * const lr = svdCompress(matrix.fromArrays([[3, 0], [4, 5]]), { rank: 1 });
 * console.log(lr.tailEnergy.toFixed(6)); // 5.000000
 * ```
 */
export function svdCompress(
  w: Mat,
  options: { rank?: number; ratio?: number; randomized?: boolean; seed?: number },
): LowRank {
  const r = resolveRank(w.rows, w.cols, options);
  if (options.randomized) return randomizedSvd(w, r, { seed: options.seed });
  const { u, s, v } = thinSvd(mlMatrixOf(w));
  const a = matrix.zeros(w.rows, r), b = matrix.zeros(r, w.cols);
  for (let j = 0; j < r; j++) {
    const q = Math.sqrt(s[j]);
    for (let i = 0; i < w.rows; i++) a.data[i * r + j] = u.get(i, j) * q;
    for (let i = 0; i < w.cols; i++) b.data[j * w.cols + i] = v.get(i, j) * q;
  }
  return lowRank(a, b, r, s);
}

/**
 * Activation-whitened SVD (SVD-LLM): with `G = XᵀX + εI = S·Sᵀ` (Cholesky), decompose `W·S = UΣVᵀ` and
 * keep `A = U_rΣ_r`, `B = V_rᵀS⁻¹`, so `‖(W − AB)Xᵀ‖_F² = Σ_{i>r} σ_i(WS)²`. ε starts at 0 and, when the
 * Cholesky fails (e.g. fewer tokens than columns), retries with `1e-6·mean(diag G)`, doubling.
 *
 * @example
 * ```ts
 * import { matrix, whitenedSvdCompress } from "@moekit/moekit";
 * const lr = whitenedSvdCompress(matrix.fromArrays([[3, 0], [4, 5]]), matrix.fromArrays([[1, 0], [0, 2], [1, 1]]), { rank: 1 });
 * console.log(lr.tailEnergy.toFixed(5)); // 9.87188
 * ```
 */
export function whitenedSvdCompress(
  w: Mat,
  x: Mat,
  options: { rank?: number; ratio?: number; epsilon?: number },
): LowRank {
  const n = w.cols;
  if (x.cols !== n) {
    throw new MoekitError(`whitening tokens have ${x.cols} columns; the weight has ${n} inputs`);
  }
  if (x.rows === 0) throw new MoekitError("whitenedSvdCompress: the calibration set is empty (0 tokens)");
  const r = resolveRank(w.rows, n, options);
  const g64 = gram64(x), g = new Matrix(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) g.set(i, j, g64[i * n + j]);
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += g.get(i, i) / n;
  let eps = options.epsilon ?? 0, chol: InstanceType<typeof CholeskyDecomposition> | undefined;
  for (let attempt = 0; attempt < 60; attempt++) {
    const ge = g.clone();
    for (let i = 0; i < n; i++) ge.set(i, i, ge.get(i, i) + eps);
    const c = new CholeskyDecomposition(ge);
    if (c.isPositiveDefinite()) {
      chol = c;
      break;
    }
    eps = eps === 0 ? 1e-6 * Math.max(meanDiag, 1e-12) : eps * 2;
  }
  if (!chol) {
    throw new MoekitError(
      "whitening: XᵀX stayed singular after 60 jitter retries; check the calibration tokens",
    );
  }
  const S = chol.lowerTriangularMatrix;
  const { u, s, v } = thinSvd(mlMatrixOf(w).mmul(S));
  const ur = new Matrix(w.rows, r), vr = new Matrix(r, n);
  for (let j = 0; j < r; j++) {
    for (let i = 0; i < w.rows; i++) ur.set(i, j, u.get(i, j) * s[j]);
    for (let i = 0; i < n; i++) vr.set(j, i, v.get(i, j));
  }
  // B = V_rᵀ S⁻¹: solve Sᵀ Bᵀ = V_r (S lower triangular → back substitution)
  const bt = new Matrix(n, r);
  for (let c = 0; c < r; c++) {
    for (let i = n - 1; i >= 0; i--) {
      let acc = vr.get(c, i);
      for (let k = i + 1; k < n; k++) acc -= S.get(k, i) * bt.get(k, c);
      bt.set(i, c, acc / S.get(i, i));
    }
  }
  return lowRank(fromMlMatrix(ur), fromMlMatrix(bt.transpose()), r, s, { epsilon: eps });
}

/** Modified Gram–Schmidt, in place on the columns of a row-major [m, l] Float64Array. */
function orthonormalize(q: Float64Array, m: number, l: number): void {
  for (let j = 0; j < l; j++) {
    for (let p = 0; p < j; p++) {
      let dot = 0;
      for (let i = 0; i < m; i++) dot += q[i * l + j] * q[i * l + p];
      for (let i = 0; i < m; i++) q[i * l + j] -= dot * q[i * l + p];
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += q[i * l + j] ** 2;
    norm = Math.sqrt(norm) || 1;
    for (let i = 0; i < m; i++) q[i * l + j] /= norm;
  }
}

/**
 * Randomized SVD (Halko et al.): a Gaussian sketch with `oversample` extra columns and `powerIterations`
 * re-orthonormalised power steps, then an exact SVD of the small projected matrix. Never builds a dense
 * full SVD of W; cost O(m·n·(r + p)·(2q + 2)).
 *
 * @example
 * ```ts
 * import { matrix, randomizedSvd, svdCompress } from "@moekit/moekit";
 * const w = matrix.matmul(matrix.randn(60, 5, { seed: 1 }), matrix.randn(5, 40, { seed: 2 })); // rank 5
 * console.log(randomizedSvd(w, 5).relativeError < 1e-3, svdCompress(w, { rank: 5 }).rank); // true 5
 * ```
 */
export function randomizedSvd(
  w: Mat,
  rank: number,
  options: { oversample?: number; powerIterations?: number; seed?: number } = {},
): LowRank {
  const m = w.rows, n = w.cols, r = resolveRank(m, n, { rank });
  const l = Math.min(n, m, r + (options.oversample ?? 10)), q = options.powerIterations ?? 2;
  const omega = matrix.randn(l, n, { seed: new Rng(options.seed ?? 0).nextUint32() }); // Ωᵀ [l,n]
  let y = matmulTFast(w, omega); // W Ω [m,l] (the large products run on the WebAssembly GEMM)
  const orth = (mat: Mat) => {
    const f = Float64Array.from(mat.data);
    orthonormalize(f, mat.rows, mat.cols);
    return { rows: mat.rows, cols: mat.cols, data: Float32Array.from(f) };
  };
  const wt = matrix.transpose(w);
  for (let it = 0; it < q; it++) {
    const z = matmulTFast(wt, matrix.transpose(orth(y))); // Wᵀ Q [n,l]
    y = matmulTFast(w, matrix.transpose(orth(z))); // W Z [m,l]
  }
  const Q = orth(y); // [m,l]
  const B = matmulTFast(matrix.transpose(Q), wt); // Qᵀ W [l,n]
  const { u, s, v } = thinSvd(mlMatrixOf(B));
  const a = matrix.zeros(m, r), b = matrix.zeros(r, n);
  for (let j = 0; j < r; j++) {
    const sq = Math.sqrt(s[j]);
    for (let i = 0; i < m; i++) {
      let acc = 0;
      for (let p = 0; p < l; p++) acc += Q.data[i * l + p] * u.get(p, j);
      a.data[i * r + j] = acc * sq;
    }
    for (let i = 0; i < n; i++) b.data[j * n + i] = v.get(i, j) * sq;
  }
  // tail energy against the true ‖W‖²: ‖W‖² − Σ_{i≤r} σ_i² (σ from the sketch; float32 sketches make this an
  // estimate good to about 1e-7·‖W‖², i.e. relative errors below ~3e-4 read as noise)
  let total = 0;
  for (let i = 0; i < w.data.length; i++) total += w.data[i] ** 2;
  let head = 0;
  for (let j = 0; j < r; j++) head += s[j] ** 2;
  const tail = Math.max(0, total - head), params = r * (m + n);
  return {
    a,
    b,
    rank: r,
    singularValues: Float64Array.from(s),
    tailEnergy: tail,
    relativeError: total > 0 ? Math.sqrt(tail / total) : 0,
    params,
    bytes: params * 4,
  };
}

/**
 * `A·B` of a factorisation.
 *
 * @example
 * ```ts
 * import { lowRankProduct, matrix, svdCompress } from "@moekit/moekit";
 * const w = matrix.fromArrays([[3, 0], [4, 5]]);
 * console.log(matrix.toArrays(lowRankProduct(svdCompress(w, { rank: 2 }))).flat().map((v) => +v.toFixed(4))); // [3, 0, 4, 5]
 * ```
 */
export function lowRankProduct(lr: LowRank): Mat {
  return matrix.matmul(lr.a, lr.b);
}

/**
 * LoSparse, MC-SMoE's compression step (compression.md §4.7): `W ≈ L·R + S` with a rank
 * `⌈ratio·m·n/(m+n)⌉` factorisation and the residual S kept only on the `keepRows` fraction of rows with the
 * largest mean |S| (ties → lower row) — moekit's training-free proxy for upstream's PLATON pruning during
 * distillation. Bytes: `r(m+n)·4 + keptRows·n·4 + 4·keptRows`.
 *
 * @example
 * ```ts
 * import { losparseCompress, matrix } from "@moekit/moekit";
 * const w = matrix.randn(32, 16, { seed: 1 });
 * const c = losparseCompress(w, { ratio: 0.25, keepRows: 1 }); // every residual row kept: exact
 * console.log(c.rank, c.keptRows.length, c.relativeError < 1e-6); // 3 32 true
 * ```
 */
export function losparseCompress(
  w: Mat,
  options: { ratio: number; keepRows: number },
): { a: Mat; b: Mat; rank: number; keptRows: number[]; approx: Mat; relativeError: number; bytes: number } {
  const m = w.rows, n = w.cols, rho = options.keepRows;
  if (!(rho >= 0 && rho <= 1)) throw new OptionError("keepRows", rho, "must be a fraction in [0, 1]");
  const rank = rankForRatio(m, n, options.ratio, "ceil");
  const lr = svdCompress(w, { rank }), approx = lowRankProduct(lr);
  const residual = w.data.map((v, i) => v - approx.data[i]);
  const meanAbs = Array.from({ length: m }, (_, r) => {
    let s = 0;
    for (let j = 0; j < n; j++) s += Math.abs(residual[r * n + j]);
    return s / n;
  });
  const keep = Math.round(rho * m);
  const keptRows = Array.from({ length: m }, (_, r) => r).sort((p, q) => meanAbs[q] - meanAbs[p] || p - q)
    .slice(0, keep)
    .sort((p, q) => p - q);
  for (const r of keptRows) for (let j = 0; j < n; j++) approx.data[r * n + j] += residual[r * n + j];
  let num = 0, den = 0;
  for (let i = 0; i < w.data.length; i++) {
    num += (w.data[i] - approx.data[i]) ** 2;
    den += w.data[i] ** 2;
  }
  return {
    a: lr.a,
    b: lr.b,
    rank,
    keptRows,
    approx,
    relativeError: den > 0 ? Math.sqrt(num / den) : Math.sqrt(num),
    bytes: rank * (m + n) * 4 + keptRows.length * n * 4 + 4 * keptRows.length,
  };
}
