/**
 * Checkpoint merge throughput and memory: generates a base and 3 fine-tuned checkpoints (bf16, several
 * GB in all, in a temporary folder), reads every input once as fast as possible (the raw read rate),
 * then runs a TIES merge of the 3 models through the streaming pipeline and reports MB/s of input and the
 * peak RSS against the largest tensor.
 *
 *   deno run -A bench/merge_throughput.ts [--layers 16] [--dim 4096] [--keep]
 */

import { parseArgs } from "node:util";
import {
  openCheckpoint,
  parseMergeConfig,
  planCheckpointMerge,
  Rng,
  runCheckpointMerge,
  writeCheckpoint,
} from "../mod.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: "16" },
    dim: { type: "string", default: "4096" },
    keep: { type: "boolean" },
  },
}).values;
const L = Number(args.layers), d = Number(args.dim);
const dir = await Deno.makeTempDir({ prefix: "moekit-merge-bench-" });
const specs = [
  { name: "model.embed_tokens.weight", dtype: "BF16" as const, shape: [8192, d] },
  ...Array.from({ length: L }, (_, l) => [
    { name: `model.layers.${l}.mlp.up_proj.weight`, dtype: "BF16" as const, shape: [d, d] },
    { name: `model.layers.${l}.self_attn.o_proj.weight`, dtype: "BF16" as const, shape: [d / 2, d] },
  ]).flat(),
];
const numel = (s: { shape: number[] }) => s.shape.reduce((a, b) => a * b, 1);
const largest = Math.max(...specs.map(numel));
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;

console.log(
  `generating 4 checkpoints: ${specs.length} tensors, ${
    (specs.reduce((a, s) => a + numel(s), 0) * 2 / 1e9).toFixed(2)
  } GB each (bf16) in ${dir}`,
);
for (const [i, m] of ["base", "a", "b", "c"].entries()) {
  await writeCheckpoint(`${dir}/${m}`, specs, (name) => {
    const s = specs.find((x) => x.name === name)!,
      out = new Float32Array(numel(s)),
      r = new Rng(i * 7919).derive(name);
    for (let j = 0; j < out.length; j++) out[j] = (r.uniform() - 0.5) * 0.04;
    return out;
  }, { shardBytes: 2e9 });
}

const inputs = ["base", "a", "b", "c"];
let t0 = performance.now(), bytes = 0;
for (const m of inputs) {
  const ck = await openCheckpoint(`${dir}/${m}`);
  for (const n of ck.names) bytes += (await ck.readBytes(n)).length;
  ck.close();
}
const readRate = bytes / 1e6 / ((performance.now() - t0) / 1000);

const yaml = `merge_method: ties
base_model: base
parameters: {normalize: true}
models:
${["a", "b", "c"].map((m) => `  - {model: ${m}, parameters: {weight: 1.0, density: 0.3}}`).join("\n")}
`;
const before = rss();
const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
t0 = performance.now();
const r = await runCheckpointMerge(plan, `${dir}/out`, { shardBytes: 2e9 });
const seconds = (performance.now() - t0) / 1000;
plan.close();
console.log(`raw read of the 4 inputs: ${(bytes / 1e6).toFixed(0)} MB at ${readRate.toFixed(0)} MB/s`);
console.log(
  `TIES of 3 models: ${(r.bytesRead / 1e6).toFixed(0)} MB of input in ${seconds.toFixed(1)} s = ${
    (r.bytesRead / 1e6 / seconds).toFixed(1)
  } MB/s (${(r.bytesRead / 1e6 / seconds / readRate * 100).toFixed(1)} % of the raw read rate)`,
);
console.log(
  `peak RSS ${(hwm() / 1e6).toFixed(0)} MB (RSS before the merge ${
    (before / 1e6).toFixed(0)
  } MB); largest tensor ${largest} elements = ` +
    `${(largest * 2 / 1e6).toFixed(0)} MB bf16, ${(largest * 4 / 1e6).toFixed(0)} MB f32, ${
      (largest * 8 / 1e6).toFixed(0)
    } MB f64 → peak ≈ ` +
    `${((hwm() - before) / (largest * 4)).toFixed(1)} × the largest tensor in f32 above the baseline`,
);
if (!args.keep) await Deno.remove(dir, { recursive: true });
