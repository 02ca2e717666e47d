/**
 * Randomized SVD (Halko, Martinsson & Tropp 2011) on the backend's GEMM and QR.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { type LinalgOptions, matmul, qr, svd, type SvdResult } from "./factor.ts";

/**
 * Options of {@link rsvd}.
 *
 * @example
 * ```ts
 * import { type RsvdOptions } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const o: RsvdOptions = { oversample: 10, powerIterations: 2, seed: 0 };
 * assert.equal(o.oversample, 10);
 * ```
 */
export interface RsvdOptions extends LinalgOptions {
  /** Extra sketch columns p (default 10). */
  readonly oversample?: number;
  /** Power iterations q, each re-orthonormalised by QR (default 2). */
  readonly powerIterations?: number;
  /** Seed of the Gaussian test matrix (default 0). */
  readonly seed?: number;
  /** The test matrix itself, `Ωᵀ [r + p, n]` (overrides `seed`). */
  readonly omega?: Mat;
}

/**
 * Rank-r randomized SVD: a Gaussian sketch `Y = A·Ω` with r + p columns, q power iterations
 * (`Q ← qr(A·qr(Aᵀ·Q))`), then an exact SVD of the small `B = Qᵀ·A`. Returns the leading r triplets.
 * Cost O(m·n·(r + p)·(2q + 2)), all of it in GEMMs and QRs on the chosen backend.
 *
 * @example
 * ```ts
 * import { matrix, rsvd } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const a = matrix.matmul(matrix.randn(60, 4, { seed: 1 }), matrix.randn(4, 40, { seed: 2 })); // rank 4
 * const r = rsvd(a, 4, { seed: 3 });
 * assert.equal(r.s.length, 4);
 * assert.ok(r.s[3] > 1e-3 * r.s[0]);
 * ```
 */
export function rsvd(a: Mat, rank: number, options: RsvdOptions = {}): SvdResult {
  const m = a.rows, n = a.cols;
  if (!Number.isInteger(rank) || rank < 0 || rank > Math.min(m, n)) {
    throw new OptionError("rank", rank, `must be an integer in 0..min(m, n) = ${Math.min(m, n)}`);
  }
  const p = options.oversample ?? 10, q = options.powerIterations ?? 2;
  if (!Number.isInteger(p) || p < 0) throw new OptionError("oversample", p, "must be an integer ≥ 0");
  if (!Number.isInteger(q) || q < 0) throw new OptionError("powerIterations", q, "must be an integer ≥ 0");
  matrix.assertFinite("rsvd: A", a);
  const l = Math.min(m, n, rank + p), o = { backend: options.backend };
  const omega = options.omega ?? matrix.randn(l, n, { seed: options.seed ?? 0 });
  if (omega.cols !== n || omega.rows < rank) {
    throw new ShapeError(
      "rsvd: omega",
      [l, n],
      [omega.rows, omega.cols],
      "Ωᵀ needs n columns and ≥ rank rows",
    );
  }
  let Q = qr(matmul(a, omega, { ...o, transB: true }), o).q; // [m, l]
  for (let it = 0; it < q; it++) {
    const z = qr(matmul(a, Q, { ...o, transA: true }), o).q; // [n, l]
    Q = qr(matmul(a, z, o), o).q;
  }
  const b = matmul(Q, a, { ...o, transA: true }); // [l, n]
  const small = svd(b, o);
  const r = Math.min(rank, small.s.length);
  const ub = matrix.zeros(small.u.rows, r);
  for (let i = 0; i < small.u.rows; i++) {
    ub.data.set(small.u.data.subarray(i * small.u.cols, i * small.u.cols + r), i * r);
  }
  return {
    u: matmul(Q, ub, o),
    s: small.s.slice(0, r),
    vt: matrix.rowSlice(small.vt, 0, r),
    backend: small.backend,
  };
}
