import assert from "node:assert/strict";
import {
  balanceLoss,
  combineMatrix,
  cvSquaredLoss,
  dispatch,
  gshardRouter,
  loadMetrics,
  matrix,
  moeLayer,
  randomExperts,
  runMoeStack,
  seqAuxLoss,
  swigluForward,
  switchRouter,
  topicStream,
  topKRouter,
  zLoss,
} from "../mod.ts";
import { assertClose, probsAsTokens } from "./helpers.ts";

const exampleA = () =>
  topKRouter({ weight: matrix.identity(4), k: 2 }).route(probsAsTokens([[4, 2, 1, 1], [4, 1, 2, 1]]), {
    returnLogits: true,
  });

Deno.test("softmax top-k example losses: HF 2.75, Megatron 1.375 (= HF/k), z 4.3241, seq-aux 1.375", () => {
  const r = exampleA();
  assertClose(balanceLoss(r, { convention: "hf" }), 2.75, 1e-6);
  assertClose(balanceLoss(r, { convention: "megatron" }), 1.375, 1e-6);
  assertClose(balanceLoss(r), 1.375, 1e-6);
  assertClose(zLoss(r), Math.log(8) ** 2, 1e-5);
  assertClose(seqAuxLoss(r), 1.375, 1e-6);
  assert.throws(
    () => balanceLoss(topKRouter({ weight: matrix.identity(4) }).route(matrix.zeros(1, 4))),
    /returnLogits: true/,
  );
});

Deno.test("uniform router: HF = k, Megatron = Switch = 1", () => {
  // zero logits → p uniform; the argmax picks are balanced by construction via token-specific ties
  const E = 4, k = 2, T = 8;
  const r = topKRouter({ weight: matrix.identity(E), k }).route(matrix.zeros(T, E), { returnLogits: true });
  assertClose(balanceLoss(r, { convention: "hf" }), k, 1e-9);
  assertClose(balanceLoss(r), 1, 1e-9);
  assertClose(balanceLoss(r, { convention: "switch" }), 1, 1e-9);
  // HF concatenates layers: two identical layers give the same value
  assertClose(balanceLoss([r, r], { convention: "hf" }), k, 1e-9);
});

Deno.test("Switch example aux (pre-drop argmax) = 1.156; GShard example l_aux = 1.246875", () => {
  const b = switchRouter({ weight: matrix.identity(2), capacity: 2 })
    .route(probsAsTokens([[.6, .4], [.9, .1], [.3, .7], [.8, .2], [.55, .45]]), { returnLogits: true });
  assertClose(balanceLoss(b, { convention: "switch" }), 1.156, 1e-6);
  const d = gshardRouter({ weight: matrix.identity(3), capacity: 2 })
    .route(probsAsTokens([[.5, .3, .2], [.5, .25, .25], [.2, .6, .2], [.6, .1, .3]]), { returnLogits: true });
  assertClose(balanceLoss(d, { convention: "switch" }), 1.246875, 1e-6);
  // per-group: two identical halves give the same value as the whole
  assertClose(balanceLoss(b, { convention: "switch", groupSize: 5 }), 1.156, 1e-6);
});

Deno.test("Megatron counts kept vs selected; seq-aux per sequence", () => {
  const r = switchRouter({ weight: matrix.identity(2), capacity: 2 })
    .route(probsAsTokens([[.6, .4], [.9, .1], [.3, .7], [.8, .2], [.55, .45]]), { returnLogits: true });
  // kept counts [2,1], P sums [3.15, 1.85]: E/(k·T²)·Σ = 2/25·(6.3 + 1.85)
  assertClose(balanceLoss(r), (2 / 25) * (2 * 3.15 + 1 * 1.85), 1e-6);
  assertClose(balanceLoss(r, { counts: "selected" }), (2 / 25) * (4 * 3.15 + 1 * 1.85), 1e-6);
  const two = topKRouter({ weight: matrix.identity(2), k: 1 })
    .route(probsAsTokens([[.9, .1], [.8, .2], [.3, .7], [.4, .6]]), { returnLogits: true });
  // sequence 0: ce = [2, 0]/(2·1/2)= [2,0]·... computed by hand: ce0 = [2,0], P0 = [.85,.15] → 1.7
  // sequence 1: ce1 = [0,2], P1 = [.35,.65] → 1.3; mean 1.5
  assertClose(seqAuxLoss(two, { sequenceLength: 2 }), 1.5, 1e-6);
  assert.throws(() => seqAuxLoss(two, { sequenceLength: 3 }), /sequenceLength = 3/);
});

Deno.test("cvSquaredLoss", () => {
  assertClose(cvSquaredLoss([1, 3], [2, 2]), 0.25, 1e-9); // var 1, mean 2 → 1/4
  assertClose(cvSquaredLoss([0, 0], [0, 0]), 0, 1e-12);
});

Deno.test("load metrics of the softmax top-k example", () => {
  const m = loadMetrics(exampleA());
  assert.deepEqual(Array.from(m.counts), [2, 1, 1, 0]);
  assertClose(m.fraction, [.5, .25, .25, 0], 1e-12);
  assertClose(m.cv, Math.sqrt(.5), 1e-9);
  assert.equal(m.maxOverMean, 2);
  assert.equal(m.maxVio, 1);
  assert.equal(m.minOverMean, 0);
  assertClose(m.entropy, 1.03972, 1e-5);
  assertClose(m.entropyNorm, .75, 1e-9);
  assert.equal(m.droppedFraction, 0);
  assert.deepEqual(matrix.toArrays(m.coactivation)[0], [2, 1, 1, 0]);
  assert.deepEqual(matrix.toArrays(m.coactivation)[3], [0, 0, 0, 0]);
});

Deno.test("metrics: empty kept set gives zeros, not NaN", () => {
  const r = switchRouter({ weight: matrix.identity(2), capacity: 0 }).route(matrix.randn(3, 2, { seed: 1 }));
  const m = loadMetrics(r);
  for (const v of [m.cv, m.maxOverMean, m.maxVio, m.minOverMean, m.entropy]) assert.equal(v, 0);
  assert.equal(m.droppedFraction, 1);
  assert.deepEqual(Array.from(m.fraction), [0, 0]);
});

Deno.test("dispatch: counting sort honours capacity and keeps token order", () => {
  const r = switchRouter({ weight: matrix.identity(2), capacity: 2 })
    .route(probsAsTokens([[.6, .4], [.9, .1], [.3, .7], [.8, .2], [.55, .45]]));
  const d = dispatch(r);
  assert.deepEqual(Array.from(d.offsets), [0, 2, 3]);
  assert.deepEqual(Array.from(d.tokenIds), [0, 1, 2]);
  assertClose(d.weights, [.6, .9, .7]);
  const big = topKRouter({ weight: matrix.randn(8, 6, { seed: 1 }), k: 3 }).route(
    matrix.randn(100, 6, { seed: 2 }),
  );
  const db = dispatch(big);
  assert.equal(db.offsets[8], 300);
  for (let e = 0; e < 8; e++) {
    for (let p = db.offsets[e]; p < db.offsets[e + 1]; p++) {
      assert.equal(big.indices[db.choices[p]], e);
      if (p > db.offsets[e]) assert.ok(db.tokenIds[p] > db.tokenIds[p - 1]);
    }
  }
});

Deno.test("moeLayer equals the dense reference Σ_e C[t,e]·E_e(x_t); dropped tokens output 0", () => {
  const d = 6, E = 4;
  const experts = randomExperts({ experts: E, dim: d, hidden: 10, seed: 3 });
  const x = matrix.randn(12, d, { seed: 4 });
  for (
    const router of [
      topKRouter({ weight: matrix.randn(E, d, { seed: 5 }), k: 2 }),
      switchRouter({ weight: matrix.randn(E, d, { seed: 6 }), capacity: 1 }),
    ]
  ) {
    const { output, routing } = moeLayer({ router, experts }).forward(x);
    const C = combineMatrix(routing);
    const outs = experts.map((ex) => swigluForward(ex, x));
    for (let t = 0; t < 12; t++) {
      for (let c = 0; c < d; c++) {
        let ref = 0;
        for (let e = 0; e < E; e++) ref += C.data[t * E + e] * outs[e].data[t * d + c];
        assertClose(output.data[t * d + c], ref, 1e-5);
      }
      if (routing.keep && routing.keep[t] === 0) assert.ok(matrix.row(output, t).every((v) => v === 0));
    }
  }
  assert.throws(
    () => moeLayer({ router: topKRouter({ weight: matrix.randn(3, d) }), experts }),
    /3 experts but 4/,
  );
});

Deno.test("runMoeStack: residual stack over a topic stream; routing follows topics", () => {
  const s = topicStream({ tokens: 400, dim: 16, topics: 4, seed: 1 });
  const layers = [0, 1, 2].map((l) =>
    moeLayer({
      router: topKRouter({ weight: matrix.randn(8, 16, { seed: 10 + l, std: 0.5 }), k: 2 }),
      experts: randomExperts({ experts: 8, dim: 16, hidden: 16, seed: 20 + l }),
    })
  );
  const run = runMoeStack(layers, s.hidden);
  assert.equal(run.routings.length, 3);
  assert.deepEqual(run.inputs[0], s.hidden);
  // tokens of the same topic mostly share their top-1 expert at layer 0
  const byTopic = new Map<number, number[]>();
  for (let t = 0; t < 400; t++) {
    const list = byTopic.get(s.topics[t]) ?? [];
    list.push(run.routings[0].indices[2 * t]);
    byTopic.set(s.topics[t], list);
  }
  for (const list of byTopic.values()) {
    const counts = new Map<number, number>();
    for (const e of list) counts.set(e, (counts.get(e) ?? 0) + 1);
    assert.ok(Math.max(...counts.values()) / list.length > 0.5);
  }
});
