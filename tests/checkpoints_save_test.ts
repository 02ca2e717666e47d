// saveMoeModel / materialize round trips: pruned experts in the source layout (transformers-loadable),
// merged / low-rank / quantised / delta experts in moekit's format, read back by openMoeModel with the
// same outputs as before saving, and materialised to plain dense checkpoints.
import assert from "node:assert/strict";
import { type Mat, matrix } from "../lib/core/matrix.ts";
import { topKRouter } from "../lib/routing/mod.ts";
import { moeLayer, type SwiGLUExpert } from "../lib/moe/layer.ts";
import {
  materialize,
  materializeExpert,
  type MoeModel,
  openMoeModel,
  quantizedMatrix,
  saveMoeModel,
  type StoredExpert,
} from "../lib/checkpoints/mod.ts";
import {
  backbone,
  FIXTURES,
  fixturesMissing,
  gptOssConfig,
  gptOssMoe,
  perExpert,
  randT,
  type SynthTensor,
  withTempDir,
  writeSynthetic,
} from "./checkpoints_helpers.ts";

const d = 64, f = 32, E = 6, k = 2;
const X = matrix.randn(48, d, { seed: 5 });

function rowsOf(m: Mat, rows: number[]): Mat {
  const out = matrix.zeros(rows.length, m.cols);
  rows.forEach((r, i) => out.data.set(m.data.subarray(r * m.cols, (r + 1) * m.cols), i * m.cols));
  return out;
}

async function olmoeLike(dir: string, layers = 2, extra: Record<string, unknown> = {}) {
  const config = {
    model_type: "olmoe",
    num_hidden_layers: layers,
    hidden_size: d,
    intermediate_size: f,
    num_experts: E,
    num_experts_per_tok: k,
    norm_topk_prob: false,
    ...extra,
  };
  const t: Record<string, SynthTensor> = { ...backbone(layers, d) };
  for (let l = 0; l < layers; l++) {
    Object.assign(
      t,
      { [`model.layers.${l}.mlp.gate.weight`]: randT([E, d], 0.3) },
      perExpert(`model.layers.${l}.mlp`, E, d, f),
    );
  }
  await writeSynthetic(dir, config, t);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, '{"version": "1.0"}');
  await Deno.writeTextFile(`${dir}/generation_config.json`, '{"bos_token_id": 1}');
}

/** Runs `fn` in a temp dir holding {@link olmoeLike} at `${tmp}/src`, opened (and closed afterwards). */
async function withOlmoe(fn: (tmp: string, model: MoeModel) => Promise<void>): Promise<void> {
  await withTempDir(async (tmp) => {
    await olmoeLike(`${tmp}/src`);
    const model = await openMoeModel(`${tmp}/src`);
    try {
      await fn(tmp, model);
    } finally {
      model.close();
    }
  });
}

Deno.test("prune → save → open: the source layout, config and tokenizer files, same outputs as the pruned layer", async () => {
  await withOlmoe(async (tmp, model) => {
    const keep = [0, 2, 3, 5];
    const before = [];
    for (const l of [0, 1]) {
      const layer = await model.layer(l);
      const w = (await model.checkpoint.read(`model.layers.${l}.mlp.gate.weight`)).data as Float32Array;
      const pruned = moeLayer({
        router: topKRouter({
          weight: rowsOf(matrix.from(Float32Array.from(w), E, d), keep),
          k,
          normTopkProb: false,
        }),
        experts: keep.map((e) => layer.experts[e]),
      });
      before.push(pruned.forward(X));
    }
    const r = await saveMoeModel(model, `${tmp}/out`, { layers: { 0: { keep }, 1: { keep } } });
    assert.deepEqual([r.transformersLoadable, r.moekitLayers], [true, []]);
    const cfg = JSON.parse(await Deno.readTextFile(`${tmp}/out/config.json`));
    assert.equal(cfg.num_experts, keep.length);
    assert.equal(cfg.moekit, undefined);
    assert.equal(await Deno.readTextFile(`${tmp}/out/tokenizer.json`), '{"version": "1.0"}');
    assert.equal(await Deno.readTextFile(`${tmp}/out/generation_config.json`), '{"bos_token_id": 1}');
    const out = await openMoeModel(`${tmp}/out`);
    assert.equal(out.layout, "per-expert");
    assert.ok(out.checkpoint.info("model.layers.0.mlp.experts.3.gate_proj.weight"));
    assert.equal(out.checkpoint.info("model.layers.0.mlp.experts.4.gate_proj.weight"), undefined);
    for (const l of [0, 1]) {
      const got = (await out.layer(l)).forward(X);
      assert.deepEqual(Array.from(got.routing.indices), Array.from(before[l].routing.indices));
      assert.deepEqual(Array.from(got.output.data), Array.from(before[l].output.data));
    }
    // refused: writing over a non-empty folder, before any work
    await assert.rejects(
      () => saveMoeModel(model, `${tmp}/out`, { layers: { 0: { keep } } }),
      /not empty|exists/,
    );
    await assert.rejects(
      () => saveMoeModel(model, `${tmp}/x`, { layers: { 0: { keep: [0] } } }),
      /fewer than num_experts_per_tok/,
    );
    out.close();
  });
});

Deno.test("save keeps config.json's numbers as the source wrote them (1e-05, 10000.0); changed keys only", async () => {
  await withTempDir(async (tmp) => {
    await olmoeLike(`${tmp}/src`);
    // as Python's json module writes them
    const text = (await Deno.readTextFile(`${tmp}/src/config.json`))
      .replace(/\}\s*$/, ', "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "initializer_range": 0.02}');
    await Deno.writeTextFile(`${tmp}/src/config.json`, text);
    const model = await openMoeModel(`${tmp}/src`);
    try {
      await saveMoeModel(model, `${tmp}/out`, {
        layers: { 0: { keep: [0, 2, 3, 5] }, 1: { keep: [0, 1, 2, 3] } },
      });
    } finally {
      model.close();
    }
    const out = await Deno.readTextFile(`${tmp}/out/config.json`);
    assert.match(out, /"rms_norm_eps": 1e-05,/);
    assert.match(out, /"rope_theta": 10000\.0,/);
    assert.match(out, /"initializer_range": 0\.02\n/);
    assert.match(out, /"num_experts": 4,/);
    assert.equal(JSON.parse(out).rms_norm_eps, 1e-5);
  });
});

Deno.test("unequal pruning → moekit layers (read back), materialize refuses unequal counts", async () => {
  await withOlmoe(async (tmp, model) => {
    const r = await saveMoeModel(model, `${tmp}/out`, { layers: { 1: { keep: [1, 2, 4] } } });
    assert.deepEqual([r.transformersLoadable, r.moekitLayers], [false, [1]]);
    const out = await openMoeModel(`${tmp}/out`);
    assert.deepEqual([out.info(0).layout, out.info(1).layout, out.info(1).experts], [
      "per-expert",
      "moekit",
      3,
    ]);
    const orig = await model.layer(1), got = await out.layer(1);
    assert.deepEqual(got.experts.map((e) => e.w1.data[0]), [1, 2, 4].map((e) => orig.experts[e].w1.data[0]));
    await assert.rejects(() => materialize(out, `${tmp}/dense`), /different expert counts/);
    out.close();
  });
});

/** Low-rank, RTN and delta experts for one layer, and the in-memory layer they stand for. */
function compressed(experts: readonly SwiGLUExpert[]) {
  const lowrank = (m: Mat, seed: number) => {
    const r = 4;
    return {
      kind: "lowrank" as const,
      a: matrix.randn(m.rows, r, { seed, std: 0.2 }),
      b: matrix.randn(r, m.cols, { seed: seed + 1, std: 0.2 }),
    };
  };
  const rtn = (m: Mat, bits: number) => {
    // RTN with groups of 16 columns: scale = (max − min)/(2^b − 1), zero = round(−min/scale)
    const g = 16,
      groups = Math.ceil(m.cols / g),
      scale = new Float32Array(m.rows * groups),
      zero = new Float32Array(m.rows * groups);
    const values = matrix.zeros(m.rows, m.cols), qmax = 2 ** bits - 1;
    for (let i = 0; i < m.rows; i++) {
      for (let gi = 0; gi < groups; gi++) {
        let lo = 0, hi = 0;
        for (let j = gi * g; j < Math.min(m.cols, (gi + 1) * g); j++) {
          lo = Math.min(lo, m.data[i * m.cols + j]);
          hi = Math.max(hi, m.data[i * m.cols + j]);
        }
        const s = Math.fround((hi - lo) / qmax), z = Math.round(-lo / s);
        scale[i * groups + gi] = s;
        zero[i * groups + gi] = z;
        for (let j = gi * g; j < Math.min(m.cols, (gi + 1) * g); j++) {
          const q = Math.min(qmax, Math.max(0, Math.round(m.data[i * m.cols + j] / s) + z));
          values.data[i * m.cols + j] = s * (q - z);
        }
      }
    }
    return quantizedMatrix({ values, bits, groupSize: g, scale, zero });
  };
  const stored: StoredExpert[] = experts.map((e, i) =>
    i % 3 === 0
      ? { w1: lowrank(e.w1, 10 * i), w3: lowrank(e.w3, 10 * i + 2), w2: lowrank(e.w2, 10 * i + 4) }
      : i % 3 === 1
      ? { w1: rtn(e.w1, 4), w3: rtn(e.w3, 3), w2: e.w2 }
      : {
        w1: {
          kind: "delta" as const,
          a: matrix.randn(f, 2, { seed: i }),
          b: matrix.randn(2, d, { seed: i + 50, std: 0.05 }),
        },
        w3: e.w3,
        w2: e.w2,
      }
  );
  const base: SwiGLUExpert = experts[0];
  return { stored, base, dense: stored.map((s) => materializeExpert(s, base)) };
}

Deno.test("low-rank / RTN / delta experts → save → open → same outputs; materialize → plain checkpoint", async () => {
  await withOlmoe(async (tmp, model) => {
    const layer = await model.layer(1), { stored, base, dense } = compressed(layer.experts);
    const want = moeLayer({ router: model.router(1), experts: dense }).forward(X).output;
    const r = await saveMoeModel(model, `${tmp}/out`, {
      layers: { 1: { experts: stored, deltaBase: base } },
    });
    assert.deepEqual(r.moekitLayers, [1]);
    const cfg = JSON.parse(await Deno.readTextFile(`${tmp}/out/config.json`));
    assert.equal(cfg.moekit.format, "moekit-experts/1");
    assert.deepEqual(cfg.moekit.layers["1"].matrices["1.w1"], { format: "rtn", bits: 4, group_size: 16 });
    const out = await openMoeModel(`${tmp}/out`);
    assert.ok(out.checkpoint.info("model.layers.1.mlp.experts.0.gate_proj.lowrank_a"));
    assert.deepEqual(out.checkpoint.info("model.layers.1.mlp.experts.1.gate_proj.qcodes")!.shape, [f, d / 2]);
    const got = (await out.layer(1)).forward(X).output;
    assert.deepEqual(Array.from(got.data), Array.from(want.data));
    // materialised: dense weights in the source layout, the same outputs within float32 rounding
    const m = await materialize(out, `${tmp}/dense`);
    assert.equal(m.transformersLoadable, true);
    const plain = await openMoeModel(`${tmp}/dense`);
    assert.equal(plain.info(1).layout, "per-expert");
    assert.equal((JSON.parse(await Deno.readTextFile(`${tmp}/dense/config.json`))).moekit, undefined);
    const again = (await plain.layer(1)).forward(X).output;
    for (let i = 0; i < want.data.length; i++) {
      assert.ok(Math.abs(again.data[i] - want.data[i]) <= 1e-6 * (1 + Math.abs(want.data[i])));
    }
    plain.close();
    out.close();
  });
});

Deno.test("merged experts with an expert_map → save → open → shared slots; materialize copies them per slot", async () => {
  await withOlmoe(async (tmp, model) => {
    const layer = await model.layer(0);
    const avg = (a: Mat, b: Mat) => matrix.from(a.data.map((v, i) => (v + b.data[i]) / 2), a.rows, a.cols);
    const merged: SwiGLUExpert[] = [0, 2, 4].map((e) => ({
      w1: avg(layer.experts[e].w1, layer.experts[e + 1].w1),
      w3: avg(layer.experts[e].w3, layer.experts[e + 1].w3),
      w2: avg(layer.experts[e].w2, layer.experts[e + 1].w2),
    }));
    const map = [0, 0, 1, 1, 2, 2];
    const want = moeLayer({ router: model.router(0), experts: map.map((s) => merged[s]) }).forward(X).output;
    await saveMoeModel(model, `${tmp}/out`, { layers: { 0: { experts: merged, expertMap: map } } });
    const out = await openMoeModel(`${tmp}/out`);
    const got = await out.layer(0);
    assert.equal(got.experts[0], got.experts[1]);
    assert.deepEqual(Array.from(got.forward(X).output.data), Array.from(want.data));
    await materialize(out, `${tmp}/dense`);
    const plain = await openMoeModel(`${tmp}/dense`);
    assert.equal(plain.config.experts, E);
    assert.deepEqual(Array.from((await plain.layer(0)).forward(X).output.data), Array.from(want.data));
    plain.close();
    out.close();
  });
});

Deno.test("GPT-OSS and DeepSeek-V3: pruning slices router bias / correction bias; dense GPT-OSS experts round-trip", async () => {
  await withTempDir(async (tmp) => {
    const b = "model.layers.0.mlp";
    await writeSynthetic(`${tmp}/gpt`, gptOssConfig(d, f, E, k), {
      ...backbone(1, d, "BF16"),
      ...gptOssMoe(b, E, d, f, [0.3, 0.5, 0.3, 0.5, 0.2, 0.1], "BF16"),
    });
    const gpt = await openMoeModel(`${tmp}/gpt`);
    const full = await gpt.layer(0), keep = [5, 1, 3];
    await saveMoeModel(gpt, `${tmp}/gpt-pruned`, { layers: { 0: { keep } } });
    const pruned = await openMoeModel(`${tmp}/gpt-pruned`);
    assert.deepEqual(pruned.checkpoint.info(`${b}.router.bias`)!.shape, [3]);
    const pl = await pruned.layer(0);
    keep.forEach((e, i) => {
      assert.deepEqual(Array.from(pl.experts[i].w1.data), Array.from(full.experts[e].w1.data));
      assert.deepEqual(Array.from(pl.experts[i].b3!), Array.from(full.experts[e].b3!));
    });
    // dense replacement written back in GPT-OSS's own [E,d,2f] interleaved layout (bf16 values stay exact)
    await saveMoeModel(gpt, `${tmp}/gpt-dense`, { layers: { 0: { experts: [...full.experts].reverse() } } });
    const dense = await openMoeModel(`${tmp}/gpt-dense`);
    assert.equal(dense.layout, "gpt-oss");
    const dl = await dense.layer(0);
    assert.deepEqual(Array.from(dl.experts[0].w2.data), Array.from(full.experts[E - 1].w2.data));
    assert.deepEqual(Array.from(dl.experts[0].b1!), Array.from(full.experts[E - 1].b1!));
    for (const m of [gpt, pruned, dense]) m.close();

    const v3 = "model.layers.0.mlp";
    await writeSynthetic(`${tmp}/v3`, {
      model_type: "deepseek_v3",
      num_hidden_layers: 1,
      hidden_size: d,
      intermediate_size: 96,
      moe_intermediate_size: f,
      n_routed_experts: E,
      num_experts_per_tok: k,
      n_shared_experts: 1,
      first_k_dense_replace: 0,
      n_group: 1,
      topk_group: 1,
    }, {
      ...backbone(1, d),
      ...perExpert(v3, E, d, f),
      [`${v3}.gate.weight`]: randT([E, d], 0.3),
      [`${v3}.gate.e_score_correction_bias`]: randT([E], 0.1),
      [`${v3}.shared_experts.gate_proj.weight`]: randT([f, d], 0.1),
      [`${v3}.shared_experts.up_proj.weight`]: randT([f, d], 0.1),
      [`${v3}.shared_experts.down_proj.weight`]: randT([d, f], 0.1),
    });
    const ds = await openMoeModel(`${tmp}/v3`);
    await saveMoeModel(ds, `${tmp}/v3-pruned`, { layers: { 0: { keep: [0, 1, 4, 5] } } });
    const dsp = await openMoeModel(`${tmp}/v3-pruned`);
    const bias = (await ds.checkpoint.read(`${v3}.gate.e_score_correction_bias`)).data;
    assert.deepEqual(
      Array.from((await dsp.checkpoint.read(`${v3}.gate.e_score_correction_bias`)).data),
      [0, 1, 4, 5].map((e) => bias[e]),
    );
    assert.equal(JSON.parse(await Deno.readTextFile(`${tmp}/v3-pruned/config.json`)).n_routed_experts, 4);
    assert.ok((await dsp.layer(0)).shared);
    ds.close();
    dsp.close();
  });
});

Deno.test({
  name: `OLMoE fixture: prune → save → open keeps the pruned layer's outputs${
    fixturesMissing ? ` (skipped: ${fixturesMissing})` : ""
  }`,
  ignore: !!fixturesMissing,
  async fn() {
    await withTempDir(async (tmp) => {
      const model = await openMoeModel(new URL("olmoe/model", FIXTURES).pathname);
      const x = matrix.randn(32, model.config.hidden, { seed: 9 }), keep = [0, 1, 2, 3, 5, 6, 8, 9, 11];
      const layer = await model.layer(1);
      const w = (await model.checkpoint.read("model.layers.1.mlp.gate.weight")).data as Float32Array;
      const want = moeLayer({
        router: topKRouter({
          weight: rowsOf(matrix.from(Float32Array.from(w), 12, model.config.hidden), keep),
          k: 3,
          normTopkProb: false,
        }),
        experts: keep.map((e) => layer.experts[e]),
      }).forward(x).output;
      await saveMoeModel(model, `${tmp}/out`, { layers: { 0: { keep }, 1: { keep } }, shardBytes: 30_000 });
      const out = await openMoeModel(`${tmp}/out`);
      assert.ok(out.shards.length > 1);
      assert.deepEqual(Array.from((await out.layer(1)).forward(x).output.data), Array.from(want.data));
      out.close();
      model.close();
    });
  },
});
