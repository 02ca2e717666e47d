// Tiny synthetic checkpoints of every family, built from the names, shapes and config keys of each
// family: the loaded router is checked against moekit's own router built from the same weights (same
// selections and weights) and against a direct float64 implementation of the family's routing, and the
// MoE block against a direct float64 forward computed from the raw tensors as the modeling code does.
import assert from "node:assert/strict";
import { type Mat, matrix } from "../lib/core/matrix.ts";
import { deepseekV2Router, deepseekV3Router, topKRouter } from "../lib/routing/mod.ts";
import type { Router } from "../lib/routing/result.ts";
import { openMoeModel, saveMoeModel } from "../lib/checkpoints/mod.ts";
import {
  assertClose,
  assertRouting,
  backbone,
  gptOssConfig,
  gptOssMoe,
  mlp,
  perExpert,
  randT,
  type SynthTensor,
  withTempDir,
  writeSynthetic,
} from "./checkpoints_helpers.ts";

const d = 64, f = 32, T = 40;
const X = matrix.randn(T, d, { seed: 77 });

// ---- direct float64 reference --------------------------------------------------------------------

interface DirectRouting {
  scoring: "softmax" | "sigmoid" | "topk-softmax";
  k: number;
  norm: boolean;
  scale?: number;
  bias?: Float32Array; // router logit bias (GPT-OSS)
  correction?: Float32Array; // selection-only bias (DeepSeek-V3)
  groups?: { n: number; keep: number; score: "max" | "top2"; mask: number };
}

/** Direct routing: `[T·k]` experts and weights (sets per token). */
function directRoute(x: Mat, w: SynthTensor, o: DirectRouting): { idx: number[]; wt: number[] } {
  const E = w.shape[0], idx: number[] = [], wt: number[] = [];
  for (let t = 0; t < x.rows; t++) {
    const logit = Array.from({ length: E }, (_, e) => {
      let s = o.bias ? o.bias[e] : 0;
      for (let c = 0; c < d; c++) s += x.data[t * d + c] * (w.data as Float32Array)[e * d + c];
      return s;
    });
    let score: number[];
    if (o.scoring === "sigmoid") score = logit.map((v) => 1 / (1 + Math.exp(-v)));
    else if (o.scoring === "softmax") {
      const m = Math.max(...logit), ex = logit.map((v) => Math.exp(v - m)), z = ex.reduce((a, b) => a + b);
      score = ex.map((v) => v / z);
    } else score = logit;
    const choice = score.map((s, e) => s + (o.correction ? o.correction[e] : 0));
    if (o.groups) {
      const size = E / o.groups.n, gs: number[] = [];
      for (let g = 0; g < o.groups.n; g++) {
        const part = choice.slice(g * size, (g + 1) * size).sort((a, b) => b - a);
        gs.push(o.groups.score === "max" ? part[0] : part[0] + part[1]);
      }
      const kept = gs.map((s, g) => [s, g]).sort((a, b) => b[0] - a[0]).slice(0, o.groups.keep).map((p) =>
        p[1]
      );
      for (let e = 0; e < E; e++) if (!kept.includes(Math.floor(e / size))) choice[e] = o.groups.mask;
    }
    const top = choice.map((c, e) => [c, e]).sort((a, b) => b[0] - a[0]).slice(0, o.k).map((p) => p[1]);
    let ws = top.map((e) => score[e]);
    if (o.scoring === "topk-softmax") {
      const m = Math.max(...ws), ex = ws.map((v) => Math.exp(v - m)), z = ex.reduce((a, b) => a + b);
      ws = ex.map((v) => v / z);
    } else if (o.norm) {
      const s = ws.reduce((a, b) => a + b) + (o.scoring === "sigmoid" ? 1e-20 : 0);
      ws = ws.map((v) => v / s);
    }
    idx.push(...top);
    wt.push(...ws.map((v) => v * (o.scale ?? 1)));
  }
  return { idx, wt };
}

const silu = (v: number) => v / (1 + Math.exp(-v));

/** `down(act(gate·x + b1, up·x + b3)) + b2` for one token, from nn.Linear-layout arrays. */
function expertDirect(
  x: Float32Array,
  g: (i: number, c: number) => number,
  u: (i: number, c: number) => number,
  dn: (r: number, i: number) => number,
  fe: number,
  gptOss?: { b1: (i: number) => number; b3: (i: number) => number; b2: (r: number) => number },
): number[] {
  const h: number[] = [];
  for (let i = 0; i < fe; i++) {
    let a = gptOss ? gptOss.b1(i) : 0, b = gptOss ? gptOss.b3(i) : 0;
    for (let c = 0; c < d; c++) {
      a += g(i, c) * x[c];
      b += u(i, c) * x[c];
    }
    if (gptOss) {
      a = Math.min(a, 7);
      b = Math.min(Math.max(b, -7), 7);
      h.push((b + 1) * a / (1 + Math.exp(-1.702 * a)));
    } else h.push(silu(a) * b);
  }
  return Array.from({ length: d }, (_, r) => {
    let s = gptOss ? gptOss.b2(r) : 0;
    for (let i = 0; i < fe; i++) s += dn(r, i) * h[i];
    return s;
  });
}

function linear(t: SynthTensor, offset = 0, cols = d) {
  const data = t.data as Float32Array;
  return (r: number, c: number) => data[offset + r * cols + c];
}

/** Routed (per-expert names) + optional shared expert, direct. */
function directForward(
  x: Mat,
  tensors: Record<string, SynthTensor>,
  block: string,
  routing: { idx: number[]; wt: number[] },
  k: number,
  names: [string, string, string],
  shared?: { prefix: string; fs: number; gate?: string },
): Float32Array {
  const out = new Float32Array(x.rows * d);
  for (let t = 0; t < x.rows; t++) {
    const xt = x.data.subarray(t * d, (t + 1) * d), y = new Array(d).fill(0);
    for (let j = 0; j < k; j++) {
      const e = routing.idx[t * k + j], p = `${block}.experts.${e}`;
      const ye = expertDirect(
        xt,
        linear(tensors[`${p}.${names[0]}.weight`]),
        linear(tensors[`${p}.${names[1]}.weight`]),
        linear(tensors[`${p}.${names[2]}.weight`], 0, f),
        f,
      );
      for (let r = 0; r < d; r++) y[r] += routing.wt[t * k + j] * ye[r];
    }
    if (shared) {
      const s = shared.prefix, fs = shared.fs;
      const ys = expertDirect(
        xt,
        linear(tensors[`${s}.gate_proj.weight`]),
        linear(tensors[`${s}.up_proj.weight`]),
        linear(tensors[`${s}.down_proj.weight`], 0, fs),
        fs,
      );
      let gate = 1;
      if (shared.gate) {
        let z = 0;
        for (let c = 0; c < d; c++) z += xt[c] * (tensors[shared.gate].data as Float32Array)[c];
        gate = 1 / (1 + Math.exp(-z));
      }
      for (let r = 0; r < d; r++) y[r] += gate * ys[r];
    }
    out.set(y, t * d);
  }
  return out;
}

/** The loaded router equals moekit's router built from the same weights, and the direct routing. */
function checkRouter(
  loaded: Router,
  own: Router,
  direct: { idx: number[]; wt: number[] },
  k: number,
  what: string,
) {
  const a = loaded.route(X), b = own.route(X);
  assert.deepEqual(Array.from(a.indices), Array.from(b.indices), `${what}: indices vs moekit router`);
  assert.deepEqual(Array.from(a.weights), Array.from(b.weights), `${what}: weights vs moekit router`);
  assertRouting(a, direct.idx, direct.wt, k, 1e-5, `${what} vs direct`);
}

function mat(t: SynthTensor): Mat {
  return matrix.from(t.data as Float32Array, t.shape[0], t.shape[1]);
}

// ---- families ------------------------------------------------------------------------------------

Deno.test("qwen2_moe: sparse step, dense layers named mlp.gate_proj, shared expert with sigmoid gate", async () => {
  const E = 8, k = 2, fs = 48;
  const config = {
    model_type: "qwen2_moe",
    num_hidden_layers: 4,
    hidden_size: d,
    intermediate_size: 96,
    moe_intermediate_size: f,
    shared_expert_intermediate_size: fs,
    num_experts: E,
    num_experts_per_tok: k,
    decoder_sparse_step: 2,
    norm_topk_prob: false,
    torch_dtype: "float32",
  };
  const t: Record<string, SynthTensor> = { ...backbone(4, d) };
  for (const l of [0, 2]) Object.assign(t, mlp(`model.layers.${l}.mlp`, d, 96));
  for (const l of [1, 3]) {
    const b = `model.layers.${l}.mlp`;
    Object.assign(
      t,
      { [`${b}.gate.weight`]: randT([E, d], 0.3) },
      perExpert(b, E, d, f),
      mlp(`${b}.shared_expert`, d, fs),
    );
    t[`${b}.shared_expert_gate.weight`] = randT([1, d], 0.3);
  }
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.deepEqual(model.config.moeLayers, [1, 3]);
    assert.deepEqual(model.config.shared, { hidden: fs, gated: true });
    assert.equal(model.config.dtype, "float32");
    await assert.rejects(() => model.layer(0), /layer 0 is not an MoE layer; MoE layers are \[1, 3\]/);
    for (const l of [1, 3]) {
      const b = `model.layers.${l}.mlp`, gw = t[`${b}.gate.weight`];
      const direct = directRoute(X, gw, { scoring: "softmax", k, norm: false });
      checkRouter(
        model.router(l),
        topKRouter({ weight: mat(gw), preset: "qwen2_moe", k }),
        direct,
        k,
        `qwen2 ${l}`,
      );
      const { output } = (await model.layer(l)).forward(X);
      const want = directForward(X, t, b, direct, k, ["gate_proj", "up_proj", "down_proj"], {
        prefix: `${b}.shared_expert`,
        fs,
        gate: `${b}.shared_expert_gate.weight`,
      });
      assertClose(output, want, 1e-5, `qwen2 layer ${l}`);
    }
    model.close();
  });
});

Deno.test("qwen3_moe: transformers-5 key num_local_experts, mlp_only_layers, renormalised top-k", async () => {
  const E = 8, k = 3;
  const config = {
    model_type: "qwen3_moe",
    num_hidden_layers: 2,
    hidden_size: d,
    intermediate_size: 96,
    moe_intermediate_size: f,
    num_local_experts: E,
    num_experts_per_tok: k,
    mlp_only_layers: [0],
    norm_topk_prob: true,
    dtype: "bfloat16",
    torch_dtype: "float32",
  };
  const b = "model.layers.1.mlp";
  const t = {
    ...backbone(2, d, "BF16"),
    ...mlp("model.layers.0.mlp", d, 96, "BF16"),
    ...perExpert(b, E, d, f, undefined, "BF16"),
  };
  t[`${b}.gate.weight`] = randT([E, d], 0.3, "BF16");
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.deepEqual([model.config.moeLayers, model.config.experts, model.config.dtype], [
      [1],
      E,
      "bfloat16",
    ]);
    const direct = directRoute(X, t[`${b}.gate.weight`], { scoring: "softmax", k, norm: true });
    checkRouter(
      model.router(1),
      topKRouter({ weight: mat(t[`${b}.gate.weight`]), preset: "qwen3_moe", k }),
      direct,
      k,
      "qwen3",
    );
    const { output } = (await model.layer(1)).forward(X);
    assertClose(
      output,
      directForward(X, t, b, direct, k, ["gate_proj", "up_proj", "down_proj"]),
      1e-5,
      "qwen3",
    );
    model.close();
  });
});

Deno.test("mixtral fused layout with the num_experts alias, sharded", async () => {
  const E = 4, k = 2, b = "model.layers.0.mlp";
  const config = {
    model_type: "mixtral",
    num_hidden_layers: 1,
    hidden_size: d,
    intermediate_size: f,
    num_experts: E,
    num_experts_per_tok: k,
  };
  const per = perExpert("x", E, d, f, ["w1", "w3", "w2"]);
  const gu = new Float32Array(E * 2 * f * d), dn = new Float32Array(E * d * f);
  for (let e = 0; e < E; e++) {
    gu.set(per[`x.experts.${e}.w1.weight`].data as Float32Array, e * 2 * f * d);
    gu.set(per[`x.experts.${e}.w3.weight`].data as Float32Array, e * 2 * f * d + f * d);
    dn.set(per[`x.experts.${e}.w2.weight`].data as Float32Array, e * d * f);
  }
  const t: Record<string, SynthTensor> = {
    ...backbone(1, d),
    [`${b}.gate.weight`]: randT([E, d], 0.3),
    [`${b}.experts.gate_up_proj`]: { shape: [E, 2 * f, d], data: gu, dtype: "F32" },
    [`${b}.experts.down_proj`]: { shape: [E, d, f], data: dn, dtype: "F32" },
  };
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t, 40_000);
    const model = await openMoeModel(dir);
    assert.equal(model.layout, "fused");
    assert.ok(model.shards.length > 1);
    const direct = directRoute(X, t[`${b}.gate.weight`], { scoring: "softmax", k, norm: true });
    checkRouter(
      model.router(0),
      topKRouter({ weight: mat(t[`${b}.gate.weight`]), preset: "mixtral" }),
      direct,
      k,
      "mixtral",
    );
    const { output } = (await model.layer(0)).forward(X);
    assertClose(output, directForward(X, per, "x", direct, k, ["w1", "w3", "w2"]), 1e-5, "mixtral fused");
    model.close();
  });
});

Deno.test("deepseek_v2: group-limited greedy, scaling, never renormalised, shared experts, first dense layer", async () => {
  const E = 8, k = 3, nShared = 2;
  const config = {
    model_type: "deepseek_v2",
    num_hidden_layers: 2,
    hidden_size: d,
    intermediate_size: 96,
    moe_intermediate_size: f,
    n_routed_experts: E,
    num_experts_per_tok: k,
    n_shared_experts: nShared,
    first_k_dense_replace: 1,
    topk_method: "group_limited_greedy",
    n_group: 4,
    topk_group: 2,
    routed_scaling_factor: 2,
    norm_topk_prob: true,
  };
  const b = "model.layers.1.mlp";
  const t: Record<string, SynthTensor> = {
    ...backbone(2, d),
    ...mlp("model.layers.0.mlp", d, 96),
    ...perExpert(b, E, d, f),
    ...mlp(`${b}.shared_experts`, d, f * nShared),
    [`${b}.gate.weight`]: randT([E, d], 0.3),
  };
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.deepEqual([model.config.moeLayers, model.config.normTopkProb, model.config.shared], [[1], false, {
      hidden: f * nShared,
      gated: false,
    }]);
    const gw = t[`${b}.gate.weight`];
    const direct = directRoute(X, gw, {
      scoring: "softmax",
      k,
      norm: false,
      scale: 2,
      groups: { n: 4, keep: 2, score: "max", mask: 0 },
    });
    const own = deepseekV2Router({ weight: mat(gw), k, nGroup: 4, topkGroup: 2, routedScalingFactor: 2 });
    checkRouter(model.router(1), own, direct, k, "deepseek-v2");
    const { output } = (await model.layer(1)).forward(X);
    const want = directForward(X, t, b, direct, k, ["gate_proj", "up_proj", "down_proj"], {
      prefix: `${b}.shared_experts`,
      fs: f * nShared,
    });
    assertClose(output, want, 1e-5, "deepseek-v2");
    model.close();
  });
});

Deno.test("deepseek_v3: sigmoid, correction bias for selection, top-2-sum groups, scaling, MTP layer ignored", async () => {
  const E = 16, k = 4, L = 2;
  const config = {
    model_type: "deepseek_v3",
    num_hidden_layers: L,
    hidden_size: d,
    intermediate_size: 96,
    moe_intermediate_size: f,
    n_routed_experts: E,
    num_experts_per_tok: k,
    n_shared_experts: 1,
    first_k_dense_replace: 1,
    n_group: 4,
    topk_group: 2,
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    scoring_func: "sigmoid",
    topk_method: "noaux_tc",
  };
  const b = "model.layers.1.mlp";
  const t: Record<string, SynthTensor> = {
    ...backbone(L, d),
    ...mlp("model.layers.0.mlp", d, 96),
    ...perExpert(b, E, d, f),
    ...mlp(`${b}.shared_experts`, d, f),
    [`${b}.gate.weight`]: randT([E, d], 0.3),
    [`${b}.gate.e_score_correction_bias`]: randT([E], 0.1),
    // the MTP layer (index num_hidden_layers) with other shapes: transformers drops it, so does moekit
    [`model.layers.${L}.mlp.gate.weight`]: randT([3, 5], 1),
  };
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.deepEqual([model.config.scoring, model.config.grouping], ["sigmoid", {
      nGroup: 4,
      topkGroup: 2,
      method: "noaux_tc",
    }]);
    const gw = t[`${b}.gate.weight`], bias = t[`${b}.gate.e_score_correction_bias`].data as Float32Array;
    const direct = directRoute(X, gw, {
      scoring: "sigmoid",
      k,
      norm: true,
      scale: 2.5,
      correction: bias,
      groups: { n: 4, keep: 2, score: "top2", mask: -Infinity },
    });
    const own = deepseekV3Router({
      weight: mat(gw),
      k,
      nGroup: 4,
      topkGroup: 2,
      routedScalingFactor: 2.5,
      bias: Float32Array.from(bias),
    });
    checkRouter(model.router(1), own, direct, k, "deepseek-v3");
    const { output } = (await model.layer(1)).forward(X);
    const want = directForward(X, t, b, direct, k, ["gate_proj", "up_proj", "down_proj"], {
      prefix: `${b}.shared_experts`,
      fs: f,
    });
    assertClose(output, want, 1e-5, "deepseek-v3");
    model.close();
  });
});

// GPT-OSS: gate_up [E,d,2f] applied as x·W with gate/up interleaved, biases, clamped SwiGLU, router bias,
// top-k on logits then softmax over the k.
function gptOssDirect(
  x: Mat,
  gu: (e: number, c: number, j: number) => number,
  gub: Float32Array,
  dn: (e: number, i: number, r: number) => number,
  db: Float32Array,
  routing: { idx: number[]; wt: number[] },
  k: number,
) {
  const out = new Float32Array(x.rows * d);
  for (let t = 0; t < x.rows; t++) {
    const xt = x.data.subarray(t * d, (t + 1) * d);
    for (let j = 0; j < k; j++) {
      const e = routing.idx[t * k + j];
      const ye = expertDirect(
        xt,
        (i, c) => gu(e, c, 2 * i),
        (i, c) => gu(e, c, 2 * i + 1),
        (r, i) => dn(e, i, r),
        f,
        {
          b1: (i) => gub[e * 2 * f + 2 * i],
          b3: (i) => gub[e * 2 * f + 2 * i + 1],
          b2: (r) => db[e * d + r],
        },
      );
      for (let r = 0; r < d; r++) out[t * d + r] += routing.wt[t * k + j] * ye[r];
    }
  }
  return out;
}

Deno.test("gpt_oss bf16: interleaved x·W experts with biases, clamped SwiGLU, router bias, softmax over the k", async () => {
  const E = 8, k = 2, b = "model.layers.0.mlp";
  const config = gptOssConfig(d, f, E, k, { swiglu_limit: 7, dtype: "bfloat16" });
  const t: Record<string, SynthTensor> = {
    ...backbone(1, d, "BF16"),
    // gate_up std large enough that the ±7 clamps are active on some values
    ...gptOssMoe(b, E, d, f, [0.3, 0.5, 1.2, 0.5, 0.2, 0.1], "BF16"),
  };
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.equal(model.layout, "gpt-oss");
    const gw = t[`${b}.router.weight`], rb = t[`${b}.router.bias`].data as Float32Array;
    const direct = directRoute(X, gw, { scoring: "topk-softmax", k, norm: true, bias: rb });
    checkRouter(
      model.router(0),
      topKRouter({ weight: mat(gw), bias: rb, k, normTopkProb: true }),
      direct,
      k,
      "gpt-oss",
    );
    const guD = t[`${b}.experts.gate_up_proj`].data as Float32Array,
      dnD = t[`${b}.experts.down_proj`].data as Float32Array;
    let clamped = 0;
    for (let i = 0; i < X.rows; i++) {
      for (let c = 0; c < 2 * f; c++) {
        let s = 0;
        for (let r = 0; r < d; r++) s += X.data[i * d + r] * guD[r * 2 * f + c];
        if (Math.abs(s) > 7) clamped++;
      }
    }
    assert.ok(clamped > 0, "the clamp is exercised");
    const { output } = (await model.layer(0)).forward(X);
    const want = gptOssDirect(
      X,
      (e, c, j) => guD[e * d * 2 * f + c * 2 * f + j],
      t[`${b}.experts.gate_up_proj_bias`].data as Float32Array,
      (e, i, r) => dnD[e * f * d + i * d + r],
      t[`${b}.experts.down_proj_bias`].data as Float32Array,
      direct,
      k,
    );
    assertClose(output, want, 1e-5, "gpt-oss");
    model.close();
  });
});

const FP4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
const fp4 = (n: number) => (n & 8 ? -1 : 1) * FP4[n & 7];

Deno.test("gpt_oss MXFP4: blocks and scales decoded (E2M1, low nibble first, 2^(s−127))", async () => {
  const E = 4, k = 2, b = "model.layers.0.mlp";
  const config = gptOssConfig(d, f, E, k, { quantization_config: { quant_method: "mxfp4" } });
  const bytes = (n: number, seed: number) =>
    Uint8Array.from(matrix.rand(1, n, { seed }).data, (v) => Math.floor(v * 256));
  const scales = (n: number, seed: number) =>
    Uint8Array.from(matrix.rand(1, n, { seed }).data, (v) => 121 + Math.floor(v * 5));
  const t: Record<string, SynthTensor> = {
    ...backbone(1, d, "BF16"),
    [`${b}.router.weight`]: randT([E, d], 0.3, "BF16"),
    [`${b}.router.bias`]: randT([E], 0.5, "BF16"),
    [`${b}.experts.gate_up_proj_blocks`]: {
      shape: [E, 2 * f, d / 32, 16],
      data: bytes(E * 2 * f * d / 2, 1),
      dtype: "U8",
    },
    [`${b}.experts.gate_up_proj_scales`]: {
      shape: [E, 2 * f, d / 32],
      data: scales(E * 2 * f * d / 32, 2),
      dtype: "U8",
    },
    [`${b}.experts.down_proj_blocks`]: {
      shape: [E, d, f / 32, 16],
      data: bytes(E * d * f / 2, 3),
      dtype: "U8",
    },
    [`${b}.experts.down_proj_scales`]: {
      shape: [E, d, f / 32],
      data: scales(E * d * f / 32, 4),
      dtype: "U8",
    },
    [`${b}.experts.gate_up_proj_bias`]: randT([E, 2 * f], 0.5, "BF16"),
    [`${b}.experts.down_proj_bias`]: randT([E, d], 0.1, "BF16"),
  };
  // independent decode: value (row, col) of a [rows, cols] packed matrix
  const val = (blocks: Uint8Array, sc: Uint8Array, cols: number) => (row: number, col: number) => {
    const byte = blocks[row * (cols / 2) + (col >> 1)];
    return fp4(col & 1 ? byte >> 4 : byte & 15) * Math.pow(2, sc[row * (cols / 32) + (col >> 5)] - 127);
  };
  const gu = val(
    t[`${b}.experts.gate_up_proj_blocks`].data as Uint8Array,
    t[`${b}.experts.gate_up_proj_scales`].data as Uint8Array,
    d,
  );
  const dn = val(
    t[`${b}.experts.down_proj_blocks`].data as Uint8Array,
    t[`${b}.experts.down_proj_scales`].data as Uint8Array,
    f,
  );
  await withTempDir(async (dir) => {
    await writeSynthetic(dir, config, t);
    const model = await openMoeModel(dir);
    assert.equal(model.layout, "gpt-oss-mxfp4");
    const gw = t[`${b}.router.weight`], rb = t[`${b}.router.bias`].data as Float32Array;
    const direct = directRoute(X, gw, { scoring: "topk-softmax", k, norm: true, bias: rb });
    const { output } = (await model.layer(0)).forward(X);
    // decoded rows are nn.Linear rows: gate_up row 2i = gate i, 2i+1 = up i; down [d, f]
    const want = gptOssDirect(
      X,
      (e, c, j) => gu(e * 2 * f + j, c),
      t[`${b}.experts.gate_up_proj_bias`].data as Float32Array,
      (e, i, r) => dn(e * d + r, i),
      t[`${b}.experts.down_proj_bias`].data as Float32Array,
      direct,
      k,
    );
    assertClose(output, want, 1e-5, "gpt-oss mxfp4");
    const p = model.params();
    assert.equal(p.total - p.activePerToken, (E - k) * (3 * d * f + 2 * f + d));
    // pruning MXFP4 experts slices their blocks and scales: the kept experts decode to the same weights
    const full = await model.layer(0);
    await saveMoeModel(model, `${dir}-pruned`, { layers: { 0: { keep: [3, 0] } } });
    try {
      const pruned = await openMoeModel(`${dir}-pruned`);
      assert.equal(pruned.layout, "gpt-oss-mxfp4");
      const pl = await pruned.layer(0);
      assert.deepEqual(Array.from(pl.experts[0].w2.data), Array.from(full.experts[3].w2.data));
      assert.deepEqual(Array.from(pl.experts[1].w3.data), Array.from(full.experts[0].w3.data));
      pruned.close();
    } finally {
      await Deno.remove(`${dir}-pruned`, { recursive: true }).catch(() => {});
    }
    model.close();
  });
});
