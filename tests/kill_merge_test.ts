// Kill tests: a real CLI merge in a subprocess, SIGKILLed before the first tensor, in the middle of a
// tensor and during the final renames (with the atomic exchange, and with the two-rename fallback). After
// each kill the output path holds nothing or a complete loadable checkpoint (the old or the new one), and
// the next run in the same folder removes the leftovers, saying so.
import assert from "node:assert/strict";
import { openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import { spawnMergeCli } from "./harness.ts";

const NAMES = [
  "model.embed_tokens.weight",
  ...Array.from(
    { length: 6 },
    (_, l) => [`model.layers.${l}.mlp.up_proj.weight`, `model.layers.${l}.self_attn.q_proj.weight`],
  )
    .flat(),
  "model.norm.weight",
];

async function fixture(dir: string) {
  for (const [i, m] of ["base", "a"].entries()) {
    await writeCheckpoint(
      `${dir}/${m}`,
      NAMES.map((name) => ({ name, dtype: "F32" as const, shape: name.includes("norm") ? [64] : [64, 64] })),
      (name) =>
        Float32Array.from({ length: name.includes("norm") ? 64 : 4096 }, (_, j) => i + ((j % 7) - 3) / 8),
      {
        shardBytes: 40_000,
        files: [{ name: "config.json", data: '{"model_type": "llama", "torch_dtype": "float32"}' }],
      },
    );
  }
  for (const w of [1, 2]) {
    await Deno.writeTextFile(
      `${dir}/w${w}.yaml`,
      `merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: ${w}}}\n`,
    );
  }
}

/** Runs the CLI (quietly); with `hold`, SIGKILLed at that hold point. */
const run = (args: string[], opts: { hold?: string; ffi?: boolean } = {}) =>
  spawnMergeCli([...args, "--quiet"], opts);

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
const partials = (dir: string) =>
  [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes(".partial-"));

/** The output: absent, or a complete checkpoint whose up_proj of layer 0 tells which weight made it. */
async function state(out: string): Promise<"absent" | number> {
  if (!(await exists(out))) return "absent";
  const ck = await openCheckpoint(out);
  try {
    assert.deepEqual([...ck.names].sort(), [...NAMES].sort(), "every tensor is there");
    for (const n of ck.names) await ck.read(n);
    // base = v, a = 1 + v: task arithmetic with weight w gives v + w
    const x = (await ck.read("model.layers.0.mlp.up_proj.weight")).data;
    return Math.round(x[3] - (((3 % 7) - 3) / 8));
  } finally {
    ck.close();
  }
}

Deno.test("kill -9 during a CLI merge: the output is absent or complete, and the next run cleans up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-kill-" });
  try {
    await fixture(dir);
    const out = `${dir}/out`, cfg = (w: number) => `${dir}/w${w}.yaml`;
    const cleaned = (err: string) => (err.match(/removed the stale temporary folder/g) ?? []).length;

    // 1. a fresh output, killed before the first tensor and in the middle of one: nothing at the final path
    const k1 = await run([cfg(1), out], { hold: "before-first-tensor" });
    assert.equal(await state(out), "absent");
    assert.equal(partials(dir).length, 1);
    const owner = JSON.parse(await Deno.readTextFile(`${dir}/${partials(dir)[0]}/moekit-owner.json`));
    assert.equal(owner.pid, k1.pid, "the temporary folder records its owner");
    const first = partials(dir)[0];
    const k2 = await run([cfg(1), out], { hold: "mid-tensor" });
    assert.equal(await state(out), "absent");
    assert.equal(cleaned(k2.err), 1, "the first leftover is removed by the next run");
    assert.equal(partials(dir).length, 1);
    assert.notEqual(partials(dir)[0], first, "a temporary folder is never reused");
    const shard = [...Deno.readDirSync(`${dir}/${partials(dir)[0]}/data`)].map((e) => e.name);
    assert.deepEqual(shard, ["model.safetensors"], "killed while writing the only shard");

    // the next run removes the leftover (and says so), then writes the output
    const r1 = await run([cfg(1), out]);
    assert.equal(r1.code, 0, r1.err);
    assert.equal(cleaned(r1.err), 1, r1.err);
    assert.equal(await state(out), 1);
    assert.deepEqual(partials(dir), []);
    assert.ok(await exists(`${out}/config.json`), "config.json copied from the base");

    // 2. overwrite, killed in the middle of a tensor: the old output is untouched
    const before = await Deno.readFile(`${out}/model-00001-of-00003.safetensors`).catch(() =>
      Deno.readFile(`${out}/model.safetensors`)
    );
    await run([cfg(2), out, "--overwrite", "--out-shard-size", "40K"], { hold: "mid-tensor" });
    assert.equal(await state(out), 1, "still the old output");
    const after = await Deno.readFile(`${out}/model-00001-of-00003.safetensors`).catch(() =>
      Deno.readFile(`${out}/model.safetensors`)
    );
    assert.deepEqual(after, before);

    // 3. overwrite, killed during the final renames (atomic exchange): the new output is complete
    const k3 = await run([cfg(2), out, "--overwrite"], { hold: "commit" });
    assert.equal(cleaned(k3.err), 1, "the leftover of the previous kill is removed first");
    assert.equal(await state(out), 2, "the new output, complete");
    assert.equal(partials(dir).length, 1, "the old output waits in the temporary folder");

    // 4. overwrite, killed between the two renames of the fallback (no FFI): nothing at the path, and
    //    the next run in the folder puts the old output back
    const k4 = await run([cfg(1), out, "--overwrite"], { hold: "commit", ffi: false });
    assert.equal(cleaned(k4.err), 1, k4.err);
    assert.equal(await state(out), "absent", "between the renames the path is empty");
    const r2 = await run([cfg(1), `${dir}/other`]);
    assert.equal(r2.code, 0, r2.err);
    assert.equal(cleaned(r2.err), 1, r2.err);
    assert.match(r2.err, /restored the previous .*\/out that an interrupted overwrite had moved aside/);
    assert.equal(await state(out), 2, "the old (weight 2) output is back, complete");
    assert.equal(await state(`${dir}/other`), 1);
    assert.deepEqual(partials(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
