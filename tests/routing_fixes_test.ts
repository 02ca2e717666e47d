// Reference-exactness fixes (issue 12 items 1–8, 23), typed overflow errors on every router (issue 10
// item 10), expert masks, NAEE skipping, the one result contract, and the routing ↔ kernels boundary.
import assert from "node:assert/strict";
import {
  balanceLoss,
  baseRouter,
  capacityRouter,
  composeRouter,
  deepseekV2Router,
  deepseekV3Router,
  expertCapacity,
  expertChoiceRouter,
  gshardRouter,
  hashRouter,
  kernelInfo,
  linearGate,
  listBackends,
  matrix,
  noisyTopKRouter,
  NonFiniteError,
  OptionError,
  preGateRouter,
  recurrentRouter,
  registerBackend,
  resolveBackend,
  ShapeError,
  sinkhornRouter,
  skipChoices,
  switchRouter,
  topKRouter,
  useThreads,
} from "../mod.ts";
import { assertClose, probsAsTokens, scoresAsTokens } from "./helpers.ts";

const BACKENDS = ["js", "wasm"] as const;

Deno.test("GShard: uniforms and Gumbel noise are inputs; an unsampled second expert keeps its id with keep 0", () => {
  const x = probsAsTokens([[.5, .3, .2], [.5, .3, .2]]);
  const router = gshardRouter({ weight: matrix.identity(3), secondExpertPolicy: "random", capacity: 4 });
  // 2·p2 = 0.6: kept when u = 0.05, not when u = 0.99
  const r = router.route(x, { training: true, uniforms: [0.05, 0.99] });
  assert.deepEqual(Array.from(r.indices), [0, 1, 0, 1]);
  assert.deepEqual(Array.from(r.keep!), [1, 1, 1, 0]);
  assertClose(r.weights, [.625, .375, 1, 0], 1e-6);
  assert.throws(() => router.route(x, { training: true, uniforms: [0.5] }), ShapeError);
  // sampling: the Gumbel noise decides the second expert
  const smp = gshardRouter({ weight: matrix.identity(3), secondExpertPolicy: "sampling", capacity: 4 });
  const g = matrix.fromArrays([[0, 0, 5], [0, 5, 0]]);
  assert.deepEqual(Array.from(smp.route(x, { training: true, gumbel: g }).indices), [0, 2, 0, 1]);
});

Deno.test("GShard seeded draws do not depend on asking for the logits", () => {
  const w = matrix.randn(6, 8, { seed: 1 }), x = matrix.randn(300, 8, { seed: 2 });
  const r = gshardRouter({ weight: w, secondExpertPolicy: "random", capacity: 1000 });
  const a = r.route(x, { training: true, seed: 4 }),
    b = r.route(x, { training: true, seed: 4, returnLogits: true });
  assert.deepEqual(a.keep, b.keep);
  assert.deepEqual(a.weights, b.weights);
});

Deno.test("Switch: the jitter factors are an input (training)", () => {
  const w = matrix.randn(4, 6, { seed: 1 }), x = matrix.randn(10, 6, { seed: 2 });
  const f = matrix.full(10, 6, 1.01);
  const router = switchRouter({ weight: w, capacityFactor: 4, backend: "js" });
  const jittered = router.route(x, { training: true, jitter: f });
  const scaled = matrix.clone(x);
  for (let i = 0; i < scaled.data.length; i++) scaled.data[i] *= 1.01;
  const manual = router.route(scaled);
  assert.deepEqual(jittered.indices, manual.indices);
  assertClose(jittered.weights, manual.weights, 1e-6);
  assert.throws(() => router.route(x, { training: true, jitter: matrix.full(10, 6, 1.5) }), OptionError);
});

Deno.test("GShard normalizeBeforeDropping + random: an unsampled token keeps p1/(p1+p2) (HF NLLB-MoE)", () => {
  const x = probsAsTokens(Array.from({ length: 8 }, () => [.9, .05, .05]));
  const r = gshardRouter({
    weight: matrix.identity(3),
    secondExpertPolicy: "random",
    normalizeBeforeDropping: true,
    capacity: 8,
  }).route(x, { training: true, uniforms: new Array(8).fill(0.5) }); // 2·0.05 < 0.5: never sampled
  for (let t = 0; t < 8; t++) {
    assertClose(r.weights[2 * t], 0.9 / 0.95, 1e-6); // 0.9474
    assert.equal(r.keep![2 * t + 1], 0);
    assert.equal(r.indices[2 * t + 1], 1); // tie at 0.05: the lower expert
  }
});

Deno.test("balanceLoss: attentionMask drops padded rows from fractions and mean probabilities", () => {
  const w = matrix.randn(4, 6, { seed: 3 }), x = matrix.randn(6, 6, { seed: 4 });
  const router = topKRouter({ weight: w, k: 2, backend: "js" });
  const all = router.route(x, { returnLogits: true });
  const real = router.route(matrix.rowSlice(x, 0, 4), { returnLogits: true });
  const mask = [1, 1, 1, 1, 0, 0];
  for (const convention of ["hf", "megatron", "switch"] as const) {
    assertClose(
      balanceLoss(all, { convention, attentionMask: mask }),
      balanceLoss(real, { convention }),
      1e-12,
    );
  }
  assert.throws(() => balanceLoss(all, { attentionMask: [1, 0] }), ShapeError);
});

Deno.test("balanceLoss switch: auxLossHfDroppedAsExpert0 counts dropped tokens as expert 0 (HF Switch)", () => {
  const x = probsAsTokens([[.4, .6], [.3, .7], [.2, .8]]);
  const r = switchRouter({ weight: matrix.identity(2), capacity: 1 }).route(x, { returnLogits: true });
  assert.deepEqual(Array.from(r.keep!), [1, 0, 0]);
  // P = [.3, .7]; flaxformer f = [0, 1] → 4·(.7/2); HF f = [2/3, 1/3]
  assertClose(balanceLoss(r, { convention: "switch" }), 1.4, 1e-6);
  assertClose(
    balanceLoss(r, { convention: "switch", auxLossHfDroppedAsExpert0: true }),
    4 * ((2 / 3 * .3 + 1 / 3 * .7) / 2),
    1e-6,
  );
  assert.throws(() => balanceLoss(r, { auxLossHfDroppedAsExpert0: true }), OptionError);
});

Deno.test("noisy top-k: epsilon is an option; scores are selection scores (softmax of H)", () => {
  const router = (epsilon?: number) =>
    noisyTopKRouter({ weight: matrix.identity(3), k: 2, ...(epsilon === undefined ? {} : { epsilon }) });
  const x = matrix.zeros(1, 3), noise = matrix.fromArrays([[1, 0, 0]]);
  const w0 = (eps: number) => {
    const s = Math.log(2) + eps; // softplus(0) + ε
    return Math.exp(s) / (Math.exp(s) + 1);
  };
  assertClose(router().route(x, { training: true, noise }).weights[0], w0(0.01), 1e-6);
  assertClose(router(0.5).route(x, { training: true, noise }).weights[0], w0(0.5), 1e-6);
  assert.throws(() => router(-1), OptionError);
  const r = router().route(matrix.fromArrays([[2, 1, 0]]));
  const z = Math.exp(2) + Math.exp(1) + 1;
  assertClose(r.scores, [Math.exp(2) / z, Math.exp(1) / z], 1e-6);
  assertClose(r.weights, [.7311, .2689], 1e-4);
});

Deno.test("hash routing does not claim softmax scores", () => {
  const r = hashRouter({ experts: 4 }).route(matrix.zeros(2, 3), { tokenIds: [1, 2] });
  assert.equal(r.scoreFunction, "none");
  assert.throws(() =>
    hashRouter({ experts: 4 }).route(matrix.zeros(2, 3), { tokenIds: [1, 2], returnProbs: true })
  );
});

Deno.test("partial trained router weights are an error naming what is missing", () => {
  const I = matrix.identity(4);
  assert.throws(
    () => preGateRouter({ layers: 2, dim: 4, heads: [I], blocks: [] }),
    (e) => e instanceof OptionError && /outNorm/.test(e.message),
  );
  assert.throws(
    () => recurrentRouter({ layers: 2, dim: 4, projections: [I, I] }),
    (e) => e instanceof OptionError && /heads/.test(e.message),
  );
  // no weights at all: seeded init as before
  assert.equal(recurrentRouter({ layers: 2, dim: 4, experts: 3, hiddenSize: 4, seed: 1 }).layers, 2);
});

Deno.test("capacity ceil is float64 ceil(T·k·cf/E) as Megatron computes it", () => {
  assert.equal(expertCapacity(100, 10, 1, { capacityFactor: 1.1 }), 12);
  assert.equal(expertCapacity(36, 8, 2, { capacityFactor: 1 }), 9);
  const r = capacityRouter({ weight: matrix.randn(10, 4, { seed: 1 }), k: 1, capacityFactor: 1.1 })
    .route(matrix.randn(100, 4, { seed: 2 }));
  assert.equal(r.capacity, 12);
});

Deno.test("DeepSeek: the kept groups are an optional output", () => {
  const s = [.9, .1, .6, .5, .7, .65, .2, .3];
  const router = deepseekV3Router({
    weight: matrix.identity(8),
    k: 2,
    nGroup: 4,
    topkGroup: 2,
    bias: new Float32Array([0, 0, 0, 0, -.3, -.3, 0, 0]),
  });
  const r = router.route(scoresAsTokens([s, s]), { returnGroups: true });
  assert.deepEqual(Array.from(r.extras!.groupIndices as Int32Array), [1, 0, 1, 0]);
  assert.equal(router.route(scoresAsTokens([s])).extras, undefined);
  const v2 = deepseekV2Router({ weight: matrix.identity(4), k: 1, nGroup: 2, topkGroup: 1 })
    .route(probsAsTokens([[.1, .2, .4, .3]]), { returnGroups: true });
  assert.deepEqual(Array.from(v2.extras!.groupIndices as Int32Array), [1]);
});

Deno.test("overflowing logits are a typed error on every router and backend", () => {
  const x = matrix.full(4, 2, 1e20), w = matrix.full(4, 2, 1e20);
  for (const backend of BACKENDS) {
    const routers = [
      gshardRouter({ weight: w, backend }),
      expertChoiceRouter({ weight: w, backend }),
      noisyTopKRouter({ weight: w, backend }),
      baseRouter({ weight: w, backend }),
      topKRouter({ weight: w, backend }),
      sinkhornRouter({ weight: w, backend }),
    ];
    for (const r of routers) {
      assert.throws(
        () => r.route(x, { training: r.name === "base" }),
        (e) => e instanceof NonFiniteError && /overflowed/.test(e.message),
        `${r.name} on ${backend}`,
      );
    }
  }
});

Deno.test("capacity routers with no tokens say so", () => {
  const w = matrix.randn(4, 3, { seed: 1 });
  for (const r of [switchRouter({ weight: w }), capacityRouter({ weight: w, k: 2 })]) {
    assert.throws(() => r.route(matrix.zeros(0, 3)), /no tokens/);
  }
});

Deno.test("expert mask: a removed expert is never chosen, on every router and backend", () => {
  const E = 6, w = matrix.randn(E, 8, { seed: 5 }), x = matrix.randn(200, 8, { seed: 6 });
  const mask = new Uint8Array([1, 0, 1, 1, 0, 1]);
  for (const backend of BACKENDS) {
    const routers = [
      topKRouter({ weight: w, k: 2, backend }),
      switchRouter({ weight: w, capacityFactor: 2, backend }),
      gshardRouter({ weight: w, backend }),
      deepseekV3Router({
        weight: w,
        k: 2,
        nGroup: 3,
        topkGroup: 2,
        backend,
        bias: new Float32Array(E).fill(5),
      }),
      deepseekV2Router({ weight: w, k: 2, nGroup: 3, topkGroup: 2, backend }),
      noisyTopKRouter({ weight: w, k: 2, backend }),
      expertChoiceRouter({ weight: w, backend }),
      sinkhornRouter({ weight: w, k: 2, backend }),
      baseRouter({ weight: w, backend }),
    ];
    for (const r of routers) {
      for (const training of [false, true]) {
        if (training && r.name === "base") continue;
        const res = r.route(x, { expertMask: mask, training });
        for (let i = 0; i < res.indices.length; i++) {
          const e = res.indices[i];
          assert.ok(
            e < 0 || mask[e] === 1,
            `${r.name} (${backend}, training ${training}) chose removed expert ${e}`,
          );
        }
      }
    }
  }
  const top = topKRouter({ weight: w, k: 2 });
  assert.throws(() => top.route(x, { expertMask: new Uint8Array([1, 0, 0, 0, 0, 0]) }), OptionError); // 1 < k
  assert.throws(() => top.route(x, { expertMask: new Uint8Array(3) }), ShapeError);
  assert.throws(
    () =>
      baseRouter({ weight: matrix.randn(2, 8, { seed: 1 }) }).route(matrix.randn(4, 8), {
        training: true,
        expertMask: new Uint8Array([1, 0]),
      }),
    OptionError,
  );
  assert.throws(
    () =>
      hashRouter({ experts: 2 }).route(matrix.zeros(2, 1), {
        tokenIds: [0, 1],
        expertMask: new Uint8Array([1, 0]),
      }),
    /remap the table/,
  );
  // masking equals routing over the live experts only (softmax over them), indices mapped back
  const live = [0, 2, 3, 5];
  const masked = topKRouter({ weight: w, k: 2, backend: "js" }).route(x, { expertMask: mask });
  const wLive = matrix.fromArrays(live.map((e) => Array.from(matrix.row(w, e))));
  const sub = topKRouter({ weight: wLive, k: 2, backend: "js" }).route(x);
  assert.deepEqual(Array.from(masked.indices), Array.from(sub.indices).map((i) => live[i]));
  assertClose(masked.weights, sub.weights, 1e-6);
  assertClose(masked.scores, sub.scores, 1e-6);
});

Deno.test("expert mask with threads: identical to one thread", async () => {
  const w = matrix.randn(8, 32, { seed: 1 }), x = matrix.randn(1024, 32, { seed: 2 });
  const mask = new Uint8Array([1, 1, 0, 1, 1, 1, 0, 1]);
  const one = topKRouter({ weight: w, k: 2, backend: "wasm" }).route(x, { expertMask: mask });
  await useThreads(2, { idleMs: Infinity });
  try {
    const two = topKRouter({ weight: w, k: 2, backend: "wasm" }).route(x, { expertMask: mask });
    assert.deepEqual(two.indices, one.indices);
    assert.deepEqual(two.weights, one.weights);
  } finally {
    await useThreads(1);
  }
});

Deno.test("skipChoices: NAEE dynamic skipping on any routing result", () => {
  const x = probsAsTokens([[.6, .1, .3], [.4, .35, .25]]);
  const r = topKRouter({ weight: matrix.identity(3), k: 2 }).route(x);
  const s = skipChoices(r, { beta: 0.6, renormalize: true });
  assert.deepEqual(Array.from(s.keep!), [1, 0, 1, 1]); // .3 < .36 skipped; .35 ≥ .24 kept
  assertClose(s.weights, [1, 0, r.weights[2], r.weights[3]], 1e-6);
  const raw = skipChoices(r, { beta: 0.6 });
  assertClose(raw.weights, [r.weights[0], 0, r.weights[2], r.weights[3]], 1e-7);
  assert.deepEqual(skipChoices(r, { beta: 0 }).keep, new Uint8Array(4).fill(1));
  assert.throws(() => skipChoices(r, { beta: -1 }), OptionError);
});

Deno.test("compute backends: registry, auto choice and its reasons", () => {
  assert.equal(resolveBackend("js").name, "js");
  assert.throws(() => resolveBackend("nonesuch"), (e) => e instanceof OptionError && /"js"/.test(e.message));
  const info = kernelInfo();
  assert.ok(info.backends.some((b) => b.name === info.backend && b.available));
  for (const b of info.backends) assert.ok(b.reason.length > 0, `${b.name} says why`);
  let bound = 0;
  registerBackend({
    name: "counting",
    priority: -5,
    status: () => ({ available: true, reason: "test backend" }),
    bind: (weight) => {
      bound++;
      return {
        backend: "counting",
        experts: weight.rows,
        inputDim: weight.cols,
        gemm: (xx, out) => matrix.matmulT(xx, weight, out),
      };
    },
  });
  assert.ok(listBackends().some((b) => b.name === "counting"));
  assert.notEqual(resolveBackend("auto").name, "counting"); // negative priority: never auto
  const x = matrix.randn(20, 5, { seed: 1 }), w = matrix.randn(4, 5, { seed: 2 });
  const a = topKRouter({ weight: w, backend: "counting" }).route(x);
  assert.equal(bound, 1);
  assert.deepEqual(a.indices, topKRouter({ weight: w, backend: "js" }).route(x).indices);
  assert.throws(() => registerBackend({ ...listBackends()[0], name: "auto" }), OptionError);
});

Deno.test("a random selector runs threaded with one stream per tile: results do not depend on threads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/random_selector.ts`;
    const routing = new URL("../lib/routing/mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      file,
      `import { registerSelector, topKIndices } from "${routing}";
export function randomTop1() {
  return {
    name: "random-top1", k: 1, scoreFunction: "softmax", needsAllTokens: false, random: true,
    spec: () => ({ kind: "randomTop1", options: {}, module: import.meta.url }),
    validate() {},
    select(logits, off, out, ctx) {
      for (let i = 0; i < logits.rows; i++) {
        // pick uniformly among the top 2 with this tile's stream
        const idx = new Int32Array(2);
        topKIndices(logits.data, i * logits.cols, logits.cols, 2, idx, 0);
        out.indices[off + i] = idx[ctx.rng.uniform() < 0.5 ? 0 : 1];
        out.weights[off + i] = out.scores[off + i] = 1;
      }
    },
  };
}
registerSelector("randomTop1", () => randomTop1());
`,
    );
    const mod = await import(new URL(`file://${file}`).href);
    const make = () =>
      composeRouter({
        gate: linearGate({ weight: matrix.randn(8, 16, { seed: 1 }), backend: "wasm" }),
        selector: mod.randomTop1(),
      });
    const x = matrix.randn(1024, 16, { seed: 2 });
    const one = make().route(x, { seed: 7 });
    await useThreads(2, { idleMs: Infinity });
    try {
      const two = make().route(x, { seed: 7 });
      assert.deepEqual(two.indices, one.indices);
      assert.notDeepEqual(make().route(x, { seed: 8 }).indices, one.indices);
    } finally {
      await useThreads(1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("routing imports nothing from kernels; kernels import from routing only the backend interface", async () => {
  const imports = async (folder: string) => {
    const out: { file: string; spec: string }[] = [];
    for await (const f of Deno.readDir(new URL(`../lib/${folder}/`, import.meta.url))) {
      if (!f.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(new URL(`../lib/${folder}/${f.name}`, import.meta.url));
      for (const m of text.matchAll(/^\s*(?:import|export)[^"';]*?from\s+"([^"]+)"/gm)) {
        out.push({ file: f.name, spec: m[1] });
      }
      for (const m of text.matchAll(/^\s*import\s+"([^"]+)"/gm)) out.push({ file: f.name, spec: m[1] });
    }
    return out;
  };
  for (const { file, spec } of await imports("routing")) {
    assert.ok(!spec.includes("/kernels/"), `routing/${file} imports ${spec}`);
  }
  for (const { file, spec } of await imports("kernels")) {
    if (spec.includes("/routing/")) {
      assert.equal(spec, "../routing/backend.ts", `kernels/${file} imports ${spec}`);
    }
  }
});
