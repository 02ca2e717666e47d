/**
 * NAEE expert pruning and dynamic skipping (docs/compression.md, "Pruning and skipping"): exhaustive
 * subset search on the layer reconstruction loss (with a greedy fallback beyond a budget), frequency /
 * soft-count / REAP baselines scored by the same loss, and top-2 skipping with a calibrated β. Removed
 * experts are an expert mask of the layer (their logits are −∞ before scoring); skipping is the layer's
 * `skip` option — so every router works, shared experts included.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import type { RouteOptions } from "../routing/result.ts";
import { dispatch, gatherExpertInputs } from "../moe/dispatch.ts";
import { type MoeLayer, moeLayer, type SkipOptions, swigluForward } from "../moe/layer.ts";
import type { CalibrationStats } from "./calibrate.ts";
import { type CompressedLayer, forwardOf, layerParams, liveExperts } from "./compressed.ts";

/**
 * The NAEE loss `Σ_b ‖Y_b − Ŷ_b‖_F` (unsquared norms) over `numBatches` contiguous parts of the tokens,
 * sized like numpy `array_split` (the first `T mod nb` parts get one extra token).
 *
 * @example
 * ```ts
 * import { matrix, naeeLoss } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * assert.equal(naeeLoss(matrix.fromArrays([[3], [4]]), matrix.zeros(2, 1), 2), 7); // 3 + 4: one norm per part
 * assert.equal(naeeLoss(matrix.fromArrays([[3], [4]]), matrix.zeros(2, 1)), 5); // one part: ‖(3, 4)‖
 * ```
 */
export function naeeLoss(y: Mat, yHat: Mat, numBatches = 1): number {
  matrix.assertShape("NAEE loss Ŷ", yHat, y.rows, y.cols);
  const T = y.rows, d = y.cols;
  if (!Number.isInteger(numBatches) || numBatches < 1) {
    throw new OptionError("numBatches", numBatches, "must be an integer ≥ 1");
  }
  const base = Math.floor(T / numBatches), extra = T % numBatches;
  let loss = 0, start = 0;
  for (let b = 0; b < numBatches; b++) {
    const size = base + (b < extra ? 1 : 0);
    let s = 0;
    for (let i = start * d; i < (start + size) * d; i++) s += (y.data[i] - yHat.data[i]) ** 2;
    loss += Math.sqrt(s);
    start += size;
  }
  return loss;
}

function* combinations(n: number, r: number): Generator<number[]> {
  const c = Array.from({ length: r }, (_, i) => i);
  if (r > n) return;
  while (true) {
    yield c.slice();
    let i = r - 1;
    while (i >= 0 && c[i] === n - r + i) i--;
    if (i < 0) return;
    c[i]++;
    for (let j = i + 1; j < r; j++) c[j] = c[j - 1] + 1;
  }
}

function binomial(n: number, r: number): number {
  let v = 1;
  for (let i = 1; i <= r; i++) v = (v * (n - r + i)) / i;
  return Math.round(v);
}

/** A mask `[E]` with the layer's removed experts and `dropped` set to 0. Internal. */
function maskWithout(layer: MoeLayer, dropped: readonly number[]): Uint8Array {
  const mask = layer.expertMask
    ? Uint8Array.from(layer.expertMask)
    : new Uint8Array(layer.router.experts).fill(1);
  for (const e of dropped) mask[e] = 0;
  return mask;
}

/**
 * The expert rankings {@link pruneExperts} accepts as `method` (see {@link PruneOptions.method}).
 *
 * @example
 * ```ts
 * import { PRUNE_METHODS } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * assert.deepEqual(PRUNE_METHODS, ["enumerate", "greedy", "count", "weightSum", "reap"]);
 * ```
 */
export const PRUNE_METHODS = ["enumerate", "greedy", "count", "weightSum", "reap"] as const;

/**
 * Options of {@link pruneExperts}.
 *
 * @example
 * ```ts
 * import { type PruneOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: PruneOptions = { keep: 6, method: "enumerate", numBatches: 4 };
 * assert.equal(o.keep, 6);
 * ```
 */
export interface PruneOptions {
  /** Experts kept r (of the layer's routable experts; the others are removed). */
  readonly keep: number;
  /**
   * `"enumerate"` (NAEE; greedy beyond `maxSubsets`), `"greedy"`, or a baseline ranking: `"count"`,
   * `"weightSum"`, `"reap"`. Default `"enumerate"`.
   */
  readonly method?: (typeof PRUNE_METHODS)[number];
  /** Loss partition: number of contiguous token batches. Default 1. */
  readonly numBatches?: number;
  /** Largest exhaustive search. Default 10 000 subsets. */
  readonly maxSubsets?: number;
  /** Calibration statistics (needed by `count` and `weightSum`). */
  readonly stats?: CalibrationStats;
}

/**
 * Prunes experts on calibration tokens X: removed experts are masked out of routing (logit −∞ before
 * scoring, so with a renormalising router the output is unchanged when they were never chosen). Returns
 * the removed experts (ascending), the loss of that choice and, for enumeration, the loss of every subset
 * keyed by the ascending removed list; `layer` is the pruned layer (the original with an expert mask).
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, pruneExperts, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(6, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 6, dim: 8, hidden: 8 }),
 * });
 * const p = pruneExperts(layer, matrix.randn(64, 8, { seed: 2 }), { keep: 4 });
 * assert.deepEqual([p.dropped.length, Object.keys(p.losses!).length], [2, 15]); // C(6, 2) subsets
 * assert.equal(p.loss, Math.min(...Object.values(p.losses!)));
 * ```
 */
export function pruneExperts(
  layer: MoeLayer,
  x: Mat,
  options: PruneOptions,
): CompressedLayer & { dropped: number[]; loss: number; losses?: Record<string, number>; layer: MoeLayer } {
  const live = liveExperts(layer), n = live.length, r = options.keep, k = layer.router.k;
  const nb = options.numBatches ?? 1, method = options.method ?? "enumerate";
  if (!Number.isInteger(r) || r < k || r > n) {
    throw new OptionError("keep", r, `must be an integer in k..E = ${k}..${n} (routable experts)`);
  }
  if (!(PRUNE_METHODS as readonly string[]).includes(method)) {
    throw new OptionError("method", method, `use ${PRUNE_METHODS.join(", ")}`);
  }
  if (x.rows === 0) throw new MoekitError("pruneExperts: the calibration set is empty (0 tokens)");
  if (!Number.isInteger(nb) || nb < 1) throw new OptionError("numBatches", nb, "must be an integer ≥ 1");
  const y = layer.forward(x).output;
  const lossOf = (dropped: readonly number[]) =>
    naeeLoss(y, layer.forward(x, { expertMask: maskWithout(layer, dropped) } as RouteOptions).output, nb);
  const drop = n - r;
  let dropped: number[], losses: Record<string, number> | undefined;
  if (method === "enumerate" && binomial(n, drop) <= (options.maxSubsets ?? 10000)) {
    losses = {};
    let best = Infinity;
    dropped = [];
    for (const c of combinations(n, drop)) {
      const ids = c.map((i) => live[i]), l = lossOf(ids);
      losses[ids.join(",")] = l;
      if (l < best) {
        best = l;
        dropped = ids;
      }
    }
  } else if (method === "enumerate" || method === "greedy") {
    dropped = [];
    for (let step = 0; step < drop; step++) {
      let bestE = -1, best = Infinity;
      for (const e of live) {
        if (dropped.includes(e)) continue;
        const l = lossOf([...dropped, e]);
        if (l < best) {
          best = l;
          bestE = e;
        }
      }
      dropped.push(bestE);
    }
    dropped.sort((a, b) => a - b);
  } else {
    const s = options.stats;
    if (method !== "reap" && !s) {
      throw new OptionError("stats", "missing", `pruneExperts method ${method} needs calibration stats`);
    }
    if (s && s.counts.length !== layer.router.experts) {
      throw new ShapeError("calibration stats counts", [layer.router.experts], [s.counts.length]);
    }
    const score = method === "count"
      ? s!.counts
      : method === "weightSum"
      ? s!.weightSum
      : reapScores(layer, x);
    dropped = live.slice().sort((a, b) => score[a] - score[b] || a - b).slice(0, drop).sort((a, b) => a - b);
  }
  const pruned = moeLayer({ ...layer, expertMask: maskWithout(layer, dropped) });
  const params = layerParams(pruned);
  return {
    method: `naee-${method} keep ${r}/${n}`,
    dropped,
    loss: lossOf(dropped),
    ...(losses ? { losses } : {}),
    layer: pruned,
    params,
    bytes: params * 4,
    forward: forwardOf(pruned),
  };
}

/** REAP saliency `mean_{t: e computed} w_e(x_t)·‖E_e(x_t)‖₂`, each expert run once on its routed tokens. */
function reapScores(layer: MoeLayer, x: Mat): Float64Array {
  const disp = dispatch(layer.route(x)), d = layer.dim;
  return Float64Array.from({ length: layer.router.experts }, (_, e) => {
    const a = disp.offsets[e], b = disp.offsets[e + 1];
    if (a === b) return 0;
    const ye = swigluForward(layer.experts[e], gatherExpertInputs(x, disp, e), layer.activation);
    let s = 0;
    for (let p = a; p < b; p++) {
      let norm = 0;
      for (let c = 0; c < d; c++) norm += ye.data[(p - a) * d + c] ** 2;
      s += disp.weights[p] * Math.sqrt(norm);
    }
    return s / (b - a);
  });
}

/**
 * Calibrates the skipping threshold `β = median_t(score(2)/score(1))` (numpy median: the mean of the two
 * middle values for even T) of a top-2 layer, on the raw gate scores.
 *
 * @example
 * ```ts
 * import { calibrateSkip, matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }),
 * });
 * const beta = calibrateSkip(layer, matrix.randn(50, 8));
 * assert.ok(beta > 0 && beta <= 1);
 * ```
 */
export function calibrateSkip(layer: MoeLayer, x: Mat): number {
  const k = layer.router.k;
  if (k !== 2) throw new MoekitError(`dynamic skipping is defined for top-2 layers (k = ${k})`);
  if (x.rows === 0) throw new MoekitError("calibrateSkip: the calibration set is empty (0 tokens)");
  const r = moeLayer({ ...layer, skip: undefined }).route(x);
  const ratios = Array.from({ length: x.rows }, (_, t) => r.scores[2 * t + 1] / r.scores[2 * t])
    .sort((a, b) => a - b);
  const n = ratios.length;
  return n % 2 ? ratios[(n - 1) / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2;
}

/**
 * Options of {@link skipExperts}.
 *
 * @example
 * ```ts
 * import { type SkipExpertsOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const o: SkipExpertsOptions = { beta: 0.45, allBelow: true };
 * assert.equal(o.beta, 0.45);
 * ```
 */
export interface SkipExpertsOptions extends SkipOptions {
  /** Allow k ≠ 2: skip every choice j ≥ 1 below β × the first score (a moekit extension). Default false. */
  readonly allBelow?: boolean;
}

/**
 * Dynamic skipping: a token's second expert is skipped iff `score(2) < β·score(1)`; a renormalising router's
 * top-1 weight then becomes 1 (otherwise it stays score(1)). β = 0 changes nothing, β > 1 skips every token.
 * Defined for top-2 layers (NAEE); `allBelow` extends it to k > 2.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, skipExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }),
 * });
 * const { routing } = skipExperts(layer, { beta: 2 }).forward(matrix.randn(10, 8));
 * assert.ok(routing.keep!.every((v, i) => v === (i % 2 === 0 ? 1 : 0))); // first choices only
 * ```
 */
export function skipExperts(
  layer: MoeLayer,
  options: SkipExpertsOptions,
): CompressedLayer & { layer: MoeLayer } {
  const k = layer.router.k;
  if (k !== 2 && !options.allBelow) {
    throw new MoekitError(
      `dynamic skipping is defined for top-2 layers (k = ${k}); pass allBelow: true to skip every choice below β·score(1)`,
    );
  }
  if (!(options.beta >= 0)) throw new OptionError("beta", options.beta, "must be a number ≥ 0");
  const skipped = moeLayer({
    ...layer,
    skip: {
      beta: options.beta,
      ...(options.renormalize !== undefined ? { renormalize: options.renormalize } : {}),
    },
  });
  const params = layerParams(skipped);
  return {
    method: `naee-skip β=${options.beta.toFixed(3)}`,
    layer: skipped,
    params,
    bytes: params * 4,
    forward: forwardOf(skipped),
  };
}
