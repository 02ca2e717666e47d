/**
 * Argument checks shared by the routers (internal: not re-exported from mod.ts).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";

/** Throws unless `k` is an integer in 1..E. */
export function checkK(k: number, experts: number): void {
  if (!Number.isInteger(k) || k < 1 || k > experts) {
    throw new OptionError("k", k, `top-k needs an integer k in 1..E = ${experts}`);
  }
}

/** Throws unless `x` is a finite `[T, d]` matrix. */
export function checkTokens(x: Mat, d: number): void {
  checkTokenShape(x, d);
  matrix.assertFinite("hidden states X", x);
}

/** Throws unless `x` is a `[T, d]` matrix (finiteness is checked on the logits, see below). */
export function checkTokenShape(x: Mat, d: number): void {
  if (x.cols !== d || x.data.length !== x.rows * x.cols) {
    throw new ShapeError("hidden states X", [-1, d], [x.rows, x.cols], `the router expects d = ${d}`);
  }
}

/**
 * Checks a tile of logits, the cheap way to check the tokens: a NaN or ±Inf in a row of X always makes
 * that row of the logits non-finite (IEEE: NaN·w = NaN, ±Inf·w = ±Inf or NaN). On a bad logit, the row
 * of `xTile` (the tile's tokens) is scanned to name the first bad (row, col), rows counted from
 * `firstRow`; if X is finite there, the logit overflowed.
 */
export function checkLogitsFinite(logits: Mat, xTile: Mat, firstRow: number): void {
  const L = logits.data;
  for (let i = 0; i < L.length; i++) {
    const v = L[i];
    if (v - v === 0) continue;
    const row = Math.floor(i / logits.cols), xr = matrix.row(xTile, row);
    for (let j = 0; j < xr.length; j++) {
      if (xr[j] - xr[j] !== 0) throw new NonFiniteError("hidden states X", firstRow + row, j, xr[j]);
    }
    throw new NonFiniteError(
      "router logits (X is finite there: X·Wᵀ overflowed float32; scale the inputs or weights down)",
      firstRow + row,
      i % logits.cols,
      v,
    );
  }
}
