/**
 * Expert loads straight from routing: the `[L, E]` matrix of kept token–expert assignments that
 * {@link rebalanceExperts} takes, for one step or several (summed, or as an exponential moving average,
 * the way serving systems feed EPLB).
 * @module
 */

import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";
import { checkRoutingIndices } from "../routing/checks.ts";
import { type LoadMatrix, readLoads } from "./checks.ts";

/**
 * Options of {@link expertLoadMatrix}.
 *
 * @example
 * ```ts
 * import type { ExpertLoadOptions } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const o: ExpertLoadOptions = { decay: 0.9 };
 * assert.equal(o.decay, 0.9);
 * ```
 */
export interface ExpertLoadOptions {
  /**
   * EMA decay in [0, 1): `m ← decay·m + (1 − decay)·counts` per step, starting from `previous` or, without
   * it, from the first step's counts. Omitted: the counts of all steps are summed.
   */
  readonly decay?: number;
  /** The running average so far `[L, E]` (continue an EMA across calls). Needs `decay`. */
  readonly previous?: LoadMatrix;
}

function isStep(x: unknown): x is readonly RoutingResult[] {
  return Array.isArray(x);
}

/**
 * Counts kept assignments per (layer, expert): the `[L, E]` load matrix of a routing run. Pass one step
 * (one `RoutingResult` per layer) or several steps (`[step][layer]`); several steps are summed, or
 * averaged with an exponential moving average when `decay` is given.
 *
 * @example
 * ```ts
 * import { expertLoadMatrix } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const step = (ids: number[]) => [{
 *   tokens: ids.length, experts: 3, k: 1, scoreFunction: "softmax" as const,
 *   indices: Int32Array.from(ids), weights: new Float32Array(ids.length), scores: new Float32Array(ids.length),
 * }];
 * assert.deepEqual(Array.from(expertLoadMatrix(step([0, 0, 2]))[0]), [2, 0, 1]);
 * const ema = expertLoadMatrix([step([0, 0, 2]), step([1, 1, 1])], { decay: 0.5 });
 * assert.deepEqual(Array.from(ema[0]), [1, 1.5, 0.5]);
 * ```
 */
export function expertLoadMatrix(
  routings: readonly RoutingResult[] | readonly (readonly RoutingResult[])[],
  options: ExpertLoadOptions = {},
): Float64Array[] {
  if (!Array.isArray(routings) || routings.length === 0) {
    throw new MoekitError(
      "expertLoadMatrix: routings is empty; pass one RoutingResult per layer, or [step][layer]",
    );
  }
  const steps: readonly (readonly RoutingResult[])[] = isStep(routings[0])
    ? routings as readonly (readonly RoutingResult[])[]
    : [routings as readonly RoutingResult[]];
  const L = steps[0].length;
  if (L === 0) throw new ShapeError("routings[0]", [-1], [0], "a step needs one RoutingResult per layer");
  const E = steps[0][0].experts;
  steps.forEach((layers, s) => {
    if (!Array.isArray(layers) || layers.length !== L) {
      throw new ShapeError(
        `routings[${s}]`,
        [L],
        [layers?.length ?? -1],
        "every step routes the same layers",
      );
    }
    layers.forEach((r, l) => {
      if (typeof r !== "object" || r === null || !(r.indices instanceof Int32Array)) {
        throw new OptionError(`routings[${s}][${l}]`, typeof r, "must be a RoutingResult");
      }
      if (r.experts !== E) {
        throw new ShapeError(`routings[${s}][${l}].experts`, [E], [r.experts], "every layer has the same E");
      }
      checkRoutingIndices(r, `routings[${s}][${l}]`);
    });
  });
  const { decay, previous } = options;
  if (decay !== undefined && !(typeof decay === "number" && decay >= 0 && decay < 1)) {
    throw new OptionError("decay", decay, "the EMA decay must be a number in [0, 1)");
  }
  let m: Float64Array[] | undefined;
  if (previous !== undefined) {
    if (decay === undefined) throw new OptionError("decay", decay, "required with previous (an EMA state)");
    const p = readLoads(previous, "previous");
    if (p.L !== L || p.E !== E) {
      throw new ShapeError("previous", [L, E], [p.L, p.E], "the running average of the same layers");
    }
    m = Array.from({ length: L }, (_, l) => p.w.slice(l * E, (l + 1) * E));
  }
  for (const layers of steps) {
    const counts = layers.map((r) => {
      const c = new Float64Array(E);
      for (let i = 0; i < r.indices.length; i++) if (isKept(r, i)) c[r.indices[i]]++;
      return c;
    });
    if (m === undefined) m = counts;
    else if (decay === undefined) {
      for (let l = 0; l < L; l++) for (let e = 0; e < E; e++) m[l][e] += counts[l][e];
    } else {
      for (let l = 0; l < L; l++) {
        for (let e = 0; e < E; e++) m[l][e] = decay * m[l][e] + (1 - decay) * counts[l][e];
      }
    }
  }
  return m!;
}
