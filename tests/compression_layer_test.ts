// Compression on the one MoE layer (issue 11 item 1) and the researcher helpers of issue 12 items 16–18.
import assert from "node:assert/strict";
import {
  activeParams,
  calibrate,
  capacityRouter,
  compeft,
  compeftIdealBits,
  compressedExpertsLayer,
  compressionReport,
  deepseekV3Router,
  deltaCompress,
  dense,
  expertHidden,
  expertParams,
  lowRankProduct,
  type Mat,
  matrix,
  mergeExperts,
  type MoeLayer,
  moeLayer,
  naeeLoss,
  permuteExpert,
  pmqQuantize,
  pruneExperts,
  quantizeRTN,
  randomExperts,
  rtnLayer,
  runMoeStack,
  skipChoices,
  skipExperts,
  svdLayer,
  type SwiGLUExpert,
  swigluForward,
  topKRouter,
  whitenedSvdLayer,
} from "../lib/compression/mod.ts";
import { assertClose } from "./helpers.ts";

const sub = (a: Mat, b: Mat): Mat => ({
  rows: a.rows,
  cols: a.cols,
  data: a.data.map((v, i) => v - b.data[i]),
});
const frob2 = (m: Mat) => m.data.reduce((s, v) => s + v * v, 0);
const bias = (n: number, seed: number) => matrix.randn(1, n, { seed, std: 0.1 }).data;

/** DeepSeek-V3 routing (sigmoid, groups, scaling) with a gated shared expert. */
function deepseekLayer(): MoeLayer {
  return moeLayer({
    router: deepseekV3Router({
      weight: matrix.randn(8, 12, { seed: 1, std: 0.5 }),
      k: 2,
      nGroup: 4,
      topkGroup: 2,
      routedScalingFactor: 2.5,
    }),
    experts: randomExperts({ experts: 8, dim: 12, hidden: 10, seed: 2 }),
    shared: {
      experts: randomExperts({ experts: 1, dim: 12, hidden: 6, seed: 3 }),
      gate: matrix.randn(1, 12, { seed: 4 }),
    },
  });
}

Deno.test("compression on a DeepSeek-V3 layer with a shared expert: dense = the layer, full rank exact, merge keeps the shared expert", () => {
  const layer = deepseekLayer(), x = matrix.randn(120, 12, { seed: 5 });
  const y = layer.forward(x).output;
  assert.deepEqual(dense(layer).forward(x).output.data, y.data);
  // the parameter count: router 8·12 + 8 experts + the shared expert and its gate
  assert.equal(dense(layer).params, 8 * 12 + 8 * 3 * 12 * 10 + 3 * 12 * 6 + 12);
  const full = svdLayer(layer, { rank: 10 });
  assertClose(full.forward(x).output.data, y.data, 1e-4);
  const stats = calibrate(layer, x);
  assert.equal(stats.counts.reduce((a, b) => a + b), 240);
  // weightSum uses the gate scores before renormalisation: the sigmoid of the logits
  const sig = stats.logits.data.map((l) => 1 / (1 + Math.exp(-l)));
  const ws = new Float64Array(8);
  for (let i = 0; i < 240; i++) {
    ws[stats.routing.indices[i]] += sig[Math.floor(i / 2) * 8 + stats.routing.indices[i]];
  }
  assertClose(stats.weightSum, ws, 1e-5);
  const merged = mergeExperts(layer, stats, { numGroups: 4 });
  assert.equal(merged.layer.shared, layer.shared);
  assert.equal(merged.layer.router, layer.router);
  assert.equal(new Set(merged.layer.experts).size, 4);
  const rep = compressionReport(layer, merged, x);
  assert.equal(rep.routingAgreement, 1); // merging keeps the router
  assert.ok(rep.relativeError > 0);
});

Deno.test("pruning goes through the router's expert mask: removed experts are never chosen; unused ones change nothing", () => {
  const layer = deepseekLayer(), x = matrix.randn(60, 12, { seed: 6 });
  const p = pruneExperts(layer, x, { keep: 6 });
  const routing = p.forward(x).routing;
  for (let i = 0; i < routing.indices.length; i++) assert.ok(!p.dropped.includes(routing.indices[i]));
  assert.deepEqual(
    Array.from(p.layer.expertMask!),
    [0, 1, 2, 3, 4, 5, 6, 7].map((e) => p.dropped.includes(e) ? 0 : 1),
  );
  assert.equal(p.params, 6 * 12 + 6 * 3 * 12 * 10 + 3 * 12 * 6 + 12);
  // experts the calibration tokens never reach: masking them leaves the (renormalised) output unchanged
  const used = new Set(layer.route(x).indices);
  const unused = [0, 1, 2, 3, 4, 5, 6, 7].filter((e) => !used.has(e));
  if (unused.length) {
    const mask = Uint8Array.from({ length: 8 }, (_, e) => (unused.includes(e) ? 0 : 1));
    assertClose(
      moeLayer({ ...layer, expertMask: mask }).forward(x).output.data,
      layer.forward(x).output.data,
      1e-6,
    );
  }
  // stacks route through the layer too (mask and skipping apply)
  const stacked = runMoeStack([p.layer], x).routings[0];
  assert.ok(Array.from(stacked.indices).every((e) => !p.dropped.includes(e)));
  // a pruned layer can be pruned again (the mask accumulates)
  const again = pruneExperts(p.layer, x, { keep: 4, method: "greedy" });
  assert.equal(again.layer.expertMask!.reduce((a, b) => a + b), 4);
  assert.ok(p.dropped.every((e) => again.layer.expertMask![e] === 0));
});

Deno.test("capacity: calibration counts only the choices the experts computed", () => {
  const layer = moeLayer({
    router: capacityRouter({
      weight: matrix.randn(4, 8, { seed: 1 }),
      k: 2,
      capacityFactor: 0.5,
      policy: "probs",
    }),
    experts: randomExperts({ experts: 4, dim: 8, hidden: 8, seed: 2 }),
  });
  const x = matrix.randn(40, 8, { seed: 3 }), stats = calibrate(layer, x);
  const kept = stats.routing.keep!.reduce((a, b) => a + b, 0);
  assert.ok(kept < 80, "some choices were dropped");
  assert.equal(stats.counts.reduce((a, b) => a + b), kept);
  assert.deepEqual(stats.routedInputs.map((m) => m.rows), Array.from(stats.counts));
});

Deno.test("skipping §5: β = .5 skips (.2 < .25): weight 1 renormalised, .5 raw; β = .4 keeps", () => {
  // p = [.5, .2, .2, .1] through W = I: the second choice is expert 1 with .2
  const x = matrix.fromArrays([[0.5, 0.2, 0.2, 0.1].map(Math.log)]);
  const experts = randomExperts({ experts: 4, dim: 4, hidden: 4, seed: 1 });
  for (const [norm, w0] of [[true, 1], [false, 0.5]] as const) {
    const layer = moeLayer({
      router: topKRouter({ weight: matrix.identity(4), k: 2, normTopkProb: norm }),
      experts,
    });
    const r = skipExperts(layer, { beta: 0.5 }).forward(x).routing;
    assert.deepEqual(Array.from(r.keep!), [1, 0]);
    assertClose(r.weights[0], w0, 1e-7);
    // β = .4 sits on the boundary (.2 < .4·.5 is false in exact arithmetic; float32 scores decide it)
    assert.deepEqual(Array.from(skipExperts(layer, { beta: 0.39 }).forward(x).routing.keep!), [1, 1]);
    // the output is then the first expert alone, times its weight
    const y = skipExperts(layer, { beta: 0.5 }).forward(x).output;
    assertClose(y.data, swigluForward(experts[0], x).data.map((v) => w0 * v), 1e-6);
  }
  // the comparison is strict: with float-exact scores .5 and .25, β = .5 keeps the second choice
  const exact = {
    tokens: 1,
    experts: 2,
    k: 2,
    indices: Int32Array.of(0, 1),
    weights: Float32Array.of(0.5, 0.25),
    scores: Float32Array.of(0.5, 0.25),
    scoreFunction: "softmax" as const,
  };
  assert.deepEqual(Array.from(skipChoices(exact, { beta: 0.5 }).keep!), [1, 1]);
  assert.deepEqual(Array.from(skipChoices(exact, { beta: 0.5000001 }).keep!), [1, 0]);
  // DeepSeek-V3 renormalises (× 2.5): a skipped token's first expert gets the whole 2.5
  const ds = deepseekLayer(), xs = matrix.randn(30, 12, { seed: 2 });
  const r = skipExperts(ds, { beta: 2 }).forward(xs).routing;
  for (let t = 0; t < 30; t++) assertClose(r.weights[2 * t], 2.5, 1e-5);
  assert.throws(() => skipExperts(ds, { beta: Infinity }), /beta/);
});

Deno.test("Compressed Experts with a shared expert: n_ce = 0 is the layer forward; active parameters fall", () => {
  const layer = moeLayer({
    router: topKRouter({ weight: matrix.randn(6, 8, { seed: 1 }), k: 4 }),
    experts: randomExperts({ experts: 6, dim: 8, hidden: 8, seed: 2 }),
    shared: { experts: randomExperts({ experts: 1, dim: 8, hidden: 4, seed: 3 }) },
  });
  const x = matrix.randn(20, 8, { seed: 4 });
  assertClose(
    compressedExpertsLayer(layer, { nCe: 0 }).forward(x).output.data,
    layer.forward(x).output.data,
    1e-5,
  );
  const ce = compressedExpertsLayer(layer, { nCe: 2 }).forward(x);
  assert.ok(Array.from(ce.routing.keep!).every((v, i) => (i % 4 < 2 ? v === 1 : v === 0)));
  assert.equal(ce.routing.keep!.reduce((a, b) => a + b, 0), 40); // 2 main experts per token
  const router = 6 * 8, shared = 3 * 8 * 4, perExpert = 3 * 8 * 8;
  for (const a of ce.activeParams) assert.equal(a, router + shared + 2 * perExpert + 2 * 8 + 8);
});

Deno.test("GPT-OSS experts (clamped SwiGLU, biases): permutation, full-rank SVD, RTN and merging keep the biases", () => {
  const experts: SwiGLUExpert[] = randomExperts({ experts: 4, dim: 6, hidden: 5, seed: 1 }).map((e, i) => ({
    ...e,
    b1: bias(5, 10 + i),
    b3: bias(5, 20 + i),
    b2: bias(6, 30 + i),
  }));
  const activation = { kind: "clamped_swiglu", alpha: 1.702, limit: 7 } as const;
  const layer = moeLayer({
    router: topKRouter({ weight: matrix.randn(4, 6, { seed: 2 }), k: 2 }),
    experts,
    activation,
  });
  const x = matrix.randn(30, 6, { seed: 3 }), y = layer.forward(x).output;
  const p = permuteExpert(experts[0], [4, 2, 0, 1, 3]);
  assertClose(swigluForward(p, x, activation).data, swigluForward(experts[0], x, activation).data, 1e-6);
  assertClose(svdLayer(layer, { rank: 5 }).forward(x).output.data, y.data, 1e-5);
  assert.equal(svdLayer(layer, { rank: 5 }).params, 4 * 6 + 4 * (3 * 5 * 11 + 5 + 5 + 6));
  const q8 = rtnLayer(layer, 8, 6);
  assert.equal(q8.layer.experts[1].b2, experts[1].b2);
  assert.ok(compressionReport(layer, q8, x).relativeError < 0.01);
  assert.equal(expertParams(experts[0]), expertParams({ dim: 6, hidden: 5, bias: true }));
  // merging identical biased experts returns them
  const same = moeLayer({ ...layer, experts: [experts[0], experts[0], experts[0], experts[0]] });
  const m = mergeExperts(same, calibrate(same, x), { numGroups: 1, align: false });
  assertClose(m.layer.experts[0].b1!, experts[0].b1!, 1e-7);
  assertClose(m.forward(x).output.data, same.forward(x).output.data, 1e-5);
});

Deno.test("issue 12.16: pmqQuantize scores numBatches parts and returns the per-expert, per-bit losses", () => {
  const layer = moeLayer({
    router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
    experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
  });
  const x = matrix.randn(64, 8, { seed: 3 }), stats = calibrate(layer, x), y = layer.forward(x).output;
  const one = pmqQuantize(layer, x, stats, { budgetBits: 9, groupSize: 8 });
  const four = pmqQuantize(layer, x, stats, { budgetBits: 9, groupSize: 8, numBatches: 4 });
  assert.equal(four.losses.length, 4);
  const phi = (e: number) => stats.counts[e] / 128,
    w = (e: number) => stats.weightSum[e] / stats.weightSum.reduce((a, b) => a + b);
  for (let e = 0; e < 4; e++) {
    for (const b of [1, 2, 3]) {
      // by hand: only expert e quantised at b bits, loss over 4 parts of 16 tokens
      const q = layer.experts[e],
        qe = {
          w1: quantizeRTN(q.w1, b, 8).values,
          w2: quantizeRTN(q.w2, b, 8).values,
          w3: quantizeRTN(q.w3, b, 8).values,
        };
      const yq =
        moeLayer({ ...layer, experts: layer.experts.map((ex, i) => (i === e ? qe : ex)) }).forward(x).output;
      assertClose(four.losses[e][b - 1], naeeLoss(y, yq, 4), 1e-9);
      assertClose(one.losses[e][b - 1], naeeLoss(y, yq, 1), 1e-9);
      assertClose(four.costs[e][b - 1], phi(e) * w(e) ** 1.5 * four.losses[e][b - 1], 1e-12);
    }
    assert.ok(four.losses[e][0] > one.losses[e][0], "Σ of part norms ≥ the norm of the whole");
  }
  assert.throws(() => pmqQuantize(layer, x, stats, { budgetBits: 9, numBatches: 0 }), /numBatches/);
});

Deno.test("issue 12.17: ComPEFT ideal bits and entropy; expertParams and activeParams of configurations", () => {
  assert.equal((16 / compeftIdealBits(0.01)).toFixed(1), "176.2");
  assert.equal((16 / compeftIdealBits(0.25)).toFixed(2), "15.08");
  const c = compeft([.3, -.1, .05, -.4, .2, 0, .15, -.25], { density: .25 }); // p = 3/8
  const h = -(3 / 8) * Math.log2(3 / 8) - (5 / 8) * Math.log2(5 / 8);
  assertClose(c.entropy, h, 1e-12);
  assertClose(c.idealBits, 8 * (h + 3 / 8), 1e-12);
  assert.ok(c.bits >= c.idealBits, "the Rice code is no better than the entropy bound");
  assert.equal(expertParams({ dim: 4096, hidden: 14336 }), 176_160_768);
  const mixtral = { layers: 32, dim: 4096, hidden: 14336, k: 2 };
  assert.equal(activeParams(mixtral), 11_274_289_152);
  assert.equal(activeParams({ ...mixtral, skippedPerToken: 0.5 }), 8_455_716_864);
  assert.equal(activeParams({ ...mixtral, experts: 8 }), 11_274_289_152 + 32 * 8 * 4096);
  // OLMoE with Compressed Experts (k = 8, n_ce = 4): 4 experts + one set of CE vectors per layer
  const olmoe = { layers: 16, dim: 2048, hidden: 1024, k: 8 };
  assert.equal(activeParams({ ...olmoe, nCe: 4 }), 16 * (4 * 3 * 2048 * 1024 + 2 * 2048 + 1024));
  // DeepSeek-V3-style: a shared expert per layer
  assert.equal(activeParams({ dim: 8, hidden: 4, k: 2, shared: 1, sharedHidden: 8 }), 2 * 96 + 192);
  // the same figure as a measured layer forward
  const layer = moeLayer({
    router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
    experts: randomExperts({ experts: 4, dim: 8, hidden: 4, seed: 2 }),
  });
  const f = dense(layer).forward(matrix.randn(5, 8, { seed: 3 }));
  assert.ok(f.activeParams.every((a) => a === activeParams({ dim: 8, hidden: 4, k: 2, experts: 4 })));
  assert.throws(() => activeParams({ ...olmoe, nCe: 8 }), /nCe/);
});

Deno.test("issue 12.18: calibration keeps the routed intermediates; whitenedSvdLayer whitens W2 with them", () => {
  const layer = moeLayer({
    router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
    experts: randomExperts({ experts: 4, dim: 8, hidden: 12, seed: 2 }),
  });
  const x = matrix.randn(200, 8, { seed: 3 }), stats = calibrate(layer, x);
  for (let e = 0; e < 4; e++) {
    assert.deepEqual(stats.intermediates[e].data, expertHidden(layer.experts[e], stats.routedInputs[e]).data);
  }
  const wh = whitenedSvdLayer(layer, stats, { rank: 3 }), plain = svdLayer(layer, { rank: 3 });
  for (let e = 0; e < 4; e++) {
    const h = stats.intermediates[e], xe = stats.routedInputs[e], f = wh.factors[e], ex = layer.experts[e];
    // the whitening identity on what each matrix sees: ‖(W − AB)Xᵀ‖² = Σ_{i>r} σ_i(WS)²
    const out2 = frob2(matrix.matmulT(h, sub(ex.w2, lowRankProduct(f.w2))));
    assertClose(out2, f.w2.tailEnergy, 1e-3 * f.w2.tailEnergy + 1e-6);
    const out1 = frob2(matrix.matmulT(xe, sub(ex.w1, lowRankProduct(f.w1))));
    assertClose(out1, f.w1.tailEnergy, 1e-3 * f.w1.tailEnergy + 1e-6);
    // and on those inputs it beats the plain SVD
    const plain2 = frob2(matrix.matmulT(h, sub(ex.w2, lowRankProduct(plain.factors[e].w2))));
    assert.ok(out2 <= plain2 * (1 + 1e-6), `expert ${e}: whitened ${out2} ≤ plain ${plain2}`);
  }
  assert.ok(compressionReport(layer, wh, x).relativeError < compressionReport(layer, plain, x).relativeError);
});

Deno.test("issue 12.18: deltaCompress whitened (each delta on its own inputs) and randomized", () => {
  // experts = a shared part + rank-2 differences, so rank-2 deltas are exact
  const d = 8, f = 10, base = randomExperts({ experts: 1, dim: d, hidden: f, seed: 1 })[0];
  const experts = [0, 1, 2, 3].map((e) => {
    const vary = (w: Mat, s: number) => {
      const lr = matrix.matmul(
        matrix.randn(w.rows, 2, { seed: s, std: 0.2 }),
        matrix.randn(2, w.cols, { seed: s + 1, std: 0.2 }),
      );
      return { rows: w.rows, cols: w.cols, data: w.data.map((v, i) => v + lr.data[i]) };
    };
    return { w1: vary(base.w1, 10 * e), w2: vary(base.w2, 10 * e + 3), w3: vary(base.w3, 10 * e + 6) };
  });
  const layer = moeLayer({ router: topKRouter({ weight: matrix.randn(4, d, { seed: 2 }), k: 2 }), experts });
  const x = matrix.randn(200, d, { seed: 3 }), stats = calibrate(layer, x);
  const mean = { base: "mean" } as const;
  assert.ok(
    deltaCompress(layer, stats, { ...mean, rank: 8, randomized: true, seed: 4 }).maxWeightError < 1e-4,
  );
  // rank 1: the whitened delta's error on each expert's own inputs is ≤ the plain delta's
  const wh = deltaCompress(layer, stats, { ...mean, rank: 1, whitened: true });
  const pl = deltaCompress(layer, stats, { ...mean, rank: 1 });
  assert.match(wh.method, /whitened/);
  for (let e = 0; e < 4; e++) {
    for (const [key, inp] of [["w1", stats.routedInputs[e]], ["w2", stats.intermediates[e]]] as const) {
      const err = (c: typeof wh) => frob2(matrix.matmulT(inp, sub(experts[e][key], c.layer.experts[e][key])));
      assert.ok(err(wh) <= err(pl) * (1 + 1e-5), `expert ${e} ${key}: ${err(wh)} ≤ ${err(pl)}`);
    }
  }
  assert.throws(
    () => deltaCompress(layer, undefined, { rank: 1, whitened: true }),
    /whitened.*calibration stats/,
  );
  assert.throws(() => deltaCompress(layer, stats, { rank: 1, whitened: true, sharedV: true }), /sharedV/);
  // plain SVD of a delta is what deltaCompress used before (unchanged default)
  const dl = sub(experts[0].w1, deltaCompress(layer, stats, { ...mean, rank: 8 }).layer.experts[0].w1);
  assert.ok(Math.sqrt(frob2(dl)) < 1e-5);
});
