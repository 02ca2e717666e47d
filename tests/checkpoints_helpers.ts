// Shared helpers of the checkpoints tests: the public fixtures' location, tolerance checks, a temp-dir
// guard, and converters of a per-expert checkpoint to the fused layout and to a sharded copy.
import assert from "node:assert/strict";
import type { Mat } from "../lib/core/matrix.ts";
import type { RoutingResult } from "../lib/routing/result.ts";
import { openCheckpoint, writeCheckpoint } from "../lib/io/checkpoint.ts";

/** The public hf-tiny fixtures beside the repo, or undefined (tests then skip with the reason). */
export const FIXTURES = new URL("../../shared/fixtures/hf-tiny/", import.meta.url);
export const fixturesMissing: string | undefined = (() => {
  try {
    Deno.statSync(new URL("olmoe/model/config.json", FIXTURES));
    return undefined;
  } catch {
    return `fixtures not found at ${FIXTURES.pathname}`;
  }
})();

export { withTempDir } from "./harness.ts";

/** Same expert set per token, weights matched by expert id within max(abs, rel·|want|). */
export function assertRouting(
  r: RoutingResult,
  idx: ArrayLike<number>,
  w: ArrayLike<number>,
  k: number,
  tol = 1e-5,
  what = "",
): void {
  assert.equal(r.k, k);
  for (let t = 0; t < r.tokens; t++) {
    const got = new Map<number, number>(), want = new Map<number, number>();
    for (let j = 0; j < k; j++) {
      got.set(r.indices[t * k + j], r.weights[t * k + j]);
      want.set(idx[t * k + j], w[t * k + j]);
    }
    assert.deepEqual(
      [...got.keys()].sort((a, b) => a - b),
      [...want.keys()].sort((a, b) => a - b),
      `${what} token ${t}`,
    );
    for (const [e, v] of want) {
      const g = got.get(e)!;
      assert.ok(
        Math.abs(g - v) <= Math.max(tol, tol * Math.abs(v)),
        `${what} token ${t} expert ${e}: ${g} vs ${v}`,
      );
    }
  }
}

/** |got − want| ≤ rel·|want| + rel·max|want| elementwise. */
export function assertClose(got: Mat | Float32Array, want: ArrayLike<number>, rel = 1e-5, what = ""): void {
  const g = "data" in got ? got.data : got;
  assert.equal(g.length, want.length, `${what}: length`);
  let max = 0;
  for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(g[i] - want[i]);
    assert.ok(
      err <= rel * Math.abs(want[i]) + rel * max,
      `${what}[${i}]: ${g[i]} vs ${want[i]} (max ${max})`,
    );
  }
}

/** Copies a checkpoint folder with every tensor, into shards of at most `shardBytes`. */
export async function shardedCopy(src: string, out: string, shardBytes: number): Promise<string[]> {
  const ck = await openCheckpoint(src);
  try {
    const specs = ck.names.map((name) => ({
      name,
      dtype: ck.info(name)!.dtype,
      shape: [...ck.info(name)!.shape],
    }));
    return await writeCheckpoint(out, specs, async (name) => (await ck.read(name)).data, {
      shardBytes,
      files: [{ name: "config.json", copyFrom: `${src}/config.json` }],
    });
  } finally {
    ck.close();
  }
}

/**
 * Rewrites a per-expert checkpoint (Mixtral `block_sparse_moe.experts.{e}.w1/w3/w2` or
 * `mlp.experts.{e}.gate/up/down_proj`) in the fused layout: `mlp.experts.gate_up_proj [E,2f,d]` =
 * concat(gate, up) per expert, `mlp.experts.down_proj [E,d,f]`, router at `mlp.gate.weight`.
 */
export async function fusedCopy(src: string, out: string): Promise<void> {
  const ck = await openCheckpoint(src);
  try {
    const re =
      /^model\.layers\.(\d+)\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w3|w2|gate_proj|up_proj|down_proj)\.weight$/;
    const byLayer = new Map<number, { block: string; E: number; f: number; d: number }>();
    const specs: { name: string; dtype: "F32"; shape: number[] }[] = [];
    const produce = new Map<string, () => Promise<ArrayLike<number>>>();
    for (const name of ck.names) {
      const m = re.exec(name);
      if (m) {
        const l = Number(m[1]), e = Number(m[3]), info = ck.info(name)!;
        const cur = byLayer.get(l) ?? { block: m[2], E: 0, f: 0, d: 0 };
        cur.E = Math.max(cur.E, e + 1);
        if (m[4] === "w1" || m[4] === "gate_proj") [cur.f, cur.d] = info.shape as [number, number];
        byLayer.set(l, cur);
        continue;
      }
      const renamed = name.replace(/\.block_sparse_moe\.gate\.weight$/, ".mlp.gate.weight");
      specs.push({ name: renamed, dtype: "F32", shape: [...ck.info(name)!.shape] });
      produce.set(renamed, async () => (await ck.read(name)).data);
    }
    for (const [l, { block, E, f, d }] of byLayer) {
      const p = `model.layers.${l}.${block}.experts`;
      const [g, u, dn] = block === "block_sparse_moe"
        ? ["w1", "w3", "w2"]
        : ["gate_proj", "up_proj", "down_proj"];
      specs.push({ name: `model.layers.${l}.mlp.experts.gate_up_proj`, dtype: "F32", shape: [E, 2 * f, d] });
      produce.set(`model.layers.${l}.mlp.experts.gate_up_proj`, async () => {
        const o = new Float32Array(E * 2 * f * d);
        for (let e = 0; e < E; e++) {
          o.set((await ck.read(`${p}.${e}.${g}.weight`)).data, e * 2 * f * d);
          o.set((await ck.read(`${p}.${e}.${u}.weight`)).data, e * 2 * f * d + f * d);
        }
        return o;
      });
      specs.push({ name: `model.layers.${l}.mlp.experts.down_proj`, dtype: "F32", shape: [E, d, f] });
      produce.set(`model.layers.${l}.mlp.experts.down_proj`, async () => {
        const o = new Float32Array(E * d * f);
        for (let e = 0; e < E; e++) o.set((await ck.read(`${p}.${e}.${dn}.weight`)).data, e * d * f);
        return o;
      });
    }
    await writeCheckpoint(out, specs, (name) => produce.get(name)!(), {
      files: [{ name: "config.json", copyFrom: `${src}/config.json` }],
    });
  } finally {
    ck.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Tiny synthetic checkpoints of every family, built from the tensor-name and config rules.

import { matrix as M } from "../lib/core/matrix.ts";
import { bf16Bits, bf16ToNumber, type Dtype } from "../lib/io/dtype.ts";

export interface SynthTensor {
  readonly shape: number[];
  readonly data: Float32Array | Uint8Array;
  readonly dtype: Dtype;
}

/** Writes `tensors` and `config.json` to `dir` (sharded when `shardBytes` is given). */
export async function writeSynthetic(
  dir: string,
  config: Record<string, unknown>,
  tensors: Record<string, SynthTensor>,
  shardBytes?: number,
): Promise<void> {
  const specs = Object.entries(tensors).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  await writeCheckpoint(dir, specs, (name) => tensors[name].data, {
    shardBytes,
    files: [{ name: "config.json", data: JSON.stringify(config) }],
  });
}

let seedCounter = 1000;
/** Seeded normal values, rounded to bf16 when `dtype` is BF16 (so the stored values are exact). */
export function randT(shape: number[], std: number, dtype: Dtype = "F32"): SynthTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = M.randn(1, n, { seed: seedCounter++, std }).data;
  if (dtype === "BF16") { for (let i = 0; i < n; i++) data[i] = bf16ToNumber(bf16Bits(data[i])); }
  return { shape, data, dtype };
}

/** Per-expert SwiGLU tensors of one layer under `block` (names `experts.{e}.{proj}.weight`). */
export function perExpert(
  block: string,
  E: number,
  d: number,
  f: number,
  names: [string, string, string] = ["gate_proj", "up_proj", "down_proj"],
  dtype: Dtype = "F32",
): Record<string, SynthTensor> {
  const out: Record<string, SynthTensor> = {};
  for (let e = 0; e < E; e++) {
    out[`${block}.experts.${e}.${names[0]}.weight`] = randT([f, d], 1 / Math.sqrt(d), dtype);
    out[`${block}.experts.${e}.${names[1]}.weight`] = randT([f, d], 1 / Math.sqrt(d), dtype);
    out[`${block}.experts.${e}.${names[2]}.weight`] = randT([d, f], 1 / Math.sqrt(f), dtype);
  }
  return out;
}

/** A dense SwiGLU MLP (`mlp.gate_proj/up_proj/down_proj.weight`), or a shared expert under `prefix`. */
export function mlp(prefix: string, d: number, f: number, dtype: Dtype = "F32"): Record<string, SynthTensor> {
  return {
    [`${prefix}.gate_proj.weight`]: randT([f, d], 1 / Math.sqrt(d), dtype),
    [`${prefix}.up_proj.weight`]: randT([f, d], 1 / Math.sqrt(d), dtype),
    [`${prefix}.down_proj.weight`]: randT([d, f], 1 / Math.sqrt(f), dtype),
  };
}

/** Non-MoE tensors every model has (embeddings, norms, attention) for `layers` layers. */
export function backbone(layers: number, d: number, dtype: Dtype = "F32"): Record<string, SynthTensor> {
  const out: Record<string, SynthTensor> = {
    "model.embed_tokens.weight": randT([16, d], 1, dtype),
    "model.norm.weight": randT([d], 0.1, dtype),
    "lm_head.weight": randT([16, d], 0.1, dtype),
  };
  for (let l = 0; l < layers; l++) {
    out[`model.layers.${l}.input_layernorm.weight`] = randT([d], 0.1, dtype);
    out[`model.layers.${l}.self_attn.q_proj.weight`] = randT([d, d], 0.1, dtype);
  }
  return out;
}

/**
 * GPT-OSS MoE tensors of one layer under `block`: router weight and bias, fused `[E,d,2f]` gate-up and
 * `[E,f,d]` down projections with their biases, drawn with the six given standard deviations.
 */
export function gptOssMoe(
  block: string,
  E: number,
  d: number,
  f: number,
  std: readonly [number, number, number, number, number, number],
  dtype: Dtype = "F32",
): Record<string, SynthTensor> {
  return {
    [`${block}.router.weight`]: randT([E, d], std[0], dtype),
    [`${block}.router.bias`]: randT([E], std[1], dtype),
    [`${block}.experts.gate_up_proj`]: randT([E, d, 2 * f], std[2], dtype),
    [`${block}.experts.gate_up_proj_bias`]: randT([E, 2 * f], std[3], dtype),
    [`${block}.experts.down_proj`]: randT([E, f, d], std[4], dtype),
    [`${block}.experts.down_proj_bias`]: randT([E, d], std[5], dtype),
  };
}

/** `config.json` of a one-layer GPT-OSS model, with `extra` keys. */
export function gptOssConfig(
  d: number,
  f: number,
  E: number,
  k: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    model_type: "gpt_oss",
    num_hidden_layers: 1,
    hidden_size: d,
    intermediate_size: f,
    num_local_experts: E,
    num_experts_per_tok: k,
    ...extra,
  };
}
