import assert from "node:assert/strict";
import {
  applyCapacity,
  capacityRouter,
  combineMatrix,
  composeRouter,
  DROP_POLICIES,
  expertCapacity,
  gshardRouter,
  linearGate,
  loadMetrics,
  matrix,
  NonFiniteError,
  OptionError,
  ShapeError,
  softmaxTopK,
  switchRouter,
  topKIndices,
  topKRouter,
} from "../mod.ts";
import { assertClose, probsAsTokens } from "./helpers.ts";

const I4 = matrix.identity(4);

Deno.test("softmax top-k worked example: top-k indices, raw and renormalised weights", () => {
  const x = probsAsTokens([[4, 2, 1, 1], [4, 1, 2, 1]]);
  const norm = topKRouter({ weight: I4, k: 2 }).route(x, { returnProbs: true });
  assert.deepEqual(Array.from(norm.indices), [0, 1, 0, 2]);
  assertClose(norm.weights, [2 / 3, 1 / 3, 2 / 3, 1 / 3]);
  assertClose(norm.scores, [0.5, 0.25, 0.5, 0.25]);
  assertClose(norm.probs!.data, [.5, .25, .125, .125, .5, .125, .25, .125]);
  const raw = topKRouter({ weight: I4, preset: "olmoe", k: 2 }).route(x);
  assertClose(raw.weights, [0.5, 0.25, 0.5, 0.25]);
});

Deno.test("ties: lower index wins, output sorted by score", () => {
  const t0 = probsAsTokens([[4, 2, 1, 1]]);
  assert.deepEqual(Array.from(topKRouter({ weight: I4, k: 3 }).route(t0).indices), [0, 1, 2]);
  const r = topKRouter({ weight: I4, k: 2 }).route(matrix.fromArrays([[2, 1, 2, 0]]));
  assert.deepEqual(Array.from(r.indices), [0, 2]);
  assertClose(r.weights, [0.5, 0.5]);
  // all-equal scores: the k lowest indices, in order (torch.topk would give [10,11,12,9])
  const idx = new Int32Array(4);
  topKIndices(new Float32Array(16), 0, 16, 4, idx, 0);
  assert.deepEqual(Array.from(idx), [0, 1, 2, 3]);
  topKIndices([1, 3, 3, 2, 3], 0, 5, 3, idx, 0);
  assert.deepEqual(Array.from(idx.subarray(0, 3)), [1, 2, 4]);
});

Deno.test("topKIndices equals a stable argsort on random rows with ties", () => {
  const rng = matrix.rand(200, 12, { seed: 5 });
  const idx = new Int32Array(12);
  for (let t = 0; t < 200; t++) {
    const row = Array.from(matrix.row(rng, t), (v) => Math.round(v * 4)); // many ties
    const k = 1 + (t % 12);
    topKIndices(row, 0, 12, k, idx, 0);
    const ref = row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map((p) =>
      p[1]
    );
    assert.deepEqual(Array.from(idx.subarray(0, k)), ref);
  }
});

Deno.test("presets set k and normTopkProb; explicit options override", () => {
  const w = matrix.randn(64, 8, { seed: 1 });
  const x = matrix.randn(10, 8, { seed: 2 });
  const olmoe = topKRouter({ weight: w, preset: "olmoe" });
  assert.equal(olmoe.k, 8);
  const r = olmoe.route(x);
  for (let t = 0; t < 10; t++) {
    let s = 0;
    for (let j = 0; j < 8; j++) s += r.weights[t * 8 + j];
    assert.ok(s < 1 - 1e-3, "raw top-k weights sum below 1");
  }
  assert.equal(topKRouter({ weight: w, preset: "olmoe", k: 4 }).k, 4);
  assert.throws(() => topKRouter({ weight: w, preset: "nope" as never }), /preset = "nope"/);
});

Deno.test("property: normalised weights sum to 1, indices distinct, sorted by score", () => {
  for (const [E, k, seed] of [[8, 2, 1], [16, 5, 2], [5, 5, 3], [1, 1, 4]]) {
    const w = matrix.randn(E, 12, { seed });
    const x = matrix.randn(50, 12, { seed: seed + 100 });
    const r = topKRouter({ weight: w, k }).route(x, { returnProbs: true });
    for (let t = 0; t < 50; t++) {
      const ids = Array.from(r.indices.subarray(t * k, (t + 1) * k));
      assert.equal(new Set(ids).size, k);
      let s = 0;
      for (let j = 0; j < k; j++) {
        s += r.weights[t * k + j];
        if (j > 0) assert.ok(r.scores[t * k + j] <= r.scores[t * k + j - 1]);
        assertClose(r.scores[t * k + j], r.probs!.data[t * E + ids[j]], 1e-6);
      }
      assertClose(s, 1, 1e-5);
    }
  }
});

Deno.test("fused tiled path equals the materialised-logits path", () => {
  const w = matrix.randn(32, 20, { seed: 3 }), x = matrix.randn(203, 20, { seed: 4 });
  const router = topKRouter({ weight: w, k: 4 });
  const a = router.route(x), b = router.route(x, { returnLogits: true });
  assert.deepEqual(a.indices, b.indices);
  assert.deepEqual(a.weights, b.weights);
  const tiny = composeRouter({
    gate: linearGate({ weight: w }),
    selector: softmaxTopK({ k: 4 }),
    tileTokens: 7,
  });
  assert.deepEqual(tiny.route(x).indices, a.indices);
});

Deno.test("bad input: shapes, k, NaN are typed errors naming the problem", () => {
  const w = matrix.randn(4, 6, { seed: 1 });
  assert.throws(
    () => topKRouter({ weight: w, k: 5 }),
    (e) => e instanceof OptionError && /k = 5.*E = 4/.test(e.message),
  );
  assert.throws(() => topKRouter({ weight: w, k: 0 }), OptionError);
  assert.throws(
    () => topKRouter({ weight: w }).route(matrix.zeros(3, 5)),
    (e) => e instanceof ShapeError && /expected shape \[\*,6\], got \[3,5\]/.test(e.message),
  );
  const x = matrix.zeros(3, 6);
  x.data[2 * 6 + 4] = -Infinity;
  assert.throws(
    () => topKRouter({ weight: w }).route(x),
    (e) => e instanceof NonFiniteError && e.row === 2 && e.col === 4,
  );
  const bad = matrix.clone(w);
  bad.data[1] = NaN;
  assert.throws(() => topKRouter({ weight: bad }), /gate weight: non-finite value NaN at row 0, col 1/);
  assert.throws(() => topKRouter({ weight: w, bias: [1, 2] }), /gate bias: expected shape \[4\], got \[2\]/);
});

Deno.test("capacity formulas (docs/routing.md example T = 36, E = 8)", () => {
  assert.equal(expertCapacity(36, 8, 1, {}), 5);
  assert.equal(expertCapacity(36, 8, 2, {}), 9);
  assert.equal(expertCapacity(36, 8, 1, { capacity: "flax" }), 4);
  assert.equal(expertCapacity(36, 8, 1, { capacity: "flax", minCapacity: 0 }), 4);
  assert.equal(expertCapacity(40, 8, 1, { capacity: "flax", capacityFactor: 1.5, minCapacity: 0 }), 8); // 7.5 → 8
  assert.equal(expertCapacity(36, 8, 1, { capacity: "gshard" }), 10);
  assert.equal(expertCapacity(36, 8, 1, { capacity: 64 }), 64);
  assert.equal(expertCapacity(36, 8, 2, { capacityFactor: 0 }), 0);
  assert.equal(expertCapacity(36, 8, 2, { capacityFactor: 0, minCapacity: 3 }), 3);
  // the references' float64 ceil(T·k·cf/E): 110.00000000000001 / 10 → 12 (issue 12 item 7)
  assert.equal(expertCapacity(100, 10, 1, { capacityFactor: 1.1 }), 12);
  assert.throws(() => expertCapacity(36, 8, 1, { capacityFactor: -1 }), OptionError);
  assert.throws(() => expertCapacity(36, 8, 1, { capacity: 2.5 }), OptionError);
});

Deno.test("Switch capacity example: position and BPR priority", () => {
  const probs = [[.6, .4], [.9, .1], [.3, .7], [.8, .2], [.55, .45]];
  const x = probsAsTokens(probs), I2 = matrix.identity(2);
  const pos = switchRouter({ weight: I2, capacity: 2 }).route(x, { returnLogits: true });
  assert.deepEqual(Array.from(pos.indices), [0, 0, 1, 0, 0]);
  assert.deepEqual(Array.from(pos.keep!), [1, 1, 1, 0, 0]);
  assert.deepEqual(Array.from(pos.slot!), [0, 1, 0, -1, -1]);
  assertClose(pos.weights, [.6, .9, .7, 0, 0]);
  const bpr = switchRouter({ weight: I2, capacity: 2, policy: "bpr" }).route(x);
  assert.deepEqual(Array.from(bpr.keep!), [0, 1, 1, 1, 0]);
  assertClose(bpr.weights, [0, .9, .7, .8, 0]);
});

Deno.test("Switch jitter is seeded, training-only and multiplicative", () => {
  const w = matrix.randn(8, 16, { seed: 1 }), x = matrix.randn(64, 16, { seed: 2 });
  const r = switchRouter({ weight: w, capacityFactor: 2, jitter: 0.3 });
  const evalA = r.route(x), evalB = r.route(x, { seed: 99 });
  assert.deepEqual(evalA.indices, evalB.indices);
  const trainA = r.route(x, { training: true, seed: 5, returnLogits: true });
  const trainB = r.route(x, { training: true, seed: 5, returnLogits: true });
  const trainC = r.route(x, { training: true, seed: 6, returnLogits: true });
  assert.deepEqual(trainA.logits, trainB.logits);
  assert.notDeepEqual(trainA.logits, trainC.logits);
  assert.notDeepEqual(trainA.logits, r.route(x, { returnLogits: true }).logits);
});

Deno.test("the four drop policies (E = 3, T = 3, k = 2, cf = 1)", () => {
  const x = probsAsTokens([[.5, .3, .2], [.3, .6, .1], [.62, .33, .05]]);
  const expected: Record<string, [number[], number[]]> = {
    position: [[1, 1, 1, 0, 1, 0], [0, 1, 0, -1, 1, -1]],
    bpr: [[1, 0, 1, 0, 1, 1], [1, -1, 0, -1, 0, 1]],
    probs: [[1, 1, 1, 0, 1, 0], [1, 1, 0, -1, 0, -1]],
    megatron_position: [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, -1, -1]],
  };
  for (const policy of DROP_POLICIES) {
    const r = capacityRouter({ weight: matrix.identity(3), k: 2, capacityFactor: 1, policy }).route(x);
    assert.equal(r.capacity, 2);
    assert.deepEqual(Array.from(r.indices), [0, 1, 1, 0, 0, 1], policy);
    assertClose(r.scores, [.5, .3, .6, .3, .62, .33]);
    assert.deepEqual(Array.from(r.keep!), expected[policy][0], policy);
    assert.deepEqual(Array.from(r.slot!), expected[policy][1], policy);
    assertClose(loadMetrics(r).droppedFraction, 2 / 6, 1e-12);
  }
  // with raw weights, `probs` ranks expert 1's claims differently
  const raw = capacityRouter({ weight: matrix.identity(3), k: 2, policy: "probs", normTopkProb: false })
    .route(x);
  assert.deepEqual(Array.from(raw.keep!), [1, 0, 1, 0, 1, 1]);
});

Deno.test("capacity invariants: dropped count is policy-independent and non-increasing in cf", () => {
  const w = matrix.randn(8, 16, { seed: 7 }), x = matrix.randn(300, 16, { seed: 8 });
  let prev = Infinity;
  for (const cf of [0, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 4, 8]) {
    const dropped = DROP_POLICIES.map((policy) =>
      loadMetrics(capacityRouter({ weight: w, k: 2, capacityFactor: cf, policy }).route(x)).droppedFraction
    );
    for (const d of dropped) assertClose(d, dropped[0], 1e-12);
    const load = loadMetrics(topKRouter({ weight: w, k: 2 }).route(x)).counts;
    const C = expertCapacity(300, 8, 2, { capacityFactor: cf });
    const expectDrop = Array.from(load).reduce((s, l) => s + Math.max(0, l - C), 0) / 600;
    assertClose(dropped[0], expectDrop, 1e-12);
    assert.ok(dropped[0] <= prev + 1e-12, `cf ${cf}: ${dropped[0]} > ${prev}`);
    prev = dropped[0];
  }
  assert.equal(prev, 0, "a large cf drops nothing");
});

Deno.test("capacity edge cases: cf → 0, E = 1, k = E, per-group capacity, renormalise", () => {
  const x = matrix.randn(20, 6, { seed: 1 });
  const zero = capacityRouter({ weight: matrix.randn(4, 6, { seed: 2 }), capacityFactor: 0 }).route(x);
  assert.equal(loadMetrics(zero).droppedFraction, 1);
  assert.ok(zero.weights.every((w) => w === 0));
  assert.ok(zero.slot!.every((s) => s === -1));
  const one = capacityRouter({ weight: matrix.randn(1, 6, { seed: 3 }), k: 1, capacityFactor: 0.5 }).route(x);
  assert.equal(one.capacity, 10);
  assert.deepEqual(Array.from(one.keep!), [...Array(10).fill(1), ...Array(10).fill(0)]);
  assertClose(one.weights.subarray(0, 10), Array(10).fill(1));
  const all = capacityRouter({ weight: matrix.randn(4, 6, { seed: 4 }), k: 4, capacityFactor: 1 }).route(x);
  assert.equal(all.capacity, 20);
  assert.equal(loadMetrics(all).droppedFraction, 0);
  assert.deepEqual(Array.from(loadMetrics(all).counts), [20, 20, 20, 20]);
  // groups: capacity per group of 5 tokens → each group keeps at most C per expert
  const grouped = switchRouter({ weight: matrix.randn(2, 6, { seed: 5 }), capacity: 1, groupSize: 5 }).route(
    x,
  );
  for (let g = 0; g < 4; g++) {
    const kept = Array.from(grouped.keep!.subarray(g * 5, g * 5 + 5)).reduce((a, b) => a + b, 0);
    assert.ok(kept <= 2);
  }
  // renormalise survivors: kept weights of a token sum to 1 (or 0 when all dropped)
  const ren = applyCapacity({
    tokens: 2,
    experts: 2,
    k: 2,
    indices: new Int32Array([0, 1, 1, 0]),
    weights: new Float32Array([.7, .3, .6, .4]),
    scores: new Float32Array([.7, .3, .6, .4]),
  }, { capacity: 1, combine: "renormalize" });
  assert.deepEqual(Array.from(ren.keep), [1, 0, 1, 0]);
  assertClose(ren.weights, [1, 0, 1, 0]);
  assert.throws(() => applyCapacity({ ...zero }, { policy: "lifo" as never }), /policy = "lifo"/);
});

Deno.test("combineMatrix gathers kept weights densely", () => {
  const r = switchRouter({ weight: matrix.identity(2), capacity: 1 }).route(
    probsAsTokens([[.7, .3], [.8, .2]]),
  );
  assertClose(combineMatrix(r).data, [.7, 0, 0, 0]);
});

Deno.test("route(x, { into }) reuses the previous result's arrays and gives the same result as a fresh route", () => {
  const w = matrix.randn(16, 32, { seed: 3 });
  const routers = [
    topKRouter({ weight: w, k: 4 }),
    topKRouter({ weight: w, k: 2, backend: "js" }),
    switchRouter({ weight: w, capacityFactor: 0.5 }),
    gshardRouter({ weight: w, capacity: 10, secondExpertPolicy: "random" }),
  ];
  for (const router of routers) {
    const xa = matrix.randn(96, 32, { seed: 4 }), xb = matrix.randn(96, 32, { seed: 5 });
    const a = router.route(xa, { training: true, seed: 1 });
    const fresh = router.route(xb, { training: true, seed: 2 });
    const held = { indices: a.indices, weights: a.weights, scores: a.scores };
    const b = router.route(xb, { training: true, seed: 2, into: a });
    assert.equal(b.indices, held.indices, router.name); // the same arrays, overwritten
    assert.equal(b.scores, held.scores, router.name);
    assert.deepEqual(b.indices, fresh.indices, router.name);
    assert.deepEqual(b.weights, fresh.weights, router.name);
    assert.deepEqual(b.scores, fresh.scores, router.name);
    assert.deepEqual(b.keep, fresh.keep, router.name);
    assert.deepEqual(b.slot, fresh.slot, router.name);
  }
  const r = topKRouter({ weight: w, k: 2 });
  const prev = r.route(matrix.randn(8, 32, { seed: 6 }));
  assert.throws(() => r.route(matrix.randn(9, 32, { seed: 6 }), { into: prev }), ShapeError);
  const r3 = topKRouter({ weight: w, k: 3 });
  assert.throws(() => r3.route(matrix.randn(8, 32, { seed: 6 }), { into: prev }), /k = 3/);
});
