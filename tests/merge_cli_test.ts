import assert from "node:assert/strict";
import { matrix, merge, openCheckpoint, runMergeCli, writeCheckpoint } from "../mod.ts";
import { assertClose } from "./helpers.ts";

const mod = new URL("../mod.ts", import.meta.url).pathname;

/** base + models a, b: embed [8,4], layers 0..3 (mlp.up [4,4], attn.q [4,4]), an I64 buffer, norm [4]. */
async function fixture(
  opts: { dim?: number; layers?: number; extra?: (name: string, model: string) => number[] | undefined } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "moekit-cli-" }), d = opts.dim ?? 4, L = opts.layers ?? 4;
  const specs = [
    { name: "model.embed_tokens.weight", dtype: "F32" as const, shape: [8, d] },
    ...Array.from({ length: L }, (_, l) => [
      { name: `model.layers.${l}.mlp.up_proj.weight`, dtype: "F32" as const, shape: [d, d] },
      { name: `model.layers.${l}.self_attn.q_proj.weight`, dtype: "F32" as const, shape: [d, d] },
    ]).flat(),
    { name: "model.norm.weight", dtype: "F32" as const, shape: [d] },
  ];
  for (const [i, m] of ["base", "a", "b"].entries()) {
    await writeCheckpoint(
      `${dir}/${m}`,
      [...specs, { name: "position_ids", dtype: "I64", shape: [2] }],
      (name) => {
        if (name === "position_ids") return new Uint8Array(16).fill(i + 1);
        const spec = specs.find((s) => s.name === name)!, n = spec.shape.reduce((a, b) => a * b, 1);
        return matrix.randn(1, n, { seed: i * 1000 + specs.indexOf(spec) }).data;
      },
    );
  }
  return { dir, specs };
}

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", mod, "merge", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
}

Deno.test("CLI merge: TIES with gradient and filtered parameters equals per-tensor merge(); bf16 output; buffers copied", async () => {
  const { dir, specs } = await fixture();
  await Deno.writeTextFile(
    `${dir}/ties.yaml`,
    `merge_method: ties
base_model: base
out_dtype: bfloat16
parameters: {normalize: true}
models:
  - model: base
  - model: a
    parameters:
      weight: 1.0
      density: [1, 0.7, 0.1]
  - model: b
    parameters:
      density: 0.5
      weight:
        - filter: mlp
          value: 0.5
        - value: 2
`,
  );
  const r = await cli(`${dir}/ties.yaml`, `${dir}/out`, "--quiet");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /merged 11 tensors/);
  const [out, base, a, b] = await Promise.all(
    ["out", "base", "a", "b"].map((m) => openCheckpoint(`${dir}/${m}`)),
  );
  const densities = [1, 0.8, 0.5, 0.1]; // [1, .7, .1] at t = 0, 1/3, 2/3, 1
  for (const s of specs) {
    const l = /layers\.(\d+)\./.exec(s.name)?.[1];
    const ref = merge({
      method: "ties",
      name: s.name,
      base: await base.read(s.name),
      models: [
        {
          tensor: await a.read(s.name),
          params: { weight: 1, density: l === undefined ? 1 : densities[Number(l)] },
        },
        { tensor: await b.read(s.name), params: { weight: s.name.includes("mlp") ? 0.5 : 2, density: 0.5 } },
      ],
      params: { normalize: true },
    });
    assert.equal(out.info(s.name)!.dtype, "BF16");
    assertClose(
      (await out.read(s.name)).data,
      Array.from(ref.data),
      Math.max(...ref.data.map(Math.abs)) * 2 ** -8,
    );
  }
  assert.equal(out.info("position_ids")!.dtype, "I64");
  assert.deepEqual(Array.from(await out.readBytes("position_ids")), Array(16).fill(1));
  [out, base, a, b].forEach((c) => c.close());
});

Deno.test("CLI merge --dry-run prints resolved parameters per tensor", async () => {
  const { dir } = await fixture();
  await Deno.writeTextFile(
    `${dir}/c.yaml`,
    "merge_method: dare_ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: [0.9, 0.3]}\n",
  );
  const r = await cli(`${dir}/c.yaml`, "--dry-run");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /plan: dare_ties, 11 tensors/);
  assert.match(r.out, /model\.layers\.0\.mlp\.up_proj\.weight \[4,4\] F32 t=0 .*"density":0\.9/);
  assert.match(r.out, /model\.layers\.3\.mlp\.up_proj\.weight \[4,4\] F32 t=1 .*"density":0\.3/);
  assert.match(r.out, /position_ids \[2\] I64 .* copied from the base/);
});

Deno.test("CLI merge validates before any work: unknown method/parameter, missing file, missing tensor, shape mismatch", async () => {
  const { dir } = await fixture();
  // a model without one tensor, and one with a different shape
  await writeCheckpoint(`${dir}/missing`, [{
    name: "model.embed_tokens.weight",
    dtype: "F32",
    shape: [8, 4],
  }], () => Array(32).fill(0));
  await writeCheckpoint(
    `${dir}/wide`,
    [
      { name: "model.embed_tokens.weight", dtype: "F32", shape: [8, 4] },
      ...Array.from({ length: 4 }, (_, l) => [
        { name: `model.layers.${l}.mlp.up_proj.weight`, dtype: "F32" as const, shape: [4, 5] },
        { name: `model.layers.${l}.self_attn.q_proj.weight`, dtype: "F32" as const, shape: [4, 4] },
      ]).flat(),
      { name: "model.norm.weight", dtype: "F32", shape: [4] },
      { name: "position_ids", dtype: "I64", shape: [2] },
    ],
    (
      name,
    ) => (name === "position_ids"
      ? new Uint8Array(16)
      : Array(name.includes("mlp") ? 20 : name.includes("embed") ? 32 : name.includes("norm") ? 4 : 16).fill(
        0,
      )),
  );
  const cases: [string, RegExp][] = [
    ["merge_method: dare-ties\nbase_model: base\nmodels: [{model: a}]", /merge_method = "dare-ties"/],
    [
      "merge_method: ties\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1, densty: 0.5}}]",
      /unknown parameter "densty" in models\[0\]/,
    ],
    [
      "merge_method: ties\nbase_model: base\nmodels: [{model: nowhere, parameters: {weight: 1}}]",
      /checkpoint nowhere does not exist/,
    ],
    [
      "merge_method: ties\nbase_model: base\nmodels: [{model: missing, parameters: {weight: 1}}]",
      /model missing has no tensor model\.layers\.0\.mlp\.up_proj\.weight/,
    ],
    [
      "merge_method: ties\nbase_model: base\nmodels: [{model: wide, parameters: {weight: 1}}]",
      /model wide tensor model\.layers\.0\.mlp\.up_proj\.weight: shape \[4,5\] does not match/,
    ],
    [
      "merge_method: ties\nbase_model: base\nmodels: [{model: a}]",
      /weight \(model 0, tensor model\.embed_tokens\.weight\)/,
    ],
    [
      "merge_method: della\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1, density: 0.5, epsilon: 0.6}}]",
      /epsilon .* = 0\.6/,
    ],
    ["merge_method: ties\nbase_model: base\nfoo: 1\nmodels: [{model: a}]", /unknown key "foo"/],
  ];
  for (const [yaml, pattern] of cases) {
    await Deno.writeTextFile(`${dir}/bad.yaml`, yaml);
    const r = await cli(`${dir}/bad.yaml`, `${dir}/never`);
    assert.equal(r.code, 2, yaml);
    assert.match(r.err, pattern, yaml);
    assert.equal(await Deno.stat(`${dir}/never`).then(() => true, () => false), false, "no output folder");
  }
});

Deno.test("CLI merge slices: layer ranges renumbered, t per slice", async () => {
  const { dir } = await fixture({ layers: 4 });
  await Deno.writeTextFile(
    `${dir}/s.yaml`,
    `merge_method: task_arithmetic
base_model: base
slices:
  - sources:
      - {model: base, layer_range: [0, 2]}
      - {model: a, layer_range: [2, 4], parameters: {weight: 1}}
  - sources:
      - {model: base, layer_range: [3, 4]}
      - {model: b, layer_range: [0, 1], parameters: {weight: 0.5}}
`,
  );
  const r = await cli(`${dir}/s.yaml`, `${dir}/out`, "--quiet");
  assert.equal(r.code, 0, r.err);
  const [out, base, a, b] = await Promise.all(
    ["out", "base", "a", "b"].map((m) => openCheckpoint(`${dir}/${m}`)),
  );
  const layers = out.names.filter((n) => n.includes("layers.")).map((n) =>
    Number(/layers\.(\d+)/.exec(n)![1])
  );
  assert.deepEqual([...new Set(layers)].sort(), [0, 1, 2]);
  const check = async (outLayer: number, baseLayer: number, src: typeof a, srcLayer: number, w: number) => {
    const name = (l: number) => `model.layers.${l}.mlp.up_proj.weight`;
    const o = (await out.read(name(outLayer))).data,
      bb = (await base.read(name(baseLayer))).data,
      s = (await src.read(name(srcLayer))).data;
    assertClose(o, Array.from(bb, (v, i) => v + w * (s[i] - v)), 1e-5);
  };
  await check(0, 0, a, 2, 1);
  await check(1, 1, a, 3, 1);
  await check(2, 3, b, 0, 0.5);
  [out, base, a, b].forEach((c) => c.close());
});

Deno.test("a kill during a CLI merge leaves no file under a final name", async () => {
  const { dir } = await fixture({ dim: 384, layers: 24 });
  await Deno.writeTextFile(
    `${dir}/k.yaml`,
    "merge_method: ties\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: 1, density: 0.3}}\n  - {model: b, parameters: {weight: 1, density: 0.3}}\n",
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", mod, "merge", `${dir}/k.yaml`, `${dir}/out`, "--out-shard-size", "1M"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.getReader();
  let seen = "";
  while (!/\d+\/\d+ tensors/.test(seen)) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += new TextDecoder().decode(value);
  }
  child.kill("SIGKILL");
  reader.releaseLock();
  await child.stderr.cancel();
  const status = await child.status;
  assert.equal(status.success, false, "killed mid-merge");
  assert.equal(
    await Deno.stat(`${dir}/out`).then(() => true, () => false),
    false,
    "no output folder under its final name",
  );
  const partial = [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("out.partial-"));
  assert.equal(partial.length, 1, "the work happened in a temporary sibling folder");
  await assert.rejects(() => openCheckpoint(`${dir}/out`));
});

Deno.test("runMergeCli: usage errors exit 2; --help exits 0", async () => {
  assert.equal(await runMergeCli(["--bogus"]), 2);
  assert.equal(await runMergeCli([]), 2);
  assert.equal(await runMergeCli(["a.yaml", "out", "--out-shard-size", "lots"]), 2);
});
