/**
 * Low-rank expert compression (compression.md §3): truncated SVD, activation-whitened SVD (SVD-LLM:
 * Cholesky of XᵀX with jitter retry), rank-for-ratio, and a randomized SVD for real expert sizes. The
 * factorisations run on `lib/linalg`: the machine's LAPACK with `--allow-ffi` (`backend: "native"`), else
 * blocked factorisations on the WebAssembly GEMM, and float64 JS for small matrices.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { gram64 } from "./calibrate.ts";
import type { LinalgBackend } from "../linalg/backend.ts";
import { resolveBackend } from "../linalg/backend.ts";
import {
  cholesky,
  matmul,
  multiplyLowerRight,
  solveLowerRight,
  type SvdResult,
  svdTop,
} from "../linalg/factor.ts";
import { rsvd } from "../linalg/randomized.ts";
import { NotPositiveDefiniteError } from "../kernels/native.ts";

/**
 * A rank-r factorisation `W ≈ A·B`.
 *
 * @example
 * ```ts
 * import { type LowRank, matrix, svdCompress } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const lr: LowRank = svdCompress(matrix.randn(6, 4, { seed: 1 }), { rank: 2 });
 * assert.equal(lr.params, 2 * (6 + 4));
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
 * import { rankForRatio } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * assert.equal(rankForRatio(14336, 4096, 0.5), 1592);
 * assert.equal(rankForRatio(14336, 4096, 0.5, "ceil"), 1593);
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

/** The leading r columns of `u` scaled by `f(σ)`, and the leading r rows of `vt` scaled by `g(σ)`. */
function split(
  r: SvdResult,
  rank: number,
  left: (s: number) => number,
  right: (s: number) => number,
): { a: Mat; b: Mat } {
  const m = r.u.rows, k = r.u.cols, n = r.vt.cols;
  const a = matrix.zeros(m, rank), b = matrix.zeros(rank, n);
  const f = Float64Array.from({ length: rank }, (_, j) => left(r.s[j]));
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < rank; j++) a.data[i * rank + j] = r.u.data[i * k + j] * f[j];
  }
  for (let j = 0; j < rank; j++) {
    const q = right(r.s[j]);
    for (let i = 0; i < n; i++) b.data[j * n + i] = r.vt.data[j * n + i] * q;
  }
  return { a, b };
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

/** A LowRank from the leading singular values only: the tail is `‖M‖_F² − Σ_{i≤r} σ_i²`. */
function lowRankFromHead(
  a: Mat,
  b: Mat,
  r: number,
  s: Float64Array,
  total: number,
  extra: Partial<LowRank> = {},
): LowRank {
  let head = 0;
  for (let j = 0; j < r; j++) head += s[j] ** 2;
  const tail = Math.max(0, total - head), params = r * (a.rows + b.cols);
  return {
    a,
    b,
    rank: r,
    singularValues: Float64Array.from(s),
    tailEnergy: tail,
    relativeError: total > 0 ? Math.sqrt(tail / total) : 0,
    params,
    bytes: params * 4,
    ...extra,
  };
}

/**
 * Truncated SVD: `A = U_r√Σ_r`, `B = √Σ_r V_rᵀ`; `‖W − AB‖_F² = Σ_{i>r} σ_i²` (Eckart–Young). `backend`
 * picks where the SVD runs (see `LinalgBackend` in `@moekit/moekit/linalg`; default `"auto"`).
 *
 * @example
 * ```ts
 * import { matrix, svdCompress } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const lr = svdCompress(matrix.fromArrays([[3, 0], [4, 5]]), { rank: 1 });
 * assert.ok(Math.abs(lr.tailEnergy - 5) < 1e-5); // σ = (√45, √5)
 * ```
 */
export function svdCompress(
  w: Mat,
  options: { rank?: number; ratio?: number; randomized?: boolean; seed?: number; backend?: LinalgBackend },
): LowRank {
  const r = resolveRank(w.rows, w.cols, options);
  if (options.randomized) return randomizedSvd(w, r, { seed: options.seed, backend: options.backend });
  const f = svdTop(w, r, { backend: options.backend });
  const { a, b } = split(f, r, Math.sqrt, Math.sqrt);
  return lowRank(a, b, r, f.s);
}

/**
 * Activation-whitened SVD (SVD-LLM): with `G = XᵀX + εI = S·Sᵀ` (Cholesky), decompose `W·S = UΣVᵀ` and
 * keep `A = U_rΣ_r`, `B = V_rᵀS⁻¹`, so `‖(W − AB)Xᵀ‖_F² = Σ_{i>r} σ_i(WS)²`. ε starts at 0 and, when the
 * Cholesky fails (e.g. fewer tokens than columns), retries with `1e-6·mean(diag G)`, doubling. With
 * `randomized: true` the SVD of `W·S` is a randomized one (only the leading r values are then returned;
 * the tail is `‖W·S‖_F² − Σ_{i≤r} σ_i²`).
 *
 * @example
 * ```ts
 * import { matrix, whitenedSvdCompress } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[1, 0], [0, 2], [1, 1]]);
 * const lr = whitenedSvdCompress(matrix.fromArrays([[3, 0], [4, 5]]), x, { rank: 1 });
 * assert.ok(Math.abs(lr.tailEnergy - 9.87188) < 1e-4);
 * ```
 */
export function whitenedSvdCompress(
  w: Mat,
  x: Mat,
  options: {
    rank?: number;
    ratio?: number;
    epsilon?: number;
    randomized?: boolean;
    seed?: number;
    backend?: LinalgBackend;
  },
): LowRank {
  const n = w.cols;
  if (x.cols !== n) {
    throw new MoekitError(`whitening tokens have ${x.cols} columns; the weight has ${n} inputs`);
  }
  if (x.rows === 0) throw new MoekitError("whitenedSvdCompress: the calibration set is empty (0 tokens)");
  const r = resolveRank(w.rows, n, options), o = { backend: options.backend };
  // float64 sums for small problems (exact), the GEMM for real sizes
  const fast = resolveBackend(options.backend, "cblas_sgemm", 2 * x.rows * n * n) !== "js";
  const g: Mat = fast
    ? matmul(x, x, { ...o, transA: true })
    : { rows: n, cols: n, data: Float32Array.from(gram64(x)) };
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += g.data[i * n + i] / n;
  let eps = options.epsilon ?? 0, S: Mat | undefined;
  for (let attempt = 0; attempt < 60 && !S; attempt++) {
    const ge = matrix.clone(g);
    for (let i = 0; i < n; i++) ge.data[i * n + i] += eps;
    try {
      S = cholesky(ge, o);
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
      eps = eps === 0 ? 1e-6 * Math.max(meanDiag, 1e-12) : eps * 2;
    }
  }
  if (!S) {
    throw new MoekitError(
      "whitening: XᵀX stayed singular after 60 jitter retries; check the calibration tokens",
    );
  }
  const ws = multiplyLowerRight(w, S, o);
  if (options.randomized) {
    const f = rsvd(ws, r, { ...o, seed: new Rng(options.seed ?? 0).nextUint32() });
    const { a, b: vr } = split(f, r, (s) => s, () => 1);
    let total = 0;
    for (let i = 0; i < ws.data.length; i++) total += ws.data[i] ** 2;
    return lowRankFromHead(a, solveLowerRight(vr, S, o), r, f.s, total, { epsilon: eps });
  }
  const f = svdTop(ws, r, o);
  const { a, b: vr } = split(f, r, (s) => s, () => 1);
  // B = V_rᵀ S⁻¹ (S lower triangular)
  return lowRank(a, solveLowerRight(vr, S, o), r, f.s, { epsilon: eps });
}

/**
 * Randomized SVD (Halko et al.): a Gaussian sketch with `oversample` extra columns and `powerIterations`
 * re-orthonormalised power steps, then an exact SVD of the small projected matrix. Never builds a dense
 * full SVD of W; cost O(m·n·(r + p)·(2q + 2)), all in GEMMs and QRs (`lib/linalg`'s `rsvd`). The
 * returned `singularValues` are the leading r; the tail is `‖W‖_F² − Σ_{i≤r} σ_i²`.
 *
 * @example
 * ```ts
 * import { matrix, randomizedSvd, svdCompress } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const w = matrix.matmul(matrix.randn(60, 5, { seed: 1 }), matrix.randn(5, 40, { seed: 2 })); // rank 5
 * assert.ok(randomizedSvd(w, 5).relativeError < 1e-3);
 * assert.equal(svdCompress(w, { rank: 5 }).rank, 5);
 * ```
 */
export function randomizedSvd(
  w: Mat,
  rank: number,
  options: { oversample?: number; powerIterations?: number; seed?: number; backend?: LinalgBackend } = {},
): LowRank {
  const m = w.rows, n = w.cols, r = resolveRank(m, n, { rank });
  const f = rsvd(w, r, {
    oversample: options.oversample ?? 10,
    powerIterations: options.powerIterations ?? 2,
    seed: new Rng(options.seed ?? 0).nextUint32(),
    backend: options.backend,
  });
  const { a, b } = split(f, r, Math.sqrt, Math.sqrt);
  // tail energy against the true ‖W‖²: float32 sketches make this an estimate good to about 1e-7·‖W‖²,
  // i.e. relative errors below ~3e-4 read as noise
  let total = 0;
  for (let i = 0; i < w.data.length; i++) total += w.data[i] ** 2;
  return lowRankFromHead(a, b, r, f.s, total);
}

/**
 * `A·B` of a factorisation (on the fastest available GEMM).
 *
 * @example
 * ```ts
 * import { lowRankProduct, matrix, svdCompress } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const p = lowRankProduct(svdCompress(matrix.fromArrays([[3, 0], [4, 5]]), { rank: 2 }));
 * assert.deepEqual(Array.from(p.data, (v) => Math.round(v * 1e4) / 1e4 + 0), [3, 0, 4, 5]); // + 0: no −0
 * ```
 */
export function lowRankProduct(lr: LowRank): Mat {
  return matmul(lr.a, lr.b);
}

/**
 * LoSparse, MC-SMoE's compression step (compression.md §4.7): `W ≈ L·R + S` with a rank
 * `⌈ratio·m·n/(m+n)⌉` factorisation and the residual S kept only on the `keepRows` fraction of rows with the
 * largest mean |S| (ties → lower row) — moekit's training-free proxy for upstream's PLATON pruning during
 * distillation. Bytes: `r(m+n)·4 + keptRows·n·4 + 4·keptRows`.
 *
 * @example
 * ```ts
 * import { losparseCompress, matrix } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const w = matrix.randn(32, 16, { seed: 1 });
 * const c = losparseCompress(w, { ratio: 0.25, keepRows: 1 }); // every residual row kept: exact
 * assert.equal(c.rank, 3);
 * assert.equal(c.keptRows.length, 32);
 * assert.ok(c.relativeError < 1e-6);
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
