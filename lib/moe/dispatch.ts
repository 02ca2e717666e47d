/**
 * Dispatch and combine: per-expert token lists by counting sort over the kept assignments, gathering of
 * the routed rows, and the weighted sum back to token order.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { ShapeError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";
import { checkRoutingIndices } from "../routing/checks.ts";

/**
 * Kept assignments grouped by expert: expert e's entries are `offsets[e] .. offsets[e+1]`, in token order.
 *
 * @example
 * ```ts
 * import { type Dispatch, dispatch, matrix, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const d: Dispatch = dispatch(topKRouter({ weight: matrix.identity(2), k: 1 }).route(matrix.fromArrays([[1, 0], [2, 0]])));
 * assert.equal(d.offsets[1] - d.offsets[0], 2); // both tokens go to expert 0
 * ```
 */
export interface Dispatch {
  /** Number of experts E. */
  readonly experts: number;
  /** Number of tokens T. */
  readonly tokens: number;
  /** `[E+1]` start of each expert's entries. */
  readonly offsets: Int32Array;
  /** `[N]` token of each entry. */
  readonly tokenIds: Int32Array;
  /** `[N]` the flat choice index `t·k + j` of each entry. */
  readonly choices: Int32Array;
  /** `[N]` combine weight of each entry. */
  readonly weights: Float32Array;
}

/**
 * Counting-sort dispatch of a routing result's kept assignments (capacity already applied).
 *
 * @example
 * ```ts
 * import { dispatch, matrix, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(3), k: 1 })
 *   .route(matrix.fromArrays([[1, 0, 0], [0, 0, 1], [2, 0, 0]]));
 * const d = dispatch(r);
 * assert.deepEqual([Array.from(d.offsets), Array.from(d.tokenIds)], [[0, 2, 2, 3], [0, 2, 1]]);
 * ```
 */
export function dispatch(r: RoutingResult): Dispatch {
  checkRoutingIndices(r);
  const E = r.experts, n = r.indices.length;
  const offsets = new Int32Array(E + 1);
  for (let i = 0; i < n; i++) if (isKept(r, i)) offsets[r.indices[i] + 1]++;
  for (let e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  const N = offsets[E], cursor = offsets.slice(0, E);
  const tokenIds = new Int32Array(N), choices = new Int32Array(N), weights = new Float32Array(N);
  for (let i = 0; i < n; i++) {
    if (!isKept(r, i)) continue;
    const p = cursor[r.indices[i]]++;
    tokenIds[p] = Math.floor(i / r.k);
    choices[p] = i;
    weights[p] = r.weights[i];
  }
  return { experts: E, tokens: r.tokens, offsets, tokenIds, choices, weights };
}

/**
 * The rows of `x` routed to expert e, as a new `[n_e, d]` matrix.
 *
 * @example
 * ```ts
 * import { dispatch, gatherExpertInputs, matrix, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[1, 0], [0, 1], [3, 0]]);
 * const d = dispatch(topKRouter({ weight: matrix.identity(2), k: 1 }).route(x));
 * assert.deepEqual(matrix.toArrays(gatherExpertInputs(x, d, 0)), [[1, 0], [3, 0]]);
 * ```
 */
export function gatherExpertInputs(x: Mat, d: Dispatch, expert: number): Mat {
  if (x.rows !== d.tokens) {
    throw new ShapeError("X", [d.tokens, x.cols], [x.rows, x.cols], "X must be the routed tokens");
  }
  const a = d.offsets[expert], b = d.offsets[expert + 1], out = matrix.zeros(b - a, x.cols);
  for (let p = a; p < b; p++) out.data.set(matrix.row(x, d.tokenIds[p]), (p - a) * x.cols);
  return out;
}

/**
 * Adds `weight · expertOutput` of every entry of expert e into `y [T, d_out]` (the combine step).
 *
 * @example
 * ```ts
 * import { combineExpertOutputs, dispatch, matrix, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[1, 0], [0, 1]]);
 * const d = dispatch(topKRouter({ weight: matrix.identity(2), k: 1 }).route(x));
 * const y = matrix.zeros(2, 1);
 * combineExpertOutputs(y, d, 1, matrix.fromArrays([[10]]));
 * assert.deepEqual(Array.from(y.data), [0, 10]);
 * ```
 */
export function combineExpertOutputs(y: Mat, d: Dispatch, expert: number, outputs: Mat): Mat {
  const a = d.offsets[expert], b = d.offsets[expert + 1];
  matrix.assertShape(`expert ${expert} outputs`, outputs, b - a, y.cols);
  for (let p = a; p < b; p++) {
    const w = d.weights[p], yo = d.tokenIds[p] * y.cols, oo = (p - a) * y.cols;
    for (let c = 0; c < y.cols; c++) y.data[yo + c] += w * outputs.data[oo + c];
  }
  return y;
}
