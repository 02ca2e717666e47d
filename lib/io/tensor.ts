/**
 * Tensors: flat row-major data with a shape of any rank (weights, biases, scalars). A {@link Mat} is
 * accepted anywhere a tensor is (shape `[rows, cols]`). Checkpoint reading/writing and merging share it.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { ShapeError } from "../core/errors.ts";

/**
 * A flat row-major tensor with a shape.
 *
 * @example
 * ```ts
 * import { type Tensor } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const bias: Tensor = { shape: [3], data: new Float64Array([0.1, 0, -0.2]) };
 * assert.deepEqual(bias.shape, [3]);
 * ```
 */
export interface Tensor {
  /** Dimensions (`[]` = scalar). */
  readonly shape: readonly number[];
  /** `Π shape` values, row-major. */
  readonly data: Float64Array | Float32Array;
}

/**
 * A tensor or a matrix.
 *
 * @example
 * ```ts
 * import { type TensorInput, matrix } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const t: TensorInput = matrix.zeros(2, 3);
 * assert.equal("rows" in t, true);
 * ```
 */
export type TensorInput = Tensor | Mat;

/**
 * Views a matrix or tensor as a tensor (no copy); throws a `ShapeError` if the data length is not the
 * product of the shape.
 *
 * @example
 * ```ts
 * import { asTensor, matrix } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.deepEqual(asTensor(matrix.zeros(2, 3)).shape, [2, 3]);
 * ```
 */
export function asTensor(t: TensorInput, what = "tensor"): Tensor {
  if ("shape" in t) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new ShapeError(`${what} data`, [n], [t.data.length], `shape [${t.shape.join(",")}]`);
    }
    return t;
  }
  return { shape: [t.rows, t.cols], data: t.data };
}

/** Rows and columns of a tensor as DELLA ranks it: 1-D = one row, 2-D as is (higher ranks throw). */
export function rowsCols(shape: readonly number[], what: string): [number, number] {
  if (shape.length === 0) return [1, 1];
  if (shape.length === 1) return [1, shape[0]];
  if (shape.length === 2) return [shape[0], shape[1]];
  throw new ShapeError(what, [-1, -1], [...shape], "per-row ranking needs a 1-D or 2-D tensor");
}

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
