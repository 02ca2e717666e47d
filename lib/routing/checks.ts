/**
 * Argument checks shared by the routers (internal: not re-exported from mod.ts).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";

/** Throws unless `k` is an integer in 1..E. */
export function checkK(k: number, experts: number): void {
  if (!Number.isInteger(k) || k < 1 || k > experts) {
    throw new OptionError("k", k, `top-k needs an integer k in 1..E = ${experts}`);
  }
}

/** Throws unless `x` is a finite `[T, d]` matrix. */
export function checkTokens(x: Mat, d: number): void {
  if (x.cols !== d || x.data.length !== x.rows * x.cols) {
    throw new ShapeError("hidden states X", [-1, d], [x.rows, x.cols], `the router expects d = ${d}`);
  }
  matrix.assertFinite("hidden states X", x);
}
