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
  checkTokenShape(x, d);
  matrix.assertFinite("hidden states X", x);
}

/** Throws unless `x` is a `[T, d]` matrix (finiteness is checked on the logits, see below). */
export function checkTokenShape(x: Mat, d: number): void {
  if ((d >= 0 && x.cols !== d) || x.data.length !== x.rows * x.cols) {
    throw new ShapeError("hidden states X", [-1, d], [x.rows, x.cols], `the router expects d = ${d}`);
  }
}

export { checkLogitsFinite } from "./backend.ts";
