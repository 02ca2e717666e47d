/**
 * The one matrix type of moekit: a row-major `Float32Array` with its shape. A plain interface, so any
 * object with `rows`, `cols` and `data` is a matrix; views share memory (no copies), and the helpers
 * below are grouped in the {@link matrix} namespace.
 * @module
 */

import { MoekitError, NonFiniteError, OptionError, ShapeError } from "./errors.ts";
import { Rng } from "./random.ts";

/**
 * A row-major float32 matrix: entry (i, j) is `data[i * cols + j]`.
 *
 * @example
 * ```ts
 * import { type Mat, matrix } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const m: Mat = matrix.fromArrays([[1, 2, 3], [4, 5, 6]]);
 * assert.deepEqual([m.rows, m.cols, m.data[1 * m.cols + 2]], [2, 3, 6]);
 * ```
 */
export interface Mat {
  /** Number of rows. */
  readonly rows: number;
  /** Number of columns. */
  readonly cols: number;
  /** `rows * cols` entries, row-major. */
  readonly data: Float32Array;
}

function checkDim(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new OptionError(name, n, "a dimension must be an integer ≥ 0");
}

/** Wraps existing data as a matrix without copying. */
function from(data: Float32Array, rows: number, cols: number): Mat {
  checkDim("rows", rows);
  checkDim("cols", cols);
  if (data.length !== rows * cols) {
    throw new ShapeError(
      "matrix data",
      [rows * cols],
      [data.length],
      `${rows}×${cols} needs ${rows * cols} values`,
    );
  }
  return { rows, cols, data };
}

/** A rows × cols matrix of zeros. */
function zeros(rows: number, cols: number): Mat {
  checkDim("rows", rows);
  checkDim("cols", cols);
  return { rows, cols, data: new Float32Array(rows * cols) };
}

/** A rows × cols matrix filled with `value`. */
function full(rows: number, cols: number, value: number): Mat {
  const m = zeros(rows, cols);
  m.data.fill(value);
  return m;
}

/** The n × n identity. */
function identity(n: number): Mat {
  const m = zeros(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** Copies nested arrays (all rows the same length) into a matrix. */
function fromArrays(rows: readonly (readonly number[])[] | readonly Float32Array[]): Mat {
  const r = rows.length, c = r === 0 ? 0 : rows[0].length;
  const m = zeros(r, c);
  for (let i = 0; i < r; i++) {
    if (rows[i].length !== c) {
      throw new ShapeError(`row ${i}`, [c], [rows[i].length], "every row must have the same length");
    }
    m.data.set(rows[i], i * c);
  }
  return m;
}

/** Nested arrays of the matrix's values. */
function toArrays(m: Mat): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < m.rows; i++) out.push(Array.from(m.data.subarray(i * m.cols, (i + 1) * m.cols)));
  return out;
}

/** Seeded normal entries N(mean, std²). */
function randn(rows: number, cols: number, opts: { seed?: number; mean?: number; std?: number } = {}): Mat {
  const m = zeros(rows, cols);
  new Rng(opts.seed ?? 0).fillNormal(m.data, opts.mean ?? 0, opts.std ?? 1);
  return m;
}

/** Seeded uniform entries in [lo, hi). */
function rand(rows: number, cols: number, opts: { seed?: number; lo?: number; hi?: number } = {}): Mat {
  const m = zeros(rows, cols);
  new Rng(opts.seed ?? 0).fillUniform(m.data, opts.lo ?? 0, opts.hi ?? 1);
  return m;
}

/** Row i as a zero-copy `Float32Array` view. */
function row(m: Mat, i: number): Float32Array {
  if (!(i >= 0 && i < m.rows)) throw new OptionError("row", i, `must be in 0..${m.rows - 1}`);
  return m.data.subarray(i * m.cols, (i + 1) * m.cols);
}

/** Rows [start, end) as a zero-copy matrix view. */
function rowSlice(m: Mat, start: number, end: number): Mat {
  if (!(start >= 0 && start <= end && end <= m.rows)) {
    throw new OptionError("rowSlice", `${start}..${end}`, `must lie within 0..${m.rows}`);
  }
  return { rows: end - start, cols: m.cols, data: m.data.subarray(start * m.cols, end * m.cols) };
}

/** Entry (i, j). */
function get(m: Mat, i: number, j: number): number {
  return m.data[i * m.cols + j];
}

/** A deep copy. */
function clone(m: Mat): Mat {
  return { rows: m.rows, cols: m.cols, data: m.data.slice() };
}

/** The transpose (a copy). */
function transpose(m: Mat): Mat {
  const out = zeros(m.cols, m.rows);
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) out.data[j * m.rows + i] = m.data[i * m.cols + j];
  }
  return out;
}

/** Throws a {@link ShapeError} unless `m` is rows × cols (-1 = any). */
function assertShape(what: string, m: Mat, rows: number, cols: number, hint = ""): void {
  if ((rows >= 0 && m.rows !== rows) || (cols >= 0 && m.cols !== cols) || m.data.length !== m.rows * m.cols) {
    throw new ShapeError(what, [rows, cols], [m.rows, m.cols], hint);
  }
}

/** Throws a {@link NonFiniteError} naming the first NaN/±Inf entry. */
function assertFinite(what: string, m: Mat): void {
  const d = m.data;
  for (let i = 0; i < d.length; i++) {
    const v = d[i];
    if (v - v !== 0) throw new NonFiniteError(what, Math.floor(i / m.cols), i % m.cols, v);
  }
}

/**
 * `A · Bᵀ` for `A [n,d]` and `B [m,d]` (the nn.Linear product `X·Wᵀ`), into `out [n,m]` if given.
 * A 2×2 register-blocked kernel with float64 accumulation.
 */
function matmulT(a: Mat, b: Mat, out?: Mat): Mat {
  if (a.cols !== b.cols) {
    throw new ShapeError(
      "matmulT: B",
      [-1, a.cols],
      [b.rows, b.cols],
      `A·Bᵀ needs B with ${a.cols} columns like A`,
    );
  }
  const n = a.rows, m = b.rows, d = a.cols;
  const o = out ?? zeros(n, m);
  assertShape("matmulT: out", o, n, m);
  const A = a.data, B = b.data, O = o.data;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    const a0 = i * d, a1 = a0 + d;
    let j = 0;
    for (; j + 1 < m; j += 2) {
      const b0 = j * d, b1 = b0 + d;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0;
      for (let p = 0; p < d; p++) {
        const x0 = A[a0 + p], x1 = A[a1 + p], w0 = B[b0 + p], w1 = B[b1 + p];
        s00 += x0 * w0;
        s01 += x0 * w1;
        s10 += x1 * w0;
        s11 += x1 * w1;
      }
      O[i * m + j] = s00;
      O[i * m + j + 1] = s01;
      O[(i + 1) * m + j] = s10;
      O[(i + 1) * m + j + 1] = s11;
    }
    for (; j < m; j++) {
      const b0 = j * d;
      let s0 = 0, s1 = 0;
      for (let p = 0; p < d; p++) {
        s0 += A[a0 + p] * B[b0 + p];
        s1 += A[a1 + p] * B[b0 + p];
      }
      O[i * m + j] = s0;
      O[(i + 1) * m + j] = s1;
    }
  }
  for (; i < n; i++) {
    const a0 = i * d;
    for (let j = 0; j < m; j++) {
      const b0 = j * d;
      let s = 0;
      for (let p = 0; p < d; p++) s += A[a0 + p] * B[b0 + p];
      O[i * m + j] = s;
    }
  }
  return o;
}

/** `A · B` for `A [n,p]`, `B [p,m]`. */
function matmul(a: Mat, b: Mat, out?: Mat): Mat {
  if (a.cols !== b.rows) {
    throw new ShapeError("matmul: B", [a.cols, -1], [b.rows, b.cols], `A·B needs B with ${a.cols} rows`);
  }
  const n = a.rows, p = a.cols, m = b.cols;
  const o = out ?? zeros(n, m);
  assertShape("matmul: out", o, n, m);
  const acc = new Float64Array(m);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    for (let q = 0; q < p; q++) {
      const s = a.data[i * p + q];
      if (s === 0) continue;
      const bo = q * m;
      for (let j = 0; j < m; j++) acc[j] += s * b.data[bo + j];
    }
    o.data.set(acc, i * m);
  }
  return o;
}

/** Adds `bias [cols]` to every row, in place. */
function addRowVector(m: Mat, bias: ArrayLike<number>): Mat {
  if (bias.length !== m.cols) throw new ShapeError("bias", [m.cols], [bias.length]);
  for (let i = 0; i < m.rows; i++) {
    const o = i * m.cols;
    for (let j = 0; j < m.cols; j++) m.data[o + j] += bias[j];
  }
  return m;
}

/** Stacks matrices with equal column counts on top of each other (a copy). */
function vstack(parts: readonly Mat[]): Mat {
  if (parts.length === 0) throw new MoekitError("vstack: needs at least one matrix");
  const cols = parts[0].cols;
  let rows = 0;
  for (const [i, p] of parts.entries()) {
    if (p.cols !== cols) throw new ShapeError(`vstack: part ${i}`, [-1, cols], [p.rows, p.cols]);
    rows += p.rows;
  }
  const out = zeros(rows, cols);
  let off = 0;
  for (const p of parts) {
    out.data.set(p.data, off);
    off += p.data.length;
  }
  return out;
}

/** Frobenius norm. */
function frobenius(m: Mat): number {
  let s = 0;
  for (let i = 0; i < m.data.length; i++) s += m.data[i] * m.data[i];
  return Math.sqrt(s);
}

/**
 * Helpers for the {@link Mat} type: constructors, views, products and checks.
 *
 * @example
 * ```ts
 * import { matrix } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[1, 2, 3], [4, 5, 6]]);
 * const w = matrix.fromArrays([[1, 0, 0], [0, 1, 1]]);
 * assert.deepEqual(matrix.toArrays(matrix.matmulT(x, w)), [[1, 5], [4, 11]]); // X·Wᵀ, [2, 2]
 * assert.equal(matrix.rowSlice(x, 1, 2).data[0], 4); // a zero-copy view
 * assert.equal(matrix.randn(2, 2, { seed: 1 }).data[3], matrix.randn(2, 2, { seed: 1 }).data[3]);
 * ```
 */
export const matrix = {
  from,
  zeros,
  full,
  identity,
  fromArrays,
  toArrays,
  randn,
  rand,
  row,
  rowSlice,
  get,
  clone,
  transpose,
  assertShape,
  assertFinite,
  matmulT,
  matmul,
  addRowVector,
  vstack,
  frobenius,
} as const;
