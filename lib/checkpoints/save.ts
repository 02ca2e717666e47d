/**
 * Writing a (compressed) MoE model back: `saveMoeModel` writes the source checkpoint with some layers'
 * experts pruned or replaced, in the source family's layout where `transformers` can load the result, and
 * in moekit's documented compressed-experts format ("moekit-experts/1") otherwise; `materialize` turns
 * such a checkpoint back into plain dense weights.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { MoekitError, ShapeError } from "../core/errors.ts";
import { type Dtype, DTYPE_BYTES } from "../io/dtype.ts";
import { type ExtraFile, writeCheckpoint } from "../io/checkpoint.ts";
import { checkOutputFolder } from "../io/output.ts";
import { jsonLike, tokenizerFiles } from "../io/model_files.ts";
import { FLOAT_DTYPES } from "../io/dtype.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";
import { EXPERT_COUNT_KEYS } from "./config.ts";
import {
  expertBase,
  type ExpertLayout,
  type LayerInfo,
  type MoekitLayerManifest,
  type MoeModel,
} from "./model.ts";
import {
  isDense,
  materializeExpert,
  packCodes,
  type StoredExpert,
  type StoredMatrix,
  storedShape,
} from "./formats.ts";

/** The compressed-experts format tag written to `config.json` and the shards' `__metadata__`. */
export const MOEKIT_FORMAT = "moekit-experts/1";

/**
 * What to change in one MoE layer when saving.
 * - `keep`: the original experts to keep, in order (pruning): router rows, router bias and correction
 *   bias follow; the kept experts are renumbered 0..E'−1.
 * - `experts`: new weights for the (kept) experts — dense matrices, or low-rank / RTN / delta forms.
 * - `expertMap`: router slot → index into `experts` (merging: E router rows, fewer stored experts).
 * - `deltaBase`: the shared base expert that `delta` matrices add to.
 *
 * @example
 * ```ts
 * import { type LayerEdit } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const prune: LayerEdit = { keep: [0, 2, 3] };
 * assert.equal(prune.keep!.length, 3);
 * ```
 */
export interface LayerEdit {
  /** Original expert ids to keep (in order). Default: all. */
  readonly keep?: readonly number[];
  /** Replacement experts (one per kept router row, or as indexed by `expertMap`). */
  readonly experts?: readonly (StoredExpert | SwiGLUExpert)[];
  /** Router slot → stored expert. */
  readonly expertMap?: readonly number[];
  /** Base expert of `delta` matrices. */
  readonly deltaBase?: SwiGLUExpert;
}

/**
 * Options of {@link saveMoeModel}.
 *
 * @example
 * ```ts
 * import { type SaveMoeModelOptions } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const o: SaveMoeModelOptions = { layers: { 0: { keep: [1, 3] } }, shardBytes: 5e9 };
 * assert.deepEqual(o.layers![0].keep, [1, 3]);
 * ```
 */
export interface SaveMoeModelOptions {
  /** Edits by MoE layer index; layers not listed are copied unchanged. */
  readonly layers?: Readonly<Record<number, LayerEdit>>;
  /** Bytes per shard. Default 5e9. */
  readonly shardBytes?: number;
  /** Dtype of dense expert weights that are rewritten. Default: the source's (BF16 for MXFP4 sources). */
  readonly dtype?: "F32" | "BF16" | "F16";
  /** Called after each tensor is written. */
  readonly onTensor?: (name: string, bytes: number) => void;
  /** Replace an existing non-empty `outDir` as a whole. Default false (refused). */
  readonly overwrite?: boolean;
}

/**
 * What {@link saveMoeModel} wrote.
 *
 * @example
 * ```ts
 * import { type SaveResult } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const r: SaveResult = { files: ["model.safetensors"], transformersLoadable: true, moekitLayers: [] };
 * assert.ok(r.transformersLoadable);
 * ```
 */
export interface SaveResult {
  /** Safetensors files written. */
  readonly files: readonly string[];
  /** True when every layer is in the family's own layout (`transformers` loads the folder unchanged). */
  readonly transformersLoadable: boolean;
  /** Layers written in the moekit compressed-experts format. */
  readonly moekitLayers: readonly number[];
}

interface Plan {
  readonly info: LayerInfo;
  readonly rows: readonly number[]; // original router rows kept
  readonly edit?: LayerEdit;
  readonly mode: "copy" | "source" | "moekit";
  readonly layout: ExpertLayout; // layout written (source mode)
}

type Spec = { name: string; dtype: Dtype; shape: number[] };
type Producer = () => Promise<ArrayLike<number> | Uint8Array>;

/** A tensor's contents as the writer takes them back unchanged: floats for float dtypes, bytes otherwise. */
async function rawOf(model: MoeModel, name: string): Promise<ArrayLike<number> | Uint8Array> {
  const t = model.checkpoint.info(name)!;
  return FLOAT_DTYPES.includes(t.dtype)
    ? (await model.checkpoint.read(name)).data
    : await model.checkpoint.readBytes(name);
}

const GENERATION_FILES = ["generation_config.json"];

/**
 * Writes `model` to `outDir` with some MoE layers edited (see {@link LayerEdit}). Pruned and dense
 * experts are written in the source family's layout when every MoE layer ends with the same expert count
 * (then `transformers` loads the folder unchanged, with the experts key of `config.json` updated);
 * otherwise — merged (`expertMap`), low-rank, quantised or delta experts, or unequal counts — those
 * layers are written in moekit's format: per-expert tensor names with suffixes (`.lowrank_a/b`,
 * `.qcodes/.qscale/.qzero`, `.delta_a/b`, a `experts.delta_base`), described in `config.json` under
 * `moekit` and the shards' `__metadata__`; {@link openMoeModel} reads them back and {@link materialize}
 * turns them into dense weights. Tokenizer and generation files are copied unchanged; the tensors are
 * written through the checkpoint writer (temporary folder, one rename); `config.json` is written last.
 * Refuses an existing non-empty `outDir` before any work.
 *
 * @example
 * ```ts
 * import { openMoeModel, saveMoeModel } from "@moekit/moekit/checkpoints";
 * import { matrix, writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir(), E = 4, d = 8, f = 4;
 * const specs = [{ name: "model.layers.0.block_sparse_moe.gate.weight", dtype: "F32" as const, shape: [E, d] }];
 * for (let e = 0; e < E; e++) {
 *   for (const [p, s] of [["w1", [f, d]], ["w3", [f, d]], ["w2", [d, f]]] as const) {
 *     specs.push({ name: `model.layers.0.block_sparse_moe.experts.${e}.${p}.weight`, dtype: "F32", shape: [...s] });
 *   }
 * }
 * await writeCheckpoint(dir, specs, (n) => matrix.randn(1, specs.find((s) => s.name === n)!.shape.reduce((a, b) => a * b), { seed: n.length }).data);
 * await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({
 *   model_type: "mixtral", num_hidden_layers: 1, hidden_size: d, intermediate_size: f, num_local_experts: E, num_experts_per_tok: 2,
 * }));
 * const model = await openMoeModel(dir);
 * const out = `${dir}-pruned`;
 * const r = await saveMoeModel(model, out, { layers: { 0: { keep: [0, 2, 3] } } });
 * const pruned = await openMoeModel(out);
 * assert.deepEqual([r.transformersLoadable, pruned.config.experts], [true, 3]);
 * pruned.close(); model.close();
 * await Deno.remove(dir, { recursive: true }); await Deno.remove(out, { recursive: true });
 * ```
 */
export async function saveMoeModel(
  model: MoeModel,
  outDir: string,
  options: SaveMoeModelOptions = {},
): Promise<SaveResult> {
  return await writeModel(model, outDir, options, false);
}

/**
 * Writes a model whose layers are in moekit's compressed-experts format as a plain dense checkpoint in the
 * source layout (low-rank products, dequantised codes, base + delta; merged router slots each get a copy
 * of their merged expert), which `transformers` loads. Refuses when layers have different expert counts.
 *
 * @example
 * ```ts
 * import { materialize, openMoeModel, saveMoeModel } from "@moekit/moekit/checkpoints";
 * import { matrix, writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir(), E = 4, d = 8, f = 4, b = "model.layers.0.mlp";
 * const specs = [{ name: `${b}.gate.weight`, dtype: "F32" as const, shape: [E, d] }];
 * for (let e = 0; e < E; e++) {
 *   specs.push({ name: `${b}.experts.${e}.gate_proj.weight`, dtype: "F32", shape: [f, d] });
 *   specs.push({ name: `${b}.experts.${e}.up_proj.weight`, dtype: "F32", shape: [f, d] });
 *   specs.push({ name: `${b}.experts.${e}.down_proj.weight`, dtype: "F32", shape: [d, f] });
 * }
 * const config = { model_type: "olmoe", num_hidden_layers: 1, hidden_size: d, intermediate_size: f, num_experts: E, num_experts_per_tok: 2 };
 * await writeCheckpoint(`${dir}/m`, specs, (n) => matrix.randn(1, specs.find((s) => s.name === n)!.shape.reduce((a, c) => a * c), { seed: n.length }).data, {
 *   files: [{ name: "config.json", data: JSON.stringify(config) }],
 * });
 * const model = await openMoeModel(`${dir}/m`), layer = await model.layer(0);
 * // merge experts 0+1 and 2+3 (two stored experts, four router rows): moekit's format
 * await saveMoeModel(model, `${dir}/merged`, { layers: { 0: { experts: [layer.experts[0], layer.experts[2]], expertMap: [0, 0, 1, 1] } } });
 * const merged = await openMoeModel(`${dir}/merged`);
 * const r = await materialize(merged, `${dir}/dense`);
 * const dense = await openMoeModel(`${dir}/dense`);
 * assert.deepEqual([r.transformersLoadable, dense.info(0).layout, dense.config.experts], [true, "per-expert", 4]);
 * const x = matrix.randn(8, d, { seed: 1 });
 * assert.deepEqual((await dense.layer(0)).forward(x).output.data, (await merged.layer(0)).forward(x).output.data);
 * for (const m of [model, merged, dense]) m.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function materialize(
  model: MoeModel,
  outDir: string,
  options: Omit<SaveMoeModelOptions, "layers"> = {},
): Promise<SaveResult> {
  return await writeModel(model, outDir, options, true);
}

async function writeModel(
  model: MoeModel,
  outDir: string,
  options: SaveMoeModelOptions,
  dense: boolean,
): Promise<SaveResult> {
  const { config } = model, ck = model.checkpoint, edits = options.layers ?? {};
  const outputOptions = { overwrite: options.overwrite ?? false, inputs: [model.dir] };
  await checkOutputFolder(outDir, outputOptions);
  for (const key of Object.keys(edits)) {
    if (!config.moeLayers.includes(Number(key))) {
      throw new MoekitError(`saveMoeModel: layer ${key} is not an MoE layer of ${model.dir}`);
    }
  }
  const sourceLayout = (model.config.raw.moekit as { source_layout?: ExpertLayout } | undefined)
    ?.source_layout;
  // 1. plan each MoE layer
  const drafts = config.moeLayers.map((l) => {
    const info = model.info(l), edit = dense && info.layout === "moekit" ? {} : edits[l];
    const E = info.experts;
    const rows = edit?.keep ? [...edit.keep] : Array.from({ length: E }, (_, i) => i);
    rows.forEach((r, i) => {
      if (!Number.isInteger(r) || r < 0 || r >= E || rows.indexOf(r) !== i) {
        throw new MoekitError(
          `saveMoeModel: layer ${l} keep lists ${r}; use distinct experts in 0..${E - 1}`,
        );
      }
    });
    if (rows.length < config.topK) {
      throw new MoekitError(
        `saveMoeModel: layer ${l} keeps ${rows.length} experts, fewer than num_experts_per_tok = ${config.topK}`,
      );
    }
    if (edit?.expertMap && edit.expertMap.length !== rows.length) {
      throw new MoekitError(
        `saveMoeModel: layer ${l} expertMap has ${edit.expertMap.length} slots for ${rows.length} router rows`,
      );
    }
    const stored = edit?.experts?.length ?? (edit?.expertMap ? -1 : rows.length);
    if (edit?.experts && !edit.expertMap && edit.experts.length !== rows.length) {
      throw new MoekitError(
        `saveMoeModel: layer ${l} has ${edit.experts.length} experts for ${rows.length} router rows`,
      );
    }
    if (edit?.expertMap && (!edit.experts || edit.expertMap.some((s) => !(s >= 0 && s < stored)))) {
      throw new MoekitError(`saveMoeModel: layer ${l} expertMap must index its ${stored} experts`);
    }
    for (const [i, ex] of (edit?.experts ?? []).entries()) {
      checkStored(ex, config.hidden, config.expertHidden, l, i);
    }
    const plain = !edit?.expertMap && !edit?.deltaBase &&
        (edit?.experts ?? []).every((e) => isDense(e.w1) && isDense(e.w3) && isDense(e.w2)) &&
        !(edit?.experts && info.layout === "gpt-oss-mxfp4") && info.layout !== "moekit" || dense;
    return { l, info, rows, edit, plain };
  });
  const counts = drafts.map((d) => d.rows.length), uniform = counts.every((c) => c === counts[0]);
  if (dense && !uniform) {
    throw new MoekitError(
      `materialize: MoE layers have different expert counts (${
        [...new Set(counts)].join(", ")
      }); transformers needs one`,
    );
  }
  const plans = new Map<number, Plan>();
  for (const d of drafts) {
    const layout = d.info.layout === "moekit" ? (sourceLayout ?? "per-expert") : d.info.layout;
    if (dense && layout === "gpt-oss-mxfp4") {
      throw new MoekitError("materialize: writing dense experts back as MXFP4 is not supported");
    }
    const mode = d.edit === undefined ? "copy" : d.plain && uniform ? "source" : "moekit";
    plans.set(d.l, { info: d.info, rows: d.rows, edit: d.edit, mode, layout });
  }
  // 2. tensor specs, in source order, with each edited layer's MoE tensors replaced in place
  const specs: Spec[] = [], produce = new Map<string, Producer>(), emitted = new Set<number>();
  const manifests: Record<string, MoekitLayerManifest> = {};
  const oldManifests =
    (config.raw.moekit as { layers?: Record<string, MoekitLayerManifest> } | undefined)?.layers ?? {};
  const ownerOf = new Map<string, number>();
  for (const [l, p] of plans) {
    if (p.mode === "copy") {
      if (p.info.manifest) manifests[String(l)] = oldManifests[String(l)];
      continue;
    }
    for (const n of ck.names) {
      if (
        n.startsWith(`${p.info.block}.experts.`) || n === p.info.router || n === p.info.routerBias ||
        n === p.info.correctionBias
      ) ownerOf.set(n, l);
    }
  }
  let cache: { l: number; experts: StoredExpert[]; base?: SwiGLUExpert } | undefined;
  const storedOf = async (l: number) => {
    if (cache?.l !== l) cache = { l, ...(await model.storedExperts(l)) };
    return cache;
  };
  for (const name of ck.names) {
    const l = ownerOf.get(name);
    if (l === undefined) {
      const t = ck.info(name)!;
      specs.push({ name, dtype: t.dtype, shape: [...t.shape] });
      produce.set(name, () => rawOf(model, name));
      continue;
    }
    if (emitted.has(l)) continue;
    emitted.add(l);
    const p = plans.get(l)!;
    const add = (s: Spec, f: Producer) => {
      specs.push(s);
      produce.set(s.name, f);
    };
    layerSpecs(model, p, add, storedOf, options.dtype, manifests, dense);
  }
  // 3. config.json
  const raw = structuredClone(config.raw) as Record<string, unknown>;
  const moekitLayers = Object.keys(manifests).map(Number).sort((a, b) => a - b);
  if (uniform && counts[0] !== config.experts) {
    for (const k of EXPERT_COUNT_KEYS) if (k in raw) raw[k] = counts[0];
  }
  if (moekitLayers.length) {
    raw.moekit = {
      format: MOEKIT_FORMAT,
      source_layout: sourceLayout ?? model.layout,
      note:
        "layers listed here store experts in moekit's format; transformers cannot load this folder as is; " +
        "moekit's materialize() writes a plain checkpoint",
      layers: manifests,
    };
  } else delete raw.moekit;
  // 4. write: tensors through the checkpoint writer, then the other files, config.json last
  const metadata: Record<string, string> = { format: "pt" };
  if (moekitLayers.length) metadata.moekit = `${MOEKIT_FORMAT}: see config.json "moekit"`;
  // numbers written as the source config wrote them (1e-05 stays 1e-05), so only real changes show
  const original = await Deno.readTextFile(`${model.dir}/config.json`).catch(() => undefined);
  const extra: ExtraFile[] = [{ name: "config.json", data: jsonLike(raw, original) }];
  // tokenizer files (io's list) and the generation config, copied unchanged; other weights (.bin) are not
  extra.push(...await tokenizerFiles(model.dir));
  for (const name of GENERATION_FILES) {
    if (await Deno.stat(`${model.dir}/${name}`).then((s) => s.isFile, () => false)) {
      extra.push({ name, copyFrom: `${model.dir}/${name}` });
    }
  }
  const files = await writeCheckpoint(outDir, specs, (name) => produce.get(name)!(), {
    ...outputOptions,
    shardBytes: options.shardBytes,
    metadata,
    onTensor: options.onTensor,
    files: extra,
  });
  return { files, transformersLoadable: moekitLayers.length === 0, moekitLayers };
}

function checkStored(e: StoredExpert, d: number, f: number, l: number, i: number): void {
  for (const [key, m, want] of [["w1", e.w1, [f, d]], ["w3", e.w3, [f, d]], ["w2", e.w2, [d, f]]] as const) {
    const got = storedShape(m);
    if (got[0] !== want[0] || got[1] !== want[1]) {
      throw new ShapeError(`saveMoeModel: layer ${l} expert ${i} ${key}`, want, got);
    }
  }
}

/** Rows `rows` of a tensor whose first dimension is the expert / router row (`size` values per row). */
function sliceRows(
  v: ArrayLike<number> | Uint8Array,
  size: number,
  rows: readonly number[],
): Float32Array | Float64Array | Uint8Array {
  const src = v as Float32Array | Float64Array | Uint8Array;
  const out = new (src.constructor as Float32ArrayConstructor)(rows.length * size);
  rows.forEach((r, i) => out.set(src.subarray(r * size, (r + 1) * size), i * size));
  return out;
}

function layerSpecs(
  model: MoeModel,
  p: Plan,
  add: (s: Spec, f: Producer) => void,
  storedOf: (l: number) => Promise<{ experts: StoredExpert[]; base?: SwiGLUExpert }>,
  dtypeOption: SaveMoeModelOptions["dtype"],
  manifests: Record<string, MoekitLayerManifest>,
  dense: boolean,
): void {
  const ck = model.checkpoint, { config } = model, { info, rows, edit } = p, R = rows.length;
  const { hidden: d, expertHidden: f, family: fam } = config, b = info.block, l = info.layer;
  const all = rows.length === info.experts && rows.every((r, i) => r === i);
  const rowTensor = (name: string | undefined) => {
    if (!name) return;
    const t = ck.info(name)!, rowSize = t.shape.slice(1).reduce((a, c) => a * c, 1);
    add({ name, dtype: t.dtype, shape: [R, ...t.shape.slice(1)] }, async () => {
      const v = await rawOf(model, name);
      return all ? v : sliceRows(v, v instanceof Uint8Array ? rowSize * DTYPE_BYTES[t.dtype] : rowSize, rows);
    });
  };
  rowTensor(info.router);
  rowTensor(info.routerBias);
  rowTensor(info.correctionBias);
  // the dtype dense expert weights are written in
  const firstExpert = ck.names.find((n) =>
    n.startsWith(`${b}.experts.`) && !n.endsWith("_scales") && !n.endsWith("_blocks")
  );
  const srcDtype = firstExpert ? ck.info(firstExpert)!.dtype : "F32";
  const dtype: Dtype = dtypeOption ?? (["F32", "F16", "BF16"].includes(srcDtype) ? srcDtype : "BF16");
  // experts, as stored after the edit
  const experts = async (): Promise<{ experts: readonly StoredExpert[]; base?: SwiGLUExpert }> => {
    if (edit?.experts) return { experts: edit.experts, base: edit.deltaBase };
    const s = await storedOf(l);
    const map = info.manifest?.expert_map;
    if (dense) {
      const slots = (map ?? s.experts.map((_, i) => i)).map((i) => materializeExpert(s.experts[i], s.base));
      return { experts: rows.map((r) => slots[r]) };
    }
    return { experts: rows.map((r) => s.experts[map ? map[r] : r]), base: s.base };
  };
  const matrixOf = async (e: number, key: "w1" | "w3" | "w2") => {
    const x = await experts();
    return materializeExpert(x.experts[e], x.base)[key];
  };
  if (p.mode === "source") {
    const pureSlice = !edit?.experts && info.layout !== "moekit";
    if (pureSlice && p.layout === "per-expert") {
      rows.forEach((r, i) => {
        const from = expertBase(fam, b, r), to = expertBase(fam, b, i);
        from.forEach((n, j) => {
          const t = ck.info(`${n}.weight`)!;
          add(
            { name: `${to[j]}.weight`, dtype: t.dtype, shape: [...t.shape] },
            () => rawOf(model, `${n}.weight`),
          );
        });
      });
      return;
    }
    if (pureSlice) {
      for (const n of ck.names) if (n.startsWith(`${b}.experts.`)) rowTensor(n);
      return;
    }
    writeDenseSource(p, add, matrixOf, experts, dtype, fam, b, R, d, f);
    return;
  }
  // moekit format: per-expert names with suffixes
  const manifest: { -readonly [K in keyof MoekitLayerManifest]: MoekitLayerManifest[K] } = {
    router_experts: R,
    stored_experts: edit?.expertMap ? edit.experts!.length : R,
  };
  if (edit?.expertMap) manifest.expert_map = [...edit.expertMap];
  else if (!edit?.experts && info.manifest?.expert_map) {
    // pruning a merged layer: keep the stored experts, remap the kept slots
    manifest.stored_experts = info.manifest.stored_experts;
    manifest.expert_map = rows.map((r) => info.manifest!.expert_map![r]);
  }
  const fromStore = !edit?.experts && !!info.manifest?.expert_map;
  const nStored = manifest.stored_experts;
  const storedExpert = async (s: number): Promise<StoredExpert> => {
    if (fromStore) return (await storedOf(l)).experts[s];
    return (await experts()).experts[s];
  };
  const baseOf = async () => edit?.experts ? edit.deltaBase : (await storedOf(l)).base;
  const matrices: Record<
    string,
    { format: "lowrank" | "rtn" | "delta"; bits?: number; group_size?: number }
  > = {};
  const hasBase = edit?.experts ? !!edit.deltaBase : !!info.manifest?.delta_base;
  if (hasBase) {
    manifest.delta_base = true;
    expertBase(fam, b, "delta_base").forEach((n, j) => {
      const key = (["w1", "w3", "w2"] as const)[j], shape = j === 2 ? [d, f] : [f, d];
      add({ name: `${n}.weight`, dtype: "F32", shape }, async () => (await baseOf())![key].data);
    });
  }
  // the stored forms are known only once the experts are read; the edit's (or the source manifest's) decide
  const formOf = (
    s: number,
    key: "w1" | "w3" | "w2",
  ): StoredMatrix | { kind: string; rank: number; bits?: number; groupSize?: number } | undefined => {
    if (edit?.experts) return edit.experts[s][key];
    const fmt = info.manifest?.matrices?.[`${fromStore ? s : rows[s]}.${key}`];
    if (!fmt) return undefined;
    const src = ck.info(
      `${expertBase(fam, b, fromStore ? s : rows[s])[["w1", "w3", "w2"].indexOf(key)]}.${
        fmt.format === "delta" ? "delta" : "lowrank"
      }_a`,
    );
    return { kind: fmt.format, rank: src?.shape[1] ?? 0, bits: fmt.bits, groupSize: fmt.group_size };
  };
  for (let s = 0; s < nStored; s++) {
    const names = expertBase(fam, b, s);
    (["w1", "w3", "w2"] as const).forEach((key, j) => {
      const n = names[j], [rr, cc] = j === 2 ? [d, f] : [f, d];
      const form = formOf(s, key);
      const get = async () => (await storedExpert(s))[key];
      if (!form || !("kind" in form)) {
        add({ name: `${n}.weight`, dtype, shape: [rr, cc] }, async () => {
          const m = await get();
          return isDense(m) ? m.data : (await matrixOf(s, key)).data;
        });
        return;
      }
      if (form.kind === "rtn") {
        const bits = "bits" in form ? form.bits! : 0, g = "groupSize" in form ? form.groupSize! : 0;
        matrices[`${s}.${key}`] = { format: "rtn", bits, group_size: g };
        const groups = Math.ceil(cc / g);
        add({ name: `${n}.qcodes`, dtype: "U8", shape: [rr, Math.ceil((cc * bits) / 8)] }, async () => {
          const m = await get() as { codes: Uint8Array };
          return packCodes(m.codes, rr, cc, bits);
        });
        add(
          { name: `${n}.qscale`, dtype: "F32", shape: [rr, groups] },
          async () => (await get() as { scale: Float32Array }).scale,
        );
        add(
          { name: `${n}.qzero`, dtype: "F32", shape: [rr, groups] },
          async () => (await get() as { zero: Float32Array }).zero,
        );
        return;
      }
      const pre = form.kind === "delta" ? "delta" : "lowrank";
      const rank = "a" in form ? (form as { a: Mat }).a.cols : (form as { rank: number }).rank;
      matrices[`${s}.${key}`] = { format: form.kind as "lowrank" | "delta" };
      add(
        { name: `${n}.${pre}_a`, dtype: "F32", shape: [rr, rank] },
        async () => (await get() as { a: Mat }).a.data,
      );
      add(
        { name: `${n}.${pre}_b`, dtype: "F32", shape: [rank, cc] },
        async () => (await get() as { b: Mat }).b.data,
      );
    });
    if (fam === "gpt_oss") {
      (["b1", "b3", "b2"] as const).forEach((key, j) => {
        add({ name: `${names[j]}.bias`, dtype: "F32", shape: [j === 2 ? d : f] }, async () => {
          const e = await storedExpert(s);
          const v = e[key];
          if (!v) throw new MoekitError(`saveMoeModel: GPT-OSS layer ${l} expert ${s} has no ${key} bias`);
          return v;
        });
      });
    }
  }
  if (Object.keys(matrices).length) manifest.matrices = matrices;
  manifests[String(l)] = manifest;
}

/** Dense experts in the source layout (per-expert, fused or GPT-OSS bf16/f32). */
function writeDenseSource(
  p: Plan,
  add: (s: Spec, f: Producer) => void,
  matrixOf: (e: number, key: "w1" | "w3" | "w2") => Promise<Mat>,
  experts: () => Promise<{ experts: readonly StoredExpert[]; base?: SwiGLUExpert }>,
  dtype: Dtype,
  fam: string,
  b: string,
  R: number,
  d: number,
  f: number,
): void {
  const enc = (v: Float32Array) => v; // the writer encodes floats to `dtype`
  if (p.layout === "per-expert") {
    for (let e = 0; e < R; e++) {
      expertBase(fam, b, e).forEach((n, j) => {
        const key = (["w1", "w3", "w2"] as const)[j];
        add(
          { name: `${n}.weight`, dtype, shape: j === 2 ? [d, f] : [f, d] },
          async () => enc((await matrixOf(e, key)).data),
        );
      });
    }
    return;
  }
  if (p.layout === "fused") {
    add({ name: `${b}.experts.gate_up_proj`, dtype, shape: [R, 2 * f, d] }, async () => {
      const out = new Float32Array(R * 2 * f * d);
      for (let e = 0; e < R; e++) {
        out.set((await matrixOf(e, "w1")).data, e * 2 * f * d);
        out.set((await matrixOf(e, "w3")).data, e * 2 * f * d + f * d);
      }
      return enc(out);
    });
    add({ name: `${b}.experts.down_proj`, dtype, shape: [R, d, f] }, async () => {
      const out = new Float32Array(R * d * f);
      for (let e = 0; e < R; e++) out.set((await matrixOf(e, "w2")).data, e * d * f);
      return enc(out);
    });
    return;
  }
  // GPT-OSS: gate_up [E,d,2f] (x·W, even columns gate), bias [E,2f], down [E,f,d], bias [E,d]
  add({ name: `${b}.experts.gate_up_proj`, dtype, shape: [R, d, 2 * f] }, async () => {
    const out = new Float32Array(R * d * 2 * f);
    for (let e = 0; e < R; e++) {
      const w1 = await matrixOf(e, "w1"), w3 = await matrixOf(e, "w3");
      for (let i = 0; i < f; i++) {
        for (let r = 0; r < d; r++) {
          out[e * d * 2 * f + r * 2 * f + 2 * i] = w1.data[i * d + r];
          out[e * d * 2 * f + r * 2 * f + 2 * i + 1] = w3.data[i * d + r];
        }
      }
    }
    return enc(out);
  });
  add({ name: `${b}.experts.gate_up_proj_bias`, dtype, shape: [R, 2 * f] }, async () => {
    const out = new Float32Array(R * 2 * f), ex = (await experts()).experts;
    for (let e = 0; e < R; e++) {
      for (let i = 0; i < f; i++) {
        out[e * 2 * f + 2 * i] = ex[e].b1?.[i] ?? 0;
        out[e * 2 * f + 2 * i + 1] = ex[e].b3?.[i] ?? 0;
      }
    }
    return enc(out);
  });
  add({ name: `${b}.experts.down_proj`, dtype, shape: [R, f, d] }, async () => {
    const out = new Float32Array(R * f * d);
    for (let e = 0; e < R; e++) {
      const w2 = await matrixOf(e, "w2");
      for (let r = 0; r < d; r++) for (let i = 0; i < f; i++) out[e * f * d + i * d + r] = w2.data[r * f + i];
    }
    return enc(out);
  });
  add({ name: `${b}.experts.down_proj_bias`, dtype, shape: [R, d] }, async () => {
    const out = new Float32Array(R * d), ex = (await experts()).experts;
    for (let e = 0; e < R; e++) if (ex[e].b2) out.set(ex[e].b2!, e * d);
    return enc(out);
  });
}
