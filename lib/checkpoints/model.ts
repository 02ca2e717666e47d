/**
 * `openMoeModel`: a Hugging Face MoE checkpoint folder (Mixtral, OLMoE, Qwen2/3-MoE, DeepSeek-V2/V3,
 * GPT-OSS; per-expert or fused 3-D expert tensors; one file or shards) as moekit routers and MoE layers.
 * Opening reads `config.json` and every safetensors header and checks every MoE tensor's presence, shape
 * and dtype; routers are read at open (they are small), experts when a layer is asked for.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, ShapeError } from "../core/errors.ts";
import { type Checkpoint, openCheckpoint } from "../io/checkpoint.ts";
import { openSafetensors } from "../io/safetensors.ts";
import type { Dtype } from "../io/dtype.ts";
import type { Router } from "../routing/result.ts";
import { topKRouter } from "../routing/topk.ts";
import { deepseekV2Router, deepseekV3Router } from "../routing/deepseek.ts";
import { type MoeLayer, moeLayer, type SharedExperts, type SwiGLUExpert } from "../moe/layer.ts";
import { type MoeConfig, normalizeConfig } from "./config.ts";
import {
  decodeMxfp4,
  materializeExpert,
  type StoredExpert,
  type StoredMatrix,
  unpackCodes,
} from "./formats.ts";

/**
 * How a layer's experts are stored:
 * - `"per-expert"`: `experts.{e}.{gate,up,down}_proj.weight` (Mixtral `w1/w3/w2`), what hub checkpoints ship;
 * - `"fused"`: `experts.gate_up_proj [E,2f,d]` and `experts.down_proj [E,d,f]` (transformers 5.x);
 * - `"gpt-oss"` / `"gpt-oss-mxfp4"`: GPT-OSS's `[E,d,2f]` interleaved tensors, in bf16/f32 or MXFP4 blocks;
 * - `"moekit"`: moekit's compressed-experts format (see `saveMoeModel`).
 *
 * @example
 * ```ts
 * import { type ExpertLayout } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const l: ExpertLayout = "fused";
 * assert.equal(l, "fused");
 * ```
 */
export type ExpertLayout = "per-expert" | "fused" | "gpt-oss" | "gpt-oss-mxfp4" | "moekit";

/** The `config.json` `moekit` section of one layer (compressed-experts format "moekit-experts/1"). */
export interface MoekitLayerManifest {
  /** Router rows. */
  readonly router_experts: number;
  /** Experts stored on disk. */
  readonly stored_experts: number;
  /** Router slot → stored expert (omitted: identity). */
  readonly expert_map?: readonly number[];
  /** Whether a shared base expert is stored (delta format). */
  readonly delta_base?: boolean;
  /** `"<expert>.<w1|w3|w2>"` → its format when not dense. */
  readonly matrices?: Readonly<
    Record<string, { format: "lowrank" | "rtn" | "delta"; bits?: number; group_size?: number }>
  >;
}

/** Resolved names and layout of one MoE layer. */
export interface LayerInfo {
  /** Layer index. */
  readonly layer: number;
  /** Module prefix, e.g. `model.layers.3.mlp`. */
  readonly block: string;
  /** How the experts are stored. */
  readonly layout: ExpertLayout;
  /** Router rows (= routed experts seen by the router). */
  readonly experts: number;
  /** Router weight name `[E,d]`. */
  readonly router: string;
  /** Router bias name `[E]` (GPT-OSS). */
  readonly routerBias?: string;
  /** DeepSeek-V3 correction bias name `[E]`. */
  readonly correctionBias?: string;
  /** The moekit manifest of a `"moekit"` layer. */
  readonly manifest?: MoekitLayerManifest;
}

/**
 * An opened MoE checkpoint.
 *
 * @example
 * ```ts
 * import { type MoeModel } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const experts = (m: MoeModel) => m.config.experts;
 * assert.equal(typeof experts, "function");
 * ```
 */
export interface MoeModel {
  /** The folder. */
  readonly dir: string;
  /** The normalised config (with the raw `config.json` as `config.raw`). */
  readonly config: MoeConfig;
  /** Layout of the first MoE layer (see {@link MoeModel.info} per layer). */
  readonly layout: ExpertLayout;
  /** The safetensors files, in order. */
  readonly shards: readonly string[];
  /** The underlying checkpoint (tensor names, headers, raw reads). */
  readonly checkpoint: Checkpoint;
  /** Names and layout of MoE layer `l`. */
  info(l: number): LayerInfo;
  /** The router of MoE layer `l`, reproducing the family's routing (read at open). */
  router(l: number): Router;
  /** Reads MoE layer `l`'s experts (decoded to float32) and builds its MoE block. */
  layer(l: number): Promise<MoeLayer>;
  /** Reads MoE layer `l`'s experts as stored (dense, low-rank, quantised or delta) with the base of deltas. */
  storedExperts(l: number): Promise<{ experts: StoredExpert[]; base?: SwiGLUExpert; shared?: SharedExperts }>;
  /** Parameters: all tensors, and those used per token (k of each layer's routed experts). */
  params(): { total: number; activePerToken: number };
  /** Closes the files. */
  close(): void;
}

/**
 * Options of {@link openMoeModel}.
 *
 * @example
 * ```ts
 * import { type OpenMoeModelOptions } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const o: OpenMoeModelOptions = { routers: false };
 * assert.equal(o.routers, false);
 * ```
 */
export interface OpenMoeModelOptions {
  /** Read the routers at open (default true); false for header-only use (`inspect`): `router()` then throws. */
  readonly routers?: boolean;
  /** Gate GEMM backend of the routers. Default "auto". */
  readonly backend?: "auto" | "wasm" | "js";
}

const FLOAT: readonly Dtype[] = ["F32", "F16", "BF16", "F64"];

/** The per-expert projection names of a family: gate, up, down. */
function projNames(family: string): [string, string, string] {
  return family === "mixtral" ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"];
}

/** `<block>.experts.<e>.<proj>` for w1, w3, w2. */
export function expertBase(family: string, block: string, e: number | string): [string, string, string] {
  return projNames(family).map((p) => `${block}.experts.${e}.${p}`) as [string, string, string];
}

/**
 * Opens a Hugging Face MoE model folder. Validates everything before any weight is read: `config.json`
 * (family, sizes), every safetensors header, and each MoE layer's tensors (present, shaped as the config
 * says, decodable dtype) — each problem a {@link MoekitError} naming the folder, file and tensor.
 *
 * @example
 * ```ts
 * import { openMoeModel } from "@moekit/moekit/checkpoints";
 * import { writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const E = 4, d = 8, f = 6;
 * const cfg = { model_type: "olmoe", num_hidden_layers: 1, hidden_size: d, intermediate_size: f, num_experts: E, num_experts_per_tok: 2 };
 * const specs = [{ name: "model.layers.0.mlp.gate.weight", dtype: "F32" as const, shape: [E, d] }];
 * for (let e = 0; e < E; e++) {
 *   for (const [p, shape] of [["gate_proj", [f, d]], ["up_proj", [f, d]], ["down_proj", [d, f]]] as const) {
 *     specs.push({ name: `model.layers.0.mlp.experts.${e}.${p}.weight`, dtype: "F32", shape: [...shape] });
 *   }
 * }
 * await writeCheckpoint(dir, specs, (name) => specs.find((s) => s.name === name)!.shape.reduce((a, b) => a * b, 1) === E * d ? new Float32Array(E * d).map((_, i) => Math.sin(i)) : new Float32Array(f * d).fill(0.1));
 * await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg));
 * const model = await openMoeModel(dir);
 * assert.deepEqual([model.config.family, model.layout, model.router(0).k], ["olmoe", "per-expert", 2]);
 * const layer = await model.layer(0);
 * assert.equal(layer.experts.length, E);
 * model.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openMoeModel(dir: string, options: OpenMoeModelOptions = {}): Promise<MoeModel> {
  const configPath = `${dir}/config.json`;
  const text = await Deno.readTextFile(configPath).catch((e) => {
    throw new MoekitError(
      `${dir}: cannot read config.json (${(e as Error).message}); is this a model folder?`,
    );
  });
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new MoekitError(`${configPath} is not valid JSON (${(e as Error).message})`);
  }
  const config = normalizeConfig(raw, configPath);
  const ck = await openCheckpoint(dir);
  try {
    const shardOf = await shardMap(dir);
    const where = (name: string) => `${dir}/${shardOf(name)}`;
    const moekit = (raw.moekit ?? undefined) as { layers?: Record<string, MoekitLayerManifest> } | undefined;
    const infos = new Map<number, LayerInfo>();
    for (const l of config.moeLayers) {
      const info = resolveLayer(config, ck, l, moekit?.layers?.[String(l)], dir);
      checkLayerTensors(config, ck, info, where);
      infos.set(l, info);
    }
    const shards = [...new Set(ck.names.map(shardOf))];
    const routers = new Map<number, Router>();
    if (options.routers ?? true) {
      for (const l of config.moeLayers) routers.set(l, await buildRouter(config, ck, infos.get(l)!, options));
    }
    const infoOf = (l: number) => {
      const i = infos.get(l);
      if (!i) {
        throw new MoekitError(
          `${dir}: layer ${l} is not an MoE layer; MoE layers are ${
            compactList(config.moeLayers)
          } of ${config.layers}`,
        );
      }
      return i;
    };
    const stored = (l: number) => readStoredExperts(config, ck, infoOf(l));
    const routerOf = (l: number) => {
      infoOf(l);
      const r = routers.get(l);
      if (!r) throw new MoekitError(`${dir} was opened with { routers: false }; reopen it to route`);
      return r;
    };
    return {
      dir,
      config,
      layout: infos.get(config.moeLayers[0])?.layout ?? "per-expert",
      shards,
      checkpoint: ck,
      info: infoOf,
      router: routerOf,
      storedExperts: stored,
      async layer(l) {
        const info = infoOf(l), router = routerOf(l);
        const { experts, base, shared } = await stored(l);
        const dense = experts.map((e) => materializeExpert(e, base));
        const map = info.manifest?.expert_map;
        const slots = map ? map.map((s) => dense[s]) : dense;
        return moeLayer({
          router,
          experts: slots,
          activation: config.activation,
          ...(shared ? { shared } : {}),
        });
      },
      params: () => countParams(config, ck, infos),
      close: () => ck.close(),
    };
  } catch (e) {
    ck.close();
    throw e;
  }
}

/** "0–15" or "3, 5, 7" for messages. */
function compactList(xs: readonly number[]): string {
  if (xs.length > 2 && xs.every((v, i) => i === 0 || v === xs[i - 1] + 1)) {
    return `${xs[0]}–${xs[xs.length - 1]}`;
  }
  return `[${xs.join(", ")}]`;
}

/** Tensor name → shard file name (from the index, or the single file). */
async function shardMap(dir: string): Promise<(name: string) => string> {
  const index = await Deno.readTextFile(`${dir}/model.safetensors.index.json`).catch(() => undefined);
  if (index !== undefined) {
    const map = JSON.parse(index).weight_map as Record<string, string>;
    return (name) => map[name] ?? "model.safetensors.index.json";
  }
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".safetensors")) files.push(e.name);
  }
  files.sort();
  if (files.length === 1) return () => files[0];
  // several files without an index: find each tensor's file once
  const map = new Map<string, string>();
  for (const f of files) {
    const s = await openSafetensors(`${dir}/${f}`);
    for (const n of s.tensors.keys()) map.set(n, f);
    s.close();
  }
  return (name) => map.get(name) ?? files[0];
}

function resolveLayer(
  config: MoeConfig,
  ck: Checkpoint,
  l: number,
  manifest: MoekitLayerManifest | undefined,
  dir: string,
): LayerInfo {
  const fam = config.family, p = `model.layers.${l}`;
  const has = (n: string) => ck.info(n) !== undefined;
  let block = `${p}.mlp`;
  if (fam === "mixtral" && has(`${p}.block_sparse_moe.gate.weight`)) block = `${p}.block_sparse_moe`;
  const router = fam === "gpt_oss" ? `${block}.router.weight` : `${block}.gate.weight`;
  if (!has(router)) {
    throw new MoekitError(
      `${dir}: layer ${l} is an MoE layer by config.json but has no router tensor ${router}` +
        (fam === "mixtral" ? ` (nor ${p}.block_sparse_moe.gate.weight)` : ""),
    );
  }
  const extra = {
    ...(config.routerBias ? { routerBias: `${block}.router.bias` } : {}),
    ...(config.correctionBias ? { correctionBias: `${block}.gate.e_score_correction_bias` } : {}),
  };
  if (manifest) {
    return {
      layer: l,
      block,
      layout: "moekit",
      experts: manifest.router_experts,
      router,
      manifest,
      ...extra,
    };
  }
  let layout: ExpertLayout;
  if (fam === "gpt_oss") {
    if (has(`${block}.experts.gate_up_proj_blocks`)) layout = "gpt-oss-mxfp4";
    else if (has(`${block}.experts.gate_up_proj`)) layout = "gpt-oss";
    else {
      throw new MoekitError(
        `${dir}: layer ${l}: missing expert tensor ${block}.experts.gate_up_proj (or its MXFP4 _blocks/_scales)`,
      );
    }
  } else if (has(`${block}.experts.gate_up_proj`)) layout = "fused";
  else if (has(`${expertBase(fam, block, 0)[0]}.weight`)) layout = "per-expert";
  else {
    throw new MoekitError(
      `${dir}: layer ${l}: missing expert tensor ${expertBase(fam, block, 0)[0]}.weight ` +
        `(nor the fused ${block}.experts.gate_up_proj)`,
    );
  }
  return { layer: l, block, layout, experts: config.experts, router, ...extra };
}

/** Every tensor a layer needs, with its expected shape and allowed dtypes. */
function layerTensors(
  config: MoeConfig,
  info: LayerInfo,
): { name: string; shape: number[]; dtypes: readonly Dtype[] }[] {
  const { hidden: d, expertHidden: f } = config, E = info.experts, b = info.block, fam = config.family;
  const out: { name: string; shape: number[]; dtypes: readonly Dtype[] }[] = [];
  const add = (name: string, shape: number[], dtypes: readonly Dtype[] = FLOAT) =>
    out.push({ name, shape, dtypes });
  add(info.router, [E, d]);
  if (info.routerBias) add(info.routerBias, [E]);
  if (info.correctionBias) add(info.correctionBias, [E]);
  const shapes: [number[], number[], number[]] = [[f, d], [f, d], [d, f]];
  switch (info.layout) {
    case "per-expert":
      for (let e = 0; e < E; e++) expertBase(fam, b, e).forEach((n, i) => add(`${n}.weight`, shapes[i]));
      break;
    case "fused":
      add(`${b}.experts.gate_up_proj`, [E, 2 * f, d]);
      add(`${b}.experts.down_proj`, [E, d, f]);
      break;
    case "gpt-oss":
    case "gpt-oss-mxfp4":
      if (info.layout === "gpt-oss") {
        add(`${b}.experts.gate_up_proj`, [E, d, 2 * f]);
        add(`${b}.experts.down_proj`, [E, f, d]);
      } else {
        if (d % 32 || f % 32) {
          throw new MoekitError(`MXFP4 experts need d and f divisible by 32 (d = ${d}, f = ${f})`);
        }
        add(`${b}.experts.gate_up_proj_blocks`, [E, 2 * f, d / 32, 16], ["U8"]);
        add(`${b}.experts.gate_up_proj_scales`, [E, 2 * f, d / 32], ["U8"]);
        add(`${b}.experts.down_proj_blocks`, [E, d, f / 32, 16], ["U8"]);
        add(`${b}.experts.down_proj_scales`, [E, d, f / 32], ["U8"]);
      }
      add(`${b}.experts.gate_up_proj_bias`, [E, 2 * f]);
      add(`${b}.experts.down_proj_bias`, [E, d]);
      break;
    case "moekit": {
      const m = info.manifest!;
      if (m.delta_base) expertBase(fam, b, "delta_base").forEach((n, i) => add(`${n}.weight`, shapes[i]));
      for (let e = 0; e < m.stored_experts; e++) {
        expertBase(fam, b, e).forEach((n, i) => {
          const [rows, cols] = shapes[i], fmt = m.matrices?.[`${e}.${["w1", "w3", "w2"][i]}`];
          if (!fmt) add(`${n}.weight`, shapes[i]);
          else if (fmt.format === "rtn") {
            const bits = fmt.bits ?? 0, g = fmt.group_size ?? 0;
            if (!(bits >= 1 && bits <= 8 && g >= 1)) {
              throw new MoekitError(`config.json moekit: ${n} needs bits in 1..8 and group_size ≥ 1`);
            }
            add(`${n}.qcodes`, [rows, Math.ceil((cols * bits) / 8)], ["U8"]);
            add(`${n}.qscale`, [rows, Math.ceil(cols / g)]);
            add(`${n}.qzero`, [rows, Math.ceil(cols / g)]);
          } else {
            const pre = fmt.format === "delta" ? "delta" : "lowrank";
            add(`${n}.${pre}_a`, [rows, -1]);
            add(`${n}.${pre}_b`, [-1, cols]);
          }
        });
        if (fam === "gpt_oss") expertBase(fam, b, e).forEach((n, i) => add(`${n}.bias`, [i === 2 ? d : f]));
      }
      if (m.expert_map) {
        if (m.expert_map.length !== E || m.expert_map.some((s) => !(s >= 0 && s < m.stored_experts))) {
          throw new MoekitError(
            `config.json moekit: layer ${info.layer} expert_map must list ${E} stored experts in 0..${
              m.stored_experts - 1
            }`,
          );
        }
      } else if (m.stored_experts !== E) {
        throw new MoekitError(
          `config.json moekit: layer ${info.layer} stores ${m.stored_experts} experts for ${E} router rows but has no expert_map`,
        );
      }
      break;
    }
  }
  if (config.shared) {
    const fs = config.shared.hidden, s = fam === "qwen2_moe" ? `${b}.shared_expert` : `${b}.shared_experts`;
    add(`${s}.gate_proj.weight`, [fs, d]);
    add(`${s}.up_proj.weight`, [fs, d]);
    add(`${s}.down_proj.weight`, [d, fs]);
    if (config.shared.gated) add(`${b}.shared_expert_gate.weight`, [1, d]);
  }
  return out;
}

function checkLayerTensors(
  config: MoeConfig,
  ck: Checkpoint,
  info: LayerInfo,
  where: (name: string) => string,
): void {
  for (const t of layerTensors(config, info)) {
    const got = ck.info(t.name);
    if (!got) {
      throw new MoekitError(
        `${ck.path}: layer ${info.layer} (${info.layout} layout): missing tensor ${t.name} [${
          t.shape.join(",")
        }]`,
      );
    }
    const fits = got.shape.length === t.shape.length && t.shape.every((v, i) => v < 0 || v === got.shape[i]);
    if (!fits) {
      throw new ShapeError(
        `${where(t.name)}: tensor ${t.name}`,
        t.shape,
        got.shape,
        `config.json says E = ${info.experts}, d = ${config.hidden}, f = ${config.expertHidden}`,
      );
    }
    if (!t.dtypes.includes(got.dtype)) {
      throw new MoekitError(
        `${where(t.name)}: tensor ${t.name} is ${got.dtype}, which moekit cannot decode here (expected ${
          t.dtypes.join(" / ")
        })`,
      );
    }
  }
}

/** Reads a float tensor as float32. */
async function readF32(ck: Checkpoint, name: string): Promise<Float32Array> {
  const t = await ck.read(name);
  return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
}

async function readMat(ck: Checkpoint, name: string): Promise<Mat> {
  const info = ck.info(name)!;
  const data = await readF32(ck, name);
  return matrix.from(data, info.shape[0], info.shape.length > 1 ? data.length / info.shape[0] : 1);
}

async function buildRouter(
  config: MoeConfig,
  ck: Checkpoint,
  info: LayerInfo,
  options: OpenMoeModelOptions,
): Promise<Router> {
  const weight = await readMat(ck, info.router), backend = options.backend ?? "auto", k = config.topK;
  if (k > info.experts) {
    throw new MoekitError(
      `layer ${info.layer}: num_experts_per_tok = ${k} exceeds its ${info.experts} experts`,
    );
  }
  switch (config.family) {
    case "deepseek_v3":
      return deepseekV3Router({
        weight,
        backend,
        k,
        nGroup: config.grouping?.nGroup ?? 1,
        topkGroup: config.grouping?.topkGroup ?? 1,
        bias: await readF32(ck, info.correctionBias!),
        normTopkProb: config.normTopkProb,
        routedScalingFactor: config.routedScalingFactor,
        maskValue: "-inf",
      });
    case "deepseek_v2":
      return deepseekV2Router({
        weight,
        backend,
        k,
        method: config.grouping ? "group_limited_greedy" : "greedy",
        nGroup: config.grouping?.nGroup,
        topkGroup: config.grouping?.topkGroup,
        normTopkProb: false,
        routedScalingFactor: config.routedScalingFactor,
      });
    default:
      // GPT-OSS: top-k on logits then softmax over the k = softmax → top-k → renormalise (same values)
      return topKRouter({
        weight,
        backend,
        k,
        normTopkProb: config.normTopkProb,
        ...(info.routerBias ? { bias: await readF32(ck, info.routerBias) } : {}),
      });
  }
}

function sub(data: Float32Array, offset: number, rows: number, cols: number): Mat {
  return matrix.from(data.subarray(offset, offset + rows * cols), rows, cols);
}

async function readStoredExperts(
  config: MoeConfig,
  ck: Checkpoint,
  info: LayerInfo,
): Promise<{ experts: StoredExpert[]; base?: SwiGLUExpert; shared?: SharedExperts }> {
  const { hidden: d, expertHidden: f, family: fam } = config, E = info.experts, b = info.block;
  const experts: StoredExpert[] = [];
  let base: SwiGLUExpert | undefined;
  switch (info.layout) {
    case "per-expert":
      // one tensor at a time: each raw buffer is freed once decoded (no faster concurrently: decoding dominates)
      for (let e = 0; e < E; e++) {
        const [n1, n3, n2] = expertBase(fam, b, e);
        const w1 = await readMat(ck, `${n1}.weight`), w3 = await readMat(ck, `${n3}.weight`);
        experts.push({ w1, w3, w2: await readMat(ck, `${n2}.weight`) });
      }
      break;
    case "fused": {
      const gu = await readF32(ck, `${b}.experts.gate_up_proj`),
        down = await readF32(ck, `${b}.experts.down_proj`);
      for (let e = 0; e < E; e++) {
        const o = e * 2 * f * d;
        experts.push({ w1: sub(gu, o, f, d), w3: sub(gu, o + f * d, f, d), w2: sub(down, e * d * f, d, f) });
      }
      break;
    }
    case "gpt-oss":
    case "gpt-oss-mxfp4": {
      const gub = await readF32(ck, `${b}.experts.gate_up_proj_bias`);
      const db = await readF32(ck, `${b}.experts.down_proj_bias`);
      if (info.layout === "gpt-oss-mxfp4") {
        // MXFP4 rows are nn.Linear rows: gate_up [E,2f,d] (even rows gate, odd up), down [E,d,f]
        const gu = decodeMxfp4(
          await ck.readBytes(`${b}.experts.gate_up_proj_blocks`),
          await ck.readBytes(`${b}.experts.gate_up_proj_scales`),
        );
        const down = decodeMxfp4(
          await ck.readBytes(`${b}.experts.down_proj_blocks`),
          await ck.readBytes(`${b}.experts.down_proj_scales`),
        );
        for (let e = 0; e < E; e++) {
          const w1 = matrix.zeros(f, d), w3 = matrix.zeros(f, d);
          for (let i = 0; i < f; i++) {
            w1.data.set(gu.subarray((e * 2 * f + 2 * i) * d, (e * 2 * f + 2 * i + 1) * d), i * d);
            w3.data.set(gu.subarray((e * 2 * f + 2 * i + 1) * d, (e * 2 * f + 2 * i + 2) * d), i * d);
          }
          experts.push({ w1, w3, w2: sub(down, e * d * f, d, f), ...gptOssBiases(gub, db, e, f, d) });
        }
      } else {
        // gate_up [E,d,2f] and down [E,f,d] are applied as x·W: transpose into nn.Linear layout
        const gu = await readF32(ck, `${b}.experts.gate_up_proj`),
          down = await readF32(ck, `${b}.experts.down_proj`);
        for (let e = 0; e < E; e++) {
          const w1 = matrix.zeros(f, d), w3 = matrix.zeros(f, d), w2 = matrix.zeros(d, f);
          const o = e * d * 2 * f;
          for (let r = 0; r < d; r++) {
            for (let i = 0; i < f; i++) {
              w1.data[i * d + r] = gu[o + r * 2 * f + 2 * i];
              w3.data[i * d + r] = gu[o + r * 2 * f + 2 * i + 1];
            }
          }
          const od = e * f * d;
          for (let i = 0; i < f; i++) for (let r = 0; r < d; r++) w2.data[r * f + i] = down[od + i * d + r];
          experts.push({ w1, w3, w2, ...gptOssBiases(gub, db, e, f, d) });
        }
      }
      break;
    }
    case "moekit": {
      const m = info.manifest!;
      if (m.delta_base) {
        const [n1, n3, n2] = expertBase(fam, b, "delta_base");
        base = {
          w1: await readMat(ck, `${n1}.weight`),
          w3: await readMat(ck, `${n3}.weight`),
          w2: await readMat(ck, `${n2}.weight`),
        };
      }
      for (let e = 0; e < m.stored_experts; e++) {
        const names = expertBase(fam, b, e), parts: StoredMatrix[] = [];
        for (const [i, n] of names.entries()) {
          const fmt = m.matrices?.[`${e}.${["w1", "w3", "w2"][i]}`];
          const [rows, cols] = i === 2 ? [d, f] : [f, d];
          if (!fmt) parts.push(await readMat(ck, `${n}.weight`));
          else if (fmt.format === "rtn") {
            const bits = fmt.bits!;
            parts.push({
              kind: "rtn",
              rows,
              cols,
              bits,
              groupSize: fmt.group_size!,
              codes: unpackCodes(await ck.readBytes(`${n}.qcodes`), rows, cols, bits),
              scale: await readF32(ck, `${n}.qscale`),
              zero: await readF32(ck, `${n}.qzero`),
            });
          } else {
            const pre = fmt.format === "delta" ? "delta" : "lowrank";
            const a = await readMat(ck, `${n}.${pre}_a`), bb = await readMat(ck, `${n}.${pre}_b`);
            if (a.cols !== bb.rows) throw new ShapeError(`${n}.${pre}_b`, [a.cols, cols], [bb.rows, bb.cols]);
            parts.push({ kind: fmt.format === "delta" ? "delta" : "lowrank", a, b: bb });
          }
        }
        const biases = fam === "gpt_oss"
          ? {
            b1: await readF32(ck, `${names[0]}.bias`),
            b3: await readF32(ck, `${names[1]}.bias`),
            b2: await readF32(ck, `${names[2]}.bias`),
          }
          : {};
        experts.push({ w1: parts[0], w3: parts[1], w2: parts[2], ...biases });
      }
      break;
    }
  }
  let shared: SharedExperts | undefined;
  if (config.shared) {
    const s = fam === "qwen2_moe" ? `${b}.shared_expert` : `${b}.shared_experts`;
    const ex = {
      w1: await readMat(ck, `${s}.gate_proj.weight`),
      w3: await readMat(ck, `${s}.up_proj.weight`),
      w2: await readMat(ck, `${s}.down_proj.weight`),
    };
    shared = {
      experts: [ex],
      ...(config.shared.gated ? { gate: await readMat(ck, `${b}.shared_expert_gate.weight`) } : {}),
    };
  }
  return { experts, ...(base ? { base } : {}), ...(shared ? { shared } : {}) };
}

function gptOssBiases(gub: Float32Array, db: Float32Array, e: number, f: number, d: number) {
  const b1 = new Float32Array(f), b3 = new Float32Array(f);
  for (let i = 0; i < f; i++) {
    b1[i] = gub[e * 2 * f + 2 * i];
    b3[i] = gub[e * 2 * f + 2 * i + 1];
  }
  return { b1, b3, b2: db.slice(e * d, (e + 1) * d) };
}

function countParams(
  config: MoeConfig,
  ck: Checkpoint,
  infos: ReadonlyMap<number, LayerInfo>,
): { total: number; activePerToken: number } {
  let total = 0;
  for (const n of ck.names) {
    const t = ck.info(n)!, numel = t.shape.reduce((a, b) => a * b, 1);
    if (n.endsWith("_scales") && t.dtype === "U8") continue; // MXFP4 exponents
    if (n.endsWith(".qscale") || n.endsWith(".qzero")) continue;
    if (n.endsWith("_blocks") && t.dtype === "U8") total += 2 * numel;
    else if (n.endsWith(".qcodes")) total += config.expertHidden * config.hidden; // one code per weight
    else total += numel;
  }
  const { hidden: d, expertHidden: f, topK: k } = config;
  const perExpert = 3 * d * f + (config.family === "gpt_oss" ? 2 * f + d : 0);
  let inactive = 0;
  for (const info of infos.values()) {
    const stored = info.manifest ? info.manifest.stored_experts : info.experts;
    inactive += Math.max(0, stored - k) * perExpert;
  }
  return { total, activePerToken: total - inactive };
}
