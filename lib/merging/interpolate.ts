/**
 * The interpolating methods: `linear` (model soups), `slerp`, `nuslerp` and `model_stock`, each a
 * registry entry with its own parameters and rules.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import type { Tensor } from "../io/tensor.ts";
import type { MergeMethod, MergeVariant, MethodInput } from "./methods.ts";
import { PARAMS, type ParamSpec, semanticsParam, workRounder } from "./params.ts";
import { allF32, KCHUNK, KMAX_MODELS, mergeKernel } from "./kernel_run.ts";

const MERGEKIT: readonly MergeVariant[] = [{ name: "mergekit", reproduces: "mergekit" }];

function entry(
  e: Omit<MergeMethod, "variants" | "parameters" | "check" | "blockwise"> & {
    readonly params: readonly ParamSpec[];
    readonly blockwise?: MergeMethod["blockwise"];
  },
): MergeMethod {
  return {
    name: e.name,
    paper: e.paper,
    summary: e.summary,
    base: e.base,
    models: e.models,
    blockwise: e.blockwise ?? false,
    parameters: [...e.params, semanticsParam(["mergekit"])],
    variants: MERGEKIT,
    check() {},
    run: e.run,
  };
}

type Floats = Float32Array | Float64Array;

/**
 * Continues the three float64 sums of SLERP (‖v0‖², ‖v1‖², v0·v1) over `v0`, `v1` from `acc`, each in
 * index order: summing a tensor block after block (in index order) gives the whole tensor's sums.
 */
function slerpSums(v0: Floats, v1: Floats, acc: [number, number, number]): [number, number, number] {
  const K = mergeKernel();
  if (K && allF32(v0, v1)) {
    // on the kernel: the same float64 operations in the same order as the loop below
    K.setSums(...acc);
    for (let start = 0; start < v0.length; start += KCHUNK) {
      const len = Math.min(KCHUNK, v0.length - start);
      K.k.dot3(
        K.ACC,
        K.input(v0 as Float32Array, start, len, 0),
        K.input(v1 as Float32Array, start, len, 1),
        len,
      );
    }
    const [s0, s1, s2] = K.sums(3);
    return [s0, s1, s2];
  }
  let [s0, s1, s2] = acc;
  for (let i = 0; i < v0.length; i++) {
    const x = v0[i], y = v1[i];
    s0 += x * x;
    s1 += y * y;
    s2 += x * y;
  }
  return [s0, s1, s2];
}

/** mergekit slerp's coefficients (α of v0, β of v1) from the sums of {@link slerpSums}. */
function slerpCoefficients(
  [s0, s1, dt]: readonly number[],
  t: number,
  clampNorm: number,
  lerpIf: (c: number, s: number) => boolean,
): [number, number] {
  const n0 = Math.sqrt(s0), n1 = Math.sqrt(s1);
  const d0 = clampNorm > 0 ? Math.max(n0, clampNorm) : n0 > 1e-8 ? n0 : 1;
  const d1 = clampNorm > 0 ? Math.max(n1, clampNorm) : n1 > 1e-8 ? n1 : 1;
  const cos = Math.min(1, Math.max(-1, dt / (d0 * d1)));
  const theta = Math.acos(cos), s = Math.sin(theta);
  const lerp = lerpIf(cos, s);
  return [lerp ? 1 - t : Math.sin((1 - t) * theta) / s, lerp ? t : Math.sin(t * theta) / s];
}

/** `out = α·v0 + β·v1`, entry by entry in float64 (rounded once into a float32 `out`). */
function lerpInto(v0: Floats, v1: Floats, a: number, b: number, out: Floats): Floats {
  const K = mergeKernel();
  if (K && allF32(v0, v1)) {
    const f32 = out instanceof Float32Array ? 1 : 0;
    for (let start = 0; start < out.length; start += KCHUNK) {
      const len = Math.min(KCHUNK, out.length - start);
      const x = K.input(v0 as Float32Array, start, len, 0), y = K.input(v1 as Float32Array, start, len, 1);
      K.k.lerp2(K.outPtr(out, start), x, y, a, b, len, f32);
      K.flushOut(out, start, len);
    }
    return out;
  }
  for (let i = 0; i < out.length; i++) out[i] = a * v0[i] + b * v1[i];
  return out;
}

/** mergekit slerp: angle between the normalised vectors, interpolation of the unnormalised ones. */
function slerpVectors(
  v0: Floats,
  v1: Floats,
  t: number,
  clampNorm: number,
  lerpIf: (c: number, s: number) => boolean,
  out: Floats = new Float64Array(v0.length),
): Floats {
  const [a, b] = slerpCoefficients(slerpSums(v0, v1, [0, 0, 0]), t, clampNorm, lerpIf);
  return lerpInto(v0, v1, a, b, out);
}

/** SLERP's rule for falling back to a linear interpolation: nearly parallel vectors. */
const slerpLerpIf = (c: number) => Math.abs(c) > 0.9995;

/**
 * The block planner of `slerp` (`mergeBlockPlanner`): one read pass over the blocks in index order sums
 * ‖base‖², ‖model‖² and base·model exactly as the whole-tensor merge does; every block's plan then
 * carries the interpolation's two coefficients (`baseScale` of the base, `scale` of the model).
 */
export function slerpBlockPlanner(t: number, numel: number): {
  readonly passes: number;
  add(pass: number, offset: number, base: Floats, model: Floats): void;
  plans(offset: number): { scale: number; zero: boolean; baseScale: number }[];
} {
  let acc: [number, number, number] = [0, 0, 0], next = 0;
  const offsets = new Set<number>();
  let coef: [number, number] | undefined;
  return {
    passes: 1,
    add(pass, offset, base, model) {
      if (pass !== 0) throw new MoekitError(`slerp's block planner has one pass, not pass ${pass}`);
      if (offset !== next || base.length !== model.length) {
        throw new MoekitError(
          `slerp's block planner takes the blocks in index order: expected a block at entry ${next}, got ${offset} (${base.length} base and ${model.length} model entries)`,
        );
      }
      acc = slerpSums(base, model, acc);
      offsets.add(offset);
      next += base.length;
      coef = undefined;
    },
    plans(offset) {
      if (next !== numel || !offsets.has(offset)) {
        throw new MoekitError(
          `slerp's block planner: no block at entry ${offset} after a pass over all ${numel} entries (fed ${next})`,
        );
      }
      coef ??= slerpCoefficients(acc, t, 0, slerpLerpIf);
      return [{ scale: coef[1], zero: false, baseScale: coef[0] }];
    },
  };
}

/** `linear`: Σ wᵢXᵢ, divided by Σ wᵢ when normalize (default); no base. */
export const linearMethod: MergeMethod = entry({
  name: "linear",
  paper: "arXiv 2203.05482",
  summary: "weighted average of the models (no base)",
  base: "none",
  models: { min: 1 },
  blockwise: "elementwise",
  params: [PARAMS.weight, { ...PARAMS.normalize, default: true }, PARAMS.work_dtype],
  run(input: MethodInput): Tensor {
    const R = workRounder(input.params.workDtype), n = input.models[0].data.length;
    const first = input.models[0];
    // a float32 result may go into the first model's buffer: each chunk is summed before it is written
    const out = input.output === "f32"
      ? (first.owned && first.data instanceof Float32Array ? first.data : new Float32Array(n))
      : new Float64Array(n);
    const w = Float64Array.from(input.models, (m) => (R ? R(m.params.weight!) : m.params.weight!));
    let sum = 0;
    for (const x of w) sum += x;
    const normalize = input.params.normalize ?? true;
    if (normalize && Math.abs(sum) < 1e-8) {
      throw new MoekitError(
        `linear with normalize divides by Σ weight, which is ${sum}${
          input.name ? ` (tensor ${input.name})` : ""
        }; set normalize: false`,
      );
    }
    const s = R ? R(sum) : sum;
    const models = input.models.map((m) => m.data), K = R ? null : mergeKernel();
    if (K && w.length <= KMAX_MODELS && allF32(...models)) {
      // the SIMD kernel: the same float64 sums in model order, a chunk at a time
      K.setWeights(w);
      for (let start = 0; start < n; start += KCHUNK) {
        const len = Math.min(KCHUNK, n - start);
        models.forEach((x, m) => K.setPtr(m, K.input(x as Float32Array, start, len, m + 1)));
        K.k.lin(
          K.PTRS,
          K.WS,
          w.length,
          K.outPtr(out, start),
          len,
          s,
          normalize ? 1 : 0,
          out instanceof Float32Array ? 1 : 0,
        );
        K.flushOut(out, start, len);
      }
      return { shape: input.shape, data: out };
    }
    const acc = new Float64Array(Math.min(n, 4096));
    // a chunk at a time: Σ wᵢxᵢ accumulates in float64 in model order, then one division and one store
    for (let start = 0; start < n; start += acc.length) {
      const len = Math.min(acc.length, n - start);
      acc.fill(0, 0, len);
      for (let m = 0; m < w.length; m++) {
        const x = input.models[m].data, wm = w[m];
        if (R) { for (let j = 0; j < len; j++) acc[j] += R(wm * x[start + j]); }
        else for (let j = 0; j < len; j++) acc[j] += wm * x[start + j];
      }
      for (let j = 0; j < len; j++) {
        let v = R ? R(acc[j]) : acc[j];
        if (normalize) v = R ? R(v / s) : v / s;
        out[start + j] = v;
      }
    }
    return { shape: input.shape, data: out };
  },
});

/** `slerp`: spherical interpolation between the base (t = 0) and one model (t = 1). */
export const slerpMethod: MergeMethod = entry({
  name: "slerp",
  paper: "Shoemake 1985",
  summary: "spherical interpolation between the base (t = 0) and one model (t = 1)",
  base: "required",
  models: { min: 1, max: 1 },
  // a block needs the coefficients from a pass over the whole tensor (slerpBlockPlanner)
  blockwise: "cuts",
  params: [PARAMS.t],
  run(input: MethodInput): Tensor {
    // straight from the inputs (float64 arithmetic per entry; no copies), into a float32 result if asked
    const B = input.base!, n = B.length;
    // a float32 result may go into the base's buffer: each entry (each chunk) is read before it is written
    const out = input.output === "f32"
      ? (input.baseOwned && B instanceof Float32Array ? B : new Float32Array(n))
      : new Float64Array(n);
    const block = input.block, plan = block?.plans?.[0];
    if (block) {
      if (plan?.baseScale === undefined || block.plans!.length !== 1) {
        throw new OptionError(
          "block.plans",
          block.plans ? `${block.plans.length} plans` : undefined,
          `slerp merges a block with its planner's plan for it (mergeBlockPlanner, one plan with baseScale)${
            input.name ? ` (tensor ${input.name})` : ""
          }`,
        );
      }
      return { shape: input.shape, data: lerpInto(B, input.models[0].data, plan.baseScale, plan.scale, out) };
    }
    const data = slerpVectors(B, input.models[0].data, input.params.t!, 0, slerpLerpIf, out);
    return { shape: input.shape, data };
  },
});

/**
 * `nuslerp`: t = w1/(w0+w1); slerps the two models (or, with a base, their task vectors and adds the
 * base), over the whole tensor (`nuslerp_flatten`, default), per row, or per column (`nuslerp_row_wise`).
 */
export const nuslerpMethod: MergeMethod = entry({
  name: "nuslerp",
  paper: "mergekit",
  summary: "slerp of two models (or of their task vectors) with t = w1/(w0+w1)",
  base: "optional",
  models: { min: 2, max: 2 },
  params: [PARAMS.weight, PARAMS.nuslerp_flatten, PARAMS.nuslerp_row_wise],
  run(input: MethodInput): Tensor {
    const [a, b] = input.models, B = input.base, n = a.data.length, shape = input.shape;
    const w0 = a.params.weight!, w1 = b.params.weight!;
    const t = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
    const x0 = Float64Array.from(a.data, (v, i) => (B ? v - B[i] : v));
    const x1 = Float64Array.from(b.data, (v, i) => (B ? v - B[i] : v)), res = new Float64Array(n);
    const lerpIf = (_c: number, s: number) => Math.abs(s) < 1e-8;
    const flatten = input.params.nuslerp_flatten ?? true, rowWise = input.params.nuslerp_row_wise ?? false;
    if (flatten || shape.length <= 1) slerpVectors(x0, x1, t, 1e-7, lerpIf, res);
    else if (!rowWise) {
      const c = shape[shape.length - 1]; // vectors along the last dimension: one angle per row
      for (let r = 0; r * c < n; r++) {
        const lo = r * c, hi = lo + c;
        slerpVectors(x0.subarray(lo, hi), x1.subarray(lo, hi), t, 1e-7, lerpIf, res.subarray(lo, hi));
      }
    } else {
      const len = shape[0], stride = n / len; // vectors along the first dimension (a matrix's columns)
      const f0 = new Float64Array(len), f1 = new Float64Array(len), fo = new Float64Array(len);
      for (let j = 0; j < stride; j++) {
        for (let k = 0; k < len; k++) {
          f0[k] = x0[j + k * stride];
          f1[k] = x1[j + k * stride];
        }
        slerpVectors(f0, f1, t, 1e-7, lerpIf, fo);
        for (let k = 0; k < len; k++) res[j + k * stride] = fo[k];
      }
    }
    if (B) { for (let i = 0; i < n; i++) res[i] += B[i]; }
    return { shape, data: res };
  },
});

/** `model_stock`: t from the mean pairwise cosine of the task vectors; t·mean(models) + (1−t)·base. */
export const modelStockMethod: MergeMethod = entry({
  name: "model_stock",
  paper: "arXiv 2403.19522",
  summary: "interpolates the models' mean toward the base by the task vectors' mean cosine",
  base: "required",
  models: { min: 2 },
  params: [PARAMS.filter_wise],
  run(input: MethodInput): Tensor {
    const B = input.base!, models = input.models, N = models.length;
    // task-vector products straight from the inputs (x − base recomputed in float64; no copies)
    const n = B.length,
      off = (x: Floats, y: Floats) => {
        let s = 0;
        for (let k = 0; k < n; k++) s += (x[k] - B[k]) * (y[k] - B[k]);
        return s;
      };
    const norms = models.map((m) => Math.sqrt(off(m.data, m.data)));
    let cos = 0, pairs = 0;
    for (let i = 0; i < N; i++) {
      for (let j = i + 1; j < N; j++) {
        cos += Math.min(
          1,
          Math.max(-1, off(models[i].data, models[j].data) / Math.max(norms[i] * norms[j], 1e-6)),
        );
        pairs++;
      }
    }
    cos /= pairs;
    const t = (N * cos) / (1 + (N - 1) * cos);
    const out = input.output === "f32" ? new Float32Array(n) : new Float64Array(n);
    for (let i = 0; i < out.length; i++) {
      let mean = 0;
      for (const m of models) mean += m.data[i] / N;
      out[i] = t * mean + (1 - t) * B[i];
    }
    return { shape: input.shape, data: out };
  },
});
