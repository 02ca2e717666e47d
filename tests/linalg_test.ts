// lib/linalg on every backend available here: backward-error and orthogonality bounds, hand-computed
// cases, agreement across backends, typed errors, and the assignment solver against brute force and munkres.
import assert from "node:assert/strict";
import {
  cholesky,
  type LinalgBackend,
  linearAssignment,
  type Mat,
  matmul,
  matrix,
  nativeInfo,
  NonFiniteError,
  NotPositiveDefiniteError,
  OptionError,
  qr,
  rsvd,
  svd,
  symmetricEigen,
} from "../lib/linalg/mod.ts";
import { wasmInfo } from "../lib/kernels/runtime.ts";
import { matmulAdd, multiplyLowerRight, svdTop } from "../lib/linalg/factor.ts";
import { type Kernels64, symEigen64, symTop64 } from "../lib/linalg/symmetric.ts";
import { kernels64For } from "../lib/linalg/backend.ts";
import { cholQr64 } from "../lib/linalg/dense.ts";
import { gemm64Available, gemm64Wasm, openWorkspace } from "../lib/linalg/gemm64.ts";
import { buildGemm64Kernels, gemm64WasmModuleText } from "../lib/linalg/gemm64_wat.ts";
import { munkres } from "../lib/deps.ts";

const native = nativeInfo();
const backends: { name: Exclude<LinalgBackend, "auto">; skip?: string }[] = [
  { name: "native", skip: native.available ? undefined : native.reason },
  { name: "wasm", skip: wasmInfo().wasm ? undefined : "WebAssembly SIMD is not available" },
  { name: "js" },
];
const available = backends.filter((b) => !b.skip).map((b) => b.name);

/** Float32 storage: the factors carry ~1e-7 relative rounding, the float32 LAPACK/GEMM a bit more. */
const tol = (b: string) => (b === "js" ? 2e-6 : 2e-5);

function fro(a: Mat): number {
  let s = 0;
  for (const v of a.data) s += v * v;
  return Math.sqrt(s);
}

function diff(a: Mat, b: Mat): number {
  assert.deepEqual([a.rows, a.cols], [b.rows, b.cols]);
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return Math.sqrt(s);
}

/** ‖QᵀQ − I‖_F for the columns of q. */
function orthError(q: Mat): number {
  return diff(matmul(q, q, { transA: true, backend: "js" }), matrix.identity(q.cols));
}

/** max |QᵀQ − I| over the entries, for the columns of q. */
function worstOrth(q: Mat): number {
  const g = matmul(q, q, { transA: true, backend: "js" });
  let w = 0;
  for (let i = 0; i < q.cols; i++) {
    for (let j = 0; j < q.cols; j++) w = Math.max(w, Math.abs(g.data[i * q.cols + j] - +(i === j)));
  }
  return w;
}

function scaleCols(u: Mat, s: ArrayLike<number>): Mat {
  const out = matrix.clone(u);
  for (let i = 0; i < u.rows; i++) for (let j = 0; j < u.cols; j++) out.data[i * u.cols + j] *= s[j];
  return out;
}

function spd(n: number, seed: number): Mat {
  const x = matrix.randn(2 * n, n, { seed });
  const g = matmul(x, x, { transA: true, backend: "js" });
  for (let i = 0; i < n; i++) g.data[i * n + i] += 1;
  return g;
}

for (const b of backends) {
  const opts = { backend: b.name };
  const t = (what: string, fn: () => void) =>
    Deno.test({
      name: `linalg[${b.name}] ${what}${b.skip ? ` (skipped: ${b.skip})` : ""}`,
      ignore: b.skip !== undefined,
      fn,
    });

  t("matmul with every transpose combination equals the JS reference", () => {
    const a = matrix.randn(37, 29, { seed: 1 }), c = matrix.randn(29, 41, { seed: 2 });
    const ref = matrix.matmul(a, c);
    const at = matrix.transpose(a), ct = matrix.transpose(c);
    for (
      const [x, y, tA, tB] of [[a, c, false, false], [at, c, true, false], [a, ct, false, true], [
        at,
        ct,
        true,
        true,
      ]] as const
    ) {
      const out = matmul(x, y, { ...opts, transA: tA, transB: tB });
      assert.ok(diff(out, ref) <= 1e-5 * fro(ref), `transA ${tA} transB ${tB}`);
    }
    assert.throws(() => matmul(a, a, opts), /matmul: B: expected shape \[29,\*\]/);
  });

  t("svd: hand-computed values, backward error and orthogonality on tall, wide and rank-deficient A", () => {
    const ex = svd(matrix.fromArrays([[3, 0], [4, 5]]), opts);
    assert.equal(ex.backend, b.name);
    assert.ok(Math.abs(ex.s[0] - Math.sqrt(45)) < 1e-5 && Math.abs(ex.s[1] - Math.sqrt(5)) < 1e-5);
    const lowRank = matrix.matmul(matrix.randn(30, 5, { seed: 3 }), matrix.randn(5, 20, { seed: 4 }));
    for (const a of [matrix.randn(60, 40, { seed: 1 }), matrix.randn(40, 60, { seed: 2 }), lowRank]) {
      const r = svd(a, opts), k = Math.min(a.rows, a.cols);
      assert.deepEqual([r.u.rows, r.u.cols, r.s.length, r.vt.rows, r.vt.cols], [a.rows, k, k, k, a.cols]);
      for (let i = 1; i < k; i++) assert.ok(r.s[i] <= r.s[i - 1] + 1e-6 && r.s[i] >= 0);
      const rec = matrix.matmul(scaleCols(r.u, r.s), r.vt);
      assert.ok(diff(rec, a) <= tol(b.name) * fro(a), `reconstruction ${diff(rec, a) / fro(a)}`);
      assert.ok(
        orthError(matrix.transpose(r.vt)) < 1e-4,
        `V orthogonality ${orthError(matrix.transpose(r.vt))}`,
      );
      if (a !== lowRank) assert.ok(orthError(r.u) < 1e-4, `U orthogonality ${orthError(r.u)}`);
    }
    const rd = svd(lowRank, opts);
    assert.ok(rd.s[5] < 1e-4 * rd.s[0], `rank 5: σ6 = ${rd.s[5]}`);
    assert.ok(orthError(matrix.transpose(matrix.rowSlice(matrix.transpose(rd.u), 0, 5))) < 1e-4);
  });

  t("symmetricEigen: A·V = V·Λ, VᵀV = I, ascending, hand-computed 2×2", () => {
    const ex = symmetricEigen(matrix.fromArrays([[2, 1], [1, 2]]), opts);
    assert.ok(Math.abs(ex.values[0] - 1) < 1e-6 && Math.abs(ex.values[1] - 3) < 1e-6);
    const a = spd(50, 5), r = symmetricEigen(a, opts);
    for (let i = 1; i < 50; i++) assert.ok(r.values[i] >= r.values[i - 1]);
    const av = matmul(a, r.vectors, { backend: "js" }), vl = scaleCols(r.vectors, r.values);
    assert.ok(diff(av, vl) <= tol(b.name) * fro(a), `residual ${diff(av, vl) / fro(a)}`);
    assert.ok(orthError(r.vectors) < 1e-4);
  });

  t("cholesky: L·Lᵀ = A, lower triangular; not positive definite → typed error with the order", () => {
    const a = spd(300, 6), l = cholesky(a, opts);
    for (let i = 0; i < 300; i++) for (let j = i + 1; j < 300; j++) assert.equal(l.data[i * 300 + j], 0);
    assert.ok(diff(matrix.matmulT(l, l), a) <= tol(b.name) * fro(a));
    assert.throws(() => cholesky(matrix.fromArrays([[1, 2], [2, 1]]), opts), (e: unknown) => {
      assert.ok(e instanceof NotPositiveDefiniteError);
      assert.equal(e.info, 2);
      assert.match(e.message, /leading minor of order 2/);
      return true;
    });
  });

  t("qr: Q·R = A, QᵀQ = I, R upper triangular, on tall, wide and > block-size matrices", () => {
    for (
      const a of [
        matrix.randn(90, 70, { seed: 7 }),
        matrix.randn(30, 50, { seed: 8 }),
        matrix.randn(200, 100, { seed: 9 }),
      ]
    ) {
      const { q, r } = qr(a, opts), k = Math.min(a.rows, a.cols);
      assert.deepEqual([q.rows, q.cols, r.rows, r.cols], [a.rows, k, k, a.cols]);
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < Math.min(i, a.cols); j++) assert.equal(r.data[i * a.cols + j], 0);
      }
      assert.ok(diff(matrix.matmul(q, r), a) <= tol(b.name) * fro(a));
      assert.ok(orthError(q) < 1e-4, `orthogonality ${orthError(q)}`);
    }
  });

  t("rsvd recovers an exactly rank-6 matrix and matches the dense SVD's leading values", () => {
    const a = matrix.matmul(matrix.randn(120, 6, { seed: 10 }), matrix.randn(6, 80, { seed: 11 }));
    const r = rsvd(a, 6, { ...opts, seed: 1 }), dense = svd(a, opts);
    for (let i = 0; i < 6; i++) assert.ok(Math.abs(r.s[i] - dense.s[i]) <= 1e-4 * dense.s[0]);
    const rec = matrix.matmul(scaleCols(r.u, r.s), r.vt);
    assert.ok(diff(rec, a) <= 1e-4 * fro(a));
    assert.throws(() => rsvd(a, 81, opts), OptionError);
  });

  t(
    "svd: U and V orthonormal to 1e-5 with zero, repeated and tiny σ, tall and wide; seeded completion",
    () => {
      if (b.name === "native") return; // LAPACK's sgesdd: orthonormal by construction
      const m = 180, k = 120, qa = qr(matrix.randn(m, k, { seed: 51 }), { backend: "js" }).q;
      const qb = qr(matrix.randn(k, k, { seed: 52 }), { backend: "js" }).q;
      // σ: 12 equal to 1, graded 0.5 … 1e-6, 15 at 1e-9 (below any Gram resolution), 25 exactly zero
      const s = Array.from(
        { length: k },
        (_, i) => (i < 12 ? 1 : i < 80 ? 0.5 * 2e-6 ** ((i - 12) / 67) : i < 95 ? 1e-9 : 0),
      );
      const a = matrix.matmul(scaleCols(qa, s), matrix.transpose(qb));
      const cases = [
        a,
        matrix.transpose(a),
        matrix.zeros(40, 25),
        matrix.matmul(
          matrix.randn(50, 1, { seed: 53 }),
          matrix.randn(1, 30, { seed: 54 }),
        ),
      ];
      for (const x of cases) {
        const r = svd(x, opts), what = `${x.rows}×${x.cols}`;
        assert.equal(r.backend, b.name);
        assert.ok(worstOrth(r.u) <= 1e-5, `${what}: U ${worstOrth(r.u)}`);
        assert.ok(
          worstOrth(matrix.transpose(r.vt)) <= 1e-5,
          `${what}: V ${worstOrth(matrix.transpose(r.vt))}`,
        );
        // backward error as before: the tail's own decomposition keeps A·V = U·Σ while making U orthonormal
        const rec = matrix.matmul(scaleCols(r.u, r.s), r.vt);
        assert.ok(diff(rec, x) <= 2e-5 * fro(x), `${what}: reconstruction ${diff(rec, x)}`);
        if (x === a) {
          // the tail's σ are resolved by its own Gram matrix, far below wasm's √ε·σ₁ ≈ 3e-4
          const sTol = b.name === "wasm" ? 1e-5 : 1e-6;
          for (let i = 0; i < k; i++) {
            assert.ok(Math.abs(r.s[i] - s[i]) <= sTol, `σ${i}: ${r.s[i]} vs ${s[i]}`);
          }
        }
      }
      // the completion is seeded: the same input gives the same U
      assert.deepEqual(svd(cases[3], opts).u.data, svd(cases[3], opts).u.data);
    },
  );

  t(
    "svdTop (the compressions' truncated SVD): leading triplets and all σ as the dense SVD, tall and wide",
    () => {
      // k ≥ 256 takes the Gram path on every backend (native: float64 dsyrk + MRRR; wasm/js: inverse iteration)
      const lowRank = matrix.matmul(matrix.randn(300, 8, { seed: 12 }), matrix.randn(8, 260, { seed: 13 }));
      for (const a of [matrix.randn(300, 260, { seed: 14 }), matrix.randn(260, 300, { seed: 15 }), lowRank]) {
        const k = 260, dense = svd(a, { backend: "js" });
        for (const rank of [0, 1, 20]) {
          const r = svdTop(a, rank, opts);
          assert.equal(r.backend, b.name);
          assert.deepEqual([r.u.rows, r.u.cols, r.s.length, r.vt.rows, r.vt.cols], [
            a.rows,
            rank,
            k,
            rank,
            a.cols,
          ]);
          // wasm's Gram matrix is float32: σ below √ε·σ₁ ≈ 3e-4·σ₁ are noise there (as for its svd)
          const sTol = b.name === "wasm" ? 5e-4 : 1e-5;
          for (let i = 0; i < k; i++) {
            assert.ok(Math.abs(r.s[i] - dense.s[i]) <= sTol * dense.s[0], `σ${i}`);
          }
          if (rank === 0) continue;
          // the rank-r truncation is the same matrix (leading values are distinct here)
          const top = Math.min(rank, a === lowRank ? 8 : rank);
          const pick = (u: Mat, cols: number) => {
            const o = matrix.zeros(u.rows, top);
            for (let i = 0; i < u.rows; i++) {
              for (let j = 0; j < top; j++) o.data[i * top + j] = u.data[i * cols + j];
            }
            return o;
          };
          const rec = matrix.matmul(scaleCols(pick(r.u, rank), r.s), matrix.rowSlice(r.vt, 0, top));
          const ref = matrix.matmul(scaleCols(pick(dense.u, k), dense.s), matrix.rowSlice(dense.vt, 0, top));
          assert.ok(diff(rec, ref) <= 2e-5 * fro(a), `rank ${rank}: ${diff(rec, ref) / fro(a)}`);
          assert.ok(orthError(r.u) < 1e-4 && orthError(matrix.transpose(r.vt)) < 1e-4, "orthonormal factors");
        }
      }
      assert.throws(
        () => svdTop(matrix.randn(5, 4, { seed: 1 }), 5, opts),
        /rank must be an integer in 0\.\.4/,
      );
    },
  );

  t("matmulAdd accumulates; multiplyLowerRight = B·L", () => {
    const a = matrix.randn(30, 20, { seed: 16 }), c = matrix.randn(25, 20, { seed: 17 });
    const acc = matrix.randn(30, 25, { seed: 18 }), want = matrix.matmulT(a, c);
    for (let i = 0; i < want.data.length; i++) want.data[i] += acc.data[i];
    matmulAdd(acc, a, c, { ...opts, transB: true });
    assert.ok(diff(acc, want) <= 1e-5 * fro(want));
    assert.throws(() => matmulAdd(matrix.zeros(2, 2), a, c, { ...opts, transB: true }), /matmulAdd: C/);
    const l = cholesky(spd(20, 19), { backend: "js" });
    const ref = matrix.matmul(a, l);
    assert.ok(diff(multiplyLowerRight(a, l, opts), ref) <= 1e-5 * fro(ref));
  });

  t("non-finite input → NonFiniteError naming the position, before any work", () => {
    const a = matrix.randn(4, 3, { seed: 1 });
    a.data[2 * 3 + 1] = NaN;
    for (const f of [() => svd(a, opts), () => qr(a, opts), () => rsvd(a, 2, opts)]) {
      assert.throws(f, (e: unknown) => e instanceof NonFiniteError && e.row === 2 && e.col === 1);
    }
    const s = spd(3, 1);
    s.data[4] = Infinity;
    assert.throws(() => cholesky(s, opts), NonFiniteError);
    assert.throws(() => symmetricEigen(s, opts), NonFiniteError);
  });
}

Deno.test("linalg: every available backend agrees (singular values, eigenvalues, |Q|, L)", () => {
  const a = matrix.randn(150, 110, { seed: 21 }), g = spd(80, 22);
  const res = available.map((backend) => ({
    s: svd(a, { backend }).s,
    e: symmetricEigen(g, { backend }).values,
    l: cholesky(g, { backend }),
    r: qr(a, { backend }).r,
  }));
  const ref = res[res.length - 1]; // js, float64
  for (const [i, r] of res.entries()) {
    for (let j = 0; j < ref.s.length; j++) {
      assert.ok(Math.abs(r.s[j] - ref.s[j]) <= 1e-5 * ref.s[0], `${available[i]} σ${j}`);
    }
    for (let j = 0; j < ref.e.length; j++) {
      assert.ok(Math.abs(r.e[j] - ref.e[j]) <= 1e-5 * ref.e[ref.e.length - 1], `${available[i]} λ${j}`);
    }
    assert.ok(diff(r.l, ref.l) <= 1e-5 * fro(ref.l));
    // R is unique up to the signs of its rows
    for (let k = 0; k < 110; k++) {
      const sgn = Math.sign(r.r.data[k * 110 + k]) * Math.sign(ref.r.data[k * 110 + k]);
      for (let c = k; c < 110; c++) {
        assert.ok(Math.abs(sgn * r.r.data[k * 110 + c] - ref.r.data[k * 110 + c]) <= 1e-4 * ref.s[0]);
      }
    }
  }
});

Deno.test("symTop64: repeated and clustered eigenvalues give orthonormal eigenvectors with tiny residuals", () => {
  // A = Q·diag(λ)·Qᵀ with λ = 5 (×4), 5 + 1e-9, 3 (×3), then a spread, for a random orthogonal Q
  const n = 40,
    lam = Array.from({ length: n }, (_, i) => (i < 4 ? 5 : i === 4 ? 5 + 1e-9 : i < 8 ? 3 : 1 / (i + 1)));
  const q = qr(matrix.randn(n, n, { seed: 30 }), { backend: "js" }).q;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let p = 0; p < n; p++) v += q.data[i * n + p] * lam[p] * q.data[j * n + p];
      a[i * n + j] = v;
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) a[i * n + j] = a[j * n + i];
  const js = kernels64For("js");
  const r = 10, got = symTop64(a, n, r, "test", js), ref = symEigen64(a, n, "test", js);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(got.values[i] - ref.values[i]) < 1e-12 * 5, `λ${i}`);
  assert.deepEqual(Array.from(got.top, (v) => +v.toFixed(6)), [5, 5, 5, 5, 5, 3, 3, 3, 0.111111, 0.1]);
  for (let j = 0; j < r; j++) {
    const v = got.vectors.subarray(j * n, (j + 1) * n);
    for (let i = 0; i < n; i++) {
      let av = 0;
      for (let p = 0; p < n; p++) av += a[i * n + p] * v[p];
      assert.ok(Math.abs(av - got.top[j] * v[i]) < 1e-12, `residual of vector ${j}`);
    }
    for (let p = 0; p <= j; p++) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += v[i] * got.vectors[p * n + i];
      assert.ok(Math.abs(dot - (p === j ? 1 : 0)) < 1e-10, `⟨v${j}, v${p}⟩ = ${dot}`);
    }
  }
});

/**
 * Symmetric `Q·diag(λ)·Qᵀ` (float64, row-major), Q a product of 6 random Householder reflectors, so the
 * spectrum is exactly λ up to float64 rounding.
 */
function withSpectrum(lam: number[], seed: number): Float64Array {
  const n = lam.length, a = new Float64Array(n * n), y = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i * n + i] = lam[i];
  for (let h = 0; h < 6; h++) {
    // A ← H·A·H, H = I − 2·u·uᵀ (‖u‖ = 1): A − u·yᵀ − y·uᵀ with y = 2·A·u − 2·(uᵀA·u)·u
    const u = Float64Array.from(matrix.randn(1, n, { seed: seed + h }).data);
    const nu = Math.hypot(...u);
    for (let i = 0; i < n; i++) u[i] /= nu;
    for (let i = 0; i < n; i++) {
      let v = 0;
      for (let p = 0; p < n; p++) v += a[i * n + p] * u[p];
      y[i] = 2 * v;
    }
    let uau = 0;
    for (let i = 0; i < n; i++) uau += u[i] * y[i];
    for (let i = 0; i < n; i++) y[i] -= uau * u[i];
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] -= u[i] * y[j] + y[i] * u[j];
  }
  return a;
}

/** max |A·v − λ·v| and max |VᵀV − I| over the rows of `vectors`, for symmetric row-major `a`. */
function eigenErrors(a: Float64Array, n: number, values: ArrayLike<number>, vectors: Float64Array) {
  const r = values.length;
  let residual = 0, orth = 0;
  for (let j = 0; j < r; j++) {
    const v = vectors.subarray(j * n, (j + 1) * n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += a[i * n + p] * v[p];
      residual = Math.max(residual, Math.abs(s - values[j] * v[i]));
    }
    for (let q = 0; q <= j; q++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += v[p] * vectors[q * n + p];
      orth = Math.max(orth, Math.abs(s - (q === j ? 1 : 0)));
    }
  }
  return { residual, orth };
}

const kernels64: { name: string; k: Kernels64; skip?: string }[] = [
  {
    name: "wasm",
    k: kernels64For("wasm"),
    skip: gemm64Available() ? undefined : "WebAssembly is not available",
  },
  { name: "js", k: kernels64For("js") },
];

for (const { name, k, skip } of kernels64) {
  Deno.test({
    name: `symEigen64[${name}] at n ≥ 300: known spectra with exact clusters, near-clusters, a zero block, ` +
      `a graded tail${skip ? ` (skipped: ${skip})` : ""}`,
    ignore: skip !== undefined,
    fn: () => {
      const n = 330;
      const spectra: [string, number[]][] = [
        // 60 equal, 40 within 1e-10, 100 zeros (rank-deficient), the rest spread over [−3, 3]
        [
          "clustered",
          Array.from(
            { length: n },
            (_, i) => i < 60 ? 2 : i < 100 ? 1 + 1e-12 * i : i < 200 ? 0 : -3 + (6 * (i - 200)) / (n - 200),
          ),
        ],
        // a Gram-like graded spectrum: σᵢ² with σᵢ = (1 + i)^−1.2, the last 30 exactly 0
        ["graded", Array.from({ length: n }, (_, i) => (i < n - 30 ? (1 + i) ** -2.4 : 0))],
        ["random", Array.from({ length: n }, (_, i) => Math.sin(7.3 * i) * 5)],
      ];
      for (const [what, lam] of spectra) {
        const a = withSpectrum(lam, n + what.length), norm = Math.max(...lam.map(Math.abs));
        const r = symEigen64(a, n, "test", k);
        const want = lam.slice().sort((x, y) => x - y);
        for (let i = 0; i < n; i++) {
          assert.ok(
            Math.abs(r.values[i] - want[i]) <= 1e-12 * norm,
            `${what} λ${i}: ${r.values[i]} vs ${want[i]}`,
          );
        }
        const e = eigenErrors(a, n, r.values, r.vectors);
        assert.ok(e.residual <= 1e-12 * norm, `${what} residual ${e.residual}`);
        assert.ok(e.orth <= 1e-12, `${what} orthogonality ${e.orth}`);
        // the top 12 by inverse iteration agree with the full solver's values
        const t = symTop64(a, n, 12, "test", k);
        for (let j = 0; j < 12; j++) assert.ok(Math.abs(t.top[j] - want[n - 1 - j]) <= 1e-12 * norm);
        const et = eigenErrors(a, n, t.top, t.vectors);
        assert.ok(et.residual <= 1e-11 * norm && et.orth <= 1e-10, `${what} top: ${JSON.stringify(et)}`);
      }
      // a tridiagonal (the 1-D Laplacian) and the zero matrix
      const lap = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        lap[i * n + i] = 2;
        if (i + 1 < n) lap[i * n + i + 1] = lap[(i + 1) * n + i] = -1;
      }
      const r = symEigen64(lap, n, "test", k);
      for (let j = 0; j < n; j++) {
        const want = 2 - 2 * Math.cos((Math.PI * (j + 1)) / (n + 1));
        assert.ok(Math.abs(r.values[j] - want) <= 1e-13, `laplacian λ${j}`);
      }
      const z = symEigen64(new Float64Array(n * n), n, "test", k);
      assert.ok(z.values.every((v) => v === 0) && eigenErrors(z.vectors, n, [], z.vectors).orth === 0);
    },
  });
}

Deno.test({
  name: `svd[wasm] at k ≥ 300: known singular values of a tall and a wide matrix, rank-deficient${
    wasmInfo().wasm ? "" : " (skipped: WebAssembly SIMD is not available)"
  }`,
  ignore: !wasmInfo().wasm,
  fn: () => {
    const m = 700, k = 320, qa = qr(matrix.randn(m, k, { seed: 41 }), { backend: "js" }).q;
    const qb = qr(matrix.randn(k, k, { seed: 42 }), { backend: "js" }).q;
    // σ = 1 … 1e-3 graded, with a 20-fold repeated value and the last 40 exactly zero
    const s = Array.from({ length: k }, (_, i) => (i < 20 ? 1 : i < k - 40 ? 0.9 * 1e-3 ** (i / k) : 0));
    const a = matrix.matmul(scaleCols(qa, s), matrix.transpose(qb));
    for (const x of [a, matrix.transpose(a)]) {
      const r = svd(x, { backend: "wasm" });
      // σ to the float32 rounding of A (Weyl: ‖δA‖₂, a few 1e-8 here; measured 4e-8), 25-fold margin
      for (let i = 0; i < k; i++) assert.ok(Math.abs(r.s[i] - s[i]) <= 1e-6, `σ${i}: ${r.s[i]} vs ${s[i]}`);
      const rec = matrix.matmul(scaleCols(r.u, r.s), r.vt);
      assert.ok(diff(rec, x) <= 2e-5 * fro(x), `reconstruction ${diff(rec, x) / fro(x)}`);
      // both sides orthonormal to float32 rounding (about 1e-7; measured 1e-8): the small side's vectors are
      // the eigenvectors, the long side's pass through CholeskyQR, the zero-σ ones are completed
      const tall = x.rows > x.cols,
        small = tall ? matrix.transpose(r.vt) : r.u,
        long = tall ? r.u : matrix.transpose(r.vt);
      assert.ok(worstOrth(small) < 1e-6, `${x.rows}×${x.cols}: small side ${worstOrth(small)}`);
      assert.ok(worstOrth(long) < 1e-6, `${x.rows}×${x.cols}: long side ${worstOrth(long)}`);
    }
  },
});

Deno.test({
  name: `svd[wasm]: a noisy low-rank matrix (σ from σ₁ to 2e-5·σ₁) — σ as float64's, U and V orthonormal${
    wasmInfo().wasm ? "" : " (skipped: WebAssembly SIMD is not available)"
  }`,
  ignore: !wasmInfo().wasm,
  fn: () => {
    // the bench's matrix in small: rank 40 with power-law columns plus 1e-3 noise, so every σ but the first
    // few lies below what a float32 Gram matrix resolves (3e-4·σ₁)
    const m = 600, n = 300, r = 40, left = matrix.randn(m, r, { seed: 61 });
    for (let i = 0; i < m; i++) for (let j = 0; j < r; j++) left.data[i * r + j] /= (1 + j) ** 1.2;
    const a = matmul(left, matrix.randn(r, n, { seed: 62 }), { backend: "js" });
    const noise = matrix.randn(m, n, { seed: 63, std: 1e-3 });
    for (let i = 0; i < a.data.length; i++) a.data[i] += noise.data[i];
    for (const x of [a, matrix.transpose(a)]) {
      const w = svd(x, { backend: "wasm" }), ref = svd(x, { backend: "js" }), what = `${x.rows}×${x.cols}`;
      assert.ok(w.s[n - 1] < 3e-5 * w.s[0], `${what}: σ spread ${w.s[n - 1] / w.s[0]}`);
      // σ from the float64 Gram's eigenvalues: those err by about 1e-16·λ₁, so σⱼ by 1e-16·σ₁²/2σⱼ ≤ 3e-12·σ₁
      // down to 2e-5·σ₁ (and the js reference's likewise); σ measured from the float32 products A·vⱼ would
      // err by about 6e-8·σ₁. 1e-10·σ₁ lies between, with a 30-fold margin on the float64 side.
      for (let i = 0; i < n; i++) {
        assert.ok(Math.abs(w.s[i] - ref.s[i]) <= 1e-10 * ref.s[0], `${what}: σ${i} ${w.s[i]} vs ${ref.s[i]}`);
      }
      // an orthonormal matrix rounded to float32 is orthonormal to about 1e-7 (worstOrth's float32 output
      // included); without the CholeskyQR pass the columns at small σⱼ keep about 6e-8·σ₁/σⱼ of the others
      // (measured 2e-4 here with the pass planted out)
      assert.ok(worstOrth(w.u) <= 1e-6, `${what}: U ${worstOrth(w.u)}`);
      assert.ok(worstOrth(matrix.transpose(w.vt)) <= 1e-6, `${what}: V ${worstOrth(matrix.transpose(w.vt))}`);
      // backward error at float32 rounding (measured 2e-7: the rounding of A·V, U and V), 5-fold margin
      const rec = matrix.matmul(scaleCols(w.u, w.s), w.vt);
      assert.ok(diff(rec, x) <= 1e-6 * fro(x), `${what}: reconstruction ${diff(rec, x) / fro(x)}`);
    }
  },
});

for (const backend of ["wasm", "js"] as const) {
  Deno.test({
    name: `cholQr64[${backend}]: one CholeskyQR pass orthonormalises the columns in order, up to the first ` +
      `column in the span of those before${gemm64Available() || backend === "js" ? "" : " (skipped)"}`,
    ignore: backend === "wasm" && !gemm64Available(),
    fn: () => {
      const m = 200, n = 40, stop = 25, kernels = kernels64For(backend);
      // U₀ as rows [n, m]: unit rows, 0.3-correlated, row 25 ≈ a combination of rows 3 and 7
      const s = new Float64Array(n * m), common = matrix.randn(1, m, { seed: 70 }).data;
      for (let j = 0; j < n; j++) {
        const g = matrix.randn(1, m, { seed: 71 + j }).data;
        for (let i = 0; i < m; i++) s[j * m + i] = g[i] + 0.3 * common[i];
      }
      for (let i = 0; i < m; i++) s[stop * m + i] = s[3 * m + i] - 2 * s[7 * m + i] + 1e-9 * s[30 * m + i];
      for (let j = 0; j < n; j++) {
        let q = 0;
        for (let i = 0; i < m; i++) q += s[j * m + i] ** 2;
        for (let i = 0; i < m; i++) s[j * m + i] /= Math.sqrt(q);
      }
      const out = new Float32Array(m * n);
      // blocks of 16 columns, so the solve's GEMM updates run
      const r = cholQr64((v) => v.set(s), n, m, kernels, 0.5, out, 16);
      assert.equal(r.order, stop);
      const x: Mat = { rows: m, cols: n, data: out };
      const head = matrix.transpose(matrix.rowSlice(matrix.transpose(x), 0, stop));
      // X is float64-orthonormal rounded to float32 (about 1e-7 in these products); 1e-6 leaves a margin
      assert.ok(worstOrth(head) <= 1e-6, `orthonormal ${worstOrth(head)}`);
      // Gram–Schmidt order: column j of X spans the first j+1 columns of U₀ (Xᵀ·U₀ = Lᵀ, upper triangular);
      // diag = L's diagonal, above √0.5 for a column the pass keeps (minPivot 0.5)
      for (let j = 0; j < stop; j++) {
        for (let c = 0; c < j; c++) {
          let d = 0;
          for (let i = 0; i < m; i++) d += out[i * n + j] * s[c * m + i];
          assert.ok(Math.abs(d) <= 1e-6, `x${j}·u${c} = ${d}`);
        }
        let d = 0;
        for (let i = 0; i < m; i++) d += out[i * n + j] * s[j * m + i];
        assert.ok(Math.abs(d - r.diag[j]) <= 1e-6 && r.diag[j] > 0.7, `x${j}·u${j} = ${d} vs ${r.diag[j]}`);
      }
      assert.ok(Math.abs(r.diag[0] - 1) <= 1e-14, `diag[0] = ${r.diag[0]}`);
      // the columns from the stop on are U₀ as given
      for (let j = stop; j < n; j++) {
        for (let i = 0; i < m; i++) assert.equal(out[i * n + j], Math.fround(s[j * m + i]));
      }
    },
  });
}

Deno.test({
  name: `gemm64: the WebAssembly float64 kernels equal float64 JS (products, strided in-place updates, ` +
    `symmetric products)${gemm64Available() ? "" : " (skipped: WebAssembly is not available)"}`,
  ignore: !gemm64Available(),
  fn: () => {
    const js = kernels64For("js").gemm;
    const rnd = (len: number, seed: number) => Float64Array.from(matrix.randn(1, len, { seed }).data);
    for (const [m, n, k] of [[1, 1, 1], [5, 3, 7], [9, 67, 513], [130, 70, 300], [4, 2, 0]]) {
      const a = rnd(m * k, m), b = rnd(n * k, n), got = gemm64Wasm(a, b, m, n, k)!, want = js(a, b, m, n, k);
      for (let i = 0; i < m * n; i++) {
        assert.ok(Math.abs(got[i] - want[i]) <= 1e-13 * (1 + k), `${m}×${n}×${k}`);
      }
    }
    // C[:, 3…] += A·Bᵀ with row strides, and symv on the lower triangle, inside a workspace
    const ws = openWorkspace([40 * 50, 30 * 45, 40 * 60, 60 * 60, 60])!;
    try {
      const A = ws.view(0), B = ws.view(1), C = ws.view(2);
      A.set(rnd(A.length, 1));
      B.set(rnd(B.length, 2));
      C.set(rnd(C.length, 3));
      const before = C.slice();
      ws.gemm([0, 2, 50], [1, 1, 45], [2, 3, 60], 40, 30, 41, true);
      for (let i = 0; i < 40; i++) {
        for (let j = 0; j < 30; j++) {
          let v = before[i * 60 + 3 + j];
          for (let p = 0; p < 41; p++) v += A[i * 50 + 2 + p] * B[j * 45 + 1 + p];
          assert.ok(Math.abs(C[i * 60 + 3 + j] - v) <= 1e-12, `C[${i}, ${j}]`);
        }
      }
      // symv: S(r, q) = S[q·n + r] for r ≥ q (the rest is never read), v = row 7 of S, into the last array
      const n = 60, s0 = 5, S = ws.view(3), w = ws.view(4);
      S.set(rnd(S.length, 4));
      ws.symvLower(3, n, s0, 3, 7 * n, 4, 0);
      for (let r = s0; r < n; r++) {
        let v = 0;
        for (let q = s0; q < n; q++) v += S[Math.min(r, q) * n + Math.max(r, q)] * S[7 * n + q];
        assert.ok(Math.abs(w[r] - v) <= 1e-12, `w[${r}]`);
      }
    } finally {
      ws.close();
    }
  },
});

Deno.test("gemm64: the committed binaries are exactly what gemm64_wat.ts builds to", async () => {
  const committed = await Deno.readTextFile(new URL("../lib/linalg/gemm64_wasm.ts", import.meta.url));
  assert.equal(
    gemm64WasmModuleText(await buildGemm64Kernels()),
    committed,
    "run `deno run -A lib/linalg/gemm64_wat.ts` after editing gemm64_wat.ts",
  );
});

Deno.test("linalg: an unknown backend is an OptionError listing the allowed values", () => {
  assert.throws(
    () => svd(matrix.identity(2), { backend: "gpu" as LinalgBackend }),
    /backend = "gpu": must be one of native, wasm, js, auto/,
  );
});

function* permutations(n: number, m = n): Generator<number[]> {
  const used = new Array<boolean>(m).fill(false), cur: number[] = [];
  function* rec(): Generator<number[]> {
    if (cur.length === n) return yield cur.slice();
    for (let j = 0; j < m; j++) {
      if (used[j]) continue;
      used[j] = true;
      cur.push(j);
      yield* rec();
      cur.pop();
      used[j] = false;
    }
  }
  yield* rec();
}

const total = (c: Mat, col: ArrayLike<number>) =>
  Array.from(col).reduce((s, j, i) => s + c.data[i * c.cols + j], 0);

Deno.test("linearAssignment = brute force on small square and rectangular problems, min and max", () => {
  let seed = 100;
  for (const [n, m] of [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6], [3, 5], [4, 6]]) {
    for (let rep = 0; rep < 5; rep++) {
      const c = matrix.rand(n, m, { seed: seed++ });
      if (rep === 4) c.data.forEach((v, i) => (c.data[i] = Math.floor(v * 3))); // ties
      for (const maximize of [false, true]) {
        let best = maximize ? -Infinity : Infinity;
        for (const p of permutations(n, m)) {
          const v = total(c, p);
          best = maximize ? Math.max(best, v) : Math.min(best, v);
        }
        const got = linearAssignment(c, { maximize });
        assert.equal(new Set(got).size, n);
        assert.ok(Math.abs(total(c, got) - best) < 1e-5, `${n}×${m} maximize=${maximize}`);
      }
    }
  }
  assert.throws(() => linearAssignment(matrix.zeros(3, 2)), /needs rows ≤ cols/);
  assert.throws(() => linearAssignment(matrix.fromArrays([[1, NaN], [0, 1]])), NonFiniteError);
});

Deno.test("linearAssignment = munkres (Hungarian) on random 50×50 problems", () => {
  for (let seed = 0; seed < 3; seed++) {
    const c = matrix.randn(50, 50, { seed: 200 + seed });
    const ref = new Array<number>(50);
    for (const [a, b] of munkres(matrix.toArrays(c))) ref[a] = b;
    const got = linearAssignment(c);
    assert.deepEqual(Array.from(got), ref); // continuous random costs: the optimum is unique
    assert.ok(Math.abs(total(c, got) - total(c, ref)) < 1e-9);
  }
});
