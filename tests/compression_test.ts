import assert from "node:assert/strict";
import {
  alignPermutation,
  allocateBits,
  calibrate,
  calibrateSkip,
  compeft,
  compeftDecode,
  compeftEncode,
  compressedExpertsLayer,
  compressionReport,
  deltaCompress,
  groupExperts,
  losparseCompress,
  lowRankProduct,
  type Mat,
  matrix,
  mergeExperts,
  type MoeLayer,
  moeLayer,
  permuteExpert,
  pruneExperts,
  quantizeRTN,
  randomExperts,
  randomizedSvd,
  rankForRatio,
  type RouteOptions,
  skipExperts,
  svdCompress,
  type SwiGLUExpert,
  swigluForward,
  topKRouter,
  whitenedSvdCompress,
} from "../lib/compression/mod.ts";
import { assertClose } from "./helpers.ts";

/** A softmax top-k MoE layer over router weight `gate`. */
const layerOf = (gate: Mat, experts: readonly SwiGLUExpert[], k: number, normTopkProb = true): MoeLayer =>
  moeLayer({ router: topKRouter({ weight: gate, k, normTopkProb }), experts });

const mkLayer = (E = 6, d = 8, f = 12, k = 2, seed = 1): MoeLayer =>
  layerOf(
    matrix.randn(E, d, { seed, std: 0.7 }),
    randomExperts({ experts: E, dim: d, hidden: f, seed: seed + 100 }),
    k,
  );

/** Route options removing `dropped` of E experts. */
const without = (E: number, dropped: number[]): RouteOptions => {
  const expertMask = new Uint8Array(E).fill(1);
  for (const e of dropped) expertMask[e] = 0;
  return { expertMask } as RouteOptions;
};

function frob2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

Deno.test("L1 Eckart–Young for every rank; full rank exact; §3 example; rank for ratio", () => {
  const w = matrix.randn(9, 6, { seed: 1 });
  const full = svdCompress(w, { rank: 6 });
  const sv = full.singularValues;
  for (let r = 0; r <= 6; r++) {
    const lr = svdCompress(w, { rank: r });
    const tail = Array.from(sv).slice(r).reduce((s, v) => s + v * v, 0);
    assertClose(frob2(lowRankProduct(lr).data, w.data), tail, 1e-4);
    assertClose(lr.tailEnergy, tail, 1e-9);
    assert.equal(lr.params, r * 15);
  }
  const ex = svdCompress(matrix.fromArrays([[3, 0], [4, 5]]), { rank: 1 });
  assertClose(ex.singularValues, [6.70820, 2.23607], 1e-5);
  assertClose(ex.tailEnergy, 5, 1e-9);
  assert.equal(rankForRatio(14336, 4096, .5), 1592);
  assert.equal(rankForRatio(14336, 4096, .5, "ceil"), 1593);
  assert.throws(() => svdCompress(w, { rank: 7 }), /rank = 7: must be an integer in 0..min\(m, n\) = 6/);
});

Deno.test("L2 whitening identity, §3 example, whitened ≤ plain on the same X, jitter retry", () => {
  const ex = whitenedSvdCompress(
    matrix.fromArrays([[3, 0], [4, 5]]),
    matrix.fromArrays([[1, 0], [0, 2], [1, 1]]),
    { rank: 1 },
  );
  assertClose(ex.singularValues, [14.32229, 3.14195], 1e-5);
  assertClose(ex.tailEnergy, 9.87188, 1e-5);
  const w = matrix.randn(7, 10, { seed: 2 }), x = matrix.randn(40, 10, { seed: 3 });
  for (const r of [1, 3, 6]) {
    const wh = whitenedSvdCompress(w, x, { rank: r }), plain = svdCompress(w, { rank: r });
    const err = (lr: typeof wh) => {
      const d = matrix.clone(w);
      lowRankProduct(lr).data.forEach((v, i) => (d.data[i] -= v));
      return matrix.frobenius(matrix.matmulT(d, x)) ** 2;
    };
    assertClose(err(wh), wh.tailEnergy, 1e-3 * wh.tailEnergy + 1e-6);
    assert.ok(err(wh) <= err(plain) * (1 + 1e-6), `rank ${r}: whitened ${err(wh)} ≤ plain ${err(plain)}`);
    assert.equal(wh.epsilon, 0);
  }
  const few = whitenedSvdCompress(w, matrix.randn(4, 10, { seed: 4 }), { rank: 2 }); // T < n: singular gram
  assert.ok(few.epsilon! > 0, "retried with jitter");
  assert.throws(() => whitenedSvdCompress(w, matrix.zeros(0, 10), { rank: 2 }), /calibration set is empty/);
});

Deno.test("L2 at sizes that take the truncated Gram-eigen SVD: every backend gives the identity and the same error", async () => {
  const { nativeInfo } = await import("../lib/linalg/mod.ts");
  const backends = ["js", "wasm", ...(nativeInfo().available ? ["native" as const] : [])] as const;
  // n = 256 columns: the whitened W·S and the plain W both go through svdTop's Gram path
  const w = matrix.randn(300, 256, { seed: 31, std: 0.1 }), x = matrix.randn(400, 256, { seed: 32 });
  const ref = whitenedSvdCompress(w, x, { rank: 16, backend: "js" });
  for (const backend of backends) {
    const wh = whitenedSvdCompress(w, x, { rank: 16, backend });
    const d = matrix.clone(w);
    lowRankProduct(wh).data.forEach((v, i) => (d.data[i] -= v));
    const err = matrix.frobenius(matrix.matmulT(d, x)) ** 2;
    assert.ok(Math.abs(err - wh.tailEnergy) <= 1e-3 * wh.tailEnergy, `${backend}: ‖(W − AB)Xᵀ‖² = tail`);
    assertClose(wh.relativeError, ref.relativeError, 1e-5);
    assert.equal(wh.singularValues.length, 256);
    const plain = svdCompress(w, { rank: 16, backend }),
      plainRef = svdCompress(w, { rank: 16, backend: "js" });
    assertClose(plain.relativeError, plainRef.relativeError, 1e-5);
  }
});

Deno.test("randomized SVD: exact on low-rank matrices, close to dense on noisy ones", () => {
  const lowRankW = matrix.matmul(matrix.randn(80, 6, { seed: 1 }), matrix.randn(6, 50, { seed: 2 }));
  const r = randomizedSvd(lowRankW, 6, { seed: 3 });
  assert.ok(Math.sqrt(frob2(lowRankProduct(r).data, lowRankW.data)) / matrix.frobenius(lowRankW) < 1e-5);
  const noisy = matrix.randn(120, 60, { seed: 5 });
  const dense = svdCompress(noisy, { rank: 10 }), rnd = randomizedSvd(noisy, 10, { powerIterations: 3 });
  const e = (lr: typeof dense) => Math.sqrt(frob2(lowRankProduct(lr).data, noisy.data));
  assert.ok(e(rnd) <= e(dense) * 1.05, `${e(rnd)} vs dense ${e(dense)}`);
});

Deno.test("P1/P2 permutation invariance and exact recovery by alignment; M1/M2 merging", () => {
  const [e] = randomExperts({ experts: 1, dim: 6, hidden: 9, seed: 7 }), x = matrix.randn(5, 6);
  const perm = [4, 0, 8, 2, 6, 1, 3, 7, 5];
  const p = permuteExpert(e, perm);
  assertClose(swigluForward(p, x).data, swigluForward(e, x).data, 1e-6);
  const back = permuteExpert(p, alignPermutation(e, p));
  assert.deepEqual(back, e, "bit-exact recovery");
  // M1: merging identical experts, and an expert with its permuted copy (aligned), returns it
  const layer = layerOf(matrix.randn(3, 6, { seed: 1 }), [e, p, e], 1);
  // expert 0 (the original) is the dominant: the permuted copy is aligned back to it
  const stats = {
    ...calibrate(layer, matrix.randn(60, 6, { seed: 2 })),
    freq: new Float64Array([.5, .2, .3]),
  };
  const merged = mergeExperts(layer, stats, { numGroups: 1 });
  for (const key of ["w1", "w2", "w3"] as const) {
    assertClose(merged.layer.experts[0][key].data, e[key].data, 1e-6);
  }
  // M2: one-hot weights return that member
  const sim = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  const two = mergeExperts(mkLayer(3, 6, 9), { ...stats, freq: new Float64Array([1, 0, 0]) }, {
    numGroups: 1,
    similarity: sim,
    align: false,
  });
  const src = mkLayer(3, 6, 9);
  assertClose(two.layer.experts[0].w1.data, src.experts[0].w1.data, 1e-7);
});

Deno.test("§4 grouping example; the router keeps its slots", () => {
  const sim = [[1, .2, .6, .9], [.2, 1, .8, .3], [.6, .8, 1, .5], [.9, .3, .5, 1]];
  assert.deepEqual(groupExperts([.4, .1, .3, .2], sim, 2), { dominants: [0, 2], labels: [0, 1, 1, 0] });
  const layer = mkLayer(4, 8, 8);
  const m = mergeExperts(layer, {
    ...calibrate(layer, matrix.randn(50, 8)),
    freq: new Float64Array([.4, .1, .3, .2]),
  }, { numGroups: 2, similarity: sim });
  assertClose(m.groupWeights.flat(), [2 / 3, 1 / 3, .25, .75], 1e-12);
  assert.equal(m.layer.router, layer.router);
  assert.equal(m.layer.experts[0], m.layer.experts[3]);
  assert.equal(m.layer.experts[1], m.layer.experts[2]);
});

Deno.test("R1 pruning never-used experts (renormalised: unchanged; raw: ×1/(1−Σp)); R2 enumeration ≤ count baseline", () => {
  const gate = matrix.randn(5, 8, { seed: 3, std: 0.7 });
  // make expert 4 never selected: a hugely negative router row
  for (let j = 0; j < 8; j++) gate.data[4 * 8 + j] = 0;
  gate.data[4 * 8] = -50;
  const layer = layerOf(gate, randomExperts({ experts: 5, dim: 8, hidden: 8, seed: 103 }), 2);
  const x = matrix.randn(80, 8, { seed: 9 });
  for (let t = 0; t < 80; t++) x.data[t * 8] = Math.abs(x.data[t * 8]) + 1;
  const y = layer.forward(x).output, yPruned = layer.forward(x, without(5, [4])).output;
  assertClose(yPruned.data, y.data, 1e-6);
  const p = pruneExperts(layer, x, { keep: 3, numBatches: 4 });
  const stats = calibrate(layer, x);
  const count = pruneExperts(layer, x, { keep: 3, method: "count", stats, numBatches: 4 });
  assert.ok(p.loss <= count.loss + 1e-9, `${p.loss} ≤ ${count.loss}`);
  assert.equal(Object.keys(p.losses!).length, 10);
  assert.equal(p.loss, Math.min(...Object.values(p.losses!)));
  const greedy = pruneExperts(layer, x, { keep: 3, method: "greedy" });
  assert.equal(greedy.dropped.length, 2);
  // raw weights: dropping expert with prob p scales by 1/(1 − p) (example p = [.5,.3,.2], k = 2, drop 2)
  const raw = layerOf(
    matrix.fromArrays([[Math.log(.5)], [Math.log(.3)], [Math.log(.2)]]),
    randomExperts({ experts: 3, dim: 1, hidden: 2, seed: 4 }),
    2,
    false,
  );
  const r = raw.forward(matrix.full(1, 1, 1), without(3, [2])).routing;
  assertClose(r.weights, [.625, .375], 1e-7);
  assert.throws(() => pruneExperts(layer, x, { keep: 1 }), /keep = 1/);
  assert.throws(() => pruneExperts(layer, matrix.zeros(0, 8), { keep: 3 }), /calibration set is empty/);
});

Deno.test("R3 skipping: β = 0 changes nothing, β > 1 keeps top-1 only, #skipped = #{ratio < β}", () => {
  const layer = mkLayer(6, 8, 8, 2, 5), x = matrix.randn(100, 8, { seed: 6 });
  const base = layer.forward(x);
  assertClose(skipExperts(layer, { beta: 0 }).forward(x).output.data, base.output.data, 1e-7);
  const all = skipExperts(layer, { beta: 1.01 }).forward(x).routing;
  assert.ok(Array.from(all.keep!).every((kept, i) => (i % 2 === 1 ? kept === 0 : kept === 1)));
  const beta = calibrateSkip(layer, x);
  const skipped = Array.from(skipExperts(layer, { beta }).forward(x).routing.keep!)
    .filter((kept, i) => i % 2 === 1 && kept === 0).length;
  const ratios = Array.from(
    { length: 100 },
    (_, t) => base.routing.scores[2 * t + 1] / base.routing.scores[2 * t],
  );
  assert.equal(skipped, ratios.filter((q) => q < beta).length);
  assert.ok(Math.abs(skipped - 50) <= 1, "the median skips half");
  assert.throws(() => skipExperts(mkLayer(6, 8, 8, 3, 5), { beta: .5 }), /top-2/);
});

Deno.test("D1 base + delta: full rank exact, identical experts zero, non-increasing error in rank, shared V", () => {
  const layer = mkLayer(4, 8, 6), x = matrix.randn(60, 8);
  const stats = calibrate(layer, x);
  assert.ok(deltaCompress(layer, stats, { rank: 6 }).maxWeightError < 1e-5);
  const same = moeLayer({ ...layer, experts: Array(4).fill(layer.experts[0]) });
  assert.ok(deltaCompress(same, stats, { rank: 0 }).maxWeightError < 1e-6);
  let prev = Infinity;
  for (const r of [0, 1, 2, 4, 6]) {
    const e = compressionReport(layer, deltaCompress(layer, stats, { rank: r }), x).relativeError;
    assert.ok(e <= prev + 1e-6, `rank ${r}: ${e} ≤ ${prev}`);
    prev = e;
  }
  assert.ok(deltaCompress(layer, stats, { rank: 8, sharedV: true }).maxWeightError < 1e-5);
});

Deno.test("Q1 RTN: §7 table, level counts, error bound, all-zero group, bytes", () => {
  const w = matrix.fromArrays([[-1, -.25, .5, 2]]);
  assertClose(quantizeRTN(w, 1, 4).values.data, [-.9375, -.9375, .9375, .9375], 1e-7);
  assertClose(quantizeRTN(w, 2, 4).values.data, [-1, 0, 0, 2], 1e-7);
  assertClose(quantizeRTN(w, 3, 4).values.data, [-.857143, -.428571, .428571, 2.142857], 1e-6);
  assertClose(quantizeRTN(w, 4, 4).values.data, [-1, -.2, .4, 2], 1e-6);
  assertClose(quantizeRTN(matrix.zeros(1, 4), 3, 4).values.data, [0, 0, 0, 0], 0);
  const big = matrix.randn(4, 256, { seed: 1 });
  for (const b of [2, 3, 4, 8]) {
    const q = quantizeRTN(big, b, 128);
    for (let i = 0; i < 4; i++) {
      for (let g = 0; g < 2; g++) {
        const vals = new Set(Array.from(q.values.data.subarray(i * 256 + g * 128, i * 256 + g * 128 + 128)));
        assert.ok(vals.size <= 2 ** b);
        const s = q.scale[i * 2 + g];
        for (let j = 0; j < 128; j++) {
          assert.ok(
            Math.abs(big.data[i * 256 + g * 128 + j] - q.values.data[i * 256 + g * 128 + j]) <= s / 2 + 1e-6,
          );
        }
      }
    }
  }
  assert.equal(quantizeRTN(big, 4, 128).bytes, 544);
  assert.equal(quantizeRTN(big, 3, 128).bytes, 416);
  assert.equal(quantizeRTN(big, 1, 128).bytes, 144);
  assert.throws(() => quantizeRTN(big, 9), /bits = 9: RTN supports 1 to 8 bits/);
  assert.throws(() => quantizeRTN(big, 0), /bits = 0/);
});

Deno.test("Q2 bit allocation: §7 example, DP = brute force with the lexicographic tie rule, infeasible throws", () => {
  const cost = [[5, 2, 1], [4, 3, 2], [1, .5, .4]];
  assert.deepEqual(allocateBits(cost, 6).bits, [2, 3, 1]);
  assert.deepEqual(allocateBits(cost, 7).bits, [2, 3, 2]);
  assert.throws(() => allocateBits(cost, 5), /no assignment/);
  for (let trial = 0; trial < 30; trial++) {
    const E = 4,
      c = Array.from(
        { length: E },
        (_, e) => [0, 1, 2].map((b) => Math.round(((trial * 7 + e * 3 + b * 5) % 11) / 2) / 2),
      );
    const budget = 7 + (trial % 4);
    let best = Infinity, bestBits: number[] = [];
    for (let v = 0; v < 3 ** E; v++) {
      const bits = Array.from({ length: E }, (_, e) => 1 + Math.floor(v / 3 ** (E - 1 - e)) % 3);
      if (bits.reduce((a, b) => a + b) > budget || !bits.includes(3) || !bits.includes(2)) continue;
      const obj = bits.reduce((s, b, e) => s + c[e][b - 1], 0);
      if (obj < best - 1e-12) {
        best = obj;
        bestBits = bits;
      }
    }
    assert.deepEqual(allocateBits(c, budget).bits, bestBits, JSON.stringify({ c, budget }));
  }
  // an unused expert (cost 0) takes the lowest bits, unless it is the cheapest way to meet a requirement
  assert.deepEqual(allocateBits([[0, 0, 0], [3, 2, 1]], 9, []).bits, [1, 3]);
  assert.deepEqual(allocateBits([[0, 0, 0], [3, 2, 1], [3, 2, 1]], 9).bits, [2, 3, 3]);
});

Deno.test("C1 ComPEFT: §8 example, three values, ρ = 1, byte accounting", () => {
  const tau = [.3, -.1, .05, -.4, .2, 0, .15, -.25];
  const c = compeft(tau, { density: .25 });
  assert.deepEqual(Array.from(c.positions), [0, 3, 7]);
  assertClose(c.values, [.235186, 0, 0, -.235186, 0, 0, 0, -.235186], 1e-6);
  assert.equal(c.bits, 11);
  assert.equal(c.bytes, 14);
  // d = 64 with non-zeros at [3, 20, 21, 40, 63] (ρ = 4/64 keeps the 4 + 1 of them): Rice k = 3, 31 bits
  const sparse = new Float64Array(64);
  [3, 20, 21, 40, 63].forEach((p, i) => (sparse[p] = i % 2 ? -(i + 1) : i + 1));
  const c64 = compeft(sparse, { density: 4 / 64 });
  assert.deepEqual(Array.from(c64.positions), [3, 20, 21, 40, 63]);
  assert.equal(c64.bits, 31);
  assert.ok(new Set(Array.from(c.values)).size <= 3);
  const all = compeft(tau, { density: 1, alpha: 2 });
  assertClose(all.values, tau.map((v) => all.scale * Math.sign(v)), 0);
  assertClose(all.scale, 2 * all.sigma, 1e-7); // ασ, stored as f32
  assert.deepEqual(Array.from(compeft(tau, { density: .25, mode: "trim" }).values), [
    .3,
    0,
    0,
    -.4,
    0,
    0,
    0,
    -.25,
  ]);
  // decode(encode(τ̂)) = τ̂ exactly, and the encoding is as long as the byte accounting says
  for (const [d, rho, seed] of [[8, .25, 1], [64, .1, 2], [1000, .01, 3], [1000, .5, 4], [5, 1, 5]]) {
    const t = matrix.randn(1, d, { seed }).data;
    for (const mode of ["ternary", "stc"] as const) {
      const cc = compeft(t, { density: rho, mode });
      const bytes = compeftEncode(cc);
      assert.equal(bytes.length, cc.bytes);
      assert.deepEqual(compeftDecode(bytes), cc.values);
    }
  }
  assert.throws(() => compeftEncode(compeft(tau, { density: .25, mode: "trim" })), /only ternary and stc/);
  assert.throws(() => compeftDecode(compeftEncode(c).subarray(0, 12)), /truncated ComPEFT stream/);
});

Deno.test("I1 Compressed Experts: n_ce = 0 is the full forward; unit vectors equal a top-(k−n_ce) forward; §9 example", () => {
  const gate11 = matrix.randn(6, 8, { seed: 11, std: 0.7 });
  const layer = layerOf(gate11, randomExperts({ experts: 6, dim: 8, hidden: 8, seed: 111 }), 4);
  const x = matrix.randn(30, 8);
  assertClose(
    compressedExpertsLayer(layer, { nCe: 0 }).forward(x).output.data,
    layer.forward(x).output.data,
    1e-5,
  );
  // unit vectors, raw weights: = plain top-(k − n_ce) with raw weights
  const raw = layerOf(gate11, layer.experts, 4, false);
  const ce = compressedExpertsLayer(raw, { nCe: 2 }).forward(x).output;
  const plain = layerOf(gate11, layer.experts, 2, false).forward(x).output;
  assertClose(ce.data, plain.data, 1e-5);
  const one = matrix.full(1, 1, 1), v = (a: number) => new Float32Array([a]);
  const scalar = layerOf(
    matrix.fromArrays([[Math.log(.5)], [Math.log(.3)], [Math.log(.1)], [Math.log(.1)]]),
    Array(4).fill({ w1: one, w2: one, w3: one }),
    3,
    false,
  );
  const vecs = [0, 1, 2, 3].map((
    e,
  ) => (e === 2 ? { c1: v(2), c2: v(.5), c3: v(1) } : { c1: v(1), c2: v(1), c3: v(1) }));
  assertClose(
    compressedExpertsLayer(scalar, { nCe: 1, vectors: vecs }).forward(one).output.data[0],
    .704638,
    1e-6,
  );
  assertClose(
    compressedExpertsLayer(scalar, { nCe: 2, vectors: vecs }).forward(one).output.data[0],
    .425086,
    1e-6,
  );
  const cel = compressedExpertsLayer(layer, { nCe: 2 });
  const rep = compressionReport(layer, cel, x);
  assert.ok(rep.activeParamsPerToken[1] < rep.activeParamsPerToken[0]);
  assert.ok(rep.params[1] > rep.params[0], "total parameters grow by the CE vectors");
});

Deno.test("bad input: mismatched expert shapes, rank > min(m, n), empty calibration, bits out of range", () => {
  const layer = mkLayer(3, 8, 8);
  const broken = () =>
    moeLayer({
      ...layer,
      experts: [layer.experts[0], layer.experts[1], randomExperts({ experts: 1, dim: 7, hidden: 8 })[0]],
    });
  assert.throws(
    broken,
    /expert 2 w1: expected shape \[8,8\], got \[8,7\]; mismatched expert shapes/,
  );
  assert.throws(() => calibrate(layer, matrix.zeros(0, 8)), /calibration set is empty/);
  assert.throws(() => svdCompress(matrix.randn(3, 5), { rank: 4 }), /rank = 4/);
  assert.throws(() => allocateBits([[1, 2]], 3), /3 finite costs/);
});

Deno.test("LoSparse: exact with every residual row, low-rank only with none, error non-increasing in kept rows", () => {
  const w = matrix.randn(24, 12, { seed: 3 });
  assert.ok(losparseCompress(w, { ratio: 0.2, keepRows: 1 }).relativeError < 1e-6);
  const none = losparseCompress(w, { ratio: 0.2, keepRows: 0 });
  assertClose(none.relativeError, svdCompress(w, { rank: none.rank }).relativeError, 1e-6);
  let prev = Infinity;
  for (const rho of [0, 0.25, 0.5, 0.75, 1]) {
    const c = losparseCompress(w, { ratio: 0.2, keepRows: rho });
    assert.ok(c.relativeError <= prev + 1e-9);
    assert.equal(c.bytes, c.rank * 36 * 4 + c.keptRows.length * 12 * 4 + 4 * c.keptRows.length);
    prev = c.relativeError;
  }
  assert.equal(rankForRatio(24, 12, 0.2, "ceil"), 2); // ⌈1.6⌉
});
