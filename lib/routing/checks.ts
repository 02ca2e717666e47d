/**
 * Argument checks shared by the routers (internal: not re-exported from mod.ts).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import type { RoutingResult } from "./result.ts";

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

/**
 * Throws unless a routing result's `indices` hold `T·k` expert ids in −1..E−1 (−1 = no expert) and its
 * `keep` flags, when present, are `T·k` too: an id outside that range would silently drop the assignment
 * from counts, dispatch and the combine.
 */
export function checkRoutingIndices(r: RoutingResult, what = "routing"): void {
  const { tokens: T, k, experts: E, indices } = r;
  if (indices.length !== T * k) {
    throw new ShapeError(`${what}.indices`, [T * k], [indices.length], `T·k = ${T}·${k}`);
  }
  if (r.keep !== undefined && r.keep.length !== T * k) {
    throw new ShapeError(`${what}.keep`, [T * k], [r.keep.length], `one flag per choice, T·k = ${T}·${k}`);
  }
  for (let i = 0; i < indices.length; i++) {
    if (!(indices[i] >= -1 && indices[i] < E)) {
      throw new OptionError(
        `${what}.indices[${i}]`,
        indices[i],
        `expert ids must be in −1..${E - 1} (token ${Math.floor(i / k)}, choice ${i % k})`,
      );
    }
  }
}

export { checkLogitsFinite } from "./backend.ts";
