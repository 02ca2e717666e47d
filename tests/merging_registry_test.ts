// The merge-method registry: declared parameters and variants, validation against the declarations,
// and the methods and options added with it (nuslerp without a base, rescale norms, magnitude_prune,
// PEFT's DARE rescale, workDtype).
import assert from "node:assert/strict";
import {
  merge,
  mergeMethods,
  type ModelParams,
  OptionError,
  parseMergeConfig,
  sparsify,
  type Tensor,
  validateMergeParams,
} from "../lib/merging/mod.ts";

const vec = (...v: number[]): Tensor => ({ shape: [v.length], data: Float64Array.from(v) });
const zeros = (n: number): Tensor => ({ shape: [n], data: new Float64Array(n) });
const near = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol, `index ${i}: ${a[i]} vs ${b[i]}`);
  }
};
const two = (params: ModelParams[]) =>
  [vec(1, -2, .5, 0), vec(-.5, -1, 1, 2)].map((tensor, i) => ({ tensor, params: params[i] }));

Deno.test("every registry entry declares its parameters once, with types, ranges and defaults", () => {
  for (const [name, m] of Object.entries(mergeMethods)) {
    assert.equal(m.name, name);
    const names = m.parameters.map((p) => p.name);
    assert.equal(new Set(names).size, names.length, `${name}: duplicate parameter`);
    const sem = m.parameters.find((p) => p.name === "semantics")!;
    assert.deepEqual(sem.values, m.variants.map((v) => v.name), `${name}: semantics lists the variants`);
    assert.equal(sem.default, m.variants[0].name);
    for (const p of m.parameters) {
      if (p.type === "enum") assert.ok(p.values && p.values.length > 0, `${name}.${p.name}`);
    }
    // every default passes its own declaration
    const defaults = (scope: string) =>
      Object.fromEntries(
        m.parameters.filter((p) => p.scope === scope && p.default !== undefined).map((
          p,
        ) => [p.key, p.default]),
      );
    const global = { ...defaults("global"), ...(name === "slerp" ? { t: 0.5 } : {}) };
    const model = {
      ...defaults("model"),
      ...(m.parameters.some((p) => p.key === "weight") ? { weight: 1 } : {}),
    };
    const count = Math.max(1, m.models.min);
    assert.doesNotThrow(() => validateMergeParams(m, global, Array(count).fill(model)), name);
  }
  const has = (method: string, param: string) =>
    mergeMethods[method].parameters.some((p) => p.name === param);
  assert.ok(!has("ties", "gamma") && has("breadcrumbs", "gamma") && has("della", "epsilon"));
  assert.ok(
    !has("task_arithmetic", "density") && !has("dare_linear", "consensus") && has("dare_ties", "consensus"),
  );
  assert.ok(has("nuslerp", "nuslerp_row_wise") && has("slerp", "t") && !has("linear", "t"));
  assert.equal(mergeMethods.ties.parameters.find((p) => p.name === "normalize")!.default, true);
  assert.equal(mergeMethods.breadcrumbs.parameters.find((p) => p.name === "normalize")!.default, false);
  assert.equal(mergeMethods.nuslerp.base, "optional");
  assert.equal(mergeMethods.linear.base, "none");
});

Deno.test("bad values are OptionErrors that list what is allowed (API), before any work", () => {
  const base = zeros(4);
  const cases: [Record<string, unknown>, ModelParams[], string, RegExp][] = [
    [
      { rescaleNorm: "bogus" },
      [{ weight: 1, density: .5 }],
      "dare_ties",
      /"l1", "l2", "linf", "inverse_density", "none"/,
    ],
    [
      { consensus: "bogus" },
      [{ weight: 1 }],
      "ties",
      /params\.consensus = "bogus": ties allows "sum", "count"/,
    ],
    [
      { semantics: "pef" },
      [{ weight: 1 }],
      "ties",
      /semantics = "pef": ties allows "mergekit", "peft", "paper"/,
    ],
    [{}, [{ weight: 1, density: 1.5 }], "ties", /models\[0\]\.density = 1\.5: must be in \[0, 1\]/],
    [
      {},
      [{ weight: 1, gamma: .1 }],
      "ties",
      /ties takes no per-model parameter "gamma"; it takes weight, density/,
    ],
    [{ t: .5 }, [{ weight: 1 }], "ties", /takes no global parameter "t"/],
    [{ normalize: "yes" }, [{ weight: 1 }], "ties", /normalize = "yes": must be true or false/],
    [{ semantics: "mergekit" }, [{ weight: 1 }], "magnitude_prune", /magnitude_prune allows "peft"/],
    [{ workDtype: "bf17" }, [{ weight: 1 }], "ties", /"bf16", "f16", "f32"/],
    [{ filter_wise: true }, [{}, {}], "model_stock", /model_stock allows only false/],
    [
      {},
      [{ weight: 1, density: .5, epsilon: .6 }],
      "della",
      /models\[0\]\.epsilon = 0\.6: needs 0 < density − epsilon/,
    ],
  ];
  for (const [params, modelParams, method, pattern] of cases) {
    assert.throws(
      () =>
        merge({
          method,
          base,
          models: modelParams.map((p) => ({ tensor: vec(1, 2, 3, 4), params: p })),
          params: params as never,
        }),
      (e) => e instanceof OptionError && pattern.test(e.message),
      `${method} ${JSON.stringify(params)} ${JSON.stringify(modelParams)}`,
    );
  }
  // a model count the method does not take
  assert.throws(
    () => merge({ method: "slerp", base, models: [], params: { t: .5 } }),
    /slerp merges exactly 1 model/,
  );
});

Deno.test("bad values in a config are OptionErrors when it is parsed (leaves of gradients and filters too)", () => {
  const cfg = (params: string, model = "{weight: 1}") =>
    `merge_method: ties\nbase_model: b\nparameters: ${params}\nmodels:\n  - model: a\n    parameters: ${model}\n`;
  const cases: [string, RegExp][] = [
    [cfg("{consensus: bogus}"), /top-level\.parameters\.consensus = "bogus": ties allows "sum", "count"/],
    [cfg("{rescale_norm: bogus}"), /rescale_norm = "bogus": ties allows "l1", "l2", "linf"/],
    [cfg("{semantics: pef}"), /semantics = "pef"/],
    [cfg("{}", "{weight: 1, density: [1, 1.5]}"), /density\[1\] = 1\.5: must be in \[0, 1\]/],
    [cfg("{}", "{weight: 1, gamma: 0.1}"), /unknown parameter "gamma" in models\[0\] for ties/],
    [cfg("{}", "{weight: 1, normalize: true}"), /normalize is a global parameter of ties/],
    [cfg("{density: [{filter: mlp, value: 2}]}"), /density\[0\]\.value = 2: must be in \[0, 1\]/],
  ];
  for (const [yaml, pattern] of cases) {
    assert.throws(
      () => parseMergeConfig(yaml),
      (e) => e instanceof OptionError && pattern.test(e.message),
      yaml,
    );
  }
  // declared names pass: a Breadcrumbs config with gamma and mergekit_compat
  const ok = parseMergeConfig(
    "merge_method: breadcrumbs\nbase_model: b\nparameters: {mergekit_compat: true, work_dtype: bf16}\nmodels:\n  - {model: a, parameters: {weight: 1, gamma: 0.02}}\n",
  );
  assert.equal(ok.parameters.work_dtype, "bf16");
});

Deno.test("nuslerp without a base interpolates the models; flatten, per row and per column", () => {
  const w = (a: number, b: number) => [{ weight: a }, { weight: b }];
  const run = (x: Tensor, y: Tensor, params = {}, base?: Tensor) =>
    merge({
      method: "nuslerp",
      base,
      models: [x, y].map((tensor, i) => ({ tensor, params: w(1, 1)[i] })),
      params,
    }).data;
  near(run(vec(1, 0), vec(0, 1)), [Math.SQRT1_2, Math.SQRT1_2], 1e-12); // t = .5, θ = π/2
  // the reference formula, written out: slerp of v0, v1 at t with the angle of their normalised forms
  const slerp = (v0: number[], v1: number[], t: number) => {
    const n = (v: number[]) => Math.max(Math.hypot(...v), 1e-7);
    const cos = Math.min(1, Math.max(-1, v0.reduce((s, x, i) => s + x * v1[i], 0) / (n(v0) * n(v1))));
    const th = Math.acos(cos), s = Math.sin(th);
    if (Math.abs(s) < 1e-8) return v0.map((x, i) => (1 - t) * x + t * v1[i]);
    return v0.map((x, i) => (Math.sin((1 - t) * th) * x + Math.sin(t * th) * v1[i]) / s);
  };
  const a: Tensor = { shape: [2, 2], data: Float64Array.from([1, 0, 1, 1]) };
  const b: Tensor = { shape: [2, 2], data: Float64Array.from([0, 1, 2, 2]) };
  near(run(a, b), slerp([1, 0, 1, 1], [0, 1, 2, 2], .5), 1e-12);
  const rows = run(a, b, { nuslerp_flatten: false });
  near(rows, [...slerp([1, 0], [0, 1], .5), ...slerp([1, 1], [2, 2], .5)], 1e-12);
  near(rows.subarray(2), [1.5, 1.5], 1e-12); // a colinear row lerps
  const cols = run(a, b, { nuslerp_flatten: false, nuslerp_row_wise: true });
  const c0 = slerp([1, 1], [0, 2], .5), c1 = slerp([0, 1], [1, 2], .5);
  near(cols, [c0[0], c1[0], c0[1], c1[1]], 1e-12);
  // with a base: slerp of the task vectors, plus the base (example 10)
  near(
    merge({
      method: "nuslerp",
      base: vec(1, 1),
      models: [vec(1, 1), vec(1, 2)].map((tensor, i) => ({ tensor, params: w(1, 3)[i] })),
    }).data,
    [1, 1.92388],
    1e-5,
  );
});

Deno.test("rescale_norm l2 and linf match mergekit's norms", () => {
  const d = vec(1, -2, 3, -4), mask = new Uint8Array([1, 0, 1, 0]);
  const go = (rescaleNorm: "l2" | "linf") =>
    sparsify(d, { method: "random", density: .5, mask, rescale: true, rescaleNorm }).data;
  near(go("l2"), [Math.sqrt(3), 0, 3 * Math.sqrt(3), 0], 1e-12); // ‖δ‖₂ = √30, ‖kept‖₂ = √10
  near(go("linf"), [4 / 3, 0, 4, 0], 1e-12); // max 4 vs 3
  const viaMerge = merge({
    method: "dare_linear",
    base: zeros(4),
    models: [{ tensor: d, params: { weight: 1, density: .5, mask } }],
    params: { rescaleNorm: "l2" },
  });
  near(viaMerge.data, [Math.sqrt(3), 0, 3 * Math.sqrt(3), 0], 1e-12);
});

Deno.test("magnitude_prune (PEFT): Σ weight·pruned task vector; k = 0 gives zeros", () => {
  const out = merge({
    method: "magnitude_prune",
    base: zeros(4),
    models: two([{ weight: 1, density: .5 }, { weight: 3, density: .5 }]),
  });
  // δ₁ keeps −2, 1; δ₂ keeps 2 and the first of the tied ±1 (index 1)
  near(out.data, [1, -5, 0, 6], 0);
  const none = merge({
    method: "magnitude_prune",
    base: zeros(4),
    models: two([{ weight: 1, density: .1 }, { weight: 1, density: .1 }]),
  });
  near(none.data, [0, 0, 0, 0], 0);
});

Deno.test("DARE under semantics peft rescales by 1/density (mergekit: L1 ratio)", () => {
  const mask = new Uint8Array([1, 0, 1, 0]);
  const run = (semantics?: "peft") =>
    merge({
      method: "dare_linear",
      base: zeros(4),
      models: [{ tensor: vec(1, -2, 3, -4), params: { weight: 1, density: .5, mask } }],
      params: semantics ? { semantics } : {},
    }).data;
  near(run("peft"), [2, 0, 6, 0], 0);
  near(run(), [2.5, 0, 7.5, 0], 1e-12);
  // an explicit norm wins over the variant's default
  near(
    merge({
      method: "dare_ties",
      base: zeros(4),
      models: [{ tensor: vec(1, -2, 3, -4), params: { weight: 1, density: .5, mask } }],
      params: { semantics: "peft", rescaleNorm: "l1" },
    }).data,
    [2.5, 0, 7.5, 0],
    1e-12,
  );
});

Deno.test("workDtype rounds after every operation (bf16, f32), float64 otherwise", () => {
  const run = (workDtype?: "bf16" | "f32") =>
    merge({
      method: "task_arithmetic",
      base: zeros(1),
      models: [{ tensor: vec(3), params: { weight: 0.3 } }],
      params: workDtype ? { workDtype } : {},
    }).data[0];
  assert.equal(run(), 0.3 * 3); // float64; cast to bf16 this would be 0.8984375
  assert.equal(run("bf16"), 0.90234375); // bf16(0.3) = 0.30078125, × 3 = 0.90234375 (one bf16 step above)
  assert.equal(run("f32"), Math.fround(Math.fround(0.3) * 3));
  assert.notEqual(run("f32"), Math.fround(0.9));
  // TIES in bf16: every output is a bf16 value
  const t = merge({
    method: "ties",
    base: vec(.1, .2, .3, .4),
    models: two([{ weight: .7, density: .5 }, { weight: .3, density: .5 }]),
    params: { workDtype: "bf16" },
  }).data;
  const bf = new Float32Array(1), u = new Uint32Array(bf.buffer);
  for (const x of t) {
    bf[0] = x;
    assert.equal(u[0] & 0xffff, 0, `${x} is a bf16 value`);
  }
});
