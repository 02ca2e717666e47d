// A merge split into parts (`merge --shard i/n`, each part its own process) and assembled with
// `merge --finalize` gives the same bytes as a one-process merge; what finalize refuses; and the
// overlapped run (Worker compute) writes the same bytes as the one-tensor-at-a-time run.
import assert from "node:assert/strict";
import { runMergeCli } from "../lib/cli/merge_cli.ts";
import { CheckpointError, matrix, writeCheckpoint } from "../lib/io/mod.ts";
import {
  finalizeCheckpointMerge,
  OptionError,
  parseMergeConfig,
  planCheckpointMerge,
  runCheckpointMerge,
} from "../lib/merging/mod.ts";
import { assignParts, outputLayout, parsePart } from "../lib/merging/merge_run.ts";
import { captureConsole, withTempDir } from "./harness.ts";

const mod = new URL("../mod.ts", import.meta.url).pathname;

const CONFIG = (w: number) =>
  `merge_method: dare_ties
base_model: base
out_dtype: bfloat16
models:
  - {model: a, parameters: {weight: ${w}, density: 0.5}}
  - {model: b, parameters: {weight: 0.5, density: [0.9, 0.3]}}
`;

/** base, a, b: embeddings, 4 layers of two [8,8] matrices, a norm and an I64 buffer; config + tokenizer. */
async function fixture(dir: string): Promise<void> {
  const specs = [
    { name: "model.embed_tokens.weight", dtype: "F32" as const, shape: [16, 8] },
    ...Array.from({ length: 4 }, (_, l) => [
      { name: `model.layers.${l}.mlp.up_proj.weight`, dtype: "F32" as const, shape: [8, 8] },
      { name: `model.layers.${l}.self_attn.q_proj.weight`, dtype: "F32" as const, shape: [8, 8] },
    ]).flat(),
    { name: "model.norm.weight", dtype: "F32" as const, shape: [8] },
  ];
  for (const [i, m] of ["base", "a", "b"].entries()) {
    await writeCheckpoint(
      `${dir}/${m}`,
      [...specs, { name: "position_ids", dtype: "I64", shape: [2] }],
      (name) => {
        if (name === "position_ids") return new Uint8Array(16).fill(7);
        const s = specs.find((x) => x.name === name)!;
        return matrix.randn(1, s.shape.reduce((a, b) => a * b, 1), { seed: 100 * i + specs.indexOf(s) }).data;
      },
      {
        files: [
          { name: "config.json", data: '{"model_type": "llama", "torch_dtype": "float32"}' },
          { name: "tokenizer.json", data: '{"model": {"vocab": {"a": 0}}}' },
        ],
      },
    );
  }
  await Deno.writeTextFile(`${dir}/c.yaml`, CONFIG(1));
  await Deno.writeTextFile(`${dir}/c2.yaml`, CONFIG(2));
}

/** Runs `f` on a fresh fixture and removes it afterwards (also on failure). */
const withFixture = (f: (dir: string) => Promise<void>) =>
  withTempDir(async (dir) => {
    await fixture(dir);
    await f(dir);
  }, "moekit-shard-");

/** The CLI as its own process. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", mod, "merge", ...args, "--quiet"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
}

/** The CLI in this process (no start-up cost), capturing what it prints. */
const cliHere = (...args: string[]) => captureConsole(() => runMergeCli([...args, "--quiet"]));

/** Every file of a folder with its bytes. */
async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const m = new Map<string, Uint8Array>();
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    m.set(e.name, await Deno.readFile(`${dir}/${e.name}`));
  }
  return m;
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
const SIZE = ["--out-shard-size", "300"]; // bf16 output: 256 B embeddings, 128 B matrices → 5 files

Deno.test("parts: files from the largest down, each to the lightest part (ties: lower numbers)", () => {
  // 9 → p0; 5 → p1; 4 → p1 (9 | 9); 4 → p0 (tie: the lower part); 3 → p1 (13 | 12)
  const files = [5, 9, 4, 4, 3].map((bytes) => ({ bytes }));
  assert.deepEqual(assignParts(files, 2), [[1, 3], [0, 2, 4]]);
  assert.deepEqual(assignParts([1, 1, 1, 1].map((bytes) => ({ bytes })), 3), [[0, 3], [1], [2]]);
  assert.deepEqual(assignParts(files, 1), [[0, 1, 2, 3, 4]]);
});

Deno.test("merge --shard i/3 in three processes + --finalize = a one-process merge, byte for byte", () =>
  withFixture(async (dir) => {
    const one = await cli(`${dir}/c.yaml`, `${dir}/one`, ...SIZE);
    assert.equal(one.code, 0, one.err);
    const parts = await Promise.all(
      [0, 1, 2].map((i) => cli(`${dir}/c.yaml`, `${dir}/out`, "--shard", `${i}/3`, ...SIZE)),
    );
    for (const [i, r] of parts.entries()) {
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`merged part ${i}/3 .*merge --finalize`));
    }
    assert.equal(await exists(`${dir}/out`), false, "no output before finalize");
    const fin = await cli("--finalize", `${dir}/out`);
    assert.equal(fin.code, 0, fin.err);
    assert.match(fin.out, /finalized .* from 3 parts/);
    const [a, b] = [await snapshot(`${dir}/one`), await snapshot(`${dir}/out`)];
    assert.deepEqual([...b.keys()], [...a.keys()]);
    assert.ok(a.has("model.safetensors.index.json") && a.has("config.json") && a.has("tokenizer.json"));
    assert.equal([...a.keys()].filter((n) => n.endsWith(".safetensors")).length, 5);
    for (const [name, bytes] of a) assert.deepEqual(b.get(name), bytes, name);
    assert.equal(await exists(`${dir}/out.parts`), false, "the parts folder is removed");
    assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.includes(".partial-")), []);
  }));

Deno.test("merge --shard: bad part numbers and too many parts are usage errors (exit 2) before any read", () =>
  withFixture(async (dir) => {
    const cases: [string, RegExp][] = [
      ["3/3", /--shard = "3\/3": the part i must be an integer in 0\.\.2/],
      ["-1/3", /--shard = "-1\/3": use i\/n/],
      ["0/0", /number of parts n must be an integer ≥ 1/],
      ["two/3", /use i\/n with 0 ≤ i < n/],
      ["0/7", /the output has 5 shard files at --out-shard-size 300, fewer than the 7 parts/],
    ];
    for (const [spec, pattern] of cases) {
      const r = await cliHere(`${dir}/c.yaml`, `${dir}/out`, `--shard=${spec}`, ...SIZE);
      assert.equal(r.code, 2, spec);
      assert.match(r.err, pattern, spec);
      assert.equal(await exists(`${dir}/out.parts`), false, spec);
    }
    assert.throws(() => parsePart("3/3"), OptionError);
    const r = await cliHere("--finalize", `${dir}/out`, "--shard", "0/3");
    assert.equal(r.code, 2);
    assert.match(r.err, /--finalize takes only the output folder/);
  }));

Deno.test("merge --finalize refuses a missing part, a part of another config or split, a damaged part (exit 2, no output)", () =>
  withFixture(async (dir) => {
    const part = (i: number, n = 3, cfg = "c.yaml") =>
      cliHere(`${dir}/${cfg}`, `${dir}/out`, "--shard", `${i}/${n}`, ...SIZE);
    const finalize = async (pattern: RegExp) => {
      const r = await cliHere("--finalize", `${dir}/out`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.err, pattern);
      assert.equal(await exists(`${dir}/out`), false);
    };
    await finalize(/out\.parts: no parts folder: run `merge <config> <out-dir> --shard i\/n`/);
    for (const i of [0, 2]) assert.equal((await part(i)).code, 0);
    await assert.rejects(() => finalizeCheckpointMerge(`${dir}/out`), CheckpointError); // the typed error
    await finalize(/part-00001-of-00003: part 1\/3 is missing; run `merge <config> <out-dir> --shard 1\/3`/);
    // part 1 from another config (another weight): its config hash differs
    assert.equal((await part(1, 3, "c2.yaml")).code, 0);
    await finalize(/part-00001-of-00003: was made from another config than part-00000-of-00003/);
    // the same config with another seed: another plan
    let r = await cliHere(`${dir}/c.yaml`, `${dir}/out`, "--shard", "1/3", "--seed", "5", ...SIZE);
    assert.equal(r.code, 0, r.err);
    await finalize(/was made with another plan than part-00000-of-00003 \(--seed, --out-shard-size/);
    // the right part 1, but a leftover part of a split into 2
    assert.equal((await part(1)).code, 0);
    assert.equal((await part(0, 2)).code, 0);
    await finalize(/part-00000-of-00003: is part of a split into 3, part-00000-of-00002 of a split into 2/);
    await Deno.remove(`${dir}/out.parts/part-00000-of-00002`, { recursive: true });
    // a damaged shard file in a part
    const p2 = `${dir}/out.parts/part-00002-of-00003`;
    const shard = [...Deno.readDirSync(p2)].map((e) => e.name).find((n) => n.endsWith(".safetensors"))!;
    const bytes = await Deno.readFile(`${p2}/${shard}`);
    await Deno.writeFile(`${p2}/${shard}`, bytes.subarray(0, bytes.length - 2));
    await finalize(
      new RegExp(`${shard}: has ${bytes.length - 2} bytes, its part record says ${bytes.length}`),
    );
    await Deno.writeFile(`${p2}/${shard}`, bytes);
    // repaired: finalize writes the output, and an existing output needs --overwrite
    r = await cliHere("--finalize", `${dir}/out`);
    assert.equal(r.code, 0, r.err);
    for (const i of [0, 1, 2]) assert.equal((await part(i)).code, 2, "the output exists now: refused");
    assert.equal(await exists(`${dir}/out.parts`), false);
  }));

Deno.test("overlapped run (Worker compute, read-ahead, write-behind) writes the same bytes as one tensor at a time", () =>
  withFixture(async (dir) => {
    for (const method of ["ties", "dare_linear", "della"]) {
      const eps = method === "della" ? ", epsilon: 0.1" : "";
      const yaml = CONFIG(1).replace("dare_ties", method).replace("density: 0.5}", `density: 0.5${eps}}`)
        .replace("density: [0.9, 0.3]}", `density: [0.7, 0.3]${eps}}`);
      const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
      try {
        const outs: Map<string, Uint8Array>[] = [];
        for (const overlap of [false, true]) {
          const out = `${dir}/o-${method}-${overlap}`;
          const r = await runCheckpointMerge(plan, out, {
            shardBytes: 300,
            seed: 3,
            overlap,
            minWorkerMs: 0, // a Worker however small the run
            log: () => {},
          });
          assert.equal(r.bytesRead, plan.inputBytes);
          outs.push(await snapshot(out));
        }
        assert.deepEqual([...outs[1].keys()], [...outs[0].keys()]);
        for (const [name, bytes] of outs[0]) assert.deepEqual(outs[1].get(name), bytes, `${method} ${name}`);
      } finally {
        plan.close();
      }
    }
    // the layout the parts share is writeCheckpoint's
    const plan = await planCheckpointMerge(parseMergeConfig(CONFIG(1)), { configDir: dir });
    const names = outputLayout(plan.tensors, 300).map((f) => f.name);
    plan.close();
    assert.deepEqual(
      names,
      [...Deno.readDirSync(`${dir}/o-ties-true`)].map((e) => e.name).filter((n) => n.endsWith(".safetensors"))
        .sort(),
    );
  }));

Deno.test("an error inside the merge Worker arrives with its class and fields; nothing is written", () =>
  withFixture(async (dir) => {
    const plan = await planCheckpointMerge(parseMergeConfig(CONFIG(1).replace("dare_ties", "ties")), {
      configDir: dir,
    });
    try {
      // a parameter the planner would have refused, smuggled past it: merge() refuses it on the Worker
      const bad = {
        ...plan,
        tensors: plan.tensors.map((t) =>
          t.name.includes("layers.2")
            ? { ...t, params: { ...t.params, lambda: "x" as unknown as number } }
            : t
        ),
      };
      for (const overlap of [true, false]) {
        await assert.rejects(
          () => runCheckpointMerge(bad, `${dir}/bad`, { overlap, minWorkerMs: 0, log: () => {} }),
          (e) => {
            assert.ok(e instanceof OptionError, String(e));
            assert.match(e.option, /lambda/);
            assert.match(e.message, /model\.layers\.2\./);
            return true;
          },
        );
        assert.equal(await exists(`${dir}/bad`), false);
        assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.includes(".partial-")), []);
      }
    } finally {
      plan.close();
    }
  }));
