// openMoeModel against the public hf-tiny fixtures (Mixtral, OLMoE saved by transformers 5.18, with the
// MoE-block inputs, top-k and outputs transformers computed): routing exact, weights and outputs within
// the fixtures' tolerances — as shipped (per-expert), converted to the fused layout, and sharded.
import assert from "node:assert/strict";
import { matrix } from "../lib/core/matrix.ts";
import { openSafetensors } from "../lib/io/safetensors.ts";
import { openMoeModel } from "../lib/checkpoints/mod.ts";
import {
  assertClose,
  assertRouting,
  FIXTURES,
  fixturesMissing,
  fusedCopy,
  shardedCopy,
  withTempDir,
} from "./checkpoints_helpers.ts";

const skip = fixturesMissing ? ` (skipped: ${fixturesMissing})` : "";

async function expected(family: string) {
  const dir = new URL(`${family}/`, FIXTURES).pathname;
  const meta = JSON.parse(await Deno.readTextFile(`${dir}expected.json`));
  const file = await openSafetensors(`${dir}expected.safetensors`);
  const layers = [];
  for (const l of meta.moe_layers as number[]) {
    const input = await file.read(`layers.${l}.input`);
    const idxBytes = await file.readBytes(`layers.${l}.topk_idx`);
    layers.push({
      l,
      input: matrix.from(Float32Array.from(input.data), input.shape[0], input.shape[1]),
      logits: (await file.read(`layers.${l}.router_logits`)).data,
      idx: new Int32Array(
        idxBytes.buffer.slice(idxBytes.byteOffset, idxBytes.byteOffset + idxBytes.byteLength),
      ),
      weight: (await file.read(`layers.${l}.topk_weight`)).data,
      output: (await file.read(`layers.${l}.output`)).data,
    });
  }
  file.close();
  return { dir: `${dir}model`, meta, layers };
}

async function checkModel(
  dir: string,
  exp: Awaited<ReturnType<typeof expected>>,
  layout: string,
  shards = 1,
) {
  const model = await openMoeModel(dir);
  try {
    const { meta } = exp;
    assert.equal(model.config.family, meta.family);
    assert.deepEqual(
      [model.config.experts, model.config.topK, model.config.hidden, model.config.expertHidden],
      [meta.experts, meta.top_k, meta.hidden, meta.expert_hidden],
    );
    assert.deepEqual(model.config.moeLayers, meta.moe_layers);
    assert.equal(model.config.normTopkProb, meta.router.renormalize);
    assert.equal(model.layout, layout);
    assert.equal(model.shards.length, shards);
    for (const x of exp.layers) {
      const r = model.router(x.l).route(x.input, { returnLogits: true });
      assertRouting(r, x.idx, x.weight, meta.top_k, 1e-5, `${meta.family} layer ${x.l}`);
      const logits = r.logits!.data;
      for (let i = 0; i < logits.length; i++) {
        assert.ok(Math.abs(logits[i] - x.logits[i]) <= Math.max(1e-5, 1e-5 * Math.abs(x.logits[i])));
      }
      const layer = await model.layer(x.l);
      const { output, routing } = layer.forward(x.input);
      assertRouting(routing, x.idx, x.weight, meta.top_k, 1e-5, `${meta.family} layer ${x.l} forward`);
      assertClose(output, x.output, 1e-5, `${meta.family} layer ${x.l} output`);
    }
  } finally {
    model.close();
  }
}

for (const family of ["mixtral", "olmoe"]) {
  Deno.test({
    name: `${family} fixture: routing and MoE-block output match transformers (per-expert)${skip}`,
    ignore: !!fixturesMissing,
    async fn() {
      const exp = await expected(family);
      await checkModel(exp.dir, exp, "per-expert");
    },
  });

  Deno.test({
    name: `${family} fixture: same after conversion to the fused layout and to a sharded copy${skip}`,
    ignore: !!fixturesMissing,
    async fn() {
      const exp = await expected(family);
      await withTempDir(async (tmp) => {
        await fusedCopy(exp.dir, `${tmp}/fused`);
        await checkModel(`${tmp}/fused`, exp, "fused");
        const files = await shardedCopy(exp.dir, `${tmp}/sharded`, 20_000);
        assert.ok(files.length >= 3, `${files.length} shards`);
        await checkModel(`${tmp}/sharded`, exp, "per-expert", files.length);
        await shardedCopy(`${tmp}/fused`, `${tmp}/fused-sharded`, 20_000);
        await checkModel(
          `${tmp}/fused-sharded`,
          exp,
          "fused",
          (await Array.fromAsync(Deno.readDir(`${tmp}/fused-sharded`))).filter((e) =>
            e.name.endsWith(".safetensors")
          ).length,
        );
      });
    },
  });
}

Deno.test({
  name:
    `OLMoE fixture: real routings feed accessTrace, simulateCache, loadMetrics and the plots unchanged${skip}`,
  ignore: !!fixturesMissing,
  async fn() {
    const { accessTrace, simulateCache } = await import("../lib/cache/mod.ts");
    const { loadMetrics } = await import("../lib/routing/mod.ts");
    const { layerLoadHeatmap } = await import("../lib/plots/mod.ts");
    const exp = await expected("olmoe");
    const model = await openMoeModel(exp.dir);
    const routings = exp.layers.map((x) => model.router(x.l).route(x.input));
    const trace = accessTrace(routings);
    assert.equal(trace.keys.length, 2 * 16 * 3); // every (token, layer, choice)
    const all = simulateCache(trace, { capacity: 24, policy: "lru" });
    assert.equal(all.hitRate, 1 - 24 / trace.keys.length); // 24 slots hold all 2 × 12 experts: compulsory misses only
    assert.equal(loadMetrics(routings[1]).counts.reduce((a, b) => a + b), 48);
    assert.ok((await layerLoadHeatmap(routings).toSVG()).includes("<svg"));
    model.close();
  },
});
