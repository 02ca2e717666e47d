/**
 * Adapters between {@link Mat} and the npm array libraries: zero-copy views to and from `ndarray`, and
 * copies to and from `ml-matrix` (whose decompositions moekit uses for small problems).
 * @module
 */

import { Matrix, ndarray } from "../deps.ts";
import { MoekitError } from "./errors.ts";
import type { Mat } from "./matrix.ts";

/**
 * The parts of an `ndarray` moekit reads and returns (structural, so any ndarray fits).
 *
 * @example
 * ```ts
 * import { matrix, type NdArrayLike, toNdarray } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const a: NdArrayLike = toNdarray(matrix.zeros(2, 3));
 * assert.deepEqual(a.shape, [2, 3]);
 * ```
 */
export interface NdArrayLike {
  /** Backing storage. */
  readonly data: ArrayLike<number>;
  /** Dimensions. */
  readonly shape: number[];
  /** Element strides per dimension. */
  readonly stride: number[];
  /** Offset of element (0, 0) in `data`. */
  readonly offset: number;
  /** Element (i, j, …). */
  get(...index: number[]): number;
}

/**
 * A zero-copy `ndarray` view of a matrix: writes through either side are seen by the other.
 *
 * @example
 * ```ts
 * import { matrix, toNdarray } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const m = matrix.fromArrays([[1, 2], [3, 4]]);
 * const a = toNdarray(m);
 * assert.equal(a.get(1, 0), 3);
 * assert.equal(a.data, m.data); // zero-copy
 * ```
 */
export function toNdarray(m: Mat): NdArrayLike {
  return ndarray(m.data, [m.rows, m.cols]) as unknown as NdArrayLike;
}

/**
 * A matrix from a 2-D `ndarray`. Zero-copy when it is a row-major `Float32Array` view (any offset);
 * otherwise (other dtype, transposed or strided views) a copy.
 *
 * @example
 * ```ts
 * import { fromNdarray, matrix, toNdarray } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const m = matrix.fromArrays([[1, 2], [3, 4]]);
 * assert.equal(fromNdarray(toNdarray(m)).data, m.data); // zero-copy round trip
 * ```
 */
export function fromNdarray(a: NdArrayLike): Mat {
  if (a.shape.length !== 2) {
    throw new MoekitError(`fromNdarray: expected a 2-D ndarray, got shape [${a.shape.join(",")}]`);
  }
  const [rows, cols] = a.shape;
  if (a.data instanceof Float32Array && a.stride[1] === 1 && (a.stride[0] === cols || rows <= 1)) {
    const whole = a.offset === 0 && a.data.length === rows * cols;
    return { rows, cols, data: whole ? a.data : a.data.subarray(a.offset, a.offset + rows * cols) };
  }
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) data[i * cols + j] = a.get(i, j);
  return { rows, cols, data };
}

/**
 * The parts of an `ml-matrix` `Matrix` moekit reads and returns (structural).
 *
 * @example
 * ```ts
 * import { matrix, type MlMatrixLike, toMlMatrix } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const a: MlMatrixLike = toMlMatrix(matrix.identity(2));
 * assert.equal(a.get(1, 1), 1);
 * ```
 */
export interface MlMatrixLike {
  /** Number of rows. */
  readonly rows: number;
  /** Number of columns. */
  readonly columns: number;
  /** Element (i, j). */
  get(row: number, column: number): number;
}

/**
 * Copies a matrix into an `ml-matrix` `Matrix` (float64), e.g. to run its SVD, QR or Cholesky.
 *
 * @example
 * ```ts
 * import { matrix, toMlMatrix } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const a = toMlMatrix(matrix.fromArrays([[2, 0], [0, 3]]));
 * assert.deepEqual([a.rows, a.columns, a.get(1, 1)], [2, 2, 3]);
 * ```
 */
export function toMlMatrix(m: Mat): MlMatrixLike {
  return mlMatrixOf(m);
}

/** Internal: the same copy, typed as ml-matrix's `Matrix` (for its decompositions). */
export function mlMatrixOf(m: Mat): InstanceType<typeof Matrix> {
  const out = new Matrix(m.rows, m.cols);
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) out.set(i, j, m.data[i * m.cols + j]);
  }
  return out;
}

/**
 * Copies an `ml-matrix` `Matrix` (or anything with `rows`, `columns`, `get`) into a float32 matrix.
 *
 * @example
 * ```ts
 * import { fromMlMatrix, matrix, toMlMatrix } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const m = fromMlMatrix(toMlMatrix(matrix.identity(3)));
 * assert.deepEqual(Array.from(m.data), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
 * ```
 */
export function fromMlMatrix(a: MlMatrixLike): Mat {
  const data = new Float32Array(a.rows * a.columns);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.columns; j++) data[i * a.columns + j] = a.get(i, j);
  return { rows: a.rows, cols: a.columns, data };
}
