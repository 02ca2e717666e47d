/**
 * Merging whole checkpoints from a mergekit config: a plan that opens every model, resolves and
 * validates every output tensor's sources, shapes and parameters before any tensor data is read, then a
 * run that merges one tensor at a time and streams the result into sharded safetensors.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { type Checkpoint, type ExtraFile, openCheckpoint, writeCheckpoint } from "../io/checkpoint.ts";
import { CheckpointError } from "../io/errors.ts";
import {
  chatTemplateOf,
  derivedModelConfig,
  tokenizerFiles,
  vocabularyFingerprint,
} from "../io/model_files.ts";
import { type Dtype, FLOAT_DTYPES } from "../io/dtype.ts";
import type { TensorInfo } from "../io/safetensors.ts";
import { evaluateParam, layerIndex, type MergeConfig, type ParamValue } from "./config.ts";
import { mergeStream, minWorkerMs, writeMergePart } from "./merge_run.ts";
import { checkModelCount, type MergeMethod, mergeMethod, validateMergeParams } from "./methods.ts";
import type { MergeParams, ModelParams } from "./params.ts";
import { shapeRule } from "./shapes.ts";

/**
 * One output tensor of a plan.
 *
 * @example
 * ```ts
 * import { type PlannedTensor } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const p: PlannedTensor = { name: "w", shape: [2], dtype: "F32", t: 0, sources: [], params: {}, passthrough: false };
 * assert.equal(p.sources.length, 0);
 * ```
 */
export interface PlannedTensor {
  /** Output name. */
  readonly name: string;
  /** Output shape. */
  readonly shape: readonly number[];
  /** Output dtype. */
  readonly dtype: Dtype;
  /** Layer position t ∈ [0,1] used for gradients. */
  readonly t: number;
  /** The base tensor (model path, tensor name). */
  readonly base?: { readonly model: string; readonly tensor: string };
  /** The merged models with their resolved parameters. */
  readonly sources: readonly {
    readonly model: string;
    readonly tensor: string;
    readonly params: ModelParams;
  }[];
  /** Resolved global parameters. */
  readonly params: MergeParams;
  /** Copied from the base unchanged (non-float dtypes). */
  readonly passthrough: boolean;
}

/**
 * A validated merge plan: open checkpoints and every output tensor.
 *
 * @example
 * ```ts
 * import { type MergePlan } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const size = (p: MergePlan) => p.tensors.length;
 * assert.equal(size({ tensors: [] } as unknown as MergePlan), 0);
 * ```
 */
export interface MergePlan {
  /** The method. */
  readonly method: string;
  /** Output tensors in write order. */
  readonly tensors: readonly PlannedTensor[];
  /** Open checkpoints by model path. */
  readonly checkpoints: ReadonlyMap<string, Checkpoint>;
  /** Bytes of input tensor data the run will read. */
  readonly inputBytes: number;
  /** The config it was planned from. */
  readonly config: MergeConfig;
  /** Maps a model named in the config to its folder, as the plan did. */
  resolve(model: string): Promise<string>;
  /** Closes the checkpoints. */
  close(): void;
}

const DTYPE_NAMES: Record<string, Dtype> = {
  bfloat16: "BF16",
  bf16: "BF16",
  float16: "F16",
  f16: "F16",
  half: "F16",
  float32: "F32",
  f32: "F32",
  float: "F32",
  float64: "F64",
};

/** The output dtype a config asks for (`out_dtype`, else `dtype`), else `fallback`; a bad name is named with its key. */
function outputDtype(config: MergeConfig, fallback: Dtype): Dtype {
  const [key, name] = config.outDtype !== undefined
    ? ["out_dtype", config.outDtype]
    : ["dtype", config.dtype];
  if (name === undefined) return fallback;
  const d = DTYPE_NAMES[name.toLowerCase()];
  if (!d) throw new OptionError(key, name, `use one of ${Object.keys(DTYPE_NAMES).join(", ")}`);
  return d;
}

/** Tensors before the layer stack (embeddings): planned with t = 0 and the first slice. */
const PRE_LAYER = /embed_tokens|(?:^|\.)wte\.|(?:^|\.)wpe\.|word_embeddings|embed_in|(?:^|\.)embeddings\./;
/** Tensors outside the layer stack that come after it (final norm, lm_head, …): t = 1, the last slice. */
const isPostLayer = (name: string) => /lm_head|embed_out/.test(name) || !PRE_LAYER.test(name);

/**
 * Builds and validates a plan. `resolve` maps a config model name to a folder (default: relative to
 * `configDir`, then as given). Every error — a missing file, a tensor missing in one model, a shape
 * mismatch, a bad parameter — is raised here, naming the model and the tensor, before any tensor data
 * is read.
 *
 * @example
 * ```ts
 * import { parseMergeConfig, planCheckpointMerge } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const config = parseMergeConfig("merge_method: ties\nbase_model: /nowhere/base\nmodels:\n  - model: /nowhere/a\n");
 * await assert.rejects(planCheckpointMerge(config), /\/nowhere\/base: checkpoint does not exist/);
 * ```
 */
export async function planCheckpointMerge(
  config: MergeConfig,
  options: { readonly configDir?: string; readonly cwd?: string } = {},
): Promise<MergePlan> {
  const method = mergeMethod(config.method);
  const besideConfig = (m: string) =>
    options.configDir && !m.startsWith("/") ? `${options.configDir}/${m}` : "";
  const resolve = async (m: string) => {
    const rel = besideConfig(m);
    if (rel && await Deno.stat(rel).then(() => true, () => false)) return rel;
    return options.cwd && !m.startsWith("/") ? `${options.cwd}/${m}` : m; // else relative to the caller's folder
  };
  const checkpoints = new Map<string, Checkpoint>();
  const open = async (m: string) => {
    if (!checkpoints.has(m)) {
      const path = await resolve(m);
      try {
        checkpoints.set(m, await openCheckpoint(path));
      } catch (e) {
        // a model found in neither place: name both, not only the fallback
        const rel = besideConfig(m);
        const gone = await Deno.stat(path).then(() => false, () => true);
        if (!(e instanceof CheckpointError) || !rel || rel === path || !gone) throw e;
        throw new CheckpointError(
          path,
          `checkpoint does not exist (model "${m}" was looked for beside the config, at ${rel}, then here)`,
        );
      }
    }
    return checkpoints.get(m)!;
  };
  try {
    const tensors = await buildEntries(config, method, open);
    let inputBytes = 0;
    for (const t of tensors) {
      for (const s of [...(t.base ? [t.base] : []), ...t.sources]) {
        const info = checkpoints.get(s.model)!.info(s.tensor)!;
        inputBytes += info.end - info.begin;
      }
    }
    return {
      method: config.method,
      tensors,
      checkpoints,
      inputBytes,
      config,
      resolve,
      close: () => checkpoints.forEach((c) => c.close()),
    };
  } catch (e) {
    checkpoints.forEach((c) => c.close());
    throw e;
  }
}

async function buildEntries(
  config: MergeConfig,
  method: MergeMethod,
  open: (m: string) => Promise<Checkpoint>,
): Promise<PlannedTensor[]> {
  if (method.base === "required" && !config.baseModel) {
    throw new MoekitError(`config: ${config.method} needs base_model`);
  }
  const needsBase = method.base !== "none" && config.baseModel !== undefined;
  const modelParams = new Map(config.models.map((m) => [m.model, m.parameters]));
  const out: PlannedTensor[] = [];
  const refModel = config.baseModel ?? config.models[0]?.model ?? config.slices![0].sources[0].model;
  const ref = await open(refModel);
  for (
    const m of [
      ...config.models.map((x) => x.model),
      ...(config.slices ?? []).flatMap((s) => s.sources.map((x) => x.model)),
    ]
  ) await open(m);
  const info = async (model: string, tensor: string): Promise<TensorInfo> => {
    const i = (await open(model)).info(tensor);
    if (!i) throw new MoekitError(`model ${model} has no tensor ${tensor} (needed for the merge)`);
    return i;
  };
  const add = async (
    name: string,
    baseTensor: string,
    t: number,
    srcs: { model: string; tensor: string; chain: Record<string, ParamValue>[] }[],
    globalChain: Record<string, ParamValue>[],
  ) => {
    const baseInfo = await info(refModel, baseTensor);
    const passthrough = !FLOAT_DTYPES.includes(baseInfo.dtype);
    const sources = [];
    for (const s of srcs) {
      const si = await info(s.model, s.tensor);
      const rule = shapeRule(name, si.shape, baseInfo.shape);
      if (rule === "mismatch" || (rule === "submatrix" && !needsBase)) {
        throw new MoekitError(
          `model ${s.model} tensor ${s.tensor}: shape [${si.shape.join(",")}] does not match ${refModel}'s [${
            baseInfo.shape.join(",")
          }]`,
        );
      }
      if (!passthrough && !FLOAT_DTYPES.includes(si.dtype)) {
        throw new MoekitError(`model ${s.model} tensor ${s.tensor}: dtype ${si.dtype} is not a float`);
      }
      sources.push({
        model: s.model,
        tensor: s.tensor,
        params: paramsFor(method, "model", s.chain, t, name),
      });
    }
    const params = paramsFor(method, "global", globalChain, t, name) as MergeParams;
    if (!passthrough) {
      const label = (k: string, i?: number) => {
        const n = method.parameters.find((p) => p.key === k)?.name ?? k;
        return i === undefined ? `${n} (tensor ${name})` : `${n} (model ${i}, tensor ${name})`;
      };
      validateMergeParams(method, params as Record<string, unknown>, sources.map((s) => s.params), label);
      checkModelCount(method, sources.length, name);
    }
    out.push({
      name,
      shape: baseInfo.shape,
      dtype: passthrough ? baseInfo.dtype : outputDtype(config, baseInfo.dtype),
      t,
      ...(needsBase ? { base: { model: refModel, tensor: baseTensor } } : {}),
      sources: passthrough ? [] : sources,
      params,
      passthrough,
    });
  };
  const others = config.models.filter((m) => m.model !== config.baseModel);
  const layersOf = (c: Checkpoint) => new Set(c.names.map(layerIndex).filter((x) => x !== undefined)).size;
  if (!config.slices) {
    const L = layersOf(ref);
    for (const name of ref.names) {
      const idx = layerIndex(name);
      // outside the layer stack: embeddings at t = 0, the final norm and lm_head at t = 1 (mergekit's plan)
      const t = idx === undefined ? (isPostLayer(name) ? 1 : 0) : L > 1 ? idx / (L - 1) : 1;
      await add(
        name,
        name,
        t,
        others.map((m) => ({ model: m.model, tensor: name, chain: [m.parameters, config.parameters] })),
        [config.parameters],
      );
    }
    return out;
  }
  // slices: non-layer tensors from the reference model (embeddings: the first slice's sources and
  // parameters at t = 0; the final norm and lm_head: the last slice's at t = 1), then each slice's layers
  for (const name of ref.names.filter((n) => layerIndex(n) === undefined)) {
    const post = isPostLayer(name), slice = post ? config.slices[config.slices.length - 1] : config.slices[0];
    const srcs = slice.sources.filter((s) => s.model !== config.baseModel);
    await add(
      name,
      name,
      post ? 1 : 0,
      srcs.map((s) => ({
        model: s.model,
        tensor: name,
        chain: [s.parameters, slice.parameters, modelParams.get(s.model) ?? {}, config.parameters],
      })),
      [slice.parameters, config.parameters],
    );
  }
  let offset = 0;
  for (const [si, slice] of config.slices.entries()) {
    const baseSrc = slice.sources.find((s) => s.model === refModel);
    if (needsBase && !baseSrc) {
      throw new MoekitError(`config: slices[${si}] must list the base model ${refModel} among its sources`);
    }
    const refRange = (baseSrc ?? slice.sources[0]).layerRange, len = refRange[1] - refRange[0];
    const srcs = slice.sources.filter((s) => !(needsBase && s.model === refModel));
    for (let j = 0; j < len; j++) {
      const t = len > 1 ? j / (len - 1) : 1;
      const layerNames = ref.names.filter((n) => layerIndex(n) === refRange[0] + j);
      if (layerNames.length === 0) {
        throw new MoekitError(
          `model ${refModel} has no layer ${refRange[0] + j} (slices[${si}] layer_range)`,
        );
      }
      for (const name of layerNames) {
        const rename = (l: number) => name.replace(/((?:^|\.)(?:layers|h|blocks|layer)\.)\d+\./, `$1${l}.`);
        await add(
          rename(offset + j),
          name,
          t,
          srcs.map((s) => ({
            model: s.model,
            tensor: rename(s.layerRange[0] + j),
            chain: [s.parameters, slice.parameters, modelParams.get(s.model) ?? {}, config.parameters],
          })),
          [slice.parameters, config.parameters],
        );
      }
    }
    offset += len;
  }
  return out;
}

function lookup(
  chain: Record<string, ParamValue>[],
  key: string,
  t: number,
  name: string,
): number | string | boolean | undefined {
  for (const c of chain) {
    if (c[key] === undefined) continue;
    const v = evaluateParam(c[key], t, name);
    if (v !== undefined) return v;
  }
  return undefined;
}

/** Evaluates every parameter the method declares in `scope` for one tensor (config names → API keys). */
function paramsFor(
  method: MergeMethod,
  scope: "model" | "global",
  chain: Record<string, ParamValue>[],
  t: number,
  name: string,
): ModelParams & MergeParams {
  const p: Record<string, unknown> = {};
  for (const spec of method.parameters) {
    if (spec.scope !== scope || spec.type === "mask") continue;
    const v = lookup(chain, spec.name, t, name);
    if (v !== undefined) p[spec.key] = v;
  }
  return p as ModelParams & MergeParams;
}

/**
 * Progress of a run.
 *
 * @example
 * ```ts
 * import { type MergeProgress } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const pct = (p: MergeProgress) => (100 * p.done) / p.total;
 * assert.equal(pct({ done: 3, total: 4, bytesRead: 0, bytesTotal: 0, seconds: 1 }), 75);
 * ```
 */
export interface MergeProgress {
  /** Tensors written. */
  readonly done: number;
  /** Tensors in all. */
  readonly total: number;
  /** Input bytes read so far. */
  readonly bytesRead: number;
  /** Input bytes in all. */
  readonly bytesTotal: number;
  /** Seconds since the start. */
  readonly seconds: number;
}

/**
 * The files written beside the merged shards, as mergekit writes them: the `config.json` of the base model
 * (or the first model) with `torch_dtype` set to the output dtype (and `num_hidden_layers` to the output's
 * layer count when slices renumber the layers), and the tokenizer files of `tokenizer_source` (default:
 * the same model, as mergekit's `copy_tokenizer`), with `chat_template` applied. With a named tokenizer
 * source every model must share its vocabulary (mergekit would re-map the embeddings; moekit refuses).
 * Reads only small text files, no tensor. Also returns every folder the run reads (`inputs`).
 *
 * @example
 * ```ts
 * import { type MergePlan, planOutputFiles } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const names = async (plan: MergePlan) => (await planOutputFiles(plan)).files.map((f) => f.name);
 * assert.equal(typeof names, "function");
 * ```
 */
export async function planOutputFiles(
  plan: MergePlan,
): Promise<{ files: ExtraFile[]; inputs: string[]; notes: string[] }> {
  const config = plan.config, notes: string[] = [];
  const folderOf = async (m: string) => {
    const path = plan.checkpoints.get(m)?.path ?? await plan.resolve(m);
    const st = await Deno.stat(path).catch(() => undefined);
    return st?.isDirectory ? path : undefined;
  };
  const models = [...plan.checkpoints.keys()];
  const inputs = models.map((m) => plan.checkpoints.get(m)!.path);
  const donor = config.baseModel ?? config.models[0]?.model ?? config.slices?.[0]?.sources[0]?.model;
  const donorDir = donor === undefined ? undefined : await folderOf(donor);
  const files: ExtraFile[] = [];
  const floatOut = plan.tensors.find((t) => !t.passthrough);
  const layers = config.slices
    ? new Set(plan.tensors.map((t) => layerIndex(t.name)).filter((l) => l !== undefined)).size
    : undefined;
  if (donorDir) {
    const cfg = await derivedModelConfig(donorDir, {
      dtype: (config.outDtype ?? config.dtype) !== undefined ? floatOut?.dtype : undefined,
      layers,
    });
    if (cfg) files.push(cfg);
    else notes.push(`${donor} has no config.json: the output has none either`);
  }
  let source = config.tokenizerSource, sourceDir = donorDir;
  if (source === "base") {
    if (!config.baseModel) throw new MoekitError("config: tokenizer_source: base needs base_model");
    source = config.baseModel;
  }
  if (source !== undefined) {
    sourceDir = await folderOf(source);
    if (!sourceDir) throw new MoekitError(`config: tokenizer source ${source} is not a model folder`);
    if (!plan.checkpoints.has(source)) inputs.push(sourceDir);
    const want = await vocabularyFingerprint(sourceDir);
    if (!want) throw new MoekitError(`config: tokenizer source ${source} has no tokenizer files`);
    for (const m of models) {
      const dir = await folderOf(m);
      const got = dir ? await vocabularyFingerprint(dir) : undefined;
      if (got && got.kind === want.kind && got.value !== want.value) {
        throw new MoekitError(
          `config: model ${m} has another vocabulary than the tokenizer source ${source} (${got.kind} differs); ` +
            "mergekit would re-map the embeddings to one vocabulary, which moekit does not do — merge models " +
            "that share a vocabulary",
        );
      }
    }
  }
  let template = config.chatTemplate;
  if (template === "auto") {
    const counts = new Map<string, number>();
    for (const m of models) {
      const dir = await folderOf(m), t = dir ? await chatTemplateOf(dir) : undefined;
      if (t !== undefined) counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    template = [...counts.entries()].reduce<[string, number] | undefined>(
      (best, e) => (!best || e[1] > best[1] ? e : best),
      undefined,
    )?.[0];
    if (template === undefined) notes.push("chat_template: auto found no chat template in the models");
  }
  if (sourceDir) files.push(...await tokenizerFiles(sourceDir, template));
  return { files, inputs, notes };
}

/**
 * Runs a plan into the folder `outDir`: for each output tensor, reads its inputs, merges, and streams it
 * into shards, with `config.json` and the tokenizer files beside them ({@link planOutputFiles}). Before
 * any tensor is read the output is checked — not an input, not a file, not an existing non-empty folder
 * unless `overwrite: true` — and everything is written into a temporary folder beside `outDir` that is
 * renamed into place when complete; an old folder is replaced as a whole (see `writeCheckpoint`).
 *
 * Reads, compute and writes overlap: the merges run on a Worker (and on this thread when the Worker
 * has two jobs queued) while this thread reads the next inputs and writes the previous result — a Worker
 * only for a run whose estimated one-thread time is at least `minWorkerMs` (a smaller run merges on this
 * thread, its reads and writes still overlapped); a large
 * tensor goes in blocks of rows, and the work in flight together holds no more elements than the largest
 * tensor merged whole or a few blocks (so the peak memory is at most that of merging the largest tensor
 * alone). Every buffer is allocated once per run and reused. `overlap: false` runs everything on this
 * thread; the output bytes are the same.
 *
 * With `part: { index, count }` the run writes only part `index` (0 ≤ index < count) of the output — a
 * share of the shard files balanced by bytes — into `<outDir>.parts/`; once every part has run (in other
 * processes or on other machines, with the same config and options), {@link finalizeCheckpointMerge}
 * checks them and writes `outDir`.
 *
 * @example
 * ```ts
 * import { parseMergeConfig, planCheckpointMerge, runCheckpointMerge } from "@moekit/moekit/merging";
 * import { writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * for (const [m, v] of [["base", 1], ["a", 3]] as const) {
 *   await writeCheckpoint(`${dir}/${m}`, [{ name: "w", dtype: "F32", shape: [2] }], () => [v, v]);
 * }
 * const config = parseMergeConfig("merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 1}}\n  - {model: a, parameters: {weight: 1}}\n");
 * const plan = await planCheckpointMerge(config, { configDir: dir });
 * await assert.rejects(() => runCheckpointMerge(plan, `${dir}/a`), /is an input/);
 * const r = await runCheckpointMerge(plan, `${dir}/out`);
 * assert.deepEqual(r.files, ["model.safetensors"]);
 * plan.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function runCheckpointMerge(
  plan: MergePlan,
  outDir: string,
  options: {
    readonly shardBytes?: number;
    readonly seed?: number;
    readonly onProgress?: (p: MergeProgress) => void;
    /** Replace an existing non-empty `outDir` as a whole. Default false (refused). */
    readonly overwrite?: boolean;
    /** More paths the output must not be (for example the config file). */
    readonly inputs?: readonly string[];
    /** Where notes go (cleanup of stale temporary folders, tensors merged whole). Default stderr. */
    readonly log?: (line: string) => void;
    /**
     * Overlap reads, compute and writes. Default true: the merges also run on a Worker when the run's
     * estimated one-thread time is at least `minWorkerMs` (a smaller run does not repay its start); false:
     * everything on this thread. The output bytes are the same.
     */
    readonly overlap?: boolean;
    /**
     * With `overlap`, the estimated one-thread time in ms from which a Worker starts (default
     * `WORKER_MIN_MS` of the merge engine, 4000; 0: a Worker for any run).
     */
    readonly minWorkerMs?: number;
    /**
     * Caps the memory of merging one tensor: a tensor whose working set — its decoded inputs and its
     * result in float32, `(N + 2) × 4` bytes per entry with a base and N models — exceeds this many bytes
     * is read, merged and written in blocks of rows that fit, when the method allows it (else merged
     * whole, with a note on `log`). The output is the same bytes. A cap below one row of such a tensor
     * is an `OptionError`. Default: no cap.
     */
    readonly maxBlockBytes?: number;
    /** Write only this part of the output into `<outDir>.parts/` (see {@link finalizeCheckpointMerge}). */
    readonly part?: { readonly index: number; readonly count: number };
  } = {},
): Promise<{ files: string[]; seconds: number; bytesRead: number }> {
  const start = performance.now();
  minWorkerMs(options.minWorkerMs); // a bad value: an OptionError before anything is written
  const side = await planOutputFiles(plan);
  const inputs = [...side.inputs, ...(options.inputs ?? [])];
  const metadata = { format: "pt", merged_by: "moekit", merge_method: plan.method };
  if (options.part) {
    return await writeMergePart(plan, outDir, options.part, {
      ...options,
      inputs,
      sideFiles: side.files,
      metadata,
    });
  }
  let done = 0;
  const stream = mergeStream(plan, plan.tensors, options);
  try {
    const files = await writeCheckpoint(outDir, plan.tensors, (name) => stream.take(name), {
      shardBytes: options.shardBytes,
      overwrite: options.overwrite,
      inputs,
      files: side.files,
      log: options.log,
      metadata,
      onTensor: (name) => {
        stream.written(name);
        done++;
        options.onProgress?.({
          done,
          total: plan.tensors.length,
          bytesRead: stream.bytesRead,
          bytesTotal: plan.inputBytes,
          seconds: (performance.now() - start) / 1000,
        });
      },
    });
    return { files, seconds: (performance.now() - start) / 1000, bytesRead: stream.bytesRead };
  } finally {
    stream.close();
  }
}
