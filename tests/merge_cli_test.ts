import assert from "node:assert/strict";
import { progressLine, runMergeCli } from "../lib/cli/merge_cli.ts";
import { matrix, openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import { merge } from "../lib/merging/mod.ts";
import { assertClose } from "./helpers.ts";
import { captureConsole, withTempDir } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

const mod = new URL("../mod.ts", import.meta.url).pathname;

/** base + models a, b: embed [8,4], layers 0..3 (mlp.up [4,4], attn.q [4,4]), an I64 buffer, norm [4]. */
async function fixture(
  dir: string,
  opts: { dim?: number; layers?: number; extra?: (name: string, model: string) => number[] | undefined } = {},
) {
  const d = opts.dim ?? 4, L = opts.layers ?? 4;
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
      {
        files: [
          {
            name: "config.json",
            data: JSON.stringify({ model_type: "llama", torch_dtype: "float32", num_hidden_layers: L }),
          },
          { name: "tokenizer.json", data: tokenizerJson(["<s>", "a", "b", "c", "d", "e", "f", "g"]) },
          {
            name: "tokenizer_config.json",
            data: JSON.stringify({ chat_template: m === "base" ? "T_base" : "T_ab" }),
          },
        ],
      },
    );
  }
  return { dir, specs };
}

/** Runs `f` on a fresh fixture and removes it afterwards (also on failure). */
async function withFixture(
  opts: Parameters<typeof fixture>[1],
  f: (fx: Awaited<ReturnType<typeof fixture>>) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => f(await fixture(dir, opts)), "moekit-cli-");
}

/** A tokenizer.json with the given vocabulary. */
function tokenizerJson(vocab: string[]): string {
  return JSON.stringify({
    model: { type: "BPE", vocab: Object.fromEntries(vocab.map((t, i) => [t, i])) },
    added_tokens: [],
  });
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
const ls = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

/** Runs the CLI in this process (no start-up cost), capturing what it prints. */
const cliHere = (...args: string[]) => captureConsole(() => runMergeCli(args));

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", mod, "merge", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
}

Deno.test("CLI merge: TIES with gradient and filtered parameters equals per-tensor merge(); bf16 output; buffers copied", () =>
  withFixture({}, async ({ dir, specs }) => {
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
      density: [1, 0.7, 0.4]
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
    const densities = [1, 0.8, 0.6, 0.4]; // [1, .7, .4] at t = 0, 1/3, 2/3, 1 (the final norm: t = 1)
    for (const s of specs) {
      const l = /layers\.(\d+)\./.exec(s.name)?.[1];
      const ref = merge({
        method: "ties",
        name: s.name,
        base: await base.read(s.name),
        models: [
          {
            tensor: await a.read(s.name),
            params: {
              weight: 1,
              density: densities[l === undefined ? (s.name.includes("norm") ? 3 : 0) : Number(l)],
            },
          },
          {
            tensor: await b.read(s.name),
            params: { weight: s.name.includes("mlp") ? 0.5 : 2, density: 0.5 },
          },
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
  }));

Deno.test("CLI merge --dry-run prints resolved parameters per tensor", () =>
  withFixture({}, async ({ dir }) => {
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
  }));

Deno.test("CLI merge --dry-run onto an existing folder reports the refusal, writes nothing, exits 0", () =>
  withFixture({}, async ({ dir }) => {
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 0.5}\n  - model: b\n    parameters: {weight: 0.5}\n",
    );
    await Deno.mkdir(`${dir}/out`);
    await Deno.writeTextFile(`${dir}/out/keep.txt`, "mine");
    const r = await cli(`${dir}/c.yaml`, `${dir}/out`, "--dry-run");
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /dry run: the real run would stop here: .*already exists/);
    assert.match(r.out, /plan: linear/);
    assert.deepEqual([...Deno.readDirSync(`${dir}/out`)].map((e) => e.name), ["keep.txt"]);
    // without --dry-run the same command is refused as before
    const real = await cli(`${dir}/c.yaml`, `${dir}/out`);
    assert.equal(real.code, 2, real.err);
    assert.match(real.err, /already exists/);
  }));

Deno.test("CLI merge validates before any work: unknown method/parameter, missing file, missing tensor, shape mismatch", () =>
  withFixture({}, async ({ dir }) => {
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
        : Array(name.includes("mlp") ? 20 : name.includes("embed") ? 32 : name.includes("norm") ? 4 : 16)
          .fill(
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
        // the path from the current folder, and where it was looked for first (beside the config)
        /nowhere: checkpoint does not exist \(model "nowhere" was looked for beside the config, at \S+\/nowhere, then here\)/,
      ],
      [
        "merge_method: ties\nbase_model: base\nout_dtype: float8\nmodels: [{model: a, parameters: {weight: 1}}]",
        /out_dtype = "float8"/,
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
      const r = await cliHere(`${dir}/bad.yaml`, `${dir}/never`);
      assert.equal(r.code, 2, yaml);
      assert.match(r.err, pattern, yaml);
      assert.equal(await Deno.stat(`${dir}/never`).then(() => true, () => false), false, "no output folder");
    }
  }));

Deno.test("CLI merge slices: layer ranges renumbered, t per slice", () =>
  withFixture({ layers: 4 }, async ({ dir }) => {
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
    const config = JSON.parse(await Deno.readTextFile(`${dir}/out/config.json`));
    assert.equal(config.num_hidden_layers, 3, "config.json counts the output's layers");
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
  }));

Deno.test("runMergeCli: a usage error is one line naming the flag and value, then a --help hint (exit 2); --help is the usage", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^error: unknown option --bogus; the options are --dry-run, .*--help/],
    [[], /^error: missing <config\.yaml> <out-dir> \(or --finalize <out-dir>\)$/],
    [["a.yaml"], /^error: missing <out-dir> after a\.yaml \(or --dry-run/],
    [
      ["a.yaml", "out", "extra"],
      /^error: unexpected argument "extra": merge takes <config\.yaml> <out-dir>$/,
    ],
    [
      ["a.yaml", "out", "--out-shard-size", "lots"],
      /^error: --out-shard-size "lots": use a byte count like 5B/,
    ],
    [["a.yaml", "out", "--max-block-size", "0"], /^error: --max-block-size "0" must be > 0$/],
    [["a.yaml", "out", "--seed", "x"], /^error: --seed "x": use an integer/],
    [
      ["a.yaml", "out", "--shard", "2/2"],
      /^error: --shard = "2\/2": the part i must be an integer in 0\.\.1/,
    ],
    [["--finalize", "out", "a.yaml"], /^error: --finalize takes only the output folder/],
  ];
  for (const [args, pattern] of cases) {
    const r = await cliHere(...args);
    assertUsageError({ code: r.code, stderr: r.err }, "deno run -A mod.ts merge", pattern, args.join(" "));
    assert.equal(r.out, "");
  }
  // a problem with a file is not a command-line mistake: one line, no --help hint
  const missing = await cliHere("/nonexistent/a.yaml", "out");
  assert.equal(missing.code, 2);
  assert.match(missing.err, /^error: cannot read config \/nonexistent\/a\.yaml .*\n$/);
  const help = await cliHere("--help");
  assert.equal(help.code, 0);
  assert.match(help.out, /^usage: deno run -A mod\.ts merge <config\.yaml> <out-dir> \[options\]\n/);
  assert.equal(help.err, "");
});

Deno.test("progressLine: a unit that suits the size (B, kB, MB, GB), no rate or ETA before there is time to measure", () => {
  const line = (done: number, total: number, bytesRead: number, bytesTotal: number, seconds: number) =>
    progressLine({ done, total, bytesRead, bytesTotal, seconds }).replace(/^[█░]{30} /, "");
  // a tiny merge: it said "0/0 MB", "0.0 MB/s" and "ETA 0 s"
  assert.equal(line(2, 10, 96, 480, 0.001), "2/10 tensors  96/480 B");
  assert.equal(line(10, 10, 480, 480, 0.003), "10/10 tensors  480/480 B  done in 0.0 s");
  assert.equal(line(1, 4, 2_500, 36_000, 0.01), "1/4 tensors  2.50/36.0 kB");
  // read bytes in the total's unit, rates and times left in their own
  assert.equal(line(5, 10, 1.5e6, 3e6, 1.5), "5/10 tensors  1.50/3.00 MB  1.00 MB/s  ETA 2 s");
  assert.equal(line(3, 300, 6e9, 150e9, 30), "3/300 tensors  6.00/150 GB  200 MB/s  ETA 12 min 00 s");
  assert.equal(line(1, 9, 1e9, 16e12, 10), "1/9 tensors  0.00/16.0 TB  100 MB/s  ETA 44 h 26 min");
  assert.equal(line(9, 9, 4e9, 4e9, 20), "9/9 tensors  4.00/4.00 GB  200 MB/s  done in 20.0 s");
  // no bytes read yet after a while (a slow first read): no rate, no ETA of 0 s or Infinity
  assert.equal(line(0, 9, 0, 4e9, 3), "0/9 tensors  0.00/4.00 GB");
  assert.equal(line(0, 0, 0, 0, 0), "0/0 tensors  0/0 B  done in 0.0 s");
  const bar = progressLine({ done: 5, total: 10, bytesRead: 1, bytesTotal: 2, seconds: 0 });
  assert.ok(bar.startsWith(`${"█".repeat(15)}${"░".repeat(15)} 5/10`), bar);
});

Deno.test("CLI merge, stderr not a terminal: a tiny merge's progress reads in bytes, one line at the end", () =>
  withFixture({}, async ({ dir }) => {
    await Deno.writeTextFile(`${dir}/ta.yaml`, TA);
    const r = await cli(`${dir}/ta.yaml`, `${dir}/out`);
    assert.equal(r.code, 0, r.err);
    const lines = r.err.trimEnd().split("\n").filter((l) => l.includes("tensors"));
    assert.equal(lines.length, 1, r.err); // a run under 2 s: only the line at the end
    // 1330 bytes of input: it said "0/0 MB"
    assert.match(lines[0], /^█{30} 11\/11 tensors {2}1\.33\/1\.33 kB {2}(\S+ k?B\/s {2})?done in \d+\.\d s$/);
    assert.doesNotMatch(r.err, /\r|MB|ETA/);
  }));

const TA =
  "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: 0.5}}\n";

Deno.test("CLI output rules: never an input, never over a file, an existing output only with --overwrite (replaced whole)", () =>
  withFixture({}, async ({ dir }) => {
    await Deno.writeTextFile(`${dir}/ta.yaml`, TA);
    const baseBytes = await Deno.readFile(`${dir}/base/model.safetensors`);
    await Deno.writeTextFile(`${dir}/file`, "x");
    const refused: [string[], RegExp][] = [
      [[`${dir}/base`], /base: is an input of this run/],
      [[`${dir}/base`, "--overwrite"], /base: is an input of this run/],
      [[`${dir}/a/`, "--overwrite"], /is an input of this run/],
      [[dir, "--overwrite"], /contains an input of this run/],
      [[`${dir}/file`], /file: is a file; the output is a folder/],
      [[`${dir}/file`, "--overwrite"], /is a file/],
    ];
    for (const [args, pattern] of refused) {
      const r = await cliHere(`${dir}/ta.yaml`, ...args, "--quiet");
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.err, pattern, args.join(" "));
      assert.doesNotMatch(r.out, /merged/);
    }
    assert.deepEqual(
      await Deno.readFile(`${dir}/base/model.safetensors`),
      baseBytes,
      "the base is untouched",
    );
    // a sharded output, then a one-file output over it: refused, then replaced as a whole
    let r = await cli(`${dir}/ta.yaml`, `${dir}/out`, "--quiet", "--out-shard-size", "100");
    assert.equal(r.code, 0, r.err);
    assert.ok(ls(`${dir}/out`).includes("model.safetensors.index.json"));
    r = await cli(`${dir}/ta.yaml`, `${dir}/out`, "--quiet");
    assert.equal(r.code, 2);
    assert.match(r.err, /out: already exists and is not empty .*--overwrite/);
    r = await cli(`${dir}/ta.yaml`, `${dir}/out`, "--quiet", "--overwrite");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(ls(`${dir}/out`), [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const ck = await openCheckpoint(`${dir}/out`);
    assert.equal(ck.names.length, 11);
    ck.close();
    assert.deepEqual(ls(dir).filter((n) => n.includes("partial")), []);
  }));

Deno.test("CLI output files: config.json with the output dtype, tokenizer from its source, chat templates; what moekit does not do is refused first", () =>
  withFixture({}, async ({ dir }) => {
    const run = async (yaml: string, ...flags: string[]) => {
      await Deno.writeTextFile(`${dir}/t.yaml`, yaml);
      await Deno.remove(`${dir}/out`, { recursive: true }).catch(() => {});
      return await (flags.length ? cli : cliHere)(`${dir}/t.yaml`, `${dir}/out`, "--quiet", ...flags);
    };
    const json = async (f: string) => JSON.parse(await Deno.readTextFile(`${dir}/out/${f}`));
    // default: the base's config (torch_dtype → bfloat16) and the base's tokenizer files, as mergekit
    let r = await run(`${TA}out_dtype: bfloat16\n`, "--cuda", "--lazy-unpickle", "--random-seed", "7");
    assert.equal(r.code, 0, r.err);
    assert.equal(
      r.err.trim(),
      "moekit: ignoring mergekit flags --cuda, --lazy-unpickle, --random-seed (moekit reads safetensors lazily on " +
        "the CPU; DARE/DELLA masks are seeded by --seed)",
    );
    assert.deepEqual(await json("config.json"), {
      model_type: "llama",
      torch_dtype: "bfloat16",
      num_hidden_layers: 4,
    });
    assert.equal(
      await Deno.readTextFile(`${dir}/out/tokenizer.json`),
      await Deno.readTextFile(`${dir}/base/tokenizer.json`),
    );
    assert.equal((await json("tokenizer_config.json")).chat_template, "T_base");
    // tokenizer_source: a model; chat_template: auto (the most common: a and b say T_ab) or a Jinja text
    r = await run(`${TA}tokenizer_source: a\n`);
    assert.equal(r.code, 0, r.err);
    assert.equal((await json("tokenizer_config.json")).chat_template, "T_ab");
    assert.equal((await json("config.json")).torch_dtype, "float32", "no dtype asked: the base's");
    r = await run(
      `${TA}  - {model: b, parameters: {weight: 0.5}}\ntokenizer: {source: base}\nchat_template: auto\n`,
    );
    assert.equal(r.code, 0, r.err);
    assert.equal((await json("tokenizer_config.json")).chat_template, "T_ab");
    const jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
    r = await run(`${TA}chat_template: "${jinja}"\n`);
    assert.equal(r.code, 0, r.err);
    assert.equal((await json("tokenizer_config.json")).chat_template, jinja);
    // refused before any tensor is read: exit 2, no output
    await writeCheckpoint(`${dir}/c`, [{ name: "w", dtype: "F32", shape: [1] }], () => [0], {
      files: [{ name: "tokenizer.json", data: tokenizerJson(["<s>", "x"]) }],
    });
    const refused: [string, RegExp][] = [
      [`${TA}tokenizer_source: union\n`, /union builds a merged vocabulary .* which moekit does not do/],
      [
        `${TA}tokenizer: {source: base, pad_to_multiple_of: 64}\n`,
        /pad_to_multiple_of changes the embedding rows/,
      ],
      [`${TA}tokenizer: {source: base, tokens: {x: {source: a}}}\n`, /per-token embedding sources/],
      [`${TA}chat_template: chatml\n`, /built-in templates, which moekit does not ship/],
      [
        `${TA}tokenizer_source: c\n`,
        /model base has another vocabulary than the tokenizer source c \(tokenizer.json differs\)/,
      ],
      [`${TA}tokenizer_source: nowhere\n`, /tokenizer source nowhere is not a model folder/],
    ];
    for (const [yaml, pattern] of refused) {
      r = await run(yaml);
      assert.equal(r.code, 2, yaml);
      assert.match(r.err, pattern, yaml);
      assert.equal(await exists(`${dir}/out`), false, yaml);
    }
  }));

Deno.test("deno task merge from a subfolder reads relative paths from the caller's folder (INIT_CWD)", () =>
  withFixture({}, async ({ dir }) => {
    await Deno.mkdir(`${dir}/configs`);
    // model paths relative to the caller's folder (not the config's)
    await Deno.writeTextFile(`${dir}/configs/ta.yaml`, TA);
    const repoConfig = new URL("../deno.json", import.meta.url).pathname;
    // as from a user's shell: `deno task` sets INIT_CWD only when the environment has none, and this
    // suite itself runs under `deno task test`, whose INIT_CWD (the repo root) would otherwise be inherited
    const env = Deno.env.toObject();
    delete env.INIT_CWD;
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "--config", repoConfig, "merge", "configs/ta.yaml", "merged", "--quiet"],
      cwd: dir,
      clearEnv: true,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, err);
    assert.match(new TextDecoder().decode(r.stdout), /merged 11 tensors into merged/);
    const ck = await openCheckpoint(`${dir}/merged`);
    assert.equal(ck.names.length, 11);
    ck.close();
    // and a plain `deno run` from that folder
    const r2 = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", mod, "merge", "configs/ta.yaml", "merged2", "--quiet"],
      cwd: dir,
      env: { INIT_CWD: "/nonexistent" }, // an INIT_CWD inherited from elsewhere is ignored outside deno task
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r2.code, 0, new TextDecoder().decode(r2.stderr));
    assert.ok(await exists(`${dir}/merged2/model.safetensors`));
  }));
