import assert from "node:assert/strict";
import {
  dellaProbabilities,
  kthLargestMagnitude,
  magnitudeRangeMask,
  matrix,
  merge,
  mergeMethods,
  type ModelParams,
  OptionError,
  sparsify,
  taskVector,
  type Tensor,
  topMagnitudeMask,
} from "../lib/merging/mod.ts";

/** |a − b| ≤ tol elementwise. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 5e-5): void {
  assert.equal(actual.length, expected.length, `length ${actual.length} vs ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tol,
      `index ${i}: ${actual[i]} vs ${expected[i]} (tol ${tol})`,
    );
  }
}

const vec = (...v: number[]): Tensor => ({ shape: [v.length], data: Float64Array.from(v) });
const zeros = (n: number): Tensor => ({ shape: [n], data: new Float64Array(n) });
const models = (ts: Tensor[], params: ModelParams[]) =>
  ts.map((tensor, i) => ({ tensor, params: params[i] }));

Deno.test("example 1: magnitude tie → lower index; truncating counts (0.29·100 → 28, 0.57·100 → 56)", () => {
  assert.deepEqual(
    Array.from(sparsify(vec(.5, -2, 1, .25, -1, 3), { method: "magnitude", density: .5 }).data),
    [0, -2, 1, 0, 0, 3],
  );
  const ramp = vec(...Array.from({ length: 100 }, (_, i) => i + 1));
  for (const [d, k] of [[.29, 28], [.57, 56], [.5, 50], [.01, 1]]) {
    assert.equal(
      Array.from(sparsify(ramp, { method: "magnitude", density: d }).data).filter((v) => v !== 0).length,
      k,
      `density ${d}`,
    );
  }
  assert.equal(
    Array.from(sparsify(vec(...Array(50).fill(1)), { method: "magnitude", density: .58 }).data).filter(
      Boolean,
    ).length,
    28,
  );
  // all ties: the first k indices
  assert.deepEqual(Array.from(topMagnitudeMask(new Float64Array(8).fill(2), 3)), [1, 1, 1, 0, 0, 0, 0, 0]);
});

Deno.test("selection equals a stable full sort on random data with many ties", () => {
  for (let trial = 0; trial < 40; trial++) {
    const n = 5 + trial * 7,
      v = matrix.rand(1, n, { seed: trial, lo: -3, hi: 3 }).data.map((x) => Math.round(x * 2) / 2);
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) =>
      Math.abs(v[b]) - Math.abs(v[a]) || a - b
    );
    for (const k of [0, 1, Math.trunc(n / 3), n - 1, n]) {
      const ref = new Uint8Array(n);
      order.slice(0, k).forEach((i) => (ref[i] = 1));
      assert.deepEqual(topMagnitudeMask(v, k), ref);
    }
    const [a, b] = [Math.trunc(n / 5), Math.trunc(n / 2)];
    const ref = new Uint8Array(n);
    order.slice(a, b).forEach((i) => (ref[i] = 1));
    assert.deepEqual(magnitudeRangeMask(v, a, b), ref);
  }
});

Deno.test("density ≥ 1 is untouched; k = 0 throws (mergekit) or zeros (PEFT); bad options are named", () => {
  const t = vec(1, -2, 3);
  assert.deepEqual(Array.from(sparsify(t, { method: "magnitude", density: 1 }).data), [1, -2, 3]);
  assert.deepEqual(Array.from(sparsify(t, { method: "random", density: 1.5 }).data), [1, -2, 3]);
  assert.throws(
    () => sparsify(t, { method: "magnitude", density: .2, name: "w" }),
    (e) => e instanceof OptionError && /trunc\(0.2·3\) = 0 entries of w/.test(e.message),
  );
  assert.deepEqual(Array.from(sparsify(t, { method: "magnitude", density: .2, semantics: "peft" }).data), [
    0,
    0,
    0,
  ]);
  assert.throws(
    () => sparsify(t, { method: "della_magprune", density: .5, epsilon: .5 }),
    /0 < density − epsilon/,
  );
  assert.throws(
    () => sparsify(t, { method: "random", density: .5, mask: new Uint8Array(2) }),
    /keep mask has 2 entries, the tensor 3/,
  );
  assert.throws(() => merge({ method: "dare-ties", base: t, models: [] }), /merge_method = "dare-ties"/);
});

Deno.test("example 2: Breadcrumbs intended cut, mergekit quirk, clamp", () => {
  const d = vec(.9, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8);
  assertClose(sparsify(d, { method: "magnitude_outliers", density: .5, gamma: .1 }).data, [
    0,
    0,
    .5,
    -.7,
    0,
    0,
    0,
    .6,
    -.4,
    .8,
  ], 1e-12);
  assertClose(sparsify(d, { method: "magnitude_outliers", density: .5, gamma: .01 }).data, [
    .9,
    0,
    .5,
    -.7,
    0,
    0,
    0,
    .6,
    0,
    .8,
  ], 1e-12);
  assertClose(
    sparsify(d, { method: "magnitude_outliers", density: .5, gamma: .01, mergekitCompat: true }).data,
    Array(10).fill(0),
    0,
  );
  const clamp = sparsify(d, { method: "magnitude_outliers", density: .9, gamma: .2 }).data;
  assertClose(clamp, [0, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8], 1e-12); // all but the largest
});

Deno.test("example 3: TIES vs PEFT vs task arithmetic", () => {
  const base = zeros(4), d1 = vec(1, -2, .5, 0), d2 = vec(-.5, -1, 1, 2);
  const run = (method: string, w: number[], params = {}) =>
    Array.from(
      merge({ method, base, models: models([d1, d2], w.map((weight) => ({ weight }))), params }).data,
    );
  assertClose(run("ties", [1, 1]), [1, -1.5, .75, 2], 1e-12);
  assertClose(run("ties", [.5, .5]), [1, -1.5, .75, 2], 1e-12);
  assertClose(run("ties", [1, 3]), [-.5, -1.25, .875, 2], 1e-12);
  assertClose(run("ties", [1, 3], { consensus: "count" }), [1, -1.25, .875, 2], 1e-12);
  assertClose(run("ties", [1, 3], { semantics: "peft" }), [1, -2.5, 1.75, 6], 1e-12);
  assertClose(run("task_arithmetic", [1, 3]), [-.5, -5, 3.5, 6], 1e-12);
  assertClose(run("task_arithmetic", [1, 3], { normalize: true }), [-.125, -1.25, .875, 1.5], 1e-12);
  assertClose(run("task_arithmetic", [1, 3], { lambda: .5 }), [-.25, -2.5, 1.75, 3], 1e-12);
});

Deno.test("examples 4 and 5: TIES with density; divisor 0 → 1 and negative weights", () => {
  const base = zeros(4), d1 = vec(1, -2, .5, 0), d2 = vec(-.5, -1, 1, 2);
  const dense = merge({
    method: "ties",
    base,
    models: models([d1, d2], [{ weight: 1, density: .5 }, { weight: 1, density: .5 }]),
  });
  assertClose(dense.data, [1, -1.5, 0, 2], 1e-12);
  const opposite = merge({ method: "ties", base, models: models([d1, d1], [{ weight: 1 }, { weight: -1 }]) });
  assertClose(opposite.data, [1, -2, .5, 0], 1e-12);
  // zero weights: task arithmetic ignores the model; with normalize and Σw = 0 the divisor becomes 1
  assertClose(
    merge({ method: "task_arithmetic", base, models: models([d1, d2], [{ weight: 0 }, { weight: 1 }]) }).data,
    d2.data,
    1e-12,
  );
  assertClose(
    merge({
      method: "task_arithmetic",
      base,
      models: models([d1, d1], [{ weight: 1 }, { weight: -1 }]),
      params: { normalize: true },
    }).data,
    [0, 0, 0, 0],
    1e-12,
  );
  assert.throws(() => merge({ method: "ties", base, models: [{ tensor: d1 }] }), /models\[0\].weight/);
});

Deno.test("example 6: DARE rescale L1 vs inverse density; injected masks; seeded masks", () => {
  const d = vec(1, -2, 3, -4), mask = new Uint8Array([1, 0, 1, 0]);
  assertClose(
    sparsify(d, { method: "random", density: .5, mask, rescale: true }).data,
    [2.5, 0, 7.5, 0],
    1e-12,
  );
  assertClose(
    sparsify(d, { method: "random", density: .5, mask, rescale: true, rescaleNorm: "inverse_density" }).data,
    [2, 0, 6, 0],
    1e-12,
  );
  const big = vec(...matrix.randn(1, 20000, { seed: 3 }).data);
  const dare = (modelIndex: number) =>
    sparsify(big, { method: "random", density: .3, rescale: true, seed: 9, name: "w", modelIndex });
  const a = dare(1), b = dare(1);
  const c = dare(2);
  assert.deepEqual(a.data, b.data);
  assert.notDeepEqual(a.data, c.data);
  const kept = Array.from(a.data).filter((v) => v !== 0).length;
  assert.ok(Math.abs(kept - 6000) < 4 * Math.sqrt(20000 * .3 * .7), `kept ${kept} ~ Binomial(20000, .3)`);
  const l1 = (v: ArrayLike<number>) => Array.from(v).reduce((s, x) => s + Math.abs(x), 0);
  assertClose([l1(a.data)], [l1(big.data)], 1e-6);
  const ratios = new Set(
    Array.from(a.data).map((v, i) => (v === 0 ? 0 : +(v / big.data[i]).toFixed(9))).filter(Boolean),
  );
  assert.equal(ratios.size, 1, "every kept entry is δ·s for one s");
  // DARE through merge with injected masks: dare_linear = Σ w·rescaled
  const m = merge({
    method: "dare_linear",
    base: zeros(4),
    models: [{ tensor: d, params: { weight: 1, density: .5, mask } }, {
      tensor: d,
      params: { weight: 1, density: .5, mask },
    }],
  });
  assertClose(m.data, [5, 0, 15, 0], 1e-12);
});

Deno.test("example 7: DELLA probabilities (with ties); mean keep probability per row = d", () => {
  assertClose(dellaProbabilities(vec(.1, -.4, .3, .2), .5, .1), [.4, .6, .5333, .4667], 1e-4);
  assertClose(dellaProbabilities(vec(.5, .5, -.1, 0), .5, .1), [.6, .5333, .4667, .4], 1e-4);
  const p = dellaProbabilities({ shape: [3, 7], data: matrix.randn(3, 7, { seed: 1 }).data }, .4, .15);
  for (let r = 0; r < 3; r++) {
    assertClose([Array.from(p.subarray(r * 7, r * 7 + 7)).reduce((a, b) => a + b) / 7], [.4], 1e-12);
  }
  assert.throws(
    () => dellaProbabilities({ shape: [2, 2, 2], data: new Float64Array(8) }, .5, .1),
    /1-D or 2-D/,
  );
});

Deno.test("examples 8–11: linear, slerp, nuslerp, model_stock", () => {
  const lin = (normalize: boolean) =>
    merge({
      method: "linear",
      models: models([vec(1, 2), vec(3, 6)], [{ weight: 1 }, { weight: 3 }]),
      params: { normalize },
    }).data;
  assertClose(lin(true), [2.5, 5], 1e-12);
  assertClose(lin(false), [10, 20], 1e-12);
  assert.throws(
    () => merge({ method: "linear", models: models([vec(1), vec(2)], [{ weight: 1 }, { weight: -1 }]) }),
    /Σ weight, which is 0/,
  );
  const slerp = (a: Tensor, b: Tensor, t: number) =>
    merge({ method: "slerp", base: a, models: [{ tensor: b }], params: { t } }).data;
  assertClose(slerp(vec(1, 0), vec(0, 1), .5), [.70711, .70711], 1e-5);
  assertClose(slerp(vec(2, 0), vec(0, 1), .25), [1.84776, .38268], 1e-5);
  assertClose(slerp(vec(1, 1), vec(2, 2), .3), [1.3, 1.3], 1e-12);
  assertClose(slerp(vec(1, 1), vec(2, 2), 0), [1, 1], 1e-12);
  const nus = merge({
    method: "nuslerp",
    base: vec(1, 1),
    models: models([vec(1, 1), vec(1, 2)], [{ weight: 1 }, { weight: 3 }]),
  });
  assertClose(nus.data, [1, 1.92388], 1e-5);
  const ms = merge({
    method: "model_stock",
    base: vec(0, 0),
    models: [{ tensor: vec(1, 0) }, { tensor: vec(1, 1) }],
  });
  assertClose(ms.data, [.82843, .41421], 1e-5);
  const orth = merge({
    method: "model_stock",
    base: vec(0, 0),
    models: [{ tensor: vec(1, 0) }, { tensor: vec(0, 1) }],
  });
  assertClose(orth.data, [0, 0], 1e-12);
});

Deno.test("registry, task vectors, matrices in, embedding sub-matrix and skipped models", () => {
  assert.deepEqual(Object.keys(mergeMethods).sort(), [
    "breadcrumbs",
    "breadcrumbs_ties",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "linear",
    "magnitude_prune",
    "model_stock",
    "nuslerp",
    "slerp",
    "task_arithmetic",
    "ties",
  ]);
  const base = matrix.fromArrays([[1, 1], [1, 1]]);
  assert.deepEqual(Array.from(taskVector(matrix.fromArrays([[2, 1], [0, 1]]), base).data), [1, 0, -1, 0]);
  const out = merge({
    method: "task_arithmetic",
    base,
    models: [{ tensor: matrix.fromArrays([[2, 1], [0, 1]]), params: { weight: 1 } }],
  });
  assert.deepEqual(out.shape, [2, 2]);
  const warnings: string[] = [];
  const bigEmbed = matrix.fromArrays([[3, 3, 9], [3, 3, 9], [9, 9, 9]]);
  const emb = merge({
    method: "task_arithmetic",
    name: "model.embed_tokens.weight",
    base,
    models: [{ tensor: bigEmbed, params: { weight: 1 } }],
  });
  assertClose(emb.data, [3, 3, 3, 3], 0);
  const skipped = merge({
    method: "task_arithmetic",
    name: "layers.0.mlp.weight",
    base,
    models: [{ tensor: bigEmbed, params: { weight: 1 } }],
    onWarning: (m) => warnings.push(m),
  });
  assertClose(skipped.data, base.data, 0);
  assert.match(warnings[0], /model 0 has shape \[3,3\], the base \[2,2\]; skipped/);
});

Deno.test("paper-code variants: Breadcrumbs per row (example 12), TIES keeps trunc(d·K)+1, zero totals take the majority sign", () => {
  const d = { shape: [2, 5], data: Float64Array.from([.9, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8]) };
  const bc = sparsify(d, { method: "magnitude_outliers", density: .4, gamma: .2, semantics: "paper" });
  assertClose(bc.data, [0, 0, .5, -.7, 0, 0, 0, .6, -.4, 0], 1e-12);
  const ten = vec(...Array.from({ length: 10 }, (_, i) => (i + 1) * (i % 2 ? -1 : 1)));
  assert.equal(
    Array.from(sparsify(ten, { method: "magnitude", density: .2, semantics: "paper" }).data).filter(Boolean)
      .length,
    3,
  );
  assert.equal(
    Array.from(sparsify(ten, { method: "magnitude", density: .2 }).data).filter(Boolean).length,
    2,
  );
  // totals [+1, −1, −1, 0] → majority −1 elects − for the tie at index 3 (mergekit elects +)
  const base = zeros(4), a = vec(1, -1, -1, 2), b = vec(0, 0, 0, -2);
  const paper = merge({
    method: "ties",
    base,
    models: models([a, b], [{ weight: 1 }, { weight: 1 }]),
    params: { semantics: "paper" },
  });
  assertClose(paper.data, [1, -1, -1, -2], 1e-12);
  const mk = merge({ method: "ties", base, models: models([a, b], [{ weight: 1 }, { weight: 1 }]) });
  assertClose(mk.data, [1, -1, -1, 2], 1e-12);
});

Deno.test("selection on large vectors (sampled bucket guess, and its fallback) equals a stable full sort", () => {
  const n = 200_003, step = Math.floor(n / 4096);
  const quantised = matrix.rand(1, n, { seed: 11, lo: -4, hi: 4 }).data.map((x) => Math.round(x * 8) / 8);
  // adversarial: the sampled positions hold the large values, so the guessed buckets miss the k-th
  const skewed = Float64Array.from({ length: n }, (_, i) => (i % step === 0 ? 100 + (i % 7) : (i % 13) / 16));
  for (const v of [quantised, skewed]) {
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) =>
      Math.abs(v[b]) - Math.abs(v[a]) || a - b
    );
    for (const k of [1, 4096, Math.trunc(n * 0.3), n - 5]) {
      const ref = new Uint8Array(n);
      for (let j = 0; j < k; j++) ref[order[j]] = 1;
      assert.deepEqual(topMagnitudeMask(v, k), ref, `k = ${k}`);
      assert.equal(kthLargestMagnitude(v, k), Math.abs(v[order[k - 1]]));
    }
  }
});
