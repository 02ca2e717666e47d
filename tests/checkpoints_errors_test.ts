// Bad inputs: each a typed error naming the file and the tensor or key, raised before any weight is read;
// and loadTensor for .npy / safetensors activations.
import assert from "node:assert/strict";
import { MoekitError, ShapeError } from "../lib/core/errors.ts";
import { writeSafetensors } from "../lib/io/safetensors.ts";
import { loadTensor, normalizeConfig, openMoeModel, TensorFileError } from "../lib/checkpoints/mod.ts";
import {
  backbone,
  perExpert,
  randT,
  type SynthTensor,
  withTempDir,
  writeSynthetic,
} from "./checkpoints_helpers.ts";

const d = 8, f = 4, E = 4;
const config = {
  model_type: "olmoe",
  num_hidden_layers: 1,
  hidden_size: d,
  intermediate_size: f,
  num_experts: E,
  num_experts_per_tok: 2,
};
const good = (): Record<string, SynthTensor> => ({
  ...backbone(1, d),
  ...perExpert("model.layers.0.mlp", E, d, f),
  "model.layers.0.mlp.gate.weight": randT([E, d], 1),
});

Deno.test("a folder without config.json, bad JSON, an unknown or refused model_type", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      () => openMoeModel(dir),
      (e: Error) => e instanceof MoekitError && e.message.includes("config.json"),
    );
    await Deno.writeTextFile(`${dir}/config.json`, "{nope");
    await assert.rejects(() => openMoeModel(dir), /config\.json is not valid JSON/);
    for (
      const [type, name] of [
        ["granitemoe", "Granite"],
        ["jamba", "Jamba"],
        ["llama4_text", "Llama-4"],
        ["dbrx", "DBRX"],
        ["switch_transformers", "Switch"],
        ["nllb_moe", "NLLB"],
      ]
    ) {
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, model_type: type }));
      await assert.rejects(
        () => openMoeModel(dir),
        (e: Error) =>
          e instanceof MoekitError && e.message.includes(`"${type}"`) && e.message.includes(name) &&
          e.message.includes("config.json"),
      );
    }
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, model_type: "llama" }));
    await assert.rejects(() => openMoeModel(dir), /unknown model_type "llama"; moekit loads mixtral, olmoe/);
  });
  assert.throws(
    () => normalizeConfig({ model_type: "olmoe", num_hidden_layers: 1, hidden_size: 8, num_experts: 4 }),
    /num_experts_per_tok/,
  );
  assert.throws(() => normalizeConfig({ ...config, num_experts_per_tok: 9 }), /exceeds the 4 experts/);
});

Deno.test("a missing expert tensor, a shape that contradicts the config, an undecodable dtype — named, at open", async () => {
  await withTempDir(async (tmp) => {
    const missing = good();
    delete missing["model.layers.0.mlp.experts.2.up_proj.weight"];
    await writeSynthetic(`${tmp}/a`, config, missing);
    await assert.rejects(
      () => openMoeModel(`${tmp}/a`),
      (e: Error) =>
        e instanceof MoekitError &&
        e.message.includes("missing tensor model.layers.0.mlp.experts.2.up_proj.weight [4,8]"),
    );

    const shaped = good();
    shaped["model.layers.0.mlp.experts.1.down_proj.weight"] = randT([d, f + 1], 1);
    await writeSynthetic(`${tmp}/b`, config, shaped);
    await assert.rejects(
      () => openMoeModel(`${tmp}/b`),
      (e: Error) =>
        e instanceof ShapeError &&
        e.message.includes("model.safetensors: tensor model.layers.0.mlp.experts.1.down_proj.weight") &&
        e.message.includes("expected shape [8,4], got [8,5]"),
    );

    const typed = good();
    typed["model.layers.0.mlp.experts.3.gate_proj.weight"] = {
      shape: [f, d],
      dtype: "I32",
      data: new Uint8Array(f * d * 4),
    };
    await writeSynthetic(`${tmp}/c`, config, typed, 600);
    await assert.rejects(
      () => openMoeModel(`${tmp}/c`),
      (e: Error) =>
        e instanceof MoekitError &&
        /model-0000\d-of-0000\d\.safetensors: tensor model\.layers\.0\.mlp\.experts\.3\.gate_proj\.weight is I32/
          .test(e.message),
    );

    await writeSynthetic(`${tmp}/d`, { ...config, num_experts: 5 }, good());
    await assert.rejects(
      () => openMoeModel(`${tmp}/d`),
      /tensor model\.layers\.0\.mlp\.gate\.weight: expected shape \[5,8\], got \[4,8\]/,
    );
  });
});

function npy(descr: string, shape: string, data: Uint8Array, fortran = "False"): Uint8Array {
  let header = `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const out = new Uint8Array(10 + header.length + data.length);
  out.set([0x93, ...new TextEncoder().encode("NUMPY"), 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(data, 10 + header.length);
  return out;
}

Deno.test("loadTensor: .npy float32 / float16 / float64 in C order; Fortran, object and other dtypes refused", async () => {
  await withTempDir(async (dir) => {
    const f32 = new Float32Array([1, 2, 3, 4, 5, 6, -1.5, 0.25, 8, 9, 10, 11]);
    await Deno.writeFile(`${dir}/a.npy`, npy("<f4", "(2, 2, 3)", new Uint8Array(f32.buffer)));
    const a = await loadTensor(`${dir}/a.npy`);
    assert.deepEqual([a.rows, a.cols, Array.from(a.data)], [4, 3, Array.from(f32)]);
    const h = new Uint16Array([0x3c00, 0xbc00, 0x3555, 0x0001]); // 1, −1, 0.333…, smallest subnormal
    await Deno.writeFile(`${dir}/h.npy`, npy("<f2", "(4,)", new Uint8Array(h.buffer)));
    const b = await loadTensor(`${dir}/h.npy`);
    assert.deepEqual(Array.from(b.data), [1, -1, Math.fround(0.333251953125), Math.fround(2 ** -24)]);
    await Deno.writeFile(`${dir}/F.npy`, npy("<f4", "(2, 2)", new Uint8Array(16), "True"));
    await assert.rejects(
      () => loadTensor(`${dir}/F.npy`),
      (e: Error) => e instanceof TensorFileError && /F\.npy: .*Fortran/.test(e.message),
    );
    await Deno.writeFile(`${dir}/O.npy`, npy("|O", "(2,)", new Uint8Array(16)));
    await assert.rejects(() => loadTensor(`${dir}/O.npy`), /object array/);
    // float64 (numpy's default dtype): rounded to float32 (0.1 → fround(0.1), 1 + 2⁻³⁰ → 1, 1e-50 → 0)
    const f64 = new Float64Array([0.1, 1 + 2 ** -30, -3, 1e-50]);
    await Deno.writeFile(`${dir}/d.npy`, npy("<f8", "(2, 2)", new Uint8Array(f64.buffer)));
    const d = await loadTensor(`${dir}/d.npy`);
    assert.deepEqual([d.rows, d.cols, Array.from(d.data)], [2, 2, [Math.fround(0.1), 1, -3, 0]]);
    // a finite value float32 cannot hold is refused, naming the element (never a silent ±Infinity)
    f64[2] = -1e300;
    await Deno.writeFile(`${dir}/big.npy`, npy("<f8", "(4,)", new Uint8Array(f64.buffer)));
    await assert.rejects(
      () => loadTensor(`${dir}/big.npy`),
      (e: Error) =>
        e instanceof TensorFileError && /big\.npy: element 2 \(-1e\+300\) is beyond float32/.test(e.message),
    );
    await writeSafetensors(`${dir}/big.safetensors`, [{ name: "x", dtype: "F64", shape: [4], data: f64 }]);
    await assert.rejects(
      () => loadTensor(`${dir}/big.safetensors`),
      /element 2 \(-1e\+300\) is beyond float32/,
    );
    await Deno.writeFile(`${dir}/i.npy`, npy("<i8", "(2,)", new Uint8Array(16)));
    await assert.rejects(
      () => loadTensor(`${dir}/i.npy`),
      /dtype '<i8' is not float32 .*float64 \('<f8'\); save x\.astype\(np\.float32\)/,
    );
    await Deno.writeFile(`${dir}/short8.npy`, npy("<f8", "(3,)", new Uint8Array(16)));
    await assert.rejects(() => loadTensor(`${dir}/short8.npy`), /needs 24/);
    await Deno.writeFile(`${dir}/short.npy`, npy("<f4", "(3,)", new Uint8Array(8)));
    await assert.rejects(() => loadTensor(`${dir}/short.npy`), /needs 12/);
    // safetensors: one tensor, or by name; integer tensors refused
    await writeSafetensors(`${dir}/x.safetensors`, [
      { name: "layers.0.input", dtype: "F16", shape: [2, 2], data: [1, 2, 3, 4] },
      { name: "ids", dtype: "I32", shape: [2], data: new Uint8Array(8) },
    ]);
    await assert.rejects(() => loadTensor(`${dir}/x.safetensors`), /holds 2 tensors; name one of/);
    assert.deepEqual(Array.from((await loadTensor(`${dir}/x.safetensors`, "layers.0.input")).data), [
      1,
      2,
      3,
      4,
    ]);
    await assert.rejects(() => loadTensor(`${dir}/x.safetensors`, "ids"), /ids is I32/);
    await assert.rejects(() => loadTensor(`${dir}/none.npy`), /cannot open/);
  });
});
