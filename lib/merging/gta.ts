/**
 * Generalized task arithmetic (mergekit's `GeneralizedTaskArithmeticMerge`): task vectors, optional
 * sparsification, weights applied before the sign election, the divisor rules, `normalize`, `lambda`,
 * then `base + mixed`. Every task-arithmetic method of the registry is one configuration of this engine
 * (a sparsifier, a consensus rule, default normalize/rescale, and the variants it offers).
 *
 * The kernel streams: task vectors are never materialised (each `x − base` is recomputed in float64 from
 * the inputs), sparsification is a keep mask plus one factor per model, and one fused pass does the
 * election, the disjoint sum and the output. The arithmetic is the same float64 arithmetic as a
 * step-by-step evaluation, so results are bit-identical to it.
 * @module
 */

import type { Tensor } from "../io/tensor.ts";
import type { MergeMethod, MergeVariant, MethodInput } from "./methods.ts";
import {
  declaredDefault,
  type MergeParams,
  type ModelParams,
  param,
  PARAMS,
  type ParamSpec,
  semanticsParam,
  workRounder,
} from "./params.ts";
import {
  type BlockSparsePlan,
  blockSparsePlan,
  planSparsify,
  type RescaleNorm,
  type SparsePlan,
  sparsifyBlockPlanner,
  type SparsifyMethod,
  type SparsifyOptions,
  streamMaskInto,
  streamState,
} from "./sparsify.ts";
import { OptionError } from "../core/errors.ts";
import { allF32, KCHUNK, KMAX_MODELS, type MergeKernel, mergeKernel } from "./kernel_run.ts";

/** What a GTA variant changes, declared once (the kernel reads these fields, never the variant's name). */
interface GtaVariant extends MergeVariant {
  /** The election runs on the weighted (mergekit) or the unweighted (PEFT, paper) pruned vectors. */
  readonly election: "weighted" | "unweighted";
  /** Consensus divisor: Σ weights of the agreeing models (when normalize) or their count (always). */
  readonly divisor: "weights" | "count";
  /** A zero election total elects + (mergekit, PEFT) or the sign of Σ over the tensor (paper). */
  readonly zeroTotal: "positive" | "majority";
}

const GTA_VARIANTS: Readonly<Record<MergeVariant["name"], GtaVariant>> = {
  mergekit: {
    name: "mergekit",
    reproduces: "mergekit generalized task arithmetic (weighted election, Σ weight divisor)",
    election: "weighted",
    divisor: "weights",
    zeroTotal: "positive",
  },
  peft: {
    name: "peft",
    reproduces: "PEFT merge_utils (unweighted election, count divisor, k = 0 → zeros, DARE ÷ density)",
    election: "unweighted",
    divisor: "count",
    zeroTotal: "positive",
  },
  paper: {
    name: "paper",
    reproduces: "the TIES / Breadcrumbs paper code, per tensor (zero totals take the majority sign)",
    election: "unweighted",
    divisor: "count",
    zeroTotal: "majority",
  },
};

/** Declaration of a GTA method. */
export interface GtaSpec {
  readonly name: string;
  readonly paper: string;
  readonly summary: string;
  readonly sparsify: SparsifyMethod | null;
  readonly consensus: "sum" | "count" | null;
  readonly normalize: boolean;
  readonly rescale: boolean;
  readonly variants: readonly MergeVariant["name"][];
}

/** Builds the registry entry of a GTA method from its declaration. */
export function gtaMethod(spec: GtaSpec): MergeMethod & { readonly sparsify: SparsifyMethod | null } {
  const parameters: ParamSpec[] = [PARAMS.weight];
  if (spec.sparsify) parameters.push(PARAMS.density);
  if (spec.sparsify === "magnitude_outliers") parameters.push(PARAMS.gamma);
  if (spec.sparsify === "della_magprune") parameters.push(PARAMS.epsilon);
  if (spec.sparsify === "random" || spec.sparsify === "della_magprune") parameters.push(PARAMS.mask);
  parameters.push(param(PARAMS.normalize, { default: spec.normalize }), PARAMS.lambda, PARAMS.int8_mask);
  if (spec.sparsify) {
    parameters.push(param(PARAMS.rescale, { default: spec.rescale }), PARAMS.rescale_norm);
  }
  if (spec.consensus) parameters.push(param(PARAMS.consensus, { default: spec.consensus }));
  if (spec.sparsify === "magnitude_outliers") parameters.push(PARAMS.mergekit_compat);
  parameters.push(PARAMS.work_dtype, semanticsParam(spec.variants));
  const variants = spec.variants.map((v) => GTA_VARIANTS[v]);
  const method: MergeMethod & { readonly sparsify: SparsifyMethod | null } = {
    name: spec.name,
    paper: spec.paper,
    summary: spec.summary,
    sparsify: spec.sparsify,
    base: "required",
    models: { min: 0 },
    // DELLA ranks within rows and matches norms over the whole tensor: it needs the whole tensor
    blockwise: spec.sparsify === null ? "elementwise" : spec.sparsify === "della_magprune" ? false : "cuts",
    parameters,
    variants,
    check(models, _params, label) {
      if (spec.sparsify !== "della_magprune") return;
      models.forEach((m, i) => {
        const d = m.density ?? 1,
          e = m.epsilon ?? (declaredDefault(parameters, "epsilon") as number);
        if (d > 0 && d < 1 && !(d - e > 0 && d + e < 1)) {
          throw new OptionError(
            label("epsilon", i),
            e,
            `needs 0 < density − epsilon and density + epsilon < 1 (density ${d})`,
          );
        }
      });
    },
    run: (input) => gtaRun(spec, parameters, variants, input),
  };
  GTA_SPECS.set(spec.name, { spec, parameters, variants });
  return method;
}

const GTA_SPECS = new Map<
  string,
  { spec: GtaSpec; parameters: readonly ParamSpec[]; variants: readonly GtaVariant[] }
>();

function gtaRun(
  spec: GtaSpec,
  declared: readonly ParamSpec[],
  variants: readonly GtaVariant[],
  input: MethodInput,
): Tensor {
  const p: MergeParams = input.params, B = input.base!, n = B.length, N = input.models.length;
  if (N === 0) return { shape: input.shape, data: Float64Array.from(B) };
  const v = variants.find((x) => x.name === (p.semantics ?? variants[0].name))!;
  const normalize = p.normalize ?? (declared.find((x) => x.key === "normalize")!.default as boolean);
  const rescale = p.rescale ?? spec.rescale, lambda = p.lambda ?? 1;
  const consensus = spec.consensus === null ? null : p.consensus ?? spec.consensus;
  const R = workRounder(p.workDtype);
  // task vectors: recomputed as x − sub; with a work dtype they are rounded once and stored (sub = 0)
  let xs = input.models.map((m) => m.data);
  let sub: Float32Array | Float64Array = B;
  if (R) {
    xs = input.models.map((m) => {
      const t = m.owned && m.data instanceof Float64Array ? m.data : new Float64Array(n);
      for (let i = 0; i < n; i++) t[i] = R(m.data[i] - B[i]);
      return t;
    });
    sub = new Float64Array(n);
  }
  const block = input.block;
  if (block && (R || v.zeroTotal !== "positive")) {
    throw new OptionError(
      "block",
      `a block at entry ${block.offset}`,
      `${spec.name} with ${R ? "a work dtype" : `semantics "${v.name}"`} needs the whole tensor`,
    );
  }
  const plans: SparsePlan[] = input.models.map((m, j) => {
    if (!spec.sparsify) return { mask: null, scale: 1, zero: false };
    const o = sparsifyOptions(spec, input.params, m.params, m.index, v, rescale, input.seed, input.name);
    if (!block) {
      // the chunked kernel sweeps magnitude bands itself
      return planSparsify(xs[j], sub, input.shape, o, undefined, R, !R && v.zeroTotal === "positive");
    }
    const given = block.plans?.[j];
    if (!given) {
      throw new OptionError(
        "block.plans",
        block.plans ? `${block.plans.length} plans` : undefined,
        `${spec.name} merges a block with each model's plan from the block planner (model ${j} has none)`,
      );
    }
    return blockSparsePlan(given, n, { ...o, offset: block.offset });
  });
  const w = Float64Array.from(input.models, (m) => (R ? R(m.params.weight!) : m.params.weight!));
  if (!R && v.zeroTotal === "positive") {
    // a float32 result goes into the base's buffer when it may be overwritten: each chunk of the base is
    // read (for every model's task vector) before that chunk of the output is written
    const out = input.output === "f32"
      ? (input.baseOwned && B instanceof Float32Array ? B : new Float32Array(n))
      : new Float64Array(n);
    return { shape: input.shape, data: gtaChunked(out, xs, B, plans, w, consensus, normalize, lambda, v) };
  }
  const out = new Float64Array(n), sd = new Float64Array(N);
  const masks = plans.map((q) => q.mask), scales = Float64Array.from(plans, (q) => q.scale);
  const zero = plans.map((q) => q.zero);
  /** The sparsified task vector of every model at entry i, into `sd`. */
  const load = (i: number) => {
    const s = sub[i];
    for (let m = 0; m < N; m++) {
      const mk = masks[m];
      if (zero[m] || (mk !== null && mk[i] === 0)) sd[m] = 0;
      else {
        const d = xs[m][i] - s, sc = scales[m];
        sd[m] = sc === 1 ? d : R ? R(d * sc) : d * sc;
      }
    }
  };
  const unweighted = v.election === "unweighted", countDiv = v.divisor === "count";
  if (consensus) {
    const byCount = consensus === "count";
    let zeroElects = 1;
    if (v.zeroTotal === "majority") {
      let majority = 0;
      for (let i = 0; i < n; i++) {
        load(i);
        let t = 0;
        for (let m = 0; m < N; m++) {
          const x = unweighted ? sd[m] : R ? R(w[m] * sd[m]) : w[m] * sd[m];
          t += byCount ? Math.sign(x) : x;
        }
        majority += Math.sign(t);
      }
      if (majority < 0) zeroElects = -1;
    }
    for (let i = 0; i < n; i++) {
      load(i);
      let t = 0;
      for (let m = 0; m < N; m++) {
        const x = unweighted ? sd[m] : R ? R(w[m] * sd[m]) : w[m] * sd[m];
        t += byCount ? Math.sign(x) : x;
      }
      const elected = t > 0 ? 1 : t < 0 ? -1 : zeroElects;
      let mix = 0, div = 0;
      for (let m = 0; m < N; m++) {
        const wd = R ? R(w[m] * sd[m]) : w[m] * sd[m];
        if (Math.sign(unweighted ? sd[m] : wd) === elected) {
          mix += wd;
          div += countDiv ? 1 : w[m];
        }
      }
      let mixed = R ? R(mix) : mix;
      if (countDiv || normalize) {
        const dv = R ? R(div) : div;
        mixed /= dv === 0 ? 1 : dv;
        if (R) mixed = R(mixed);
      }
      out[i] = R ? R(B[i] + R(lambda * mixed)) : B[i] + lambda * mixed;
    }
  } else {
    let div = 0;
    for (let m = 0; m < N; m++) div += w[m];
    const dv = Math.abs(div) < 1e-8 ? 1 : R ? R(div) : div;
    for (let i = 0; i < n; i++) {
      load(i);
      let mix = 0;
      for (let m = 0; m < N; m++) mix += R ? R(w[m] * sd[m]) : w[m] * sd[m];
      let mixed = R ? R(mix) : mix;
      if (normalize) mixed = R ? R(mixed / dv) : mixed / dv;
      out[i] = R ? R(B[i] + R(lambda * mixed)) : B[i] + lambda * mixed;
    }
  }
  return { shape: input.shape, data: out };
}

/** The sparsifier options of one model (shared by the whole-tensor and the blockwise paths). */
function sparsifyOptions(
  spec: GtaSpec,
  p: MergeParams,
  m: ModelParams,
  index: number,
  v: GtaVariant,
  rescale: boolean,
  seed: number,
  name: string | undefined,
): SparsifyOptions {
  return {
    method: spec.sparsify!,
    density: m.density ?? 1,
    gamma: m.gamma,
    epsilon: m.epsilon,
    mask: m.mask,
    rescale,
    rescaleNorm: p.rescaleNorm as RescaleNorm | undefined,
    mergekitCompat: p.mergekitCompat,
    semantics: v.name,
    seed,
    name,
    modelIndex: index,
  };
}

/**
 * The streaming pre-pass of a GTA method merged in blocks (see `mergeBlockPlanner`): per model, the
 * sparsifier's block planner. Null when this configuration needs the whole tensor.
 */
export function gtaBlockPlanner(
  methodName: string,
  params: MergeParams,
  models: readonly ModelParams[],
  n: number,
  seed: number,
  name: string | undefined,
): {
  readonly passes: number;
  needs(pass: number): boolean;
  add(pass: number, base: FloatArray, models: readonly FloatArray[], offset: number): void;
  plans(offset: number): BlockSparsePlan[];
} | null {
  const g = GTA_SPECS.get(methodName);
  if (!g) return null;
  const { spec, variants } = g;
  const v = variants.find((x) => x.name === (params.semantics ?? variants[0].name))!;
  if (params.workDtype || v.zeroTotal !== "positive") return null;
  if (!spec.sparsify) {
    return {
      passes: 0,
      needs: () => false,
      add() {},
      plans: () => models.map(() => ({ scale: 1, zero: false })),
    };
  }
  const rescale = params.rescale ?? spec.rescale;
  const each = models.map((m, j) =>
    sparsifyBlockPlanner(sparsifyOptions(spec, params, m, j, v, rescale, seed, name), n)
  );
  if (each.some((e) => e === null)) return null;
  const ok = each as NonNullable<(typeof each)[number]>[];
  const needs = (e: (typeof ok)[number], pass: number) => pass < e.passes && (e.needs?.(pass) ?? true);
  return {
    passes: Math.max(0, ...ok.map((e) => e.passes)),
    needs: (pass) => ok.some((e) => needs(e, pass)),
    add(pass, base, xs, offset) {
      ok.forEach((e, j) => {
        if (needs(e, pass)) e.add(pass, xs[j], base, offset);
      });
    },
    plans: (offset) => ok.map((e) => e.plan(offset)),
  };
}

type FloatArray = Float32Array | Float64Array;

const CHUNK = 4096;
const cutState = new WeakMap<SparsePlan, { ties1: number; ties0: number }>();
let scratch: Float64Array[] = [];
const acc = { total: new Float64Array(CHUNK), mix: new Float64Array(CHUNK), div: new Float64Array(CHUNK) };

/**
 * The float64 kernel, a chunk of entries at a time: per model, the sparsified (and scaled) task vector
 * of the chunk; then, model by model in config order, the election totals, the agreeing sums and the
 * divisors; then the output. Every per-entry sum runs over the models in the same order as a
 * step-by-step evaluation, so the result is bit-identical to it. Scratch buffers are reused across calls.
 */
function gtaChunked<T extends Float32Array | Float64Array>(
  out: T,
  xs: readonly (Float32Array | Float64Array)[],
  B: Float32Array | Float64Array,
  plans: readonly SparsePlan[],
  w: Float64Array,
  consensus: "sum" | "count" | null,
  normalize: boolean,
  lambda: number,
  v: GtaVariant,
): T {
  const n = B.length, N = xs.length;
  for (const p of plans) if (p.cut) cutState.set(p, { ties1: p.cut.ties1, ties0: p.cut.ties0 });
  const K = mergeKernel();
  if (K && N <= KMAX_MODELS && allF32(B, ...xs)) {
    return gtaKernel(
      K,
      out,
      xs as Float32Array[],
      B as Float32Array,
      plans,
      w,
      consensus,
      normalize,
      lambda,
      v,
    );
  }
  while (scratch.length < N) scratch = [...scratch, new Float64Array(CHUNK)];
  const { total, mix, div } = acc, unweighted = v.election === "unweighted", countDiv = v.divisor === "count";
  let wsum = 0;
  for (let m = 0; m < N; m++) wsum += w[m];
  const dv = Math.abs(wsum) < 1e-8 ? 1 : wsum;
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    for (let m = 0; m < N; m++) sparseChunk(scratch[m], xs[m], B, plans[m], start, len);
    if (consensus) {
      total.fill(0, 0, len);
      for (let m = 0; m < N; m++) {
        const sd = scratch[m], wm = unweighted ? 1 : w[m];
        if (consensus === "sum") { for (let j = 0; j < len; j++) total[j] += wm * sd[j]; }
        else for (let j = 0; j < len; j++) total[j] += Math.sign(wm * sd[j]);
      }
      mix.fill(0, 0, len);
      div.fill(0, 0, len);
      // a model agrees where the sign of its vote is the elected one (a total of 0 elects +; a zero
      // vote never agrees); the weighted election (mergekit) votes with wd itself
      for (let m = 0; m < N; m++) {
        const sd = scratch[m], wm = w[m], dm = countDiv ? 1 : wm;
        if (unweighted) {
          for (let j = 0; j < len; j++) {
            const vote = sd[j];
            if (total[j] < 0 ? vote < 0 : vote > 0) {
              mix[j] += wm * vote;
              div[j] += dm;
            }
          }
        } else {
          for (let j = 0; j < len; j++) {
            const wd = wm * sd[j];
            if (total[j] < 0 ? wd < 0 : wd > 0) {
              mix[j] += wd;
              div[j] += dm;
            }
          }
        }
      }
      if (countDiv || normalize) {
        for (let j = 0; j < len; j++) {
          out[start + j] = B[start + j] + lambda * (mix[j] / (div[j] === 0 ? 1 : div[j]));
        }
      } else for (let j = 0; j < len; j++) out[start + j] = B[start + j] + lambda * mix[j];
    } else {
      mix.fill(0, 0, len);
      for (let m = 0; m < N; m++) {
        const sd = scratch[m], wm = w[m];
        for (let j = 0; j < len; j++) mix[j] += wm * sd[j];
      }
      for (let j = 0; j < len; j++) {
        out[start + j] = B[start + j] + lambda * (normalize ? mix[j] / dv : mix[j]);
      }
    }
  }
  return out;
}

/**
 * {@link gtaChunked} on the SIMD kernel (float32 inputs): per chunk, each model's sparsified task vector
 * into its float64 slot (`sd_keep` / `sd_mask` / `sd_dare` / `sd_cut`), then `gta_mix`. The same float64
 * operations in the same order, so the same bits.
 */
function gtaKernel<T extends Float32Array | Float64Array>(
  K: MergeKernel,
  out: T,
  xs: readonly Float32Array[],
  B: Float32Array,
  plans: readonly SparsePlan[],
  w: Float64Array,
  consensus: "sum" | "count" | null,
  normalize: boolean,
  lambda: number,
  v: GtaVariant,
): T {
  const n = B.length, N = xs.length, countDiv = v.divisor === "count";
  let wsum = 0;
  for (let m = 0; m < N; m++) wsum += w[m];
  const dv = Math.abs(wsum) < 1e-8 ? 1 : wsum;
  const flags = consensus
    ? 1 | (consensus === "count" ? 2 : 0) | (v.election === "unweighted" ? 4 : 0) |
      (countDiv || normalize ? 8 : 0) | (countDiv ? 16 : 0)
    : normalize
    ? 32
    : 0;
  const mix = K.k[`gta_mix_${flags}`];
  K.setWeights(w);
  for (let start = 0; start < n; start += KCHUNK) {
    const len = Math.min(KCHUNK, n - start), b = K.input(B, start, len, 0);
    for (let m = 0; m < N; m++) {
      const p = plans[m], sd = K.sd(m);
      if (p.zero) {
        K.zeroSd(m, len);
        continue;
      }
      const x = K.input(xs[m], start, len, m + 1);
      if (p.cut) K.cut(sd, x, b, p.cut, cutState.get(p)!, len);
      else if (p.stream) {
        const st = streamState(p.stream, start);
        K.k.sd_dare(sd, x, b, p.scale, st.s0, st.thr, st.all, len);
      } else if (p.mask) K.k.sd_mask(sd, x, b, K.mask(p.mask, start, len), p.scale, len);
      else K.k.sd_keep(sd, x, b, p.scale, len);
    }
    const f32 = out instanceof Float32Array ? 1 : 0;
    mix(K.sd(0), K.SLOT_BYTES, N, K.WS, lambda, dv, b, K.outPtr(out, start), len, f32);
    K.flushOut(out, start, len);
  }
  return out;
}

let streamBuf = new Uint8Array(0);

/** The sparsified, scaled task vector `plan(x − B)` of entries [start, start + len) into `sd`. */
function sparseChunk(
  sd: Float64Array,
  x: Float32Array | Float64Array,
  B: Float32Array | Float64Array,
  plan: SparsePlan,
  start: number,
  len: number,
): void {
  const { scale, cut } = plan;
  let mask = plan.mask, at = start;
  if (plan.stream) {
    if (streamBuf.length < len) streamBuf = new Uint8Array(CHUNK);
    mask = streamMaskInto(streamBuf.subarray(0, len), plan.stream, start);
    at = 0;
  }
  if (plan.zero) sd.fill(0, 0, len);
  else if (cut) {
    // the magnitude band, in index order: the tie counters carry over from chunk to chunk
    const st = cutState.get(plan)!, t1 = cut.t1, t0 = cut.t0;
    let ties1 = st.ties1, ties0 = st.ties0;
    for (let j = 0; j < len; j++) {
      const dlt = x[start + j] - B[start + j], a = Math.abs(dlt);
      let keep = a > t1;
      if (!keep && a === t1 && ties1 > 0) {
        keep = true;
        ties1--;
      }
      let drop = a > t0;
      if (!drop && a === t0 && ties0 > 0) {
        drop = true;
        ties0--;
      }
      sd[j] = keep && !drop ? dlt : 0;
    }
    st.ties1 = ties1;
    st.ties0 = ties0;
  } else if (mask === null) {
    if (scale === 1) { for (let j = 0; j < len; j++) sd[j] = x[start + j] - B[start + j]; }
    else for (let j = 0; j < len; j++) sd[j] = (x[start + j] - B[start + j]) * scale;
  } else if (scale === 1) {
    for (let j = 0; j < len; j++) sd[j] = mask[at + j] ? x[start + j] - B[start + j] : 0;
  } else {
    for (let j = 0; j < len; j++) sd[j] = mask[at + j] ? (x[start + j] - B[start + j]) * scale : 0;
  }
}
