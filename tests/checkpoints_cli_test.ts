// The inspect / route / compress commands: inspect on every family (parameter counts recomputed from the
// headers), route on the OLMoE fixture against transformers' own top-k, compress (prune) end to end, and
// exit code 2 with a one-line reason on bad input.
import assert from "node:assert/strict";
import { matrix } from "../lib/core/matrix.ts";
import { openCheckpoint } from "../lib/io/checkpoint.ts";
import { openSafetensors, writeSafetensors } from "../lib/io/safetensors.ts";
import { runModelCli } from "../lib/cli/model_cli.ts";
import { openMoeModel } from "../lib/checkpoints/mod.ts";
import {
  backbone,
  FIXTURES,
  fixturesMissing,
  gptOssMoe,
  mlp,
  perExpert,
  randT,
  type SynthTensor,
  withTempDir,
  writeSynthetic,
} from "./checkpoints_helpers.ts";
import { captureConsole } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

/** Runs the CLI with console.log / console.error captured. */
const cli = (command: string, args: string[]) => captureConsole(() => runModelCli(command, args));

const d = 64, f = 32, E = 8, k = 2;

/** A small checkpoint of each family (its names, shapes and config keys). */
function family(
  name: string,
): { config: Record<string, unknown>; tensors: Record<string, SynthTensor>; moe: number[]; layout: string } {
  const base = { num_hidden_layers: 2, hidden_size: d, num_experts_per_tok: k };
  const t: Record<string, SynthTensor> = backbone(2, d);
  const b = (l: number) => `model.layers.${l}.mlp`;
  switch (name) {
    case "mixtral":
      for (const l of [0, 1]) {
        Object.assign(t, perExpert(`model.layers.${l}.block_sparse_moe`, E, d, f, ["w1", "w3", "w2"]), {
          [`model.layers.${l}.block_sparse_moe.gate.weight`]: randT([E, d], 0.3),
        });
      }
      return {
        config: { ...base, model_type: "mixtral", intermediate_size: f, num_local_experts: E },
        tensors: t,
        moe: [0, 1],
        layout: "per-expert",
      };
    case "olmoe":
      for (const l of [0, 1]) {
        Object.assign(t, perExpert(b(l), E, d, f), { [`${b(l)}.gate.weight`]: randT([E, d], 0.3) });
      }
      return {
        config: { ...base, model_type: "olmoe", intermediate_size: f, num_experts: E },
        tensors: t,
        moe: [0, 1],
        layout: "per-expert",
      };
    case "qwen2_moe":
      Object.assign(t, mlp(b(0), d, 96), perExpert(b(1), E, d, f), mlp(`${b(1)}.shared_expert`, d, 48), {
        [`${b(1)}.gate.weight`]: randT([E, d], 0.3),
        [`${b(1)}.shared_expert_gate.weight`]: randT([1, d], 0.3),
      });
      return {
        config: {
          ...base,
          model_type: "qwen2_moe",
          intermediate_size: 96,
          moe_intermediate_size: f,
          num_experts: E,
          shared_expert_intermediate_size: 48,
          decoder_sparse_step: 2,
        },
        tensors: t,
        moe: [1],
        layout: "per-expert",
      };
    case "qwen3_moe": {
      const gu = randT([E, 2 * f, d], 0.1), dn = randT([E, d, f], 0.1);
      for (const l of [0, 1]) {
        Object.assign(t, {
          [`${b(l)}.gate.weight`]: randT([E, d], 0.3),
          [`${b(l)}.experts.gate_up_proj`]: gu,
          [`${b(l)}.experts.down_proj`]: dn,
        });
      }
      return {
        config: {
          ...base,
          model_type: "qwen3_moe",
          intermediate_size: 96,
          moe_intermediate_size: f,
          num_local_experts: E,
        },
        tensors: t,
        moe: [0, 1],
        layout: "fused",
      };
    }
    case "deepseek_v2":
      Object.assign(t, mlp(b(0), d, 96), perExpert(b(1), E, d, f), mlp(`${b(1)}.shared_experts`, d, 2 * f), {
        [`${b(1)}.gate.weight`]: randT([E, d], 0.3),
      });
      return {
        config: {
          ...base,
          model_type: "deepseek_v2",
          intermediate_size: 96,
          moe_intermediate_size: f,
          n_routed_experts: E,
          n_shared_experts: 2,
          first_k_dense_replace: 1,
          topk_method: "greedy",
        },
        tensors: t,
        moe: [1],
        layout: "per-expert",
      };
    case "deepseek_v3":
      Object.assign(t, mlp(b(0), d, 96), perExpert(b(1), E, d, f), mlp(`${b(1)}.shared_experts`, d, f), {
        [`${b(1)}.gate.weight`]: randT([E, d], 0.3),
        [`${b(1)}.gate.e_score_correction_bias`]: randT([E], 0.1),
      });
      return {
        config: {
          ...base,
          model_type: "deepseek_v3",
          intermediate_size: 96,
          moe_intermediate_size: f,
          n_routed_experts: E,
          first_k_dense_replace: 1,
          n_group: 4,
          topk_group: 2,
        },
        tensors: t,
        moe: [1],
        layout: "per-expert",
      };
    case "gpt_oss":
      for (const l of [0, 1]) {
        Object.assign(t, gptOssMoe(b(l), E, d, f, [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]));
      }
      return {
        config: { ...base, model_type: "gpt_oss", intermediate_size: f, num_local_experts: E },
        tensors: t,
        moe: [0, 1],
        layout: "gpt-oss",
      };
  }
  throw new Error(name);
}

/** The OLMoE checkpoint of {@link family} written to `dir`. */
async function writeOlmoe(dir: string): Promise<void> {
  const { config, tensors } = family("olmoe");
  await writeSynthetic(dir, config, tensors);
}

/** A safetensors file holding one tensor. */
const writeOne = (path: string, name: string, dtype: "F32" | "BF16", shape: number[], data: Float32Array) =>
  writeSafetensors(path, [{ name, dtype, shape, data }]);

/** `compress` arguments of a prune to `keep` experts of `${dir}/m` into `out`. */
const pruneArgs = (dir: string, out: string, keep: string, calibration: string) => [
  `${dir}/m`,
  out,
  "--method",
  "prune",
  "--keep",
  keep,
  "--calibration",
  calibration,
];

Deno.test("inspect on every family: family, E, k, MoE layers, layout, parameters recomputed from the headers", async () => {
  for (
    const name of ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss"]
  ) {
    await withTempDir(async (dir) => {
      const { config, tensors, moe, layout } = family(name);
      await writeSynthetic(dir, config, tensors, 150_000);
      const r = await cli("inspect", [dir, "--json"]);
      assert.equal(r.code, 0, r.err);
      const info = JSON.parse(r.out);
      assert.deepEqual([info.family, info.experts, info.topK, info.moeLayers, info.layout], [
        name,
        E,
        k,
        moe,
        layout,
      ], name);
      const total = Object.values(tensors).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
      const perExpertParams = 3 * d * f + (name === "gpt_oss" ? 2 * f + d : 0);
      assert.equal(info.params, total, name);
      assert.equal(info.activeParamsPerToken, total - moe.length * (E - k) * perExpertParams, name);
      assert.ok(info.shards.length > 1, `${name}: sharded`);
      const text = await cli("inspect", [dir]);
      assert.match(text.out, new RegExp(`family\\s+${name}`));
      assert.match(text.out, /parameters\s+[\d.]+ [KM] total, [\d.]+ [KM] active per token/);
    });
  }
});

Deno.test({
  name: `route on the OLMoE fixture: per-expert load equals transformers' top-k counts; plots written${
    fixturesMissing ? ` (skipped: ${fixturesMissing})` : ""
  }`,
  ignore: !!fixturesMissing,
  async fn() {
    await withTempDir(async (dir) => {
      const fx = new URL("olmoe/", FIXTURES).pathname;
      const r = await cli("route", [
        `${fx}model`,
        "--hidden",
        `${fx}expected.safetensors`,
        "--json",
        "--plots",
        `${dir}/plots`,
      ]);
      assert.equal(r.code, 0, r.err);
      const got = JSON.parse(r.out);
      const exp = await openSafetensors(`${fx}expected.safetensors`);
      for (const row of got.layers) {
        const b = await exp.readBytes(`layers.${row.layer}.topk_idx`);
        const idx = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        const counts = new Array(12).fill(0);
        for (const e of idx) counts[e]++;
        assert.deepEqual(row.load, counts, `layer ${row.layer}`);
        assert.equal(row.tokens, 16);
      }
      exp.close();
      for (const p of ["layer-load", "load", "drop-vs-capacity", "coactivation"]) {
        assert.ok((await Deno.readTextFile(`${dir}/plots/${p}.svg`)).includes("<svg"), p);
      }
      assert.match(r.err, /layer 1: routed 16 tokens/);
      assert.match(r.err, /plots \(SVG.*no PNG here: .*--allow-ffi/);
    });
  },
});

Deno.test("route with one tensor for every layer; compress --method prune end to end", async () => {
  await withTempDir(async (dir) => {
    await writeOlmoe(`${dir}/m`);
    const x = matrix.randn(200, d, { seed: 3 });
    await writeOne(`${dir}/h.safetensors`, "hidden", "BF16", [2, 100, d], x.data);
    const r = await cli("route", [
      `${dir}/m`,
      "--hidden",
      `${dir}/h.safetensors`,
      "--layers",
      "1",
      "--capacity-factor",
      "1",
      "--json",
    ]);
    assert.equal(r.code, 0, r.err);
    const row = JSON.parse(r.out).layers[0];
    assert.equal(row.layer, 1);
    assert.equal(row.load.reduce((a: number, b: number) => a + b), 200 * k);
    // capacity ceil(k·T·cf/E) = 50 per expert: the drops are exactly the overflow above 50
    const over = row.load.reduce((a: number, c: number) => a + Math.max(0, c - 50), 0);
    assert.ok(Math.abs(row.droppedFraction - over / (200 * k)) < 1e-12);

    const c = await cli("compress", [
      ...pruneArgs(dir, `${dir}/out`, "6", `${dir}/h.safetensors`),
      "--prune-method",
      "greedy",
    ]);
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /^\s+0\s+prune\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\.7500\s+dropped \[\d, \d\]/m);
    assert.match(c.out, /own layout \(transformers loads it unchanged\)/);
    const pruned = await openMoeModel(`${dir}/out`);
    assert.equal(pruned.config.experts, 6);
    const ck = await openCheckpoint(`${dir}/out`);
    assert.equal(ck.info("model.layers.0.mlp.experts.6.gate_proj.weight"), undefined);
    ck.close();
    pruned.close();
    // a second run into the same folder is refused before any work
    const again = await cli("compress", pruneArgs(dir, `${dir}/out`, "6", `${dir}/h.safetensors`));
    assert.equal(again.code, 2);
  });
});

Deno.test("bad input: exit 2 with a one-line reason, and a --help hint when the command line is wrong", async () => {
  await withTempDir(async (dir) => {
    await writeOlmoe(`${dir}/m`);
    await writeOne(`${dir}/narrow.safetensors`, "x", "F32", [4, 8], new Float32Array(32));
    await writeOne(`${dir}/ok.safetensors`, "x", "F32", [4, d], new Float32Array(4 * d));
    const cases: [string, string[], RegExp][] = [
      ["inspect", [`${dir}/none`], /cannot read config\.json/],
      ["inspect", [], /expected one <model-dir>/],
      ["inspect", [`${dir}/m`, "--bogus"], /bogus/],
      ["route", [`${dir}/m`], /--hidden <file> is required/],
      ["route", [`${dir}/m`, "--hidden", `${dir}/narrow.safetensors`], /\[4, 8\] but the model has d = 64/],
      [
        "route",
        [`${dir}/m`, "--hidden", `${dir}/ok.safetensors`, "--layers", "5"],
        /layer 5 is not an MoE layer/,
      ],
      [
        "route",
        [`${dir}/m`, "--hidden", `${dir}/ok.safetensors`, "--capacity-factor=-1"],
        /--capacity-factor -1/,
      ],
      [
        "compress",
        [`${dir}/m`, `${dir}/o`, "--method", "zip", "--calibration", "x"],
        /--method "zip"; use prune/,
      ],
      [
        "compress",
        pruneArgs(dir, `${dir}/o`, "1", `${dir}/ok.safetensors`),
        /--keep 1 must be in k\.\.E = 2\.\.8/,
      ],
      ["compress", pruneArgs(dir, `${dir}/m`, "4", `${dir}/ok.safetensors`), /input|not empty/],
      [
        "compress",
        [`${dir}/m`, `${dir}/o`, "--method", "prune", "--calibration", `${dir}/ok.safetensors`],
        /^error: compress: --keep N is required for --method prune$/m,
      ],
      [
        "compress",
        [`${dir}/m`, `${dir}/o`, "--method", "merge", "--calibration", `${dir}/ok.safetensors`],
        /--groups G is required for --method merge/,
      ],
      ["compress", [`${dir}/m`, `${dir}/o`, "--calibration", "x"], /--method is required; use prune/],
      [
        "compress",
        [`${dir}/m`, `${dir}/o`, "--method", "svd", "--calibration", "x", "--rank", "0"],
        /--rank 0: use an integer ≥ 1/,
      ],
      ["frobnicate", [], /unknown command/],
    ];
    // a problem with a file is one line; a mistake on the command line is one line and a --help hint
    const fileProblems = [/cannot read config\.json/, /\[4, 8\] but the model has d = 64/, /input|not empty/];
    for (const [cmd, args, why] of cases) {
      const r = await cli(cmd, args);
      const label = `${cmd} ${args.join(" ")}`;
      assert.equal(r.out, "", label);
      if (fileProblems.some((p) => p.source === why.source)) {
        assert.equal(r.code, 2, `${label}: ${r.err}`);
        assert.match(r.err, why, label);
        assert.equal(r.err.trim().split("\n").length, 1, r.err);
      } else {
        const command = cmd === "frobnicate" ? "deno run -A mod.ts" : `deno run -A mod.ts ${cmd}`;
        assertUsageError({ code: r.code, stderr: r.err }, command, why, label);
      }
    }
    await assert.rejects(Deno.stat(`${dir}/o`));
  });
});

Deno.test("compress with every method: the saved model reproduces the reported error", async () => {
  await withTempDir(async (dir) => {
    await writeOlmoe(`${dir}/m`);
    const x = matrix.randn(256, d, { seed: 4 });
    await writeOne(`${dir}/c.safetensors`, "x", "F32", [256, d], x.data);
    const src = await openMoeModel(`${dir}/m`);
    const ref = (await src.layer(0)).forward(x).output;
    for (
      const [method, extra, layout] of [
        ["prune", ["--keep", "6", "--prune-method", "greedy"], "per-expert"],
        ["merge", ["--groups", "4"], "moekit"],
        ["svd", ["--ratio", "0.5"], "moekit"],
        ["rtn", ["--bits", "4", "--group-size", "16"], "moekit"],
        ["delta", ["--rank", "8"], "per-expert"],
      ] as const
    ) {
      const out = `${dir}/${method}`;
      const r = await cli("compress", [
        `${dir}/m`,
        out,
        "--method",
        method,
        "--calibration",
        `${dir}/c.safetensors`,
        ...extra,
      ]);
      assert.equal(r.code, 0, `${method}: ${r.err}`);
      const row = new RegExp(`^\\s+0\\s+${method}\\s+([\\d.]+)`, "m").exec(r.out);
      assert.ok(row, `${method}: ${r.out}`);
      const m = await openMoeModel(out);
      assert.equal(m.info(0).layout, layout, method);
      const y = (await m.layer(0)).forward(x).output;
      let num = 0, den = 0;
      for (let i = 0; i < y.data.length; i++) {
        num += (y.data[i] - ref.data[i]) ** 2;
        den += ref.data[i] ** 2;
      }
      assert.ok(
        Math.abs(Math.sqrt(num / den) - Number(row[1])) < 1e-4,
        `${method}: ${Math.sqrt(num / den)} vs ${row[1]}`,
      );
      if (method !== "prune") assert.ok(Number(row[1]) > 0, method);
      m.close();
    }
    src.close();
  });
});
