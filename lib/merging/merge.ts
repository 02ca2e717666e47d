/**
 * `merge`: one output tensor from a base and N models by any registered method (merging.md §2, §5).
 * The generalized task-arithmetic engine works in float64: task vectors, sparsification, weights
 * applied before the sign election, the divisor rules, `normalize`, `lambda`, then `B + mixed`.
 * @module
 */

import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { type MergeMethodConfig, mergeMethods } from "./methods.ts";
import { sparsify } from "./sparsify.ts";
import { asTensor, sameShape, type Tensor, type TensorInput } from "./tensor.ts";

/**
 * Per-model parameters (mergekit names).
 *
 * @example
 * ```ts
 * import { type ModelParams } from "@moekit/moekit";
 * const p: ModelParams = { weight: 1, density: 0.5 };
 * console.log(p.density); // 0.5
 * ```
 */
export interface ModelParams {
  /** Multiplies the (sparsified) task vector before the election. Required by task-arithmetic methods. */
  readonly weight?: number;
  /** Fraction kept. Default 1. */
  readonly density?: number;
  /** Breadcrumbs top cut. Default 0.01. */
  readonly gamma?: number;
  /** DELLA range half-width. Default 0.15. */
  readonly epsilon?: number;
  /** DARE/DELLA keep mask for this model and tensor (1 = keep). */
  readonly mask?: Uint8Array;
}

/**
 * Global parameters (mergekit names, plus moekit's variants).
 *
 * @example
 * ```ts
 * import { type MergeParams } from "@moekit/moekit";
 * const p: MergeParams = { normalize: false, lambda: 0.5 };
 * console.log(p.lambda); // 0.5
 * ```
 */
export interface MergeParams {
  /** Divide by the divisor. Default: per method. */
  readonly normalize?: boolean;
  /** Rescale sparsified vectors. Default: per method. */
  readonly rescale?: boolean;
  /** Scale mixed after normalisation. Default 1. */
  readonly lambda?: number;
  /** Sign election: `"sum"` or `"count"`. Default: per method. */
  readonly consensus?: "sum" | "count";
  /** `"l1"` (default), `"inverse_density"` (DARE before 2025-02, PEFT) or `"none"`. */
  readonly rescaleNorm?: "l1" | "inverse_density" | "none";
  /** Reproduce mergekit's Breadcrumbs `nTop = 0` zeroing. Default false. */
  readonly mergekitCompat?: boolean;
  /**
   * `"mergekit"` (default); `"peft"` (unweighted election, count divisor, k = 0 → zeros); `"paper"` (the
   * TIES / Breadcrumbs paper code, per tensor: PEFT's election and divisor, zero totals take the majority
   * sign, magnitude keeps trunc(d·n)+1 entries, Breadcrumbs cuts per row along the last dimension).
   */
  readonly semantics?: "mergekit" | "peft" | "paper";
  /** slerp interpolation factor (0 = base). */
  readonly t?: number;
  /** Memory-only in mergekit; accepted and ignored. */
  readonly int8_mask?: boolean;
}

/**
 * Options of {@link merge}.
 *
 * @example
 * ```ts
 * import { type MergeOptions } from "@moekit/moekit";
 * const o: MergeOptions = { method: "ties", base: { shape: [2], data: new Float64Array(2) }, models: [] };
 * console.log(o.method); // ties
 * ```
 */
export interface MergeOptions {
  /** A key of {@link mergeMethods}. */
  readonly method: string;
  /** The base model's tensor (required except for `linear`). */
  readonly base?: TensorInput;
  /** The models in config order. */
  readonly models: readonly { readonly tensor: TensorInput; readonly params?: ModelParams }[];
  /** Global parameters. */
  readonly params?: MergeParams;
  /** Tensor name: seeds DARE/DELLA streams, enables the embedding sub-matrix rule, names errors. */
  readonly name?: string;
  /** Seed of DARE/DELLA draws. Default 0. */
  readonly seed?: number;
  /** Receives warnings (a skipped model). Default `console.warn`. */
  readonly onWarning?: (message: string) => void;
  /**
   * The models' Float64Array data may be overwritten (it becomes the task vector in place), saving a
   * copy per model; streaming checkpoint merges use this. Default false.
   */
  readonly consumeInputs?: boolean;
}

const EMBEDDING = /embed_tokens|lm_head|wte|word_embeddings/;

/** The model tensors usable against the base shape (embeddings: leading sub-matrix; others skipped). */
function usable(o: MergeOptions, base: Tensor): { t: Float64Array; params: ModelParams; index: number }[] {
  const out: { t: Float64Array; params: ModelParams; index: number }[] = [];
  o.models.forEach((m, index) => {
    const t = asTensor(m.tensor, `model ${index}${o.name ? ` ${o.name}` : ""}`);
    if (sameShape(t.shape, base.shape)) {
      out.push({
        t: o.consumeInputs && t.data instanceof Float64Array ? t.data : new Float64Array(t.data),
        params: m.params ?? {},
        index,
      });
    } else if (
      o.name && EMBEDDING.test(o.name) && t.shape.length === 2 && base.shape.length === 2 &&
      t.shape[0] >= base.shape[0] && t.shape[1] >= base.shape[1]
    ) {
      const [r, c] = base.shape, cols = t.shape[1], sub = new Float64Array(r * c);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) sub[i * c + j] = t.data[i * cols + j];
      out.push({ t: sub, params: m.params ?? {}, index });
    } else {
      (o.onWarning ?? console.warn)(
        `merge ${o.name ?? "tensor"}: model ${index} has shape [${t.shape.join(",")}], the base [${
          base.shape.join(",")
        }]; skipped`,
      );
    }
  });
  return out;
}

/**
 * Merges one tensor.
 *
 * @example
 * ```ts
 * import { merge } from "@moekit/moekit";
 * const base = { shape: [4], data: new Float64Array(4) };
 * const a = { shape: [4], data: new Float64Array([1, -2, .5, 0]) };
 * const b = { shape: [4], data: new Float64Array([-.5, -1, 1, 2]) };
 * const out = merge({ method: "ties", base, models: [{ tensor: a, params: { weight: 1 } }, { tensor: b, params: { weight: 1 } }] });
 * console.log(Array.from(out.data)); // [1, -1.5, 0.75, 2] (merging.md example 3)
 * ```
 */
export function merge(options: MergeOptions): Tensor {
  const config: MergeMethodConfig | undefined = mergeMethods[options.method];
  if (!config) {
    throw new OptionError(
      "merge_method",
      options.method,
      `use one of ${Object.keys(mergeMethods).join(", ")}`,
    );
  }
  if (config.kind === "linear") return linearMerge(options);
  if (!options.base) {
    throw new MoekitError(
      `${options.method} needs a base tensor${options.name ? ` for ${options.name}` : ""}`,
    );
  }
  const base = asTensor(options.base, "base");
  const models = usable(options, base);
  if (config.kind === "slerp") return slerpMerge(base, models, options.params?.t);
  if (config.kind === "nuslerp") return nuslerpMerge(base, models);
  if (config.kind === "model_stock") return modelStockMerge(base, models);
  if (config.kind !== "gta") throw new OptionError("merge_method", options.method, "unknown method kind");
  return gtaMerge(config, base, models, options);
}

function gtaMerge(
  config: Extract<MergeMethodConfig, { kind: "gta" }>,
  base: Tensor,
  models: { t: Float64Array; params: ModelParams; index: number }[],
  o: MergeOptions,
): Tensor {
  const p = o.params ?? {}, n = base.data.length, B = base.data;
  const normalize = p.normalize ?? config.normalize, rescale = p.rescale ?? config.rescale;
  const lambda = p.lambda ?? 1,
    consensus = config.consensus === null ? null : p.consensus ?? config.consensus;
  const peft = p.semantics === "peft" || p.semantics === "paper", paper = p.semantics === "paper";
  if (models.length === 0) return { shape: base.shape, data: new Float64Array(B) };
  const deltas = models.map(({ t, params, index }) => {
    if (params.weight === undefined) {
      throw new OptionError(
        `models[${index}].weight`,
        undefined,
        `${o.method} needs a weight for every model`,
      );
    }
    for (let i = 0; i < n; i++) t[i] -= B[i];
    if (!config.sparsify) return t;
    return sparsify({ shape: base.shape, data: t }, {
      method: config.sparsify,
      density: params.density ?? 1,
      gamma: params.gamma,
      epsilon: params.epsilon,
      mask: params.mask,
      rescale,
      rescaleNorm: p.rescaleNorm,
      mergekitCompat: p.mergekitCompat,
      semantics: p.semantics,
      seed: o.seed,
      name: o.name,
      modelIndex: index,
      inPlace: true,
    }).data as Float64Array;
  });
  const w = models.map((m) => m.params.weight!);
  const mixed = new Float64Array(n);
  if (consensus) {
    // PEFT and the paper code elect on the unweighted pruned tensors; mergekit on the weighted ones.
    // Totals are recomputed where needed rather than stored (one tensor less in memory).
    const total = (i: number) => {
      let t = 0;
      for (let m = 0; m < deltas.length; m++) {
        const v = peft ? deltas[m][i] : w[m] * deltas[m][i];
        t += consensus === "sum" ? v : Math.sign(v);
      }
      return t;
    };
    let majority = 0;
    if (paper) { for (let i = 0; i < n; i++) majority += Math.sign(total(i)); }
    const zeroElects = paper && majority < 0 ? -1 : 1; // the paper: a zero total takes the majority sign
    for (let i = 0; i < n; i++) {
      const t = total(i), elected = t > 0 ? 1 : t < 0 ? -1 : zeroElects;
      let mix = 0, div = 0;
      for (let m = 0; m < deltas.length; m++) {
        const wd = w[m] * deltas[m][i];
        if (Math.sign(peft ? deltas[m][i] : wd) === elected) {
          mix += wd;
          div += peft ? 1 : w[m];
        }
      }
      mixed[i] = mix;
      if (peft || normalize) mixed[i] /= div === 0 ? 1 : div;
    }
  } else {
    let div = 0;
    for (let m = 0; m < deltas.length; m++) {
      div += w[m];
      for (let i = 0; i < n; i++) mixed[i] += w[m] * deltas[m][i];
    }
    if (normalize) {
      const d = Math.abs(div) < 1e-8 ? 1 : div;
      for (let i = 0; i < n; i++) mixed[i] /= d;
    }
  }
  for (let i = 0; i < n; i++) mixed[i] = B[i] + lambda * mixed[i]; // the output, in place
  return { shape: base.shape, data: mixed };
}

function linearMerge(o: MergeOptions): Tensor {
  if (o.models.length === 0) throw new MoekitError("linear needs at least one model");
  const first = asTensor(o.models[0].tensor, "model 0"), n = first.data.length;
  const out = new Float64Array(n);
  let sum = 0;
  o.models.forEach((m, i) => {
    const t = asTensor(m.tensor, `model ${i}`);
    if (!sameShape(t.shape, first.shape)) {
      throw new ShapeError(`model ${i}${o.name ? ` ${o.name}` : ""}`, first.shape, t.shape);
    }
    const w = m.params?.weight;
    if (w === undefined) {
      throw new OptionError(`models[${i}].weight`, undefined, "linear needs a weight for every model");
    }
    sum += w;
    for (let j = 0; j < n; j++) out[j] += w * t.data[j];
  });
  if (o.params?.normalize ?? true) {
    if (Math.abs(sum) < 1e-8) {
      throw new OptionError(
        "weight",
        sum,
        "linear with normalize divides by Σ weight, which is 0; set normalize: false",
      );
    }
    for (let j = 0; j < n; j++) out[j] /= sum;
  }
  return { shape: first.shape, data: out };
}

function norm(v: Float64Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** mergekit slerp: angle between the normalised vectors, interpolation of the unnormalised ones. */
function slerpVectors(
  v0: Float64Array,
  v1: Float64Array,
  t: number,
  clampNorm: number,
  lerpIf: (c: number, s: number) => boolean,
): Float64Array {
  const n0 = norm(v0), n1 = norm(v1);
  const d0 = clampNorm > 0 ? Math.max(n0, clampNorm) : n0 > 1e-8 ? n0 : 1;
  const d1 = clampNorm > 0 ? Math.max(n1, clampNorm) : n1 > 1e-8 ? n1 : 1;
  const cos = Math.min(1, Math.max(-1, dot(v0, v1) / (d0 * d1)));
  const theta = Math.acos(cos), s = Math.sin(theta), out = new Float64Array(v0.length);
  if (lerpIf(cos, s)) {
    for (let i = 0; i < out.length; i++) out[i] = (1 - t) * v0[i] + t * v1[i];
    return out;
  }
  const a = Math.sin((1 - t) * theta) / s, b = Math.sin(t * theta) / s;
  for (let i = 0; i < out.length; i++) out[i] = a * v0[i] + b * v1[i];
  return out;
}

function slerpMerge(base: Tensor, models: { t: Float64Array }[], t: number | undefined): Tensor {
  if (models.length !== 1) {
    throw new MoekitError(
      `slerp merges exactly 2 models (the base and one other), got base + ${models.length}`,
    );
  }
  if (t === undefined || !(t >= 0 && t <= 1)) {
    throw new OptionError("t", t, "slerp needs t in [0, 1] (0 = base)");
  }
  const data = slerpVectors(new Float64Array(base.data), models[0].t, t, 0, (c) => Math.abs(c) > 0.9995);
  return { shape: base.shape, data };
}

function nuslerpMerge(base: Tensor, models: { t: Float64Array; params: ModelParams }[]): Tensor {
  if (models.length !== 2) {
    throw new MoekitError(`nuslerp merges exactly 2 models (plus an optional base), got ${models.length}`);
  }
  const [w0, w1] = models.map((m) => m.params.weight ?? 1);
  const t = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const v0 = models[0].t.map((v, i) => v - base.data[i]), v1 = models[1].t.map((v, i) => v - base.data[i]);
  const res = slerpVectors(v0, v1, t, 1e-7, (_c, s) => Math.abs(s) < 1e-8);
  for (let i = 0; i < res.length; i++) res[i] += base.data[i];
  return { shape: base.shape, data: res };
}

function modelStockMerge(base: Tensor, models: { t: Float64Array }[]): Tensor {
  const N = models.length;
  if (N < 2) throw new MoekitError(`model_stock needs at least 2 models besides the base, got ${N}`);
  const offsets = models.map((m) => m.t.map((v, i) => v - base.data[i]));
  let cos = 0, pairs = 0;
  for (let i = 0; i < N; i++) {
    for (let j = i + 1; j < N; j++) {
      cos += Math.min(
        1,
        Math.max(-1, dot(offsets[i], offsets[j]) / Math.max(norm(offsets[i]) * norm(offsets[j]), 1e-6)),
      );
      pairs++;
    }
  }
  cos /= pairs;
  const t = (N * cos) / (1 + (N - 1) * cos), out = new Float64Array(base.data.length);
  for (let i = 0; i < out.length; i++) {
    let mean = 0;
    for (const m of models) mean += m.t[i] / N;
    out[i] = t * mean + (1 - t) * base.data[i];
  }
  return { shape: base.shape, data: out };
}

/**
 * The task vector `X − base`.
 *
 * @example
 * ```ts
 * import { matrix, taskVector } from "@moekit/moekit";
 * const tv = taskVector(matrix.fromArrays([[3, 1]]), matrix.fromArrays([[1, 1]]));
 * console.log(Array.from(tv.data)); // [2, 0]
 * ```
 */
export function taskVector(model: TensorInput, base: TensorInput): Tensor {
  const x = asTensor(model, "model"), b = asTensor(base, "base");
  if (!sameShape(x.shape, b.shape)) {
    throw new ShapeError("model", b.shape, x.shape, "a task vector needs the base's shape");
  }
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] - b.data[i];
  return { shape: x.shape, data: out };
}
