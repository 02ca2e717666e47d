// The checkpoint planner: t of tensors outside the layer stack, slices, nuslerp without a base, the
// `modules` form, and per-tensor validation against the method's declarations before any read.
import assert from "node:assert/strict";
import { runMergeCli } from "../lib/cli/merge_cli.ts";
import { encodeFloats, openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import {
  merge,
  MoekitError,
  OptionError,
  parseMergeConfig,
  planCheckpointMerge,
  runCheckpointMerge,
} from "../lib/merging/mod.ts";
import { withTempDir } from "./harness.ts";

const D = 4;
const SPECS = [
  { name: "model.embed_tokens.weight", dtype: "F32" as const, shape: [6, D] },
  ...[0, 1, 2].map((l) => ({
    name: `model.layers.${l}.mlp.up_proj.weight`,
    dtype: "F32" as const,
    shape: [D, D],
  })),
  { name: "model.norm.weight", dtype: "F32" as const, shape: [D] },
  { name: "lm_head.weight", dtype: "F32" as const, shape: [6, D] },
];

/** Folders base, a, b with distinct deterministic values, written into `dir`. */
async function fixture(dir: string): Promise<void> {
  for (const [i, m] of ["base", "a", "b"].entries()) {
    await writeCheckpoint(`${dir}/${m}`, SPECS, (name) => {
      const n = SPECS.find((s) => s.name === name)!.shape.reduce((x, y) => x * y, 1);
      return Array.from({ length: n }, (_, j) => Math.sin(1 + j * 0.7 + i * 1.3 + name.length));
    });
  }
}

/** Runs `fn` on a fresh fixture and removes it afterwards (also on failure). */
const withFixture = (fn: (dir: string) => Promise<void>) =>
  withTempDir(async (dir) => {
    await fixture(dir);
    await fn(dir);
  }, "moekit-plan-test-");

/** Plans `yaml` against the fixture folder `dir`, runs `fn` on the plan, then closes it. */
async function withPlan<T>(
  dir: string,
  yaml: string,
  fn: (plan: Awaited<ReturnType<typeof planCheckpointMerge>>) => T | Promise<T>,
): Promise<T> {
  const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
  try {
    return await fn(plan);
  } finally {
    plan.close();
  }
}

Deno.test("embeddings are planned at t = 0, the final norm and lm_head at t = 1 (mergekit's plan)", async () => {
  await withFixture(async (dir) => {
    const yaml =
      "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: [0.2, 0.5, 0.8], density: [1, 0.7, 0.4]}\n";
    await withPlan(dir, yaml, (plan) => {
      const get = (n: string) => plan.tensors.find((t) => t.name === n)!;
      const at = (n: string) => [get(n).t, get(n).sources[0].params.weight, get(n).sources[0].params.density];
      assert.deepEqual(at("model.embed_tokens.weight"), [0, 0.2, 1]);
      assert.deepEqual(at("model.layers.1.mlp.up_proj.weight"), [0.5, 0.5, 0.7]);
      assert.deepEqual(at("model.norm.weight"), [1, 0.8, 0.4]); // the old planner gave t = 0: 0.2 and 1
      assert.deepEqual(at("lm_head.weight"), [1, 0.8, 0.4]);
    });
  });
});

Deno.test("with slices, the final norm comes from the last slice's sources and parameters", async () => {
  await withFixture(async (dir) => {
    const yaml = `merge_method: task_arithmetic
base_model: base
slices:
  - sources:
      - {model: base, layer_range: [0, 2]}
      - {model: a, layer_range: [0, 2], parameters: {weight: 0.25}}
  - sources:
      - {model: base, layer_range: [2, 3]}
      - {model: b, layer_range: [2, 3], parameters: {weight: 0.75}}
`;
    await withPlan(dir, yaml, (plan) => {
      const get = (n: string) => plan.tensors.find((t) => t.name === n)!;
      assert.deepEqual(get("model.embed_tokens.weight").sources.map((s) => [s.model, s.params.weight]), [[
        "a",
        0.25,
      ]]);
      for (const n of ["model.norm.weight", "lm_head.weight"]) {
        assert.equal(get(n).t, 1);
        assert.deepEqual(get(n).sources.map((s) => [s.model, s.params.weight]), [["b", 0.75]]);
      }
    });
  });
});

Deno.test("nuslerp without base_model merges the two models directly (plan and run equal merge())", async () => {
  await withFixture(async (dir) => {
    const out = `${dir}/out`;
    const yaml =
      "merge_method: nuslerp\nparameters: {nuslerp_flatten: false}\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - {model: b, parameters: {weight: 3}}\n";
    await withPlan(dir, yaml, async (plan) => {
      assert.equal(plan.tensors[0].base, undefined);
      await runCheckpointMerge(plan, out, { seed: 0 });
    });
    const [o, a, b] = await Promise.all([out, `${dir}/a`, `${dir}/b`].map(openCheckpoint));
    try {
      for (const s of SPECS) {
        const ref = merge({
          method: "nuslerp",
          name: s.name,
          models: [{ tensor: await a.read(s.name), params: { weight: 1 } }, {
            tensor: await b.read(s.name),
            params: { weight: 3 },
          }],
          params: { nuslerp_flatten: false },
        });
        const got = (await o.read(s.name)).data;
        assert.deepEqual(Array.from(got), Array.from(Float32Array.from(ref.data)), s.name);
      }
    } finally {
      [o, a, b].forEach((c) => c.close());
    }
  });
});

Deno.test("mergekit's modules form: one module is the same config; several are refused", () => {
  const plain = parseMergeConfig("merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n");
  const mod = parseMergeConfig(
    "merge_method: linear\nmodules:\n  decoder:\n    models:\n      - {model: a, parameters: {weight: 1}}\n",
  );
  assert.deepEqual(mod.models, plain.models);
  assert.equal(mod.module, "decoder");
  assert.throws(
    () =>
      parseMergeConfig(
        "merge_method: linear\nmodules:\n  text: {models: [{model: a, parameters: {weight: 1}}]}\n  vision: {models: [{model: b, parameters: {weight: 1}}]}\n",
      ),
    (e) => e instanceof MoekitError && /modules has 2 entries \(text, vision\)/.test(e.message),
  );
  assert.throws(
    () =>
      parseMergeConfig(
        "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nmodules:\n  text: {models: [{model: a}]}\n",
      ),
    /exactly one of models, slices or modules/,
  );
});

Deno.test("per-tensor rules are checked while planning, naming the tensor and the model", async () => {
  await withFixture(async (dir) => {
    const cases: [string, RegExp][] = [
      // a filtered weight that leaves the embeddings without one
      [
        "merge_method: ties\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: [{filter: mlp, value: 1}]}}\n",
        /weight \(model 0, tensor model\.embed_tokens\.weight\) = undefined: ties needs a weight/,
      ],
      // a density gradient that crosses DELLA's bound on the last layers
      [
        "merge_method: della\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: 1, density: [0.5, 0.95], epsilon: 0.1}}\n",
        /epsilon \(model 0, tensor (lm_head|model\.norm|model\.layers\.[12]\.mlp\.up_proj)\.weight\) = 0\.1: needs 0 < density − epsilon/,
      ],
      [
        "merge_method: slerp\nbase_model: base\nmodels:\n  - {model: a}\n",
        /t \(tensor model\.embed_tokens\.weight\) = undefined: slerp needs t/,
      ],
      [
        "merge_method: nuslerp\nmodels:\n  - {model: a, parameters: {weight: 1}}\n",
        /nuslerp merges exactly 2 models \(plus an optional base\), got 1/,
      ],
    ];
    for (const [yaml, pattern] of cases) {
      await assert.rejects(
        () => planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir }),
        (e) => (e instanceof OptionError || e instanceof MoekitError) && pattern.test((e as Error).message),
        yaml,
      );
    }
  });
});

Deno.test("the CLI refuses undeclared or out-of-range parameters with exit 2, writing nothing", async () => {
  await withFixture(async (dir) => {
    const cases: [string, RegExp][] = [
      ["parameters: {consensus: bogus}", /consensus = "bogus": ties allows "sum", "count"/],
      ["parameters: {rescale_norm: l3}", /"l1", "l2", "linf", "inverse_density", "none"/],
      ["parameters: {density: 1.5}", /density = 1\.5: must be in \[0, 1\]/],
      ["parameters: {gamma: 0.1}", /unknown parameter "gamma" in top-level for ties/],
    ];
    for (const [extra, pattern] of cases) {
      await Deno.writeTextFile(
        `${dir}/bad.yaml`,
        `merge_method: ties\nbase_model: base\n${extra}\nmodels:\n  - {model: a, parameters: {weight: 1}}\n`,
      );
      const errors: string[] = [], original = console.error;
      console.error = (...a: unknown[]) => errors.push(a.join(" "));
      try {
        assert.equal(await runMergeCli([`${dir}/bad.yaml`, `${dir}/never`, "--quiet"]), 2, extra);
      } finally {
        console.error = original;
      }
      assert.match(errors.join("\n"), pattern, extra);
      assert.equal(await Deno.stat(`${dir}/never`).then(() => true, () => false), false);
    }
  });
});

Deno.test("checkpoint merges write the same bytes as merge() in float64, encoded (bf16 and f32 outputs)", async () => {
  await withFixture(async (dir) => {
    for (
      const [method, extra, params, outDtype] of [
        ["ties", "", { weight: 1, density: 0.5 }, "bfloat16"],
        ["dare_ties", "", { weight: 0.7, density: 0.4 }, "bfloat16"],
        ["breadcrumbs", "", { weight: 1, density: 0.5, gamma: 0.1 }, "float32"],
        ["linear", "", { weight: 0.6 }, "bfloat16"],
      ] as const
    ) {
      const base = method === "linear" ? "" : "base_model: base\n";
      const yaml = `merge_method: ${method}\n${base}${extra}out_dtype: ${outDtype}\nmodels:\n` +
        ["a", "b"].map((m) => `  - {model: ${m}, parameters: ${JSON.stringify(params)}}`).join("\n") + "\n";
      const out = `${dir}/out-${method}`;
      await withPlan(dir, yaml, (plan) => runCheckpointMerge(plan, out, { seed: 3 }));
      const cks = await Promise.all([out, `${dir}/base`, `${dir}/a`, `${dir}/b`].map(openCheckpoint));
      const [o, b, a, c] = cks;
      try {
        for (const s of SPECS) {
          const ref = merge({
            method,
            name: s.name,
            seed: 3,
            base: method === "linear" ? undefined : await b.read(s.name),
            models: [{ tensor: await a.read(s.name), params }, { tensor: await c.read(s.name), params }],
          });
          const dtype = outDtype === "bfloat16" ? "BF16" : "F32";
          assert.deepEqual(await o.readBytes(s.name), encodeFloats(ref.data, dtype), `${method} ${s.name}`);
        }
      } finally {
        cks.forEach((k) => k.close());
      }
    }
  });
});
