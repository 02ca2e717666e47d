import assert from "node:assert/strict";
import {
  fromMlMatrix,
  fromNdarray,
  matrix,
  MoekitError,
  NonFiniteError,
  OptionError,
  Rng,
  ShapeError,
  toMlMatrix,
  toNdarray,
} from "../mod.ts";
import { ndarray, SingularValueDecomposition } from "../lib/deps.ts";
import { roundHalfEven } from "../lib/core/numeric.ts";
import { assertClose } from "./helpers.ts";

Deno.test("matrix: constructors, views and products", () => {
  const a = matrix.fromArrays([[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(matrix.toArrays(matrix.transpose(a)), [[1, 4], [2, 5], [3, 6]]);
  const row = matrix.row(a, 1);
  row[0] = 40; // a view, not a copy
  assert.equal(a.data[3], 40);
  const b = matrix.fromArrays([[1, 0, 1], [0, 1, 0]]);
  assert.deepEqual(matrix.toArrays(matrix.matmulT(a, b)), [[4, 2], [46, 5]]);
  assert.deepEqual(matrix.toArrays(matrix.matmul(a, matrix.transpose(b))), [[4, 2], [46, 5]]);
  assert.throws(() => matrix.fromArrays([[1, 2], [3]]), ShapeError);
  assert.throws(() => matrix.from(new Float32Array(5), 2, 3), /expected shape \[6\], got \[5\]/);
  assert.throws(
    () => matrix.matmulT(a, matrix.zeros(2, 2)),
    /matmulT: B: expected shape \[\*,3\], got \[2,2\]/,
  );
});

Deno.test("matrix: matmulT blocked kernel equals the naive product on odd sizes", () => {
  for (const [n, m, d] of [[1, 1, 1], [3, 5, 7], [4, 2, 9], [5, 3, 4]]) {
    const a = matrix.randn(n, d, { seed: n }), b = matrix.randn(m, d, { seed: m + 10 });
    const c = matrix.matmulT(a, b);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < m; j++) {
        let s = 0;
        for (let p = 0; p < d; p++) s += a.data[i * d + p] * b.data[j * d + p];
        assertClose(c.data[i * m + j], s, 1e-5);
      }
    }
  }
});

Deno.test("matrix: assertFinite names the first bad entry", () => {
  const m = matrix.zeros(3, 4);
  m.data[2 * 4 + 1] = NaN;
  m.data[2 * 4 + 3] = Infinity;
  const err = assert.throws(() => matrix.assertFinite("X", m), (e: unknown) => {
    assert.ok(e instanceof NonFiniteError && e instanceof MoekitError);
    assert.equal(e.row, 2);
    assert.equal(e.col, 1);
    assert.match(e.message, /X: non-finite value NaN at row 2, col 1/);
    return true;
  });
  assert.equal(err, undefined);
});

Deno.test("Rng: deterministic, derived streams independent, moments sane", () => {
  const a = new Rng(7), b = new Rng(7), c = new Rng(8);
  const sa = Array.from({ length: 5 }, () => a.uniform());
  assert.deepEqual(sa, Array.from({ length: 5 }, () => b.uniform()));
  assert.notDeepEqual(sa, Array.from({ length: 5 }, () => c.uniform()));
  assert.equal(new Rng(1).derive("x", 2).uniform(), new Rng(1).derive("x", 2).uniform());
  assert.notEqual(new Rng(1).derive("x", 2).uniform(), new Rng(1).derive("x", 3).uniform());
  const r = new Rng(3), n = 20000;
  let s = 0, s2 = 0;
  for (let i = 0; i < n; i++) {
    const v = r.normal();
    s += v;
    s2 += v * v;
  }
  assert.ok(Math.abs(s / n) < 0.03, `mean ${s / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 0.05, `var ${s2 / n}`);
  for (let i = 0; i < 1000; i++) {
    const u = r.uniform(), k = r.int(5);
    assert.ok(u >= 0 && u < 1 && k >= 0 && k < 5 && Number.isInteger(k));
  }
  assert.throws(() => new Rng(NaN), OptionError);
  assert.deepEqual(matrix.randn(2, 3, { seed: 4 }), matrix.randn(2, 3, { seed: 4 }));
});

Deno.test("interop: ndarray views are zero-copy both ways; strided views are copied", () => {
  const m = matrix.fromArrays([[1, 2, 3], [4, 5, 6]]);
  const a = toNdarray(m);
  assert.equal(a.get(1, 2), 6);
  m.data[0] = 10;
  assert.equal(a.get(0, 0), 10);
  const back = fromNdarray(a);
  assert.equal(back.data, m.data);
  // an offset row view: zero-copy subarray on the same buffer
  const sub = fromNdarray(ndarray(m.data, [1, 3], [3, 1], 3) as never);
  assert.equal(sub.data.buffer, m.data.buffer);
  assert.deepEqual(Array.from(sub.data), [4, 5, 6]);
  // a transposed view is copied into row-major order
  const t = fromNdarray(ndarray(m.data, [3, 2], [1, 3], 0) as never);
  assert.deepEqual(matrix.toArrays(t), [[10, 4], [2, 5], [3, 6]]);
  assert.throws(() => fromNdarray(ndarray(new Float32Array(8), [2, 2, 2]) as never), /2-D/);
});

Deno.test("interop: ml-matrix round trip and its SVD", () => {
  const m = matrix.fromArrays([[3, 0], [0, 4]]);
  const ml = toMlMatrix(m);
  // deno-lint-ignore no-explicit-any
  const svd = new SingularValueDecomposition(ml as any);
  assert.deepEqual(svd.diagonal, [4, 3]);
  assert.deepEqual(fromMlMatrix(ml), m);
});

Deno.test("roundHalfEven matches Python round", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 4.5, -0.5, -1.5, 2.4, 2.6].map((v) => roundHalfEven(v) + 0), [
    0,
    2,
    2,
    4,
    0,
    -2,
    2,
    3,
  ]);
});
