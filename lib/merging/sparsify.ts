/**
 * Task-vector sparsifiers (merging.md §4): magnitude (TIES), magnitude with outliers (Model Breadcrumbs),
 * random (DARE) and DELLA's magnitude-ranked keep probabilities, with L1 or inverse-density rescaling.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { magnitudeRangeMask, magnitudeRanks, topMagnitudeMask } from "./selection.ts";
import { asTensor, rowsCols, type Tensor, type TensorInput } from "./tensor.ts";

/**
 * A sparsification method: `"magnitude"`, `"magnitude_outliers"` (Breadcrumbs), `"random"` (DARE),
 * `"della_magprune"` (DELLA).
 *
 * @example
 * ```ts
 * import { type SparsifyMethod } from "@moekit/moekit";
 * const m: SparsifyMethod = "magnitude_outliers";
 * console.log(m); // magnitude_outliers
 * ```
 */
export type SparsifyMethod = "magnitude" | "magnitude_outliers" | "random" | "della_magprune";

/**
 * Options of {@link sparsify}.
 *
 * @example
 * ```ts
 * import { type SparsifyOptions } from "@moekit/moekit";
 * const o: SparsifyOptions = { method: "random", density: 0.1, rescale: true, seed: 1, name: "layers.0.mlp", modelIndex: 2 };
 * console.log(o.density); // 0.1
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
  /** Rescale survivors: true = `rescaleNorm` (L1 by default). Default false. */
  readonly rescale?: boolean;
  /** `"l1"` (mergekit since 2025-02, default), `"inverse_density"` (older DARE, PEFT) or `"none"`. */
  readonly rescaleNorm?: "l1" | "inverse_density" | "none";
  /** DARE/DELLA: an explicit keep mask (1 = keep), used instead of random draws. */
  readonly mask?: Uint8Array;
  /** Seed of the random draws; the stream is derived from (seed, name, modelIndex). Default 0. */
  readonly seed?: number;
  /** Tensor name (for the random stream). */
  readonly name?: string;
  /** Model index (for the random stream). */
  readonly modelIndex?: number;
  /** Reproduce mergekit's Breadcrumbs quirk (`nTop = 0` zeroes the tensor). Default false. */
  readonly mergekitCompat?: boolean;
  /**
   * `"peft"`: magnitude with k = 0 returns zeros instead of throwing; `"paper"`: magnitude keeps every
   * `|x| ≥` the kth smallest magnitude (kth = n − trunc(d·n): trunc(d·n)+1 entries plus ties, the TIES code),
   * Breadcrumbs cuts per row along the last dimension (drop trunc(c·γ), keep trunc(c·d)). Default `"mergekit"`.
   */
  readonly semantics?: "mergekit" | "peft" | "paper";
  /** Write the result into the input's data (a Float64Array) instead of a new array. Default false. */
  readonly inPlace?: boolean;
}

/** `m = t ⊙ mask`, L1-rescaled to `Σ|t|` unless either sum < 1e-7 (merging.md §4). */
function rescaled(
  t: ArrayLike<number>,
  mask: Uint8Array,
  norm: "l1" | "inverse_density" | "none",
  density: number,
  out: Float64Array = new Float64Array(t.length), // may be `t` itself (in place)
): Float64Array {
  let full = 0, kept = 0;
  for (let i = 0; i < t.length; i++) {
    full += Math.abs(t[i]);
    if (mask[i]) kept += Math.abs(t[i]);
    out[i] = mask[i] ? t[i] : 0;
  }
  let s = 1;
  if (norm === "l1") s = full < 1e-7 || kept < 1e-7 ? 1 : full / kept;
  else if (norm === "inverse_density") s = 1 / density;
  if (s !== 1) { for (let i = 0; i < out.length; i++) out[i] *= s; }
  return out;
}

function checkMask(mask: Uint8Array | undefined, n: number, what: string): void {
  if (mask && mask.length !== n) {
    throw new MoekitError(`${what}: the keep mask has ${mask.length} entries, the tensor ${n}`);
  }
}

/**
 * Sparsifies one task vector. Counts truncate: `k = trunc(density·numel)` (float64 product, as Python
 * `int(d*n)`). Magnitude cuts use the total order (|x| descending, lower index first) in O(n).
 *
 * @example
 * ```ts
 * import { sparsify } from "@moekit/moekit";
 * const t = { shape: [6], data: new Float64Array([.5, -2, 1, .25, -1, 3]) };
 * console.log(Array.from(sparsify(t, { method: "magnitude", density: 0.5 }).data)); // [0, -2, 1, 0, 0, 3]
 * ```
 */
export function sparsify(input: TensorInput, options: SparsifyOptions): Tensor {
  const t = asTensor(input), n = t.data.length, d = options.density;
  if (!Number.isFinite(d)) throw new OptionError("density", d, "must be a finite number");
  const into = options.inPlace && t.data instanceof Float64Array ? t.data : undefined;
  if (d >= 1) return { shape: t.shape, data: into ?? new Float64Array(t.data) };
  const norm = options.rescale ? options.rescaleNorm ?? "l1" : "none";
  const zeros = () => (into ? into.fill(0) : new Float64Array(n));
  switch (options.method) {
    case "magnitude": {
      if (options.semantics === "paper") {
        return { shape: t.shape, data: rescaled(t.data, paperTopMask(t.data, d), norm, d, into) };
      }
      const k = Math.trunc(d * n);
      if (k <= 0 && n > 0) {
        if (options.semantics === "peft") return { shape: t.shape, data: zeros() };
        throw new OptionError(
          "density",
          d,
          `keeps trunc(${d}·${n}) = 0 entries of ${options.name ?? "the tensor"}; raise it above 1/${n}`,
        );
      }
      return { shape: t.shape, data: rescaled(t.data, topMagnitudeMask(t.data, k), norm, d, into) };
    }
    case "magnitude_outliers": {
      const gamma = options.gamma ?? 0.01;
      if (!(gamma >= 0 && gamma <= 1)) throw new OptionError("gamma", gamma, "must be in [0, 1]");
      if (options.semantics === "paper") {
        return { shape: t.shape, data: rescaled(t.data, paperRowMask(t, d, gamma), norm, d, into) };
      }
      const target = Math.trunc(d * n);
      let nTop = Math.trunc(gamma * n), nBot = n - target - nTop;
      if (nBot < 0) {
        nTop += nBot;
        nBot = 0;
      }
      if (options.mergekitCompat && nTop === 0) return { shape: t.shape, data: zeros() };
      return {
        shape: t.shape,
        data: rescaled(t.data, magnitudeRangeMask(t.data, nTop, n - nBot), norm, d, into),
      };
    }
    case "random": {
      checkMask(options.mask, n, "DARE");
      const mask = options.mask ?? bernoulli(n, () => d, options);
      return { shape: t.shape, data: rescaled(t.data, mask, norm, d, into) };
    }
    case "della_magprune": {
      if (d <= 0) return { shape: t.shape, data: zeros() };
      const eps = options.epsilon ?? 0.15;
      if (!(d - eps > 0 && d + eps < 1)) {
        throw new OptionError(
          "epsilon",
          eps,
          `DELLA needs 0 < density − epsilon and density + epsilon < 1 (density ${d})`,
        );
      }
      const probs = dellaProbabilities(t, d, eps);
      checkMask(options.mask, n, "DELLA");
      const mask = options.mask ?? bernoulli(n, (i) => probs[i], options);
      return { shape: t.shape, data: rescaled(t.data, mask, norm, d, into) };
    }
    default:
      throw new OptionError(
        "method",
        options.method,
        "use magnitude, magnitude_outliers, random or della_magprune",
      );
  }
}

/**
 * DELLA keep probabilities per row: `p = d − ε + 2ε·(rank − 1)/(ncols − 1)`, rank 1 = smallest |x|.
 *
 * @example
 * ```ts
 * import { dellaProbabilities } from "@moekit/moekit";
 * const p = dellaProbabilities({ shape: [4], data: new Float64Array([.1, -.4, .3, .2]) }, 0.5, 0.1);
 * console.log(Array.from(p, (v) => v.toFixed(4))); // ["0.4000", "0.6000", "0.5333", "0.4667"]
 * ```
 */
export function dellaProbabilities(input: TensorInput, density: number, epsilon: number): Float64Array {
  const t = asTensor(input), [rows, cols] = rowsCols(t.shape, "DELLA tensor");
  if (cols < 2) throw new OptionError("DELLA", `${cols} column`, "ranking needs at least 2 entries per row");
  const p = new Float64Array(t.data.length), ranks = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    magnitudeRanks(t.data, r * cols, cols, ranks);
    for (let j = 0; j < cols; j++) {
      p[r * cols + j] = density - epsilon + (2 * epsilon * (ranks[j] - 1)) / (cols - 1);
    }
  }
  return p;
}

function bernoulli(n: number, p: (i: number) => number, o: SparsifyOptions): Uint8Array {
  const rng = new Rng(o.seed ?? 0).derive(o.name ?? "", o.modelIndex ?? 0), mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = rng.uniform() < p(i) ? 1 : 0;
  return mask;
}

/** TIES paper code: keep `|x| ≥ kthvalue(|x|, n − trunc(d·n))` (trunc(d·n)+1 entries for distinct magnitudes). */
function paperTopMask(values: ArrayLike<number>, d: number): Uint8Array {
  const n = values.length, kth = n - Math.trunc(d * n), mask = new Uint8Array(n);
  if (kth <= 0) return mask.fill(1);
  const sorted = Float64Array.from(values, Math.abs).sort();
  const thr = sorted[kth - 1];
  for (let i = 0; i < n; i++) mask[i] = Math.abs(values[i]) >= thr ? 1 : 0;
  return mask;
}

/** Breadcrumbs paper code: per row along the last dimension, drop the trunc(c·γ) largest, keep the next trunc(c·β). */
function paperRowMask(t: Tensor, beta: number, gamma: number): Uint8Array {
  const n = t.data.length, mask = new Uint8Array(n);
  if (t.shape.length === 0) return mask.fill(1); // 0-d tensors are untouched
  const c = t.shape[t.shape.length - 1], drop = Math.trunc(c * gamma), keep = Math.trunc(c * beta);
  for (let r = 0; r * c < n; r++) {
    const row = t.data.subarray(r * c, (r + 1) * c), m = magnitudeRangeMask(row, drop, drop + keep);
    mask.set(m, r * c);
  }
  return mask;
}
