/**
 * `inspect` and `route` on a synthetic checkpoint with real sizes: OLMoE-1B-7B's shape (16 layers × 64
 * experts, d 2048, f 1024, bf16, about 13 GB in 3 shards with an index), generated in a temporary folder
 * (random bf16 bytes, no download) and deleted afterwards. Times, in one sitting:
 * - inspect: open (config + every header + every MoE tensor checked, routers not read) and the summary;
 * - route: open with the routers read, then route T hidden states through every MoE layer;
 * next to their I/O floors measured on the same files: reading every header's bytes, and reading the
 * router tensors' bytes.
 *
 *   deno task bench:checkpoint                 # the real size (writes ~13 GB to $TMPDIR)
 *   MOEKIT_BENCH_QUICK=1 deno task bench:checkpoint   # 2 layers × 8 experts, d 256 (a few seconds)
 *
 * Options: `--tokens T` (default 4096), `--dir PATH` (generate there and keep it; a folder that already
 * holds a generated checkpoint is reused as is).
 */

import { parseArgs } from "node:util";
import "../lib/kernels/mod.ts"; // the fast gate GEMM backends (as `mod.ts` and the CLI load them)
import { backendReport } from "../lib/routing/backend.ts";
import { matrix } from "../lib/core/matrix.ts";
import { safetensorsHeader } from "../lib/io/safetensors.ts";
import { shardLayout } from "../lib/io/checkpoint.ts";
import { bf16Bits } from "../lib/io/dtype.ts";
import { openMoeModel } from "../lib/checkpoints/mod.ts";
import { topKRouter } from "../lib/routing/topk.ts";
import { inspectModel } from "../lib/cli/model_cli.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const args =
  parseArgs({ args: Deno.args, options: { tokens: { type: "string" }, dir: { type: "string" } } }).values;
const L = quick ? 2 : 16,
  E = quick ? 8 : 64,
  d = quick ? 256 : 2048,
  f = quick ? 128 : 1024,
  k = quick ? 2 : 8;
const T = Number(args.tokens ?? (quick ? 256 : 4096)), vocab = quick ? 1024 : 50304;
const shardBytes = quick ? 4e6 : 5e9;

type Spec = { name: string; dtype: "BF16"; shape: number[] };

/** The tensors of an OLMoE checkpoint (per-expert layout, attention with q/k norms). */
function specs(): Spec[] {
  const out: Spec[] = [{ name: "model.embed_tokens.weight", dtype: "BF16", shape: [vocab, d] }];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    for (const n of ["q_proj", "k_proj", "v_proj", "o_proj"]) {
      out.push({ name: `${p}.self_attn.${n}.weight`, dtype: "BF16", shape: [d, d] });
    }
    out.push({ name: `${p}.self_attn.q_norm.weight`, dtype: "BF16", shape: [d] });
    out.push({ name: `${p}.self_attn.k_norm.weight`, dtype: "BF16", shape: [d] });
    out.push({ name: `${p}.input_layernorm.weight`, dtype: "BF16", shape: [d] });
    out.push({ name: `${p}.post_attention_layernorm.weight`, dtype: "BF16", shape: [d] });
    out.push({ name: `${p}.mlp.gate.weight`, dtype: "BF16", shape: [E, d] });
    for (let e = 0; e < E; e++) {
      out.push({ name: `${p}.mlp.experts.${e}.gate_proj.weight`, dtype: "BF16", shape: [f, d] });
      out.push({ name: `${p}.mlp.experts.${e}.up_proj.weight`, dtype: "BF16", shape: [f, d] });
      out.push({ name: `${p}.mlp.experts.${e}.down_proj.weight`, dtype: "BF16", shape: [d, f] });
    }
  }
  out.push({ name: "model.norm.weight", dtype: "BF16", shape: [d] });
  out.push({ name: "lm_head.weight", dtype: "BF16", shape: [vocab, d] });
  return out;
}

/** Random bf16 bytes (one buffer reused for every tensor: the values do not matter for these timings). */
function randomBf16(n: number, std: number): Uint8Array {
  const v = matrix.randn(1, n, { seed: 1, std }).data,
    out = new Uint8Array(2 * n),
    dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) dv.setUint16(2 * i, bf16Bits(v[i]), true);
  return out;
}

async function generate(dir: string): Promise<number> {
  const size = (s: Spec) => 2 * s.shape.reduce((a, b) => a * b, 1);
  const pool = randomBf16(vocab * d, 0.02);
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const { name, tensors: shard } of shardLayout(specs(), shardBytes)) {
    const file = await Deno.open(`${dir}/${name}`, { write: true, createNew: true });
    const header = safetensorsHeader(shard, { format: "pt" }).bytes;
    for (let o = 0; o < header.length;) o += await file.write(header.subarray(o));
    for (const s of shard) {
      const bytes = pool.subarray(0, size(s));
      for (let o = 0; o < bytes.length;) o += await file.write(bytes.subarray(o));
      weightMap[s.name] = name;
      total += size(s);
    }
    file.close();
    console.error(`  wrote ${name}`);
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }),
  );
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      architectures: ["OlmoeForCausalLM"],
      model_type: "olmoe",
      num_hidden_layers: L,
      hidden_size: d,
      intermediate_size: f,
      num_experts: E,
      num_experts_per_tok: k,
      norm_topk_prob: false,
      vocab_size: vocab,
      torch_dtype: "bfloat16",
    }),
  );
  return total;
}

async function time<T>(fn: () => T | Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}

/** The I/O floor of inspect: read every shard's header bytes (length prefix + JSON) and parse the JSON. */
async function readHeaders(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".safetensors")) continue;
    const file = await Deno.open(`${dir}/${e.name}`);
    const len = new Uint8Array(8);
    await file.read(len);
    const h = new Uint8Array(Number(new DataView(len.buffer).getBigUint64(0, true)));
    for (let o = 0; o < h.length;) o += (await file.read(h.subarray(o)))!;
    n += Object.keys(JSON.parse(new TextDecoder().decode(h))).length;
    file.close();
  }
  return n;
}

const dir = args.dir ?? await Deno.makeTempDir({ prefix: "moekit-ckpt-bench-" });
const reuse = args.dir !== undefined && await Deno.stat(`${dir}/config.json`).then(() => true, () => false);
try {
  let bytes: number;
  if (reuse) {
    bytes = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`)).metadata.total_size;
    console.error(`reusing the checkpoint in ${dir}`);
  } else {
    await Deno.mkdir(dir, { recursive: true });
    console.error(
      `generating an OLMoE-shaped checkpoint: ${L} layers × ${E} experts, d ${d}, f ${f}, bf16 in ${dir}`,
    );
    const [b, genSeconds] = await time(() => generate(dir));
    bytes = b;
    console.error(`  ${(bytes / 1e9).toFixed(2)} GB in ${genSeconds.toFixed(1)} s`);
  }
  const x = matrix.randn(T, d, { seed: 3 });
  const rows: [string, number][] = [];
  for (let rep = 0; rep < 3; rep++) {
    const [, headers] = await time(() => readHeaders(dir));
    const [info, inspect] = await time(async () => {
      const m = await openMoeModel(dir, { routers: false });
      const i = inspectModel(m);
      m.close();
      return i;
    });
    const [, routersRaw] = await time(async () => {
      const m = await openMoeModel(dir, { routers: false });
      for (const l of m.config.moeLayers) await m.checkpoint.readBytes(`model.layers.${l}.mlp.gate.weight`);
      m.close();
    });
    let routing = 0;
    const [, route] = await time(async () => {
      const m = await openMoeModel(dir);
      const t0 = performance.now();
      for (const l of m.config.moeLayers) m.router(l).route(x);
      routing = (performance.now() - t0) / 1000;
      m.close();
    });
    if (rep === 0) {
      console.error(
        `  params ${info.params}, active ${info.activeParamsPerToken}, shards ${
          (info.shards as string[]).length
        }`,
      );
    }
    rows.push(["headers (floor)", headers], ["inspect", inspect], ["routers read (floor)", routersRaw]);
    rows.push(["route", route], ["routing", routing]);
    // peer: the same routing with routers built from in-memory weights (no checkpoint involved)
    const weights = Array.from({ length: L }, (_, l) => matrix.randn(E, d, { seed: 10 + l, std: 0.02 }));
    const [, peer] = await time(() => {
      for (const w of weights) topKRouter({ weight: w, k, normTopkProb: false }).route(x);
    });
    rows.push(["peer", peer]);
  }
  // one MoE layer's experts: read + decoded to float32 by layer(l), next to reading their raw bytes
  const [, layerRead] = await time(async () => {
    const m = await openMoeModel(dir);
    await m.layer(0);
    m.close();
  });
  const [, layerRaw] = await time(async () => {
    const m = await openMoeModel(dir, { routers: false });
    const names = m.checkpoint.names.filter((n) => n.startsWith("model.layers.0.mlp."));
    await Promise.all(names.map((n) => m.checkpoint.readBytes(n)));
    m.close();
  });
  const best = (name: string) => Math.min(...rows.filter((r) => r[0] === name).map((r) => r[1]));
  const floorH = best("headers (floor)"),
    ins = best("inspect"),
    floorR = best("routers read (floor)"),
    rt = best("route");
  console.log(
    `OLMoE-shaped checkpoint ${L}×${E}, d ${d}, f ${f}, bf16, ${(bytes / 1e9).toFixed(2)} GB; route T = ${T}`,
  );
  console.log(
    `(best of 3; gate GEMM backend "${backendReport().auto}"; the machine is shared, absolute times vary)`,
  );
  console.log(
    `inspect   ${ins.toFixed(3)} s   = ${(ins / floorH).toFixed(2)}× reading and parsing every header`,
  );
  console.log(
    `route     ${rt.toFixed(3)} s   = ${(rt / floorR).toFixed(2)}× opening + reading the ${L} router tensors`,
  );
  const rOnly = best("routing"), peer = best("peer");
  console.log(
    `  of which: open + routers decoded and bound ${(rt - rOnly).toFixed(3)} s (${
      ((rt - rOnly) / floorR).toFixed(2)
    }× the floor); routing ${T} tokens × ${L} layers ${rOnly.toFixed(3)} s`,
  );
  console.log(
    `  routing = ${(rOnly / peer).toFixed(2)}× the same routers built from in-memory weights (${
      peer.toFixed(3)
    } s)`,
  );
  console.log(
    `layer(0)  ${layerRead.toFixed(3)} s   = ${
      (layerRead / layerRaw).toFixed(2)
    }× reading the layer's raw bytes (${E} experts, ${
      (2 * 3 * E * d * f / 1e6).toFixed(0)
    } MB bf16 → float32, decoded first, then the raw read)`,
  );
} finally {
  if (args.dir === undefined) await Deno.remove(dir, { recursive: true }).catch(() => {});
}
