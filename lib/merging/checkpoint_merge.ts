/**
 * Merging whole checkpoints from a mergekit config: a plan that opens every model, resolves and
 * validates every output tensor's sources, shapes and parameters before any tensor data is read, then a
 * run that merges one tensor at a time and streams the result into sharded safetensors.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { type Checkpoint, openCheckpoint, writeCheckpoint } from "../io/checkpoint.ts";
import { type Dtype, FLOAT_DTYPES } from "../io/dtype.ts";
import type { TensorInfo } from "../io/safetensors.ts";
import {
  evaluateParam,
  GLOBAL_PARAMS,
  layerIndex,
  type MergeConfig,
  MODEL_PARAMS,
  type ParamValue,
} from "./config.ts";
import { merge, type MergeParams, type ModelParams } from "./merge.ts";
import { mergeMethods } from "./methods.ts";

/**
 * One output tensor of a plan.
 *
 * @example
 * ```ts
 * import { type PlannedTensor } from "@moekit/moekit";
 * const describe = (p: PlannedTensor) => `${p.name} ← ${p.sources.length} models`;
 * console.log(typeof describe); // function
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
 * import { type MergePlan } from "@moekit/moekit";
 * const size = (p: MergePlan) => p.tensors.length;
 * console.log(typeof size); // function
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

function dtypeOf(name: string | undefined, fallback: Dtype): Dtype {
  if (name === undefined) return fallback;
  const d = DTYPE_NAMES[name.toLowerCase()];
  if (!d) throw new OptionError("dtype", name, `use one of ${Object.keys(DTYPE_NAMES).join(", ")}`);
  return d;
}

const EMBEDDING = /embed_tokens|lm_head|wte|word_embeddings/;

/**
 * Builds and validates a plan. `resolve` maps a config model name to a folder (default: relative to
 * `configDir`, then as given). Every error — a missing file, a tensor missing in one model, a shape
 * mismatch, a bad parameter — is raised here, naming the model and the tensor, before any tensor data
 * is read.
 *
 * @example
 * ```ts
 * import { parseMergeConfig, planCheckpointMerge } from "@moekit/moekit";
 * const config = parseMergeConfig("merge_method: ties\nbase_model: /nowhere/base\nmodels:\n  - model: /nowhere/a\n");
 * await planCheckpointMerge(config).catch((e) => console.log(e.message)); // checkpoint /nowhere/base does not exist
 * ```
 */
export async function planCheckpointMerge(
  config: MergeConfig,
  options: { readonly configDir?: string } = {},
): Promise<MergePlan> {
  const methodConfig = mergeMethods[config.method];
  const resolve = async (m: string) => {
    if (options.configDir && !m.startsWith("/")) {
      const rel = `${options.configDir}/${m}`;
      if (await Deno.stat(rel).then(() => true, () => false)) return rel;
    }
    return m;
  };
  const checkpoints = new Map<string, Checkpoint>();
  const open = async (m: string) => {
    if (!checkpoints.has(m)) checkpoints.set(m, await openCheckpoint(await resolve(m)));
    return checkpoints.get(m)!;
  };
  try {
    const tensors = await buildEntries(config, methodConfig.kind, open);
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
      close: () => checkpoints.forEach((c) => c.close()),
    };
  } catch (e) {
    checkpoints.forEach((c) => c.close());
    throw e;
  }
}

async function buildEntries(
  config: MergeConfig,
  kind: string,
  open: (m: string) => Promise<Checkpoint>,
): Promise<PlannedTensor[]> {
  const needsBase = kind !== "linear";
  if (needsBase && !config.baseModel) throw new MoekitError(`config: ${config.method} needs base_model`);
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
    for (const [i, s] of srcs.entries()) {
      const si = await info(s.model, s.tensor);
      const same = si.shape.length === baseInfo.shape.length &&
        si.shape.every((d, j) => d === baseInfo.shape[j]);
      const embedOk = EMBEDDING.test(name) && si.shape.length === 2 && baseInfo.shape.length === 2 &&
        si.shape[0] >= baseInfo.shape[0] && si.shape[1] >= baseInfo.shape[1];
      if (!same && !embedOk) {
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
        params: modelParamsFor(s.chain, t, name, i, kind, config.method),
      });
    }
    const params = globalParamsFor(globalChain, t, name);
    if (kind === "slerp" && !passthrough) {
      if (sources.length !== 1) {
        throw new MoekitError(
          `slerp needs exactly one model besides the base for ${name}, got ${sources.length}`,
        );
      }
      if (params.t === undefined || !(params.t >= 0 && params.t <= 1)) {
        throw new OptionError("t", params.t, `slerp needs t in [0, 1] (tensor ${name})`);
      }
    }
    out.push({
      name,
      shape: baseInfo.shape,
      dtype: passthrough ? baseInfo.dtype : dtypeOf(config.outDtype ?? config.dtype, baseInfo.dtype),
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
      const t = idx === undefined ? 0 : L > 1 ? idx / (L - 1) : 1;
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
  // slices: non-layer tensors from the reference model, then each slice's layers renumbered in order
  const first = config.slices[0];
  for (const name of ref.names.filter((n) => layerIndex(n) === undefined)) {
    const srcs = first.sources.filter((s) => s.model !== config.baseModel);
    await add(
      name,
      name,
      0,
      srcs.map((s) => ({
        model: s.model,
        tensor: name, // outside the layer stack: the first slice's sources and parameters, t = 0
        chain: [s.parameters, first.parameters, modelParams.get(s.model) ?? {}, config.parameters],
      })),
      [
        config.parameters,
      ],
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

function num(v: number | string | boolean | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new OptionError(what, v, "must be a number");
  return v;
}

function modelParamsFor(
  chain: Record<string, ParamValue>[],
  t: number,
  name: string,
  i: number,
  kind: string,
  method: string,
): ModelParams {
  const p: Record<string, number | undefined> = {};
  for (const k of MODEL_PARAMS) p[k] = num(lookup(chain, k, t, name), `${k} (model ${i}, tensor ${name})`);
  if ((kind === "gta" || kind === "linear") && p.weight === undefined) {
    throw new OptionError(
      `weight (model ${i}, tensor ${name})`,
      undefined,
      `${method} needs a weight for every model`,
    );
  }
  if (p.density !== undefined && p.density < 0) {
    throw new OptionError(`density (model ${i}, tensor ${name})`, p.density, "must be ≥ 0");
  }
  if (method.startsWith("della") && (p.density ?? 1) < 1 && (p.density ?? 1) > 0) {
    const d = p.density!, e = p.epsilon ?? 0.15;
    if (!(d - e > 0 && d + e < 1)) {
      throw new OptionError(
        `epsilon (model ${i}, tensor ${name})`,
        e,
        `needs 0 < density − epsilon and density + epsilon < 1 (density ${d})`,
      );
    }
  }
  return Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as ModelParams;
}

function globalParamsFor(chain: Record<string, ParamValue>[], t: number, name: string): MergeParams {
  const p: Record<string, unknown> = {};
  for (const k of GLOBAL_PARAMS) {
    const v = lookup(chain, k, t, name);
    if (v !== undefined) p[k === "rescale_norm" ? "rescaleNorm" : k] = v;
  }
  if (p.filter_wise) {
    throw new OptionError(
      "filter_wise",
      true,
      "moekit's model_stock merges whole tensors (filter_wise: false)",
    );
  }
  return p as MergeParams;
}

/**
 * Progress of a run.
 *
 * @example
 * ```ts
 * import { type MergeProgress } from "@moekit/moekit";
 * const pct = (p: MergeProgress) => (100 * p.done) / p.total;
 * console.log(typeof pct); // function
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
 * Runs a plan: for each output tensor, reads its inputs, merges, and streams it to `outDir` (sharded,
 * atomic: no output file gets its final name before every shard is complete).
 *
 * @example
 * ```ts
 * import { type MergePlan, runCheckpointMerge } from "@moekit/moekit";
 * const run = (plan: MergePlan, dir: string) => runCheckpointMerge(plan, dir, { shardBytes: 1e9, seed: 0 });
 * console.log(typeof run); // function
 * ```
 */
export async function runCheckpointMerge(
  plan: MergePlan,
  outDir: string,
  options: {
    readonly shardBytes?: number;
    readonly seed?: number;
    readonly onProgress?: (p: MergeProgress) => void;
  } = {},
): Promise<{ files: string[]; seconds: number; bytesRead: number }> {
  const start = performance.now(), byName = new Map(plan.tensors.map((t) => [t.name, t]));
  let done = 0, bytesRead = 0;
  const ck = (m: string) => plan.checkpoints.get(m)!;
  const files = await writeCheckpoint(outDir, plan.tensors, async (name) => {
    const e = byName.get(name)!;
    let data: ArrayLike<number> | Uint8Array;
    if (e.passthrough) {
      data = await ck(e.base?.model ?? e.sources[0].model).readBytes(e.base?.tensor ?? name);
      bytesRead += data.length;
    } else {
      const base = e.base ? await ck(e.base.model).read(e.base.tensor) : undefined;
      const models = [];
      // each model is widened to float64 right away (its float32 copy is dropped), and merge() turns that
      // array into the task vector in place: about N + 2 tensors of float64 live at once, not 2N + 2
      for (const s of e.sources) {
        const t = await ck(s.model).read(s.tensor);
        models.push({
          tensor: {
            shape: t.shape,
            data: t.data instanceof Float64Array ? t.data : new Float64Array(t.data),
          },
          params: s.params,
        });
      }
      for (const s of [...(e.base ? [e.base] : []), ...e.sources]) {
        const i = ck(s.model).info(s.tensor)!;
        bytesRead += i.end - i.begin;
      }
      data = merge({
        method: plan.method,
        base,
        models,
        params: e.params,
        name,
        seed: options.seed,
        consumeInputs: true,
      }).data;
    }
    return data;
  }, {
    shardBytes: options.shardBytes,
    metadata: { format: "pt", merged_by: "moekit", merge_method: plan.method },
    onTensor: () => {
      done++;
      options.onProgress?.({
        done,
        total: plan.tensors.length,
        bytesRead,
        bytesTotal: plan.inputBytes,
        seconds: (performance.now() - start) / 1000,
      });
    },
  });
  return { files, seconds: (performance.now() - start) / 1000, bytesRead };
}
