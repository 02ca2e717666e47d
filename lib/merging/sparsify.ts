/**
 * Task-vector sparsifiers: magnitude (TIES), magnitude with outliers (Model Breadcrumbs), random (DARE)
 * and DELLA's magnitude-ranked keep probabilities, with L1 / L2 / L∞ norm matching or inverse-density
 * rescaling. Each sparsifier produces a keep mask and one scale factor; the merge engine applies them on
 * the fly, {@link sparsify} materialises the result.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { asTensor, rowsCols, type Tensor, type TensorInput } from "../io/tensor.ts";
import {
  atLeastKthSmallestInto,
  magnitudeCutAccumulator,
  magnitudeRangeCut,
  magnitudeRangeInto,
  magnitudeRanks,
  type RangeCut,
} from "../core/selection.ts";
import { allF32, mergeKernel } from "./kernel_run.ts";

/**
 * A sparsification method: `"magnitude"`, `"magnitude_outliers"` (Breadcrumbs), `"random"` (DARE),
 * `"della_magprune"` (DELLA).
 *
 * @example
 * ```ts
 * import { type SparsifyMethod } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const m: SparsifyMethod = "magnitude_outliers";
 * assert.equal(m, "magnitude_outliers");
 * ```
 */
export type SparsifyMethod = "magnitude" | "magnitude_outliers" | "random" | "della_magprune";

/**
 * The norm `rescale` matches: mergekit's `l1` (default), `l2`, `linf`; `inverse_density` multiplies the
 * survivors by 1/density (DARE before 2025-02, PEFT); `none`.
 *
 * @example
 * ```ts
 * import { type RescaleNorm } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const r: RescaleNorm = "l2";
 * assert.equal(r, "l2");
 * ```
 */
export type RescaleNorm = "l1" | "l2" | "linf" | "inverse_density" | "none";

/** What each variant changes in sparsification (declared once; the sparsifiers read it). */
const SPARSIFY_VARIANTS = {
  /** mergekit: exactly trunc(d·n) entries; k = 0 is an error; Breadcrumbs over the whole tensor. */
  mergekit: { zeroKeep: "error", magnitude: "exact", breadcrumbs: "tensor", randomNorm: "l1" },
  /** PEFT: k = 0 gives zeros; DARE rescales by 1/density. */
  peft: { zeroKeep: "zeros", magnitude: "exact", breadcrumbs: "tensor", randomNorm: "inverse_density" },
  /** Paper code: TIES keeps |x| ≥ the kth smallest (trunc(d·n)+1 entries plus ties); Breadcrumbs per row. */
  paper: { zeroKeep: "error", magnitude: "threshold", breadcrumbs: "row", randomNorm: "l1" },
} as const;

/**
 * Options of {@link sparsify}.
 *
 * @example
 * ```ts
 * import { type SparsifyOptions } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const o: SparsifyOptions = { method: "random", density: 0.1, rescale: true, seed: 1, name: "layers.0.mlp", modelIndex: 2 };
 * assert.equal(o.density, 0.1);
 * ```
 */
export interface SparsifyOptions {
  /** The method. */
  readonly method: SparsifyMethod;
  /** Fraction kept; ≥ 1 returns the tensor untouched. */
  readonly density: number;
  /** Breadcrumbs: fraction of entries with the LARGEST magnitude removed. Default 0.01. */
  readonly gamma?: number;
  /** DELLA: half-width of the keep-probability range. Default 0.15. */
  readonly epsilon?: number;
  /** Rescale survivors: true = `rescaleNorm`. Default false. */
  readonly rescale?: boolean;
  /** The norm to match. Default `"l1"` (`"inverse_density"` for DARE under `semantics: "peft"`). */
  readonly rescaleNorm?: RescaleNorm;
  /** DARE/DELLA: an explicit keep mask (1 = keep), used instead of random draws. */
  readonly mask?: Uint8Array;
  /** Seed of the random draws; the stream is derived from (seed, name, modelIndex). Default 0. */
  readonly seed?: number;
  /** Tensor name (for the random stream). */
  readonly name?: string;
  /** Model index (for the random stream). */
  readonly modelIndex?: number;
  /**
   * DARE/DELLA: the flat index of the first entry in the whole tensor when the input is a block of it
   * (entry i draws word `offset + i` of the stream, so a block's mask equals that part of the whole
   * tensor's mask; DELLA blocks start at a row). Default 0.
   */
  readonly offset?: number;
  /** Reproduce mergekit's Breadcrumbs quirk (`nTop = 0` zeroes the tensor). Default false. */
  readonly mergekitCompat?: boolean;
  /**
   * `"peft"`: magnitude with k = 0 returns zeros instead of throwing, DARE rescales by 1/density;
   * `"paper"`: magnitude keeps every `|x| ≥` the kth smallest magnitude (kth = n − trunc(d·n): trunc(d·n)+1
   * entries plus ties, the TIES code), Breadcrumbs cuts per row along the last dimension (drop trunc(c·γ),
   * keep trunc(c·d)). Default `"mergekit"`.
   */
  readonly semantics?: "mergekit" | "peft" | "paper";
  /** Write the result into the input's data (a Float64Array) instead of a new array. Default false. */
  readonly inPlace?: boolean;
}

type FloatArray = Float32Array | Float64Array;

/** A sparsification as a keep mask (null = keep all) and one factor for the survivors. */
export interface SparsePlan {
  /** Keep mask (1 = keep), or null: keep every entry (or those of `cut`). */
  readonly mask: Uint8Array | null;
  /** Instead of a mask: a magnitude band, evaluated in index order by the caller. */
  readonly cut?: RangeCut;
  /** Instead of a mask: DARE's counter-mode stream, drawn by the caller a chunk at a time. */
  readonly stream?: MaskStream;
  /** Factor applied to the kept entries. */
  readonly scale: number;
  /** Every entry dropped. */
  readonly zero: boolean;
}

const KEEP_ALL: SparsePlan = { mask: null, scale: 1, zero: false };
const ZERO: SparsePlan = { mask: null, scale: 1, zero: true };

function checkMask(mask: Uint8Array | undefined, n: number, what: string): void {
  if (mask && mask.length !== n) {
    throw new MoekitError(`${what}: the keep mask has ${mask.length} entries, the tensor ${n}`);
  }
}

/**
 * The band `[from, to)` of the total magnitude order that a whole-tensor magnitude sparsifier keeps
 * (`"magnitude"` with the exact rule, `"magnitude_outliers"` over the whole tensor), or the plan when no
 * entry is kept. One rule for whole-tensor and blockwise merges.
 */
function magnitudeBand(options: SparsifyOptions, n: number): { from: number; to: number } | SparsePlan {
  const d = options.density, v = SPARSIFY_VARIANTS[options.semantics ?? "mergekit"];
  if (options.method === "magnitude") {
    const k = Math.trunc(d * n);
    if (k <= 0 && n > 0) {
      if (v.zeroKeep === "zeros") return ZERO;
      throw new OptionError(
        "density",
        d,
        `keeps trunc(${d}·${n}) = 0 entries of ${options.name ?? "the tensor"}; raise it above 1/${n}`,
      );
    }
    return { from: 0, to: k };
  }
  const gamma = options.gamma ?? 0.01, target = Math.trunc(d * n);
  let nTop = Math.trunc(gamma * n), nBot = n - target - nTop;
  if (nBot < 0) {
    nTop += nBot;
    nBot = 0;
  }
  if (options.mergekitCompat && nTop === 0) return ZERO;
  return { from: nTop, to: n - nBot };
}

/**
 * Plans the sparsification of the task vector `x − sub` (or `x`): the keep mask (written into `maskBuf`
 * when one is given, so buffers can be reused) and the rescale factor. `round` (workDtype) rounds the
 * norms and the factor as the low-precision reference does.
 */
export function planSparsify(
  x: FloatArray,
  sub: FloatArray | undefined,
  shape: readonly number[],
  options: SparsifyOptions,
  maskBuf?: Uint8Array,
  round?: (v: number) => number,
  lazy = false,
): SparsePlan {
  const n = x.length, d = options.density;
  if (!Number.isFinite(d)) throw new OptionError("density", d, "must be a finite number");
  if (d >= 1) return KEEP_ALL;
  const semantics = options.semantics ?? "mergekit", v = SPARSIFY_VARIANTS[semantics];
  if (!v) throw new OptionError("semantics", semantics, `use ${Object.keys(SPARSIFY_VARIANTS).join(", ")}`);
  const norm: RescaleNorm = options.rescale
    ? options.rescaleNorm ?? (options.method === "random" ? v.randomNorm : "l1")
    : "none";
  /** A magnitude band: thresholds only when the caller sweeps them and no norm needs the mask. */
  const band = (from: number, to: number): SparsePlan | Uint8Array => {
    if (!lazy || norm !== "none") return magnitudeRangeInto(buf(), x, from, to, sub);
    const cut = magnitudeRangeCut(x, from, to, sub);
    return cut === "none" ? ZERO : cut === "all" ? KEEP_ALL : { mask: null, cut, scale: 1, zero: false };
  };
  const buf = () => (maskBuf && maskBuf.length >= n ? maskBuf.subarray(0, n) : new Uint8Array(n));
  let mask: Uint8Array;
  switch (options.method) {
    case "magnitude": {
      if (v.magnitude === "threshold") mask = atLeastKthSmallestInto(buf(), x, n - Math.trunc(d * n), sub);
      else {
        const r = magnitudeBand(options, n);
        if (!("from" in r)) return r;
        const b = band(r.from, r.to);
        if (!(b instanceof Uint8Array)) return b;
        mask = b;
      }
      break;
    }
    case "magnitude_outliers": {
      const gamma = options.gamma ?? 0.01;
      if (!(gamma >= 0 && gamma <= 1)) throw new OptionError("gamma", gamma, "must be in [0, 1]");
      if (v.breadcrumbs === "row") {
        mask = buf();
        if (shape.length === 0) mask.fill(1); // 0-d tensors are untouched
        else {
          const c = shape[shape.length - 1], drop = Math.trunc(c * gamma), keep = Math.trunc(c * d);
          for (let r = 0; r * c < n; r++) {
            const lo = r * c, hi = lo + c;
            magnitudeRangeInto(
              mask.subarray(lo, hi),
              x.subarray(lo, hi),
              drop,
              drop + keep,
              sub?.subarray(lo, hi),
            );
          }
        }
        break;
      }
      const r = magnitudeBand(options, n);
      if (!("from" in r)) return r;
      const b = band(r.from, r.to);
      if (!(b instanceof Uint8Array)) return b;
      mask = b;
      break;
    }
    case "random": {
      checkMask(options.mask, n, "DARE");
      if (lazy && !options.mask && sub) {
        const stream: MaskStream = { options, density: d };
        return { mask: null, stream, scale: streamRescale(x, sub, stream, norm, round), zero: false };
      }
      mask = options.mask ?? bernoulliInto(buf(), d, options);
      break;
    }
    case "della_magprune": {
      if (d <= 0) return ZERO;
      const eps = options.epsilon ?? 0.15;
      if (!(d - eps > 0 && d + eps < 1)) {
        throw new OptionError(
          "epsilon",
          eps,
          `DELLA needs 0 < density − epsilon and density + epsilon < 1 (density ${d})`,
        );
      }
      const [rows, cols] = rowsCols(shape, "DELLA tensor");
      if (cols < 2) {
        throw new OptionError("DELLA", `${cols} column`, "ranking needs at least 2 entries per row");
      }
      checkMask(options.mask, n, "DELLA");
      mask = options.mask ?? dellaDraw(buf(), x, sub, rows, cols, d, eps, options);
      break;
    }
    default:
      throw new OptionError(
        "method",
        options.method,
        "use magnitude, magnitude_outliers, random or della_magprune",
      );
  }
  return { mask, scale: rescaleFactor(x, sub, mask, norm, d, round), zero: false };
}

/** Running sums of a rescale norm: over the whole vector and over its kept entries. */
interface NormSums {
  full: number;
  kept: number;
}

/**
 * Adds entries of `x − sub` (or `x`) to the sums of an `l1`/`l2`/`linf` norm, in index order: one loop per
 * norm (no per-entry dispatch). Blocks added in order give the same sums as the whole vector.
 */
function addNormSums(
  acc: NormSums,
  x: FloatArray,
  sub: FloatArray | undefined,
  mask: Uint8Array,
  norm: "l1" | "l2" | "linf",
): void {
  const n = x.length;
  let full = acc.full, kept = acc.kept;
  if (norm === "l1") {
    for (let i = 0; i < n; i++) {
      const a = Math.abs(sub ? x[i] - sub[i] : x[i]);
      full += a;
      if (mask[i]) kept += a;
    }
  } else if (norm === "l2") {
    for (let i = 0; i < n; i++) {
      const a = Math.abs(sub ? x[i] - sub[i] : x[i]);
      full += a * a;
      if (mask[i]) kept += a * a;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const a = Math.abs(sub ? x[i] - sub[i] : x[i]);
      if (a > full) full = a;
      if (mask[i] && a > kept) kept = a;
    }
  }
  acc.full = full;
  acc.kept = kept;
}

/** The rescale factor from the norm sums: full / kept, 1 when either norm is below 1e-7. */
function normFactor(acc: NormSums, norm: "l1" | "l2" | "linf", round?: (v: number) => number): number {
  let { full, kept } = acc;
  if (norm === "l2") {
    full = Math.sqrt(full);
    kept = Math.sqrt(kept);
  }
  if (round) {
    full = round(full);
    kept = round(kept);
  }
  if (full < 1e-7 || kept < 1e-7) return 1;
  return round ? round(full / kept) : full / kept;
}

function checkNorm(norm: RescaleNorm): void {
  if (!["l1", "l2", "linf", "inverse_density", "none"].includes(norm)) {
    throw new OptionError("rescale_norm", norm, "use l1, l2, linf, inverse_density or none");
  }
}

/**
 * The factor that makes the masked vector's norm equal the full one's (mergekit `rescaled_masked_tensor`):
 * 1 when either norm is below 1e-7.
 */
function rescaleFactor(
  x: FloatArray,
  sub: FloatArray | undefined,
  mask: Uint8Array,
  norm: RescaleNorm,
  density: number,
  round?: (v: number) => number,
): number {
  if (norm === "none") return 1;
  if (norm === "inverse_density") return round ? round(1 / density) : 1 / density;
  checkNorm(norm);
  const acc = { full: 0, kept: 0 };
  addNormSums(acc, x, sub, mask, norm as "l1" | "l2" | "linf");
  return normFactor(acc, norm as "l1" | "l2" | "linf", round);
}

/**
 * Sparsifies one task vector. Counts truncate: `k = trunc(density·numel)` (float64 product, as Python
 * `int(d*n)`). Magnitude cuts use the total order (|x| descending, lower index first) in O(n).
 *
 * @example
 * ```ts
 * import { sparsify } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const t = { shape: [6], data: new Float64Array([.5, -2, 1, .25, -1, 3]) };
 * assert.deepEqual(Array.from(sparsify(t, { method: "magnitude", density: 0.5 }).data), [0, -2, 1, 0, 0, 3]);
 * ```
 */
export function sparsify(input: TensorInput, options: SparsifyOptions): Tensor {
  const t = asTensor(input), n = t.data.length;
  const plan = planSparsify(t.data, undefined, t.shape, options);
  const out = options.inPlace && t.data instanceof Float64Array ? t.data : new Float64Array(n);
  const x = t.data, { mask, scale } = plan;
  if (plan.zero) out.fill(0);
  else if (mask) { for (let i = 0; i < n; i++) out[i] = mask[i] ? x[i] : 0; }
  else if (out !== x) out.set(x);
  if (scale !== 1) { for (let i = 0; i < n; i++) out[i] *= scale; }
  return { shape: t.shape, data: out };
}

/** DELLA keep probabilities of `x − sub`, per row (1-D = one row; higher ranks throw). */
function dellaProbs(
  x: FloatArray,
  sub: FloatArray | undefined,
  shape: readonly number[],
  density: number,
  epsilon: number,
): Float64Array {
  const [rows, cols] = rowsCols(shape, "DELLA tensor");
  if (cols < 2) throw new OptionError("DELLA", `${cols} column`, "ranking needs at least 2 entries per row");
  const p = new Float64Array(x.length), ranks = new Int32Array(cols), row = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) row[j] = sub ? x[r * cols + j] - sub[r * cols + j] : x[r * cols + j];
    magnitudeRanks(row, 0, cols, ranks);
    for (let j = 0; j < cols; j++) {
      p[r * cols + j] = density - epsilon + (2 * epsilon * (ranks[j] - 1)) / (cols - 1);
    }
  }
  return p;
}

/**
 * DELLA's seeded keep draws, a row at a time (no array of probabilities): each row's ranks, then the
 * row's words of the (seed, tensor name, model index) counter stream (entry i uses word i),
 * `keep = w / 2³² < p`.
 */
function dellaDraw(
  mask: Uint8Array,
  x: FloatArray,
  sub: FloatArray | undefined,
  rows: number,
  cols: number,
  density: number,
  epsilon: number,
  o: SparsifyOptions,
): Uint8Array {
  const rng = maskStream(o);
  const ranks = new Int32Array(cols), row = new Float64Array(cols), w = new Uint32Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) row[j] = sub ? x[r * cols + j] - sub[r * cols + j] : x[r * cols + j];
    magnitudeRanks(row, 0, cols, ranks);
    rng.counterWordsInto(w, (o.offset ?? 0) + r * cols); // the row's words: entries r·cols … of the stream
    for (let j = 0; j < cols; j++) {
      const p = density - epsilon + (2 * epsilon * (ranks[j] - 1)) / (cols - 1);
      mask[r * cols + j] = w[j] < p * 4294967296 ? 1 : 0;
    }
  }
  return mask;
}

/**
 * DELLA keep probabilities per row: `p = d − ε + 2ε·(rank − 1)/(ncols − 1)`, rank 1 = smallest |x|.
 *
 * @example
 * ```ts
 * import { dellaProbabilities } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const p = dellaProbabilities({ shape: [4], data: new Float64Array([.1, -.4, .3, .2]) }, 0.5, 0.1);
 * assert.deepEqual(Array.from(p, (v) => v.toFixed(4)), ["0.4000", "0.6000", "0.5333", "0.4667"]);
 * ```
 */
export function dellaProbabilities(input: TensorInput, density: number, epsilon: number): Float64Array {
  const t = asTensor(input);
  return dellaProbs(t.data, undefined, t.shape, density, epsilon);
}

/** DARE's keep draws of a tensor (or block) as a stream: entry i keeps when word `offset + i` < density·2³². */
export interface MaskStream {
  readonly options: SparsifyOptions;
  readonly density: number;
}

/**
 * The stream's draws for entries `[start, start + mask.length)` of the tensor (or block) into `mask`.
 */
export function streamMaskInto(mask: Uint8Array, stream: MaskStream, start: number): Uint8Array {
  return bernoulliInto(mask, stream.density, {
    ...stream.options,
    offset: (stream.options.offset ?? 0) + start,
  });
}

/**
 * The kernel's form of the stream at entry `start`: the state before that entry's word, the threshold
 * `ceil(density·2³²)` as a u32 (`w < t` ⇔ `w < ceil(t)` for integer w) and whether every entry is kept.
 */
export function streamState(stream: MaskStream, start: number): { s0: number; thr: number; all: number } {
  const key = maskStream(stream.options).seed >>> 0, off = (stream.options.offset ?? 0) + start;
  const t = Math.ceil(Math.max(0, stream.density * 4294967296));
  return {
    s0: (key + Math.imul(off % 4294967296, 0x9e3779b9)) | 0,
    thr: t >= 4294967296 ? 0 : t | 0,
    all: t >= 4294967296 ? 1 : 0,
  };
}

/** The rescale factor of a streamed DARE mask: norm sums a chunk at a time, in index order. */
function streamRescale(
  x: FloatArray,
  sub: FloatArray,
  stream: MaskStream,
  norm: RescaleNorm,
  round?: (v: number) => number,
): number {
  if (norm === "none" || norm === "inverse_density") {
    return rescaleFactor(x, sub, new Uint8Array(0), norm, stream.density, round);
  }
  checkNorm(norm);
  const nm = norm as "l1" | "l2" | "linf", n = x.length, acc = { full: 0, kept: 0 }, K = mergeKernel();
  if (K && allF32(x, sub)) {
    K.setSums(0, 0);
    for (let start = 0; start < n; start += DRAW_CHUNK) {
      const len = Math.min(DRAW_CHUNK, n - start), st = streamState(stream, start);
      const xp = K.input(x as Float32Array, start, len, 1), bp = K.input(sub as Float32Array, start, len, 0);
      K.k.dare_norms(K.ACC, xp, bp, st.s0, st.thr, st.all, len, nm === "l1" ? 1 : nm === "l2" ? 2 : 3);
    }
    [acc.full, acc.kept] = K.sums(2);
  } else {
    const m = new Uint8Array(DRAW_CHUNK);
    for (let start = 0; start < n; start += DRAW_CHUNK) {
      const len = Math.min(DRAW_CHUNK, n - start), mk = streamMaskInto(m.subarray(0, len), stream, start);
      addNormSums(acc, x.subarray(start, start + len), sub.subarray(start, start + len), mk, nm);
    }
  }
  return normFactor(acc, nm, round);
}

/** Words drawn per call (a reused buffer: 16 KiB). */
const DRAW_CHUNK = 4096;
let drawBuf: Uint32Array | undefined;

/** The mask stream of (seed, tensor name, model index): its key is the derived generator's seed. */
const maskStream = (o: SparsifyOptions) => new Rng(o.seed ?? 0).derive(o.name ?? "", o.modelIndex ?? 0);

/**
 * Seeded DARE draws: `keep = w / 2³² < density` for the counter-mode word `w` of entry `i` of the
 * (seed, tensor name, model index) stream (docs/merging.md, "Randomness"), 4096 words per call into a
 * reused buffer. `w / 2³² < d` ⇔ `w < d·2³²` exactly (a power-of-two scale), so no division per entry.
 */
function bernoulliInto(mask: Uint8Array, d: number, o: SparsifyOptions): Uint8Array {
  const rng = maskStream(o), n = mask.length, t = Math.max(0, d * 4294967296); // 0 ≤ t < 2³² (d < 1 here)
  const w = drawBuf ??= new Uint32Array(DRAW_CHUNK);
  for (let start = 0; start < n; start += DRAW_CHUNK) {
    const len = Math.min(DRAW_CHUNK, n - start);
    rng.counterWordsInto(len === DRAW_CHUNK ? w : w.subarray(0, len), (o.offset ?? 0) + start);
    // keep = w < t without a branch (a random one mispredicts): (w − t)·2⁻³² lies in (−1, 1) and has the
    // sign of w − t (rounding never flips it), so its floor is −1 exactly when w < t
    for (let i = 0; i < len; i++) mask[start + i] = -Math.floor((w[i] - t) * 2.3283064365386963e-10);
  }
  return mask;
}

/**
 * A sparsification's whole-tensor quantities for a merge in blocks: the magnitude band's thresholds (with
 * each block's share of the tie quotas) or the rescale factor. No mask: DARE draws its block's mask from
 * the stream at the block's offset.
 */
export interface BlockSparsePlan {
  /** The magnitude band, tie quotas as they stand at the block's first entry. */
  readonly cut?: RangeCut;
  /** Factor applied to the kept entries. */
  readonly scale: number;
  /** Every entry dropped. */
  readonly zero: boolean;
}

/**
 * Plans one model's sparsification of a tensor of `n` entries merged in blocks: feed every block to
 * `add(pass, …)` for each pass in `0 … passes − 1` (blocks in index order, the same blocks each pass),
 * then `plan(offset)` gives the block at `offset` its {@link BlockSparsePlan}. Null when the sparsifier
 * needs the whole tensor at once (the TIES paper threshold, per-row Breadcrumbs, DELLA, an explicit mask,
 * a norm-matched magnitude rescale). Internal.
 */
export function sparsifyBlockPlanner(options: SparsifyOptions, n: number, round?: (v: number) => number): {
  readonly passes: number;
  /** After the passes before `pass`: whether `pass` must still be fed (default: yes). */
  needs?(pass: number): boolean;
  add(pass: number, x: FloatArray, sub: FloatArray | undefined, offset: number): void;
  plan(offset: number): BlockSparsePlan;
} | null {
  const d = options.density, fixed = (p: BlockSparsePlan) => ({ passes: 0, add() {}, plan: () => p });
  if (!Number.isFinite(d)) throw new OptionError("density", d, "must be a finite number");
  if (d >= 1) return fixed(KEEP_ALL);
  const semantics = options.semantics ?? "mergekit", v = SPARSIFY_VARIANTS[semantics];
  if (!v) throw new OptionError("semantics", semantics, `use ${Object.keys(SPARSIFY_VARIANTS).join(", ")}`);
  const norm: RescaleNorm = options.rescale
    ? options.rescaleNorm ?? (options.method === "random" ? v.randomNorm : "l1")
    : "none";
  checkNorm(norm);
  if (options.method === "random") {
    if (options.mask) return null;
    if (norm === "none" || norm === "inverse_density") {
      return fixed({ scale: norm === "none" ? 1 : round ? round(1 / d) : 1 / d, zero: false });
    }
    const sums = { full: 0, kept: 0 };
    let buf = new Uint8Array(0);
    const nm = norm as "l1" | "l2" | "linf";
    return {
      passes: 1,
      add(_pass, x, sub, offset) {
        const K = mergeKernel(), n = x.length;
        if (K && sub && allF32(x, sub)) {
          // the kernel's sums (as for a whole tensor), carried from block to block in index order
          const stream: MaskStream = { options: { ...options, offset }, density: d };
          K.setSums(sums.full, sums.kept);
          for (let start = 0; start < n; start += DRAW_CHUNK) {
            const len = Math.min(DRAW_CHUNK, n - start), st = streamState(stream, start);
            const xp = K.input(x as Float32Array, start, len, 1),
              bp = K.input(sub as Float32Array, start, len, 0);
            K.k.dare_norms(K.ACC, xp, bp, st.s0, st.thr, st.all, len, nm === "l1" ? 1 : nm === "l2" ? 2 : 3);
          }
          [sums.full, sums.kept] = K.sums(2);
          return;
        }
        if (buf.length < x.length) buf = new Uint8Array(x.length);
        const mask = bernoulliInto(buf.subarray(0, x.length), d, { ...options, offset });
        addNormSums(sums, x, sub, mask, norm as "l1" | "l2" | "linf");
      },
      plan: () => ({ scale: normFactor(sums, norm as "l1" | "l2" | "linf", round), zero: false }),
    };
  }
  const wholeTensor = (options.method === "magnitude" && v.magnitude === "exact") ||
    (options.method === "magnitude_outliers" && v.breadcrumbs === "tensor");
  if (!wholeTensor || norm !== "none") return null;
  if (options.method === "magnitude_outliers") {
    const gamma = options.gamma ?? 0.01;
    if (!(gamma >= 0 && gamma <= 1)) throw new OptionError("gamma", gamma, "must be in [0, 1]");
  }
  const band = magnitudeBand(options, n);
  if (!("from" in band)) return fixed(band);
  // blocks are numbered in the order the passes feed them (the same each pass)
  const acc = magnitudeCutAccumulator(n, band.from, band.to), order = new Map<number, number>();
  return {
    passes: acc.passes,
    needs: (pass) => pass === 0 || acc.needsRefine(),
    add(pass, x, sub, offset) {
      if (pass === 0) {
        order.set(offset, order.size);
        acc.add(x, sub);
      } else acc.refine(x, sub);
    },
    plan(offset) {
      const b = order.get(offset) ?? -1;
      if (acc.passes > 0 && b < 0) {
        throw new MoekitError(
          `no block starts at entry ${offset}; the planner saw ${[...order.keys()].join(", ")}`,
        );
      }
      const cut = acc.cut(Math.max(0, b));
      return cut === "none" ? ZERO : cut === "all" ? KEEP_ALL : { cut, scale: 1, zero: false };
    },
  };
}

/**
 * The sparse plan of one block of a blockwise merge: the planner's {@link BlockSparsePlan}, and for DARE
 * the stream at `options.offset` (drawn a chunk at a time by the sweep, as for a whole tensor), or the
 * block's keep mask drawn from it when a mask is given.
 */
export function blockSparsePlan(
  given: BlockSparsePlan,
  n: number,
  options: SparsifyOptions,
  maskBuf?: Uint8Array,
): SparsePlan {
  if (given.zero || options.method !== "random" || options.density >= 1) {
    return { mask: null, cut: given.cut, scale: given.scale, zero: given.zero };
  }
  if (!options.mask) {
    return { mask: null, stream: { options, density: options.density }, scale: given.scale, zero: false };
  }
  const buf = maskBuf && maskBuf.length >= n ? maskBuf.subarray(0, n) : new Uint8Array(n);
  return { mask: bernoulliInto(buf, options.density, options), scale: given.scale, zero: false };
}
