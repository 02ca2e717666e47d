// `mod.ts route --plots DIR`: the same rule as the examples' plots — existing files are refused before any
// work unless --overwrite, all or nothing; a file where the folder should be is a one-line error.
import assert from "node:assert/strict";
import { matrix } from "../lib/core/matrix.ts";
import { writeSafetensors } from "../lib/io/safetensors.ts";
import { runModelCli } from "../lib/cli/model_cli.ts";
import { backbone, perExpert, randT, type SynthTensor, writeSynthetic } from "./checkpoints_helpers.ts";
import { captureConsole, withTempDir } from "./harness.ts";

const cli = (args: string[]) => captureConsole(() => runModelCli("route", args));
const d = 32, f = 16, E = 8;

/** A two-layer OLMoE checkpoint in `dir/m` and 64 hidden states in `dir/h.safetensors`. */
async function writeModel(dir: string): Promise<void> {
  const t: Record<string, SynthTensor> = backbone(2, d);
  for (const l of [0, 1]) {
    Object.assign(t, perExpert(`model.layers.${l}.mlp`, E, d, f), {
      [`model.layers.${l}.mlp.gate.weight`]: randT([E, d], 0.3),
    });
  }
  await writeSynthetic(`${dir}/m`, {
    model_type: "olmoe",
    num_hidden_layers: 2,
    hidden_size: d,
    num_experts_per_tok: 2,
    intermediate_size: f,
    num_experts: E,
  }, t);
  const x = matrix.randn(64, d, { seed: 5 });
  await writeSafetensors(`${dir}/h.safetensors`, [{ name: "x", dtype: "F32", shape: [64, d], data: x.data }]);
}

const FILES = ["layer-load", "load", "drop-vs-capacity", "coactivation"].flatMap((
  n,
) => [`${n}.json`, `${n}.svg`])
  .sort();
const ls = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("route --plots: existing files refused before any work unless --overwrite, all or nothing", async () => {
  await withTempDir(async (dir) => {
    await writeModel(dir);
    const args = [`${dir}/m`, "--hidden", `${dir}/h.safetensors`, "--plots", `${dir}/p`];
    const first = await cli(args);
    assert.equal(first.code, 0, first.err);
    assert.deepEqual(ls(`${dir}/p`), FILES);
    const loadJson = await Deno.readTextFile(`${dir}/p/load.json`);
    await Deno.writeTextFile(`${dir}/p/load.svg`, "mine");

    const again = await cli(args);
    assert.equal(again.code, 2);
    assert.equal(
      again.err,
      `error: --plots ${dir}/p: ${dir}/p/layer-load.json exists; remove it or pass --overwrite\n`,
      "refused before the model is opened",
    );
    assert.equal(again.out, "");
    assert.equal(await Deno.readTextFile(`${dir}/p/load.svg`), "mine");

    // one file in the way: still refused, nothing else written
    for (const name of ls(`${dir}/p`)) if (name !== "load.svg") Deno.removeSync(`${dir}/p/${name}`);
    const one = await cli(args);
    assert.equal(one.code, 2);
    assert.match(one.err, /p\/load\.svg exists; remove it or pass --overwrite/);
    assert.doesNotMatch(one.err, /opened|routed/);
    assert.deepEqual(ls(`${dir}/p`), ["load.svg"]);

    const forced = await cli([...args, "--overwrite"]);
    assert.equal(forced.code, 0, forced.err);
    assert.deepEqual(ls(`${dir}/p`), FILES);
    assert.match(await Deno.readTextFile(`${dir}/p/load.svg`), /^<svg/);
    assert.equal(await Deno.readTextFile(`${dir}/p/load.json`), loadJson, "same input, same plot");
  });
});

Deno.test("route --plots at a file, or --overwrite without --plots: a one-line error (and a --help hint for the flag mistake), exit 2, before any work", async () => {
  await withTempDir(async (dir) => {
    await writeModel(dir);
    await Deno.writeTextFile(`${dir}/afile`, "x");
    const base = [`${dir}/m`, "--hidden", `${dir}/h.safetensors`];
    for (
      const [extra, message] of [
        [["--plots", `${dir}/afile`], `--plots ${dir}/afile: exists and is not a folder`],
        [
          ["--plots", `${dir}/afile/sub`],
          `--plots ${dir}/afile/sub: ${dir}/afile exists and is not a folder`,
        ],
        [["--plots", ""], `--plots needs a folder`],
        [
          ["--overwrite"],
          "route: --overwrite applies to --plots DIR only (route writes nothing else)\n" +
          'run "deno run -A mod.ts route --help" for all options',
        ],
      ] as const
    ) {
      const r = await cli([...base, ...extra]);
      assert.equal(r.code, 2, extra.join(" "));
      assert.equal(r.err, `error: ${message}\n`);
      assert.equal(r.out, "");
    }
    assert.equal(await Deno.readTextFile(`${dir}/afile`), "x");
    assert.deepEqual(ls(dir), ["afile", "h.safetensors", "m"]);
  });
});
