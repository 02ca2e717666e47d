import assert from "node:assert/strict";
import {
  crossLayerMetrics,
  gruCell,
  matrix,
  MoekitError,
  OptionError,
  preGatedNextLayerRouter,
  preGateRouter,
  randomExperts,
  recurrentRouter,
  runRoutedStack,
  ShapeError,
  topKRouter,
} from "../mod.ts";
import { assertClose } from "./helpers.ts";

const ones = (rows: number, cols: number) => matrix.full(rows, cols, 1);

function scalarGru(over: { wiz?: number; bhn?: number; biz?: number } = {}, cell: "gru" | "rnn" = "gru") {
  const g = cell === "gru" ? 3 : 1;
  const weightIh = ones(g, 1), biasIh = new Float32Array(g), biasHh = new Float32Array(g);
  if (over.wiz !== undefined) weightIh.data[1] = over.wiz;
  if (over.biz !== undefined) biasIh[1] = over.biz;
  if (over.bhn !== undefined) biasHh[g - 1] = over.bhn;
  return gruCell({ cell, weights: { weightIh, weightHh: ones(g, 1), biasIh, biasHh } });
}

Deno.test("GRU cell: hand values (docs/routing.md), the RNN variant and z = 1 keeping h", () => {
  const x = matrix.full(1, 1, 1), h = matrix.full(1, 1, 0.5);
  assertClose(scalarGru().step(x, h).data, [0.570642], 1e-6);
  assertClose(scalarGru({ wiz: -1, bhn: 0.5 }).step(x, h).data, [0.779233], 1e-6);
  assertClose(scalarGru({}, "rnn").step(x, h).data, [0.905148], 1e-6);
  // z saturated at 1: h' = h whatever n is
  assertClose(scalarGru({ biz: 60 }).step(x, matrix.full(1, 1, -0.3)).data, [-0.3], 1e-6);
});

Deno.test("GRU cell equals a scalar reference on random weights (b_hn inside r ⊙ (…))", () => {
  const cell = gruCell({ inputSize: 5, hiddenSize: 3, seed: 4 });
  const x = matrix.randn(4, 5, { seed: 1 }), h = matrix.randn(4, 3, { seed: 2 });
  const out = cell.step(x, h), w = cell.weights, r = 3;
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  for (let t = 0; t < 4; t++) {
    const dot = (m: typeof x, row: number, v: Float32Array) =>
      v.reduce((s, vi, j) => s + m.data[row * m.cols + j] * vi, 0);
    const xv = matrix.row(x, t), hv = matrix.row(h, t);
    for (let i = 0; i < r; i++) {
      const rr = sig(dot(w.weightIh, i, xv) + w.biasIh[i] + dot(w.weightHh, i, hv) + w.biasHh[i]);
      const z = sig(
        dot(w.weightIh, r + i, xv) + w.biasIh[r + i] + dot(w.weightHh, r + i, hv) + w.biasHh[r + i],
      );
      const n = Math.tanh(
        dot(w.weightIh, 2 * r + i, xv) + w.biasIh[2 * r + i] +
          rr * (dot(w.weightHh, 2 * r + i, hv) + w.biasHh[2 * r + i]),
      );
      assertClose(out.data[t * r + i], (1 - z) * n + z * hv[i], 1e-6);
    }
  }
  // PyTorch default init range U(−1/√r, 1/√r), deterministic per seed
  const bound = 1 / Math.sqrt(3);
  for (const a of [w.weightIh.data, w.weightHh.data, w.biasIh, w.biasHh]) {
    assert.ok(a.every((v) => Math.abs(v) <= bound));
  }
  assert.deepEqual(gruCell({ inputSize: 5, hiddenSize: 3, seed: 4 }).weights, w);
  assert.throws(
    () => cell.step(matrix.zeros(2, 4), matrix.zeros(2, 3)),
    /cell input x: expected shape \[\*,5\]/,
  );
  assert.throws(
    () => gruCell({ weights: { ...w, biasHh: new Float32Array(2) } }),
    (e) => e instanceof ShapeError && /bias_hh/.test(e.message),
  );
});

Deno.test("RMoE routeStack equals layer-by-layer manual composition", () => {
  const L = 3, d = 12, E = 6, r = 5, k = 2;
  const rmoe = recurrentRouter({ layers: L, dim: d, experts: E, hiddenSize: r, k, seed: 9 });
  const xs = Array.from({ length: L }, (_, l) => matrix.randn(20, d, { seed: 30 + l }));
  const { routings, states } = rmoe.routeStack(xs, { returnLogits: true });
  let h = matrix.zeros(20, r);
  for (let l = 0; l < L; l++) {
    h = rmoe.cell.step(matrix.matmulT(xs[l], rmoe.projections[l]), h);
    assertClose(states[l].data, h.data, 1e-6);
    const logits = matrix.matmulT(h, rmoe.heads[l]);
    const ref = topKRouter({ weight: matrix.identity(E), k }).route(logits);
    assert.deepEqual(routings[l].indices, ref.indices);
    assertClose(routings[l].weights, ref.weights, 1e-6);
    assertClose(routings[l].logits!.data, logits.data, 1e-6);
  }
  // the state matters: layer 1 routed with a zero state differs from the carried one
  const fresh = rmoe.routeLayer(1, xs[1]);
  assert.notDeepEqual(fresh.state.data, states[1].data);
});

Deno.test("RMoE drives a dependent stack (layer l+1 input depends on layer l output); RNN cell variant", () => {
  const L = 3, d = 8, E = 4;
  const experts = Array.from(
    { length: L },
    (_, l) => randomExperts({ experts: E, dim: d, hidden: 8, seed: l }),
  );
  for (const cellKind of ["gru", "rnn"] as const) {
    const rmoe = recurrentRouter({ layers: L, dim: d, experts: E, hiddenSize: 6, k: 2, seed: 1, cellKind });
    assert.equal(rmoe.cell.kind, cellKind);
    let h: ReturnType<typeof matrix.zeros> | undefined;
    const run = runRoutedStack(experts, matrix.randn(10, d, { seed: 5 }), (l, x) => {
      const s = rmoe.routeLayer(l, x, h);
      h = s.state;
      return s.routing;
    });
    // the same inputs through routeStack give the same routings
    const again = rmoe.routeStack(run.inputs);
    run.routings.forEach((r, l) => assert.deepEqual(r.indices, again.routings[l].indices));
  }
});

Deno.test("RMoE bad input: layer counts and shapes are named", () => {
  const p = [matrix.zeros(4, 8), matrix.zeros(4, 8)], hds = [matrix.zeros(3, 4)];
  assert.throws(() => recurrentRouter({ projections: p, heads: hds }), /2 projections but 1 heads/);
  assert.throws(
    () => recurrentRouter({ projections: p, heads: [matrix.zeros(3, 4), matrix.zeros(3, 5)] }),
    /W_out\[1\]: expected shape \[3,4\], got \[3,5\]/,
  );
  const ok = recurrentRouter({ projections: p, heads: [matrix.zeros(3, 4), matrix.zeros(3, 4)] });
  assert.throws(
    () => ok.routeStack([matrix.zeros(2, 8)]),
    (e) => e instanceof MoekitError && /1 layer inputs for a 2-layer/.test(e.message),
  );
  assert.throws(() => ok.routeLayer(2, matrix.zeros(2, 8)), OptionError);
  assert.throws(() => ok.routeLayer(0, matrix.zeros(2, 7)), /hidden states X: expected shape \[\*,8\]/);
  assert.throws(
    () =>
      recurrentRouter({
        projections: p,
        heads: [matrix.zeros(3, 4), matrix.zeros(3, 4)],
        cell: gruCell({ inputSize: 4, hiddenSize: 5 }),
      }),
    /recurrent cell/,
  );
});

Deno.test("pre-router: RMSNorm features, Read-ME shared top-1 head, per-layer heads", () => {
  const bare = preGateRouter({
    blocks: [],
    outNorm: new Float32Array([1, 1]),
    heads: [matrix.identity(2)],
    layers: 4,
  });
  assertClose(bare.features(matrix.fromArrays([[3, 4]])).data, [
    3 / Math.sqrt(12.5 + 1e-6),
    4 / Math.sqrt(12.5 + 1e-6),
  ], 1e-6);
  // one block with a hand-checkable update: W1 = I, b1 = 0, W2 = I, b2 = 1 → y + silu(norm(y)) + 1
  const I2 = matrix.identity(2), one = new Float32Array([1, 1]);
  const blk = preGateRouter({
    blocks: [{ norm: one, w1: I2, b1: new Float32Array(2), w2: I2, b2: one }],
    outNorm: one,
    heads: [I2],
    eps: 0,
  });
  const n = [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)], silu = (v: number) => v / (1 + Math.exp(-v));
  const y = [3 + silu(n[0]) + 1, 4 + silu(n[1]) + 1], rms = Math.sqrt((y[0] ** 2 + y[1] ** 2) / 2);
  assertClose(blk.features(matrix.fromArrays([[3, 4]])).data, [y[0] / rms, y[1] / rms], 1e-6);
  // Read-ME: one shared head, k = 1 → the same expert in every layer, weight 1
  const readme = preGateRouter({ layers: 6, dim: 16, experts: 7, sharedHead: true, k: 1, seed: 2 });
  const x0 = matrix.randn(40, 16, { seed: 3 });
  const rs = readme.routeLayers(x0);
  assert.equal(rs.length, 6);
  for (const r of rs) {
    assert.deepEqual(r.indices, rs[0].indices);
    assert.ok(r.weights.every((w) => w === 1));
  }
  const perLayer = preGateRouter({ layers: 3, dim: 16, experts: 7, k: 2, seed: 2 }).routeLayers(x0);
  assert.notDeepEqual(perLayer[0].indices, perLayer[1].indices);
  assert.throws(() => readme.routeLayers(matrix.zeros(2, 15)), /token embeddings/);
  assert.throws(
    () => preGateRouter({ blocks: [], outNorm: one, heads: [I2, I2], layers: 3 }),
    /2 heads for layers = 3/,
  );
});

Deno.test("Pre-gated MoE: layer l ≥ 1 is routed from layer l−1's input with W_pre[l−1]", () => {
  const E = 5, d = 8;
  const gate0 = matrix.randn(E, d, { seed: 1 }),
    pre = [matrix.randn(E, d, { seed: 2 }), matrix.randn(E, d, { seed: 3 })];
  const pg = preGatedNextLayerRouter({ gate0, pre, k: 2 });
  const xs = [0, 1, 2].map((l) => matrix.randn(12, d, { seed: 20 + l }));
  const rs = pg.routeLayers(xs);
  assert.deepEqual(rs[0].indices, topKRouter({ weight: gate0, k: 2 }).route(xs[0]).indices);
  assert.deepEqual(rs[1].indices, topKRouter({ weight: pre[0], k: 2 }).route(xs[0]).indices);
  assert.deepEqual(rs[2].indices, topKRouter({ weight: pre[1], k: 2 }).route(xs[1]).indices);
  assert.equal(pg.routeLayers(xs.slice(0, 2)).length, 3, "the last layer's input is not needed");
  assert.throws(() => pg.routeLayers(xs.slice(0, 1)), /1 layer inputs for 3 layers/);
  assert.throws(
    () => preGatedNextLayerRouter({ gate0, pre: [matrix.zeros(E, d + 1)] }),
    /W_pre\[0\]: expected shape \[5,8\]/,
  );
});

Deno.test("crossLayerMetrics: identical layers, hand case, and MI bounds", () => {
  const r = topKRouter({ weight: matrix.identity(2), k: 1 });
  const a = r.route(matrix.fromArrays([[1, 0], [0, 1], [1, 0], [0, 1]]));
  const b = r.route(matrix.fromArrays([[1, 0], [1, 0], [0, 1], [0, 1]]));
  const same = crossLayerMetrics([a, a]);
  assert.equal(same.sameSet[0], 1);
  assertClose(same.mutualInformation[0], Math.log(2), 1e-12);
  assertClose(same.normalizedMutualInformation[0], 1, 1e-12);
  const indep = crossLayerMetrics([a, b]); // every pair of experts equally often: MI 0
  assert.equal(indep.sameSet[0], 0.5);
  assertClose(indep.mutualInformation[0], 0, 1e-12);
  assertClose(indep.selectionEntropy, [1, 1], 1e-12);
});
