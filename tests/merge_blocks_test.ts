// Memory-capped merges (`maxBlockBytes`, `--max-block-size`): a tensor whose working set exceeds the
// cap is read, merged and written in blocks of rows, and the output is byte for byte the unblocked one —
// for every method that can merge blocks, bf16 and f32 inputs, f16 output, several blocks with a partial
// last block of one row, 1-D tensors, embeddings with extra rows and columns, the Worker and the calling
// thread, and the parts of `--shard i/n`. Methods that cannot merge blocks merge whole, with one note.
import assert from "node:assert/strict";
import { runMergeCli } from "../lib/cli/merge_cli.ts";
import { type Dtype, matrix, writeCheckpoint } from "../lib/io/mod.ts";
import {
  finalizeCheckpointMerge,
  OptionError,
  parseMergeConfig,
  planCheckpointMerge,
  runCheckpointMerge,
} from "../lib/merging/mod.ts";
import { planBlocks } from "../lib/merging/merge_run.ts";
import { captureConsole, spawnMergeCli, withTempDir } from "./harness.ts";

const EMBED = "model.embed_tokens.weight";
const SHAPES: [string, number[]][] = [
  [EMBED, [37, 24]],
  ["model.layers.0.mlp.up_proj.weight", [15, 24]],
  ["model.layers.0.input_layernorm.weight", [1000]],
  ["model.layers.1.mlp.up_proj.weight", [15, 24]],
  ["lm_head.weight", [1, 64]],
];

/** base, a, b (same shapes) and c (an embedding with 3 extra rows and 2 extra columns), in `dtype`. */
async function fixture(dir: string, dtype: Dtype): Promise<void> {
  for (const [i, m] of ["base", "a", "b", "c"].entries()) {
    const specs = SHAPES.map(([name, shape]) => ({
      name,
      dtype,
      shape: m === "c" && name === EMBED ? [40, 26] : shape,
    }));
    await writeCheckpoint(
      `${dir}/${m}`,
      [...specs, { name: "position_ids", dtype: "I64", shape: [2] }],
      (name) => {
        if (name === "position_ids") return new Uint8Array(16).fill(3);
        const s = specs.find((x) => x.name === name)!, n = s.shape.reduce((a, b) => a * b, 1);
        // whole numbers of small magnitude in places: equal magnitudes (ties) for the magnitude cuts
        const r = matrix.randn(1, n, { seed: 10 * i + specs.indexOf(s) }).data;
        return r.map((x, j) => (j % 5 === 0 ? Math.round(2 * x) / 4 : x));
      },
    );
  }
}

/** Configs of the methods that merge blocks; each with the models its base rule allows. */
const CONFIGS: Record<string, string> = {
  linear: `merge_method: linear
models:
  - {model: base, parameters: {weight: 0.3}}
  - {model: a, parameters: {weight: 0.5}}
  - {model: b, parameters: {weight: [0.1, 0.6]}}
`,
  task_arithmetic: `merge_method: task_arithmetic
base_model: base
models:
  - {model: a, parameters: {weight: 0.7}}
  - {model: b, parameters: {weight: [0.2, 0.9]}}
  - {model: c, parameters: {weight: -0.4}}
`,
};
/** The task-arithmetic methods that prune: each with base, a, b, c and its own parameters. */
const pruning = (method: string, a: string, b: string, global = "") =>
  `merge_method: ${method}
base_model: base
${global}models:
  - {model: a, parameters: {weight: 0.7, ${a}}}
  - {model: b, parameters: {weight: [0.2, 0.9], ${b}}}
  - {model: c, parameters: {weight: -0.4, ${a}}}
`;
CONFIGS.ties = pruning("ties", "density: 0.4", "density: [0.9, 0.3]");
CONFIGS["ties (peft)"] = pruning("ties", "density: 0.4", "density: 0.25", "parameters: {semantics: peft}\n");
CONFIGS.magnitude_prune = pruning("magnitude_prune", "density: 0.3", "density: 0.6");
CONFIGS.breadcrumbs = pruning("breadcrumbs", "density: 0.5, gamma: 0.1", "density: 0.3, gamma: 0.02");
CONFIGS.breadcrumbs_ties = pruning(
  "breadcrumbs_ties",
  "density: 0.5, gamma: 0.1",
  "density: 0.8, gamma: 0.05",
);
CONFIGS.dare_linear = pruning("dare_linear", "density: 0.4", "density: 0.7");
CONFIGS["dare_ties (l2)"] = pruning(
  "dare_ties",
  "density: 0.4",
  "density: 0.7",
  "parameters: {rescale_norm: l2}\n",
);
CONFIGS["dare_linear (peft)"] = pruning(
  "dare_linear",
  "density: 0.5",
  "density: 0.2",
  "parameters: {semantics: peft}\n",
);
/** Read passes before the merge pass, by method: magnitude cuts 2, DARE's norms 1, element-wise 0. */
const PASSES: Record<string, number> = {
  linear: 0,
  task_arithmetic: 0,
  "dare_linear (peft)": 0,
  dare_linear: 1,
  "dare_ties (l2)": 1,
};

/** Every file of a folder with its bytes. */
async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const m = new Map<string, Uint8Array>();
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    m.set(e.name, await Deno.readFile(`${dir}/${e.name}`));
  }
  return m;
}

function assertSame(got: Map<string, Uint8Array>, want: Map<string, Uint8Array>, what: string): void {
  assert.deepEqual([...got.keys()], [...want.keys()], what);
  for (const [name, bytes] of want) assert.deepEqual(got.get(name), bytes, `${what}: ${name}`);
}

/** Bytes per entry of a tensor's working set with `inputs` inputs: (inputs + 1) float32. */
const per = (inputs: number) => 4 * (inputs + 1);

for (const dtype of ["BF16", "F32"] as const) {
  Deno.test(`blocks of rows give the unblocked bytes (${dtype} inputs): every blockable method, Worker and calling thread`, () =>
    withTempDir(async (dir) => {
      await fixture(dir, dtype);
      for (const [method, yaml] of Object.entries(CONFIGS)) {
        // f32 inputs also written as f16 (the float64 result path)
        for (const out of dtype === "F32" ? ["", "out_dtype: float16\n"] : [""]) {
          const plan = await planCheckpointMerge(parseMergeConfig(yaml + out), { configDir: dir });
          try {
            const inputs = method === "linear" ? 3 : 4;
            // 7 rows of 24 per block: the embedding in 6 blocks (the last of 2 rows), the layers in 7 + 7 + 1
            // rows, the norm in blocks of 168 entries; lm_head [1, 64] fits whole
            const cap = 7 * 24 * per(inputs) + 3;
            const { blocked } = planBlocks(plan, cap);
            assert.deepEqual(blocked.get(EMBED), {
              rows: 37,
              rowElems: 24,
              rowsPerBlock: 7,
              passes: PASSES[method] ?? 2,
            });
            assert.equal(blocked.get("model.layers.0.mlp.up_proj.weight")?.rowsPerBlock, 7);
            assert.equal(blocked.get("model.layers.0.input_layernorm.weight")?.rowsPerBlock, 168);
            assert.equal(blocked.has("lm_head.weight"), false);
            const ref = await runCheckpointMerge(plan, `${dir}/ref`, {
              overlap: false,
              seed: 5,
              shardBytes: 2000,
            });
            // each input byte is read once; of c's wider embedding only the 37 rows of the base
            const read = ref.bytesRead - (yaml.includes("model: c") ? 3 * 26 * (dtype === "F32" ? 4 : 2) : 0);
            const want = await snapshot(`${dir}/ref`);
            for (const overlap of [true, false]) {
              const to = `${dir}/blocked-${overlap}`;
              const r = await runCheckpointMerge(plan, to, {
                overlap,
                minWorkerMs: 0, // a Worker however small the run
                seed: 5,
                shardBytes: 2000,
                maxBlockBytes: cap,
              });
              assert.equal(r.bytesRead, read);
              assertSame(await snapshot(to), want, `${method} ${dtype} ${out} overlap ${overlap}`);
              await Deno.remove(to, { recursive: true });
            }
            await Deno.remove(`${dir}/ref`, { recursive: true });
          } finally {
            plan.close();
          }
        }
      }
    }, "moekit-blocks-"));
}

Deno.test("a cap below one row is an OptionError naming the tensor and the minimum, before anything is written", () =>
  withTempDir(async (dir) => {
    await fixture(dir, "BF16");
    await Deno.writeTextFile(`${dir}/c.yaml`, CONFIGS.task_arithmetic);
    const plan = await planCheckpointMerge(parseMergeConfig(CONFIGS.task_arithmetic), { configDir: dir });
    try {
      // lm_head [1, 64] needs 64 × 20 bytes for its one row; the embedding 24 × 20
      for (const part of [undefined, { index: 0, count: 1 }]) {
        await assert.rejects(
          () => runCheckpointMerge(plan, `${dir}/out`, { maxBlockBytes: 1000, part }),
          (e) => {
            assert.ok(e instanceof OptionError, String(e));
            assert.equal(e.option, "maxBlockBytes");
            assert.match(
              e.message,
              /tensor lm_head\.weight \[1,64\] needs 1280 bytes per row .*use a cap of at least 1280 bytes/,
            );
            return true;
          },
        );
      }
      assert.throws(() => planBlocks(plan, 0), /must be a number of bytes > 0/);
      assert.equal(planBlocks(plan, 1280).blocked.has("lm_head.weight"), false); // fits whole
      assert.equal(planBlocks(plan, 1280).blocked.get(EMBED)?.rowsPerBlock, 2);
    } finally {
      plan.close();
    }
    const r = await captureConsole(() =>
      runMergeCli([`${dir}/c.yaml`, `${dir}/out`, "--max-block-size", "1K", "--quiet"])
    );
    assert.equal(r.code, 2);
    assert.match(r.err, /--max-block-size = 1000: a block is at least one row: tensor lm_head\.weight/);
    const bad = await captureConsole(() =>
      runMergeCli([`${dir}/c.yaml`, `${dir}/out`, "--max-block-size", "lots"])
    );
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--max-block-size "lots": use a byte count like/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith("out")), []);
  }, "moekit-blocks-"));

Deno.test("a method that cannot merge blocks merges whole, and says so once; the CLI's cap gives the same bytes", () =>
  withTempDir(async (dir) => {
    await fixture(dir, "BF16");
    const nuslerp =
      "merge_method: nuslerp\nparameters: {nuslerp_flatten: false}\nmodels:\n  - {model: a, parameters: {weight: 0.3}}\n  - {model: b, parameters: {weight: 0.7}}\n";
    await Deno.writeTextFile(`${dir}/t.yaml`, CONFIGS.task_arithmetic);
    const plan = await planCheckpointMerge(parseMergeConfig(nuslerp), { configDir: dir });
    const notes: string[] = [];
    try {
      await runCheckpointMerge(plan, `${dir}/ref`, { log: () => {} });
      await runCheckpointMerge(plan, `${dir}/capped`, { maxBlockBytes: 1000, log: (l) => notes.push(l) });
    } finally {
      plan.close();
    }
    assert.equal(notes.length, 1, notes.join("\n"));
    assert.match(
      notes[0],
      /nuslerp cannot merge a tensor in blocks of rows: 4 tensors above the block cap of 1000 bytes are merged whole \(the largest, model\.layers\.0\.input_layernorm\.weight, works on 12000 bytes\)/,
    );
    assertSame(await snapshot(`${dir}/capped`), await snapshot(`${dir}/ref`), "nuslerp");
    // slerp merges in blocks after one read pass (its angle's sums): no note, the same bytes
    const slerp = "merge_method: slerp\nbase_model: base\nparameters: {t: 0.3}\nmodels:\n  - {model: a}\n";
    const splan = await planCheckpointMerge(parseMergeConfig(slerp), { configDir: dir });
    try {
      assert.equal(planBlocks(splan, 1000).blocked.get("model.layers.0.input_layernorm.weight")?.passes, 1);
      await runCheckpointMerge(splan, `${dir}/s-ref`, { log: () => {} });
      await runCheckpointMerge(splan, `${dir}/s-capped`, { maxBlockBytes: 1000, log: (l) => notes.push(l) });
    } finally {
      splan.close();
    }
    assert.equal(notes.length, 1, notes.join("\n"));
    assertSame(await snapshot(`${dir}/s-capped`), await snapshot(`${dir}/s-ref`), "slerp");
    // the CLI: --max-block-size, and --dry-run shows the blocks
    const cli = (...a: string[]) => captureConsole(() => runMergeCli([...a, "--quiet"]));
    assert.equal((await cli(`${dir}/t.yaml`, `${dir}/t-ref`)).code, 0);
    const r = await cli(`${dir}/t.yaml`, `${dir}/t-cap`, "--max-block-size", "3400");
    assert.equal(r.code, 0, r.err);
    assertSame(await snapshot(`${dir}/t-cap`), await snapshot(`${dir}/t-ref`), "CLI");
    const dry = await cli(`${dir}/t.yaml`, "--dry-run", "--max-block-size", "3400");
    assert.match(dry.out, /model\.embed_tokens\.weight \[37,24\] .* \(in 6 blocks of 7 rows\)/);
    assert.doesNotMatch(dry.out, /lm_head\.weight .* blocks/);
    await Deno.writeTextFile(`${dir}/ties.yaml`, CONFIGS.ties);
    const tdry = await cli(`${dir}/ties.yaml`, "--dry-run", "--max-block-size", "3400");
    assert.match(
      tdry.out,
      /model\.embed_tokens\.weight \[37,24\] .*\(in 6 blocks of 7 rows, after 2 read passes\)/,
    );
  }, "moekit-blocks-"));

Deno.test("parts of a merge (--shard i/n) with blocks + finalize = the unblocked one-process merge", () =>
  withTempDir(async (dir) => {
    await fixture(dir, "BF16");
    const plan = await planCheckpointMerge(parseMergeConfig(CONFIGS.task_arithmetic), { configDir: dir });
    try {
      await runCheckpointMerge(plan, `${dir}/one`, { shardBytes: 1000 });
      for (const index of [0, 1, 2]) {
        await runCheckpointMerge(plan, `${dir}/out`, {
          shardBytes: 1000,
          maxBlockBytes: 7 * 24 * per(4),
          part: { index, count: 3 },
          overlap: index !== 1,
          minWorkerMs: 0,
        });
      }
    } finally {
      plan.close();
    }
    await finalizeCheckpointMerge(`${dir}/out`);
    assertSame(await snapshot(`${dir}/out`), await snapshot(`${dir}/one`), "parts");
  }, "moekit-blocks-"));

Deno.test("a merge killed in the middle of a tensor written in blocks leaves no output; the next run completes it", () =>
  withTempDir(async (dir) => {
    await fixture(dir, "BF16");
    await Deno.writeTextFile(`${dir}/t.yaml`, CONFIGS.ties);
    const args = [`${dir}/t.yaml`, `${dir}/out`, "--max-block-size", String(7 * 24 * per(4)), "--quiet"];
    // the hold is at half the bytes of the plan's middle tensor, model.layers.1.mlp.up_proj.weight: 3 blocks
    const killed = await spawnMergeCli(args, { hold: "mid-tensor" });
    assert.match(killed.err, /moekit test hold: mid-tensor/);
    const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
    assert.equal(await exists(`${dir}/out`), false, "no output under its final name");
    const r = await captureConsole(() => runMergeCli(args));
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /removed the stale temporary folder/);
    const plan = await planCheckpointMerge(parseMergeConfig(CONFIGS.ties), { configDir: dir });
    try {
      await runCheckpointMerge(plan, `${dir}/ref`, {});
    } finally {
      plan.close();
    }
    assertSame(await snapshot(`${dir}/out`), await snapshot(`${dir}/ref`), "after the kill");
  }, "moekit-blocks-"));

Deno.test("slerp over large bf16 blocks (sums on 16-bit chunks decoded in the kernel) = small blocks (float32 sums)", () =>
  withTempDir(async (dir) => {
    // [1100, 1024]: split by the stream (≥ 2²⁰ entries) and, capped, in blocks of 300 rows (the last of 200)
    for (const [i, m] of ["base", "a"].entries()) {
      await writeCheckpoint(
        `${dir}/${m}`,
        [{ name: EMBED, dtype: "BF16", shape: [1100, 1024] }],
        () =>
          matrix.randn(1, 1100 * 1024, { seed: 3 + i }).data.map((
            x,
            j,
          ) => (i ? 0.8 * x + 0.1 : x + (j % 7) / 16)),
      );
    }
    const yaml = "merge_method: slerp\nbase_model: base\nparameters: {t: 0.3}\nmodels:\n  - {model: a}\n";
    const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
    try {
      // blocks of 16 rows (16 384 entries): below two kernel chunks, summed from float32 copies
      await runCheckpointMerge(plan, `${dir}/ref`, { overlap: false, maxBlockBytes: 16 * 1024 * per(2) });
      const want = await snapshot(`${dir}/ref`);
      for (
        const [overlap, cap] of [[false, undefined], [true, undefined], [false, 300 * 1024 * per(2)]] as const
      ) {
        const to = `${dir}/out-${overlap}-${cap}`;
        await runCheckpointMerge(plan, to, {
          overlap,
          minWorkerMs: 0,
          ...(cap ? { maxBlockBytes: cap } : {}),
        });
        assertSame(await snapshot(to), want, `slerp overlap ${overlap} cap ${cap}`);
      }
    } finally {
      plan.close();
    }
  }, "moekit-blocks-"));
