/**
 * NAEE expert pruning and dynamic skipping (compression.md §5): exhaustive subset search on the layer
 * reconstruction loss (with a greedy fallback beyond a budget), frequency / soft-count / REAP baselines
 * scored by the same loss, and top-2 skipping with a calibrated β.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import type { CalibrationStats } from "./calibrate.ts";
import { swigluForward } from "../moe/layer.ts";
import {
  checkLayer,
  type CompressedLayer,
  type ExpertLayer,
  expertParams,
  forwardWithExperts,
  layerForward,
  layerRoute,
} from "./layer.ts";

/**
 * The NAEE loss `Σ_b ‖Y_b − Ŷ_b‖_F` over `numBatches` contiguous parts sized like numpy `array_split`.
 *
 * @example
 * ```ts
 * import { matrix, naeeLoss } from "@moekit/moekit";
 * console.log(naeeLoss(matrix.fromArrays([[3], [4]]), matrix.zeros(2, 1), 2)); // 7 = 3 + 4 (one norm per part)
 * ```
 */
export function naeeLoss(y: Mat, yHat: Mat, numBatches = 1): number {
  const T = y.rows, d = y.cols, base = Math.floor(T / numBatches), extra = T % numBatches;
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

/**
 * Options of {@link pruneExperts}.
 *
 * @example
 * ```ts
 * import { type PruneOptions } from "@moekit/moekit";
 * const o: PruneOptions = { keep: 6, method: "enumerate", numBatches: 4 };
 * console.log(o.keep); // 6
 * ```
 */
export interface PruneOptions {
  /** Experts kept r (E − r are dropped). */
  readonly keep: number;
  /** `"enumerate"` (NAEE; greedy beyond `maxSubsets`), `"greedy"`, `"count"`, `"weightSum"`, `"reap"`. Default enumerate. */
  readonly method?: "enumerate" | "greedy" | "count" | "weightSum" | "reap";
  /** Loss partition: number of contiguous token batches. Default 1. */
  readonly numBatches?: number;
  /** Largest exhaustive search. Default 10 000 subsets. */
  readonly maxSubsets?: number;
  /** Calibration statistics (needed by count / weightSum / reap). */
  readonly stats?: CalibrationStats;
}

/**
 * Prunes E − r experts on calibration tokens X: dropped experts get logit −∞ before the softmax (the
 * router rows and experts are sliced away). Returns the dropped set, its loss and, for enumeration, the
 * loss of every subset keyed by the ascending dropped list.
 *
 * @example
 * ```ts
 * import { matrix, pruneExperts, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(6, 8, { seed: 1 }), experts: randomExperts({ experts: 6, dim: 8, hidden: 8 }), k: 2 };
 * const p = pruneExperts(layer, matrix.randn(64, 8, { seed: 2 }), { keep: 4 });
 * console.log(p.dropped.length, Object.keys(p.losses!).length); // 2 15
 * ```
 */
export function pruneExperts(
  layer: ExpertLayer,
  x: Mat,
  options: PruneOptions,
): CompressedLayer & {
  dropped: number[];
  loss: number;
  losses?: Record<string, number>;
  layer: ExpertLayer;
} {
  const { E } = checkLayer(layer), r = options.keep, nb = options.numBatches ?? 1;
  if (!Number.isInteger(r) || r < layer.k || r > E) {
    throw new OptionError("keep", r, `must be an integer in k..E = ${layer.k}..${E}`);
  }
  if (x.rows === 0) throw new MoekitError("pruneExperts: the calibration set is empty (0 tokens)");
  const y = layerForward(layer, x).output;
  const lossOf = (dropped: number[]) =>
    naeeLoss(y, layerForward(layer, x, { dropped: new Set(dropped) }).output, nb);
  const method = options.method ?? "enumerate", drop = E - r;
  let dropped: number[], losses: Record<string, number> | undefined;
  if (method === "enumerate" && binomial(E, drop) <= (options.maxSubsets ?? 10000)) {
    losses = {};
    let best = Infinity;
    dropped = [];
    for (const c of combinations(E, drop)) {
      const l = lossOf(c);
      losses[c.join(",")] = l;
      if (l < best) {
        best = l;
        dropped = c;
      }
    }
  } else if (method === "enumerate" || method === "greedy") {
    dropped = [];
    for (let step = 0; step < drop; step++) {
      let bestE = -1, best = Infinity;
      for (let e = 0; e < E; e++) {
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
    if (!s) throw new MoekitError(`pruneExperts method ${method} needs calibration stats (options.stats)`);
    const score = method === "count" ? s.counts : method === "weightSum" ? s.weightSum : reapScores(layer, x);
    dropped = Array.from({ length: E }, (_, e) => e).sort((a, b) => score[a] - score[b] || a - b).slice(
      0,
      drop,
    ).sort((a, b) => a - b);
  }
  const keepIdx = Array.from({ length: E }, (_, e) => e).filter((e) => !dropped.includes(e));
  const pruned: ExpertLayer = {
    ...layer,
    gate: {
      rows: r,
      cols: layer.gate.cols,
      data: Float32Array.from(keepIdx.flatMap((e) => Array.from(matrix.row(layer.gate, e)))),
    },
    experts: keepIdx.map((e) => layer.experts[e]),
  };
  const params = pruned.gate.data.length + pruned.experts.reduce((a, e) => a + expertParams(e), 0);
  return {
    method: `naee-${method} keep ${r}/${E}`,
    dropped,
    loss: lossOf(dropped),
    ...(losses ? { losses } : {}),
    layer: pruned,
    params,
    bytes: params * 4,
    forward: (xs) => {
      const f = forwardWithExperts(pruned, xs);
      return { ...f, indices: f.indices.map((i) => (i < 0 ? -1 : keepIdx[i])) };
    },
  };
}

/** REAP saliency `mean_{t: e∈S} w_e(x_t)·‖E_e(x_t)‖₂`, each expert run once on its routed tokens. */
function reapScores(layer: ExpertLayer, x: Mat): Float64Array {
  const { E } = checkLayer(layer), routing = layerRoute(layer, x), k = layer.k, d = x.cols;
  return Float64Array.from({ length: E }, (_, e) => {
    const slots: number[] = [];
    for (let i = 0; i < routing.indices.length; i++) if (routing.indices[i] === e) slots.push(i);
    if (!slots.length) return 0;
    const xe = matrix.zeros(slots.length, d);
    slots.forEach((i, r) => xe.data.set(matrix.row(x, Math.floor(i / k)), r * d));
    const ye = swigluForward(layer.experts[e], xe);
    let s = 0;
    slots.forEach((i, r) => {
      let norm = 0;
      for (let c = 0; c < d; c++) norm += ye.data[r * d + c] ** 2;
      s += routing.weights[i] * Math.sqrt(norm);
    });
    return s / slots.length;
  });
}

/**
 * Calibrates the skipping threshold `β = median_t(p(2)/p(1))` (numpy median) for a top-2 layer.
 *
 * @example
 * ```ts
 * import { calibrateSkip, matrix, randomExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }), k: 2 };
 * const beta = calibrateSkip(layer, matrix.randn(50, 8));
 * console.log(beta > 0 && beta <= 1); // true
 * ```
 */
export function calibrateSkip(layer: ExpertLayer, x: Mat): number {
  const { E } = checkLayer(layer);
  if (layer.k !== 2) throw new MoekitError(`dynamic skipping is defined for top-2 layers (k = ${layer.k})`);
  if (x.rows === 0) throw new MoekitError("calibrateSkip: the calibration set is empty (0 tokens)");
  const r = layerRoute(layer, x);
  const ratios = Array.from(
    { length: x.rows },
    (_, t) => r.probs[t * E + r.indices[2 * t + 1]] / r.probs[t * E + r.indices[2 * t]],
  ).sort((a, b) => a - b);
  const n = ratios.length;
  return n % 2 ? ratios[(n - 1) / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2;
}

/**
 * Dynamic skipping: the second expert is skipped iff `p(2) < β·p(1)`; with renormalisation the top-1
 * weight becomes 1. β = 0 changes nothing, β > 1 skips every token.
 *
 * @example
 * ```ts
 * import { matrix, randomExperts, skipExperts } from "@moekit/moekit";
 * const layer = { gate: matrix.randn(4, 8, { seed: 1 }), experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }), k: 2 };
 * const out = skipExperts(layer, { beta: 2 }).forward(matrix.randn(10, 8));
 * console.log(Array.from(out.indices).filter((e, i) => i % 2 === 1 && e >= 0).length); // 0
 * ```
 */
export function skipExperts(layer: ExpertLayer, options: { beta: number }): CompressedLayer {
  checkLayer(layer);
  if (layer.k !== 2) throw new MoekitError(`dynamic skipping is defined for top-2 layers (k = ${layer.k})`);
  if (!(options.beta >= 0)) throw new OptionError("beta", options.beta, "must be ≥ 0");
  const params = layer.gate.data.length + layer.experts.reduce((a, e) => a + expertParams(e), 0);
  return {
    method: `naee-skip β=${options.beta.toFixed(3)}`,
    params,
    bytes: params * 4,
    forward: (x) => forwardWithExperts(layer, x, { skipBeta: options.beta }),
  };
}
