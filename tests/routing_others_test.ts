import assert from "node:assert/strict";
import {
  balancedAssignment,
  baseRouter,
  deepseekBiasUpdate,
  deepseekV2Router,
  deepseekV3Router,
  expertChoiceRouter,
  gshardRouter,
  hashRouter,
  loadMetrics,
  matrix,
  noisyTopKRouter,
  OptionError,
  runBiasBalancing,
  sinkhornRouter,
  topKRouter,
} from "../mod.ts";
import { assertClose, probsAsTokens, scoresAsTokens } from "./helpers.ts";

Deno.test("GShard top-2 worked example: positions, keep and combine", () => {
  const x = probsAsTokens([[.5, .3, .2], [.5, .25, .25], [.2, .6, .2], [.6, .1, .3]]);
  const r = gshardRouter({ weight: matrix.identity(3), capacity: 2 }).route(x);
  assert.deepEqual(Array.from(r.indices), [0, 1, 0, 1, 1, 0, 0, 2]);
  assert.deepEqual(Array.from(r.keep!), [1, 1, 1, 0, 1, 0, 0, 1]);
  assert.deepEqual(Array.from(r.slot!), [0, 1, 1, -1, 0, -1, -1, 0]);
  assertClose(r.weights, [.625, .375, 1, 0, 1, 0, 0, 1]);
  const def = gshardRouter({ weight: matrix.identity(3) }).route(x);
  assert.equal(def.capacity, 4); // 2·ceil(4/3)
});

Deno.test("GShard random/sampling policies are seeded and training-only", () => {
  const w = matrix.randn(6, 8, { seed: 1 }), x = matrix.randn(200, 8, { seed: 2 });
  const rnd = gshardRouter({ weight: w, secondExpertPolicy: "random", capacity: 1000 });
  assert.ok(rnd.route(x).indices.every((e) => e >= 0), "eval keeps every second expert");
  const a = rnd.route(x, { training: true, seed: 3 }), b = rnd.route(x, { training: true, seed: 3 });
  assert.deepEqual(a.indices, b.indices);
  // an unsampled second expert stays visible: its id is kept, marked not kept (keep 0), weight 0
  assert.ok(a.indices.every((e) => e >= 0));
  const dropped = Array.from(a.keep!).filter((v, i) => i % 2 === 1 && v === 0).length;
  assert.ok(dropped > 20 && dropped < 200, `random policy dropped ${dropped} second experts`);
  for (let t = 0; t < 200; t++) {
    if (a.keep![2 * t + 1] === 0) {
      assertClose(a.weights[2 * t], 1, 1e-6);
      assert.equal(a.weights[2 * t + 1], 0);
    }
  }
  const smp = gshardRouter({ weight: w, secondExpertPolicy: "sampling", capacity: 1000 });
  const s1 = smp.route(x, { training: true, seed: 1 }), s2 = smp.route(x, { training: true, seed: 2 });
  assert.deepEqual(s1.indices.filter((_, i) => i % 2 === 0), s2.indices.filter((_, i) => i % 2 === 0));
  assert.notDeepEqual(s1.indices, s2.indices);
  for (let t = 0; t < 200; t++) assert.notEqual(s1.indices[2 * t], s1.indices[2 * t + 1]);
  assert.throws(() => gshardRouter({ weight: matrix.identity(1) }), OptionError);
});

const S_E = [.9, .1, .6, .5, .7, .65, .2, .3];

Deno.test("DeepSeek-V3 worked example: bias for selection only, groups, scaling", () => {
  const x = scoresAsTokens([S_E]);
  const base = { weight: matrix.identity(8), k: 2, nGroup: 4, topkGroup: 2, routedScalingFactor: 2.5 };
  const biased = deepseekV3Router({ ...base, bias: new Float32Array([0, 0, 0, 0, -.3, -.3, 0, 0]) }).route(x);
  assert.deepEqual(Array.from(biased.indices), [0, 2]);
  assertClose(biased.weights, [1.5, 1.0], 1e-5);
  assertClose(biased.scores, [.9, .6], 1e-6);
  const unnorm = deepseekV3Router({
    ...base,
    normTopkProb: false,
    bias: new Float32Array([0, 0, 0, 0, -.3, -.3, 0, 0]),
  });
  assertClose(unnorm.route(x).weights, [2.25, 1.5], 1e-5);
  const zero = deepseekV3Router(base).route(x);
  assert.deepEqual(Array.from(zero.indices), [4, 5]);
  assertClose(zero.weights, [1.2963, 1.2037], 1e-4);
});

Deno.test("DeepSeek-V3 mask value −∞ (default) vs HF 0.0", () => {
  const x = scoresAsTokens([[.4, .3, .2, .1]]);
  const opts = {
    weight: matrix.identity(4),
    k: 2,
    nGroup: 2,
    topkGroup: 1,
    bias: new Float32Array([-.5, -.5, -.7, -.7]),
  };
  const inf = deepseekV3Router(opts).route(x);
  assert.deepEqual(Array.from(inf.indices), [0, 1]);
  assertClose(inf.weights, [.5714, .4286], 1e-4);
  const hf = deepseekV3Router({ ...opts, maskValue: "zero" }).route(x);
  assert.deepEqual(Array.from(hf.indices), [2, 3]);
  assertClose(hf.weights, [.6667, .3333], 1e-4);
});

Deno.test("DeepSeek-V3: group score = sum of top-2, preset, option errors", () => {
  const r = deepseekV3Router({ weight: matrix.randn(256, 16, { seed: 1 }), preset: "deepseek-v3" });
  assert.equal(r.k, 8);
  const out = r.route(matrix.randn(30, 16, { seed: 2 }));
  for (let t = 0; t < 30; t++) {
    const groups = new Set(Array.from(out.indices.subarray(t * 8, t * 8 + 8), (e) => Math.floor(e / 32)));
    assert.ok(groups.size <= 4, "at most topkGroup groups per token");
    let s = 0;
    for (let j = 0; j < 8; j++) s += out.weights[t * 8 + j];
    assertClose(s, 2.5, 1e-4);
  }
  assert.throws(
    () => deepseekV3Router({ weight: matrix.identity(6), k: 2, nGroup: 4 }),
    /nGroup = 4.*divides E = 6/,
  );
  assert.throws(
    () => deepseekV3Router({ weight: matrix.identity(8), k: 5, nGroup: 4, topkGroup: 2 }),
    /k = 5/,
  );
  assert.throws(
    () => deepseekV3Router({ weight: matrix.identity(8), bias: new Float32Array(3) }),
    /correction_bias/,
  );
});

Deno.test("DeepSeek-V2: softmax, group max, greedy, scaling vs renorm", () => {
  const x = probsAsTokens([[.3, .05, .25, .2, .1, .1]]);
  const lim = deepseekV2Router({
    weight: matrix.identity(6),
    k: 2,
    nGroup: 3,
    topkGroup: 1,
    routedScalingFactor: 16,
  });
  const r = lim.route(x);
  assert.deepEqual(Array.from(r.indices), [0, 1]); // group 0 (max .3) only
  assertClose(r.weights, [.3 * 16, .05 * 16], 1e-4);
  const greedy = deepseekV2Router({ weight: matrix.identity(6), k: 2, method: "greedy", normTopkProb: true });
  const g = greedy.route(x);
  assert.deepEqual(Array.from(g.indices), [0, 2]);
  assertClose(g.weights, [.3 / .55, .25 / .55], 1e-5);
});

Deno.test("bias update example and the bias-balancing loop drive MaxVio toward 0", () => {
  const bias = new Float32Array(4);
  assertClose(deepseekBiasUpdate(bias, [5, 3, 3, 1], 0.001), [-.001, 0, 0, .001], 1e-12);
  assertClose(bias, [-.001, 0, 0, .001], 1e-9);
  // a skewed router: expert 0 favoured by a large bias column in the hidden states
  const w = matrix.randn(8, 16, { seed: 3, std: 0.25 });
  for (let j = 0; j < 16; j++) w.data[j] += 0.5;
  const x = matrix.randn(512, 16, { seed: 4 });
  for (let t = 0; t < 512; t++) x.data[t * 16] += 2;
  const router = deepseekV3Router({ weight: w, k: 2 });
  const steps = runBiasBalancing(router, Array(150).fill(x), { gamma: 0.01 });
  const first = steps[0].maxVio, last = Math.min(...steps.slice(-10).map((s) => s.maxVio));
  assert.ok(first > 1, `skewed start, MaxVio ${first}`);
  assert.ok(last < 0.25 * first, `MaxVio ${first} → ${last}`);
  assert.throws(() => deepseekBiasUpdate(bias, [1, 2]), /expected shape \[4\], got \[2\]/);
});

Deno.test("expert choice: docs/routing.md example and capacity rule", () => {
  const S = [[.7, .1, .1, .1], [.1, .5, .3, .1], [.4, .2, .2, .2], [.25, .25, .25, .25]];
  const r = expertChoiceRouter({ weight: matrix.identity(4), capacity: 1 }).route(probsAsTokens(S));
  assert.deepEqual(Array.from(r.extras!.expertTokens as Int32Array), [0, 1, 1, 3]);
  const perToken = [0, 1, 2, 3].map((t) =>
    Array.from(r.indices.subarray(t * 4, t * 4 + 4)).filter((e) => e >= 0)
  );
  assert.deepEqual(perToken, [[0], [1, 2], [], [3]]);
  assertClose(r.weights.subarray(4, 6), [.5, .3]);
  const m = loadMetrics(r);
  assert.deepEqual(Array.from(m.counts), [1, 1, 1, 1]);
  assert.equal(m.droppedFraction, 0);
  const def = expertChoiceRouter({ weight: matrix.randn(4, 3, { seed: 1 }) }).route(
    matrix.randn(10, 3, { seed: 2 }),
  );
  assert.equal(def.capacity, 5); // round(2·10/4 = 5)
  const half = expertChoiceRouter({ weight: matrix.randn(4, 3, { seed: 1 }), capacityFactor: 1 })
    .route(matrix.randn(10, 3, { seed: 2 }));
  assert.equal(half.capacity, 2); // round_half_even(2.5) = 2
  assert.deepEqual(Array.from(loadMetrics(half).counts), [2, 2, 2, 2]);
});

Deno.test("noisy top-k: eval example, seeded training noise, load estimate", () => {
  const r = noisyTopKRouter({ weight: matrix.identity(3), k: 2 }).route(matrix.fromArrays([[2, 1, 0]]));
  assertClose(r.weights, [.7311, .2689], 1e-4);
  assert.deepEqual(Array.from(r.extras!.load as Float64Array), [1, 1, 0]);
  const w = matrix.randn(6, 8, { seed: 1 }), x = matrix.randn(100, 8, { seed: 2 });
  const router = noisyTopKRouter({ weight: w, noiseWeight: matrix.randn(6, 8, { seed: 3 }), k: 2 });
  const a = router.route(x, { training: true, seed: 4 }), b = router.route(x, { training: true, seed: 4 });
  assert.deepEqual(a.indices, b.indices);
  assert.notDeepEqual(a.indices, router.route(x, { training: true, seed: 5 }).indices);
  // zero noise in training equals eval
  const z = router.route(x, { training: true, noise: matrix.zeros(100, 6) });
  assert.deepEqual(z.indices, router.route(x).indices);
  const load = a.extras!.load as Float64Array, imp = a.extras!.importance as Float64Array;
  assertClose(imp.reduce((s, v) => s + v, 0), 100, 1e-6);
  const totalLoad = load.reduce((s, v) => s + v, 0);
  assert.ok(totalLoad > 100 && totalLoad < 300, `smooth load sums near T·k: ${totalLoad}`);
  assert.throws(
    () => router.route(x, { training: true, noise: matrix.zeros(3, 6) }),
    /noise: expected shape \[100,6\]/,
  );
});

Deno.test("hash routing: explicit table, balanced seeded table, mod fallback", () => {
  const x = matrix.zeros(4, 2);
  assert.deepEqual(
    Array.from(hashRouter({ experts: 3, table: [2, 0, 1] }).route(x, { tokenIds: [0, 1, 2, 7] }).indices),
    [
      2,
      0,
      1,
      1,
    ],
  );
  const h = hashRouter({ experts: 4, vocabSize: 100, seed: 9 });
  const ids = Array.from({ length: 100 }, (_, i) => i);
  const r = h.route(matrix.zeros(100, 1), { tokenIds: ids });
  assert.deepEqual(Array.from(loadMetrics(r).counts), [25, 25, 25, 25]);
  assert.deepEqual(
    r.indices,
    hashRouter({ experts: 4, vocabSize: 100, seed: 9 }).route(matrix.zeros(100, 1), { tokenIds: ids })
      .indices,
  );
  assert.throws(() => h.route(x), /needs \{ tokenIds \}/);
  assert.throws(() => hashRouter({ experts: 2, table: [0, 5] }), /table\[1\] = 5/);
});

Deno.test("Sinkhorn: §7 example in training and eval", () => {
  const x = matrix.fromArrays([[.2], [.1], [.3], [.4]]);
  const router = sinkhornRouter({ weight: matrix.fromArrays([[1], [0]]), k: 1 });
  const tr = router.route(x, { training: true });
  assert.deepEqual(Array.from(tr.indices), [1, 1, 0, 0]);
  assertClose(tr.weights, [.5, .5, .5744, .5987], 1e-4);
  assert.equal(tr.extras!.converged, true);
  assert.deepEqual(Array.from(router.route(x).indices), [0, 0, 0, 0]);
  const big = sinkhornRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 });
  const xb = matrix.randn(256, 16, { seed: 2 });
  const cvTrain = loadMetrics(big.route(xb, { training: true })).cv, cvEval = loadMetrics(big.route(xb)).cv;
  assert.ok(cvTrain < cvEval, `Sinkhorn balances: cv ${cvTrain} < ${cvEval}`);
});

Deno.test("BASE: exact balanced assignment against brute force; eval is greedy", () => {
  const s = matrix.randn(6, 3, { seed: 11 });
  const a = balancedAssignment(s);
  // brute force over all assignments with exactly 2 tokens per expert
  let best = -Infinity;
  const rec = (t: number, cnt: number[], acc: number) => {
    if (t === 6) {
      best = Math.max(best, acc);
      return;
    }
    for (let e = 0; e < 3; e++) {
      if (cnt[e] === 2) continue;
      cnt[e]++;
      rec(t + 1, cnt, acc + s.data[t * 3 + e]);
      cnt[e]--;
    }
  };
  rec(0, [0, 0, 0], 0);
  const got = Array.from(a).reduce((acc, e, t) => acc + s.data[t * 3 + e], 0);
  assertClose(got, best, 1e-5);
  assert.deepEqual(
    Array.from(
      loadMetrics({ ...topKRouter({ weight: matrix.identity(3), k: 1 }).route(s), indices: a }).counts,
    ),
    [
      2,
      2,
      2,
    ],
  );
  const router = baseRouter({ weight: matrix.randn(4, 8, { seed: 1 }) });
  const x = matrix.randn(16, 8, { seed: 2 });
  assert.deepEqual(
    router.route(x).indices,
    topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 1 }).route(x).indices,
  );
  assert.throws(() => router.route(matrix.randn(10, 8, { seed: 3 }), { training: true }), /groupSize = 10/);
});
