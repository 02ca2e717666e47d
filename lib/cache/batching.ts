/**
 * Expert-aware batching: reorder requests so tokens that share experts run in the same step, the
 * scheduling that pre-gating makes possible (Read-ME).
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";

/**
 * Distinct `(layer, expert)` pairs each batch step loads, for a token order.
 *
 * @example
 * ```ts
 * import { expertLoadsPerStep } from "@moekit/moekit/cache";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(2), k: 1 }).route(matrix.fromArrays([[1, 0], [0, 1], [1, 0], [0, 1]]));
 * assert.deepEqual(expertLoadsPerStep([r], [0, 1, 2, 3], 2), [2, 2]);
 * assert.deepEqual(expertLoadsPerStep([r], [0, 2, 1, 3], 2), [1, 1]);
 * ```
 */
export function expertLoadsPerStep(
  routings: readonly RoutingResult[],
  order: ArrayLike<number>,
  batchSize: number,
): number[] {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new OptionError("batchSize", batchSize, "must be an integer ≥ 1");
  }
  if (routings.length === 0) throw new MoekitError("expertLoadsPerStep: needs at least one layer's routing");
  const T = routings[0].tokens, seen = new Uint8Array(T);
  routings.forEach((r, l) => {
    if (r.tokens !== T) {
      throw new MoekitError(`expertLoadsPerStep: layer ${l} routes ${r.tokens} tokens; layer 0 routes ${T}`);
    }
  });
  for (let i = 0; i < order.length; i++) {
    const t = order[i];
    if (!Number.isInteger(t) || t < 0 || t >= T || seen[t]) {
      throw new OptionError(
        `order[${i}]`,
        t,
        `a token order lists tokens 0..${T - 1}, each at most once${seen[t] ? ` (${t} is repeated)` : ""}`,
      );
    }
    seen[t] = 1;
  }
  const steps: number[] = [];
  for (let s = 0; s < order.length; s += batchSize) {
    const used = new Set<number>();
    routings.forEach((r, l) => {
      for (let i = s; i < Math.min(order.length, s + batchSize); i++) {
        const t = order[i];
        for (let j = 0; j < r.k; j++) {
          if (isKept(r, t * r.k + j)) used.add(l * r.experts + r.indices[t * r.k + j]);
        }
      }
    });
    steps.push(used.size);
  }
  return steps;
}

/**
 * Reorders tokens so that tokens with the same experts share batches: sorted by their per-layer top-1
 * experts (then the rest of their choices), ties by arrival. Returns the order and the expert loads per
 * step before and after.
 *
 * @example
 * ```ts
 * import { expertAwareBatching } from "@moekit/moekit/cache";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(2), k: 1 }).route(matrix.fromArrays([[1, 0], [0, 1], [1, 0], [0, 1]]));
 * const b = expertAwareBatching([r], 2);
 * assert.deepEqual([Array.from(b.order), b.meanBefore, b.meanAfter], [[0, 2, 1, 3], 2, 1]);
 * ```
 */
export function expertAwareBatching(
  routings: readonly RoutingResult[],
  batchSize: number,
): { order: Int32Array; before: number[]; after: number[]; meanBefore: number; meanAfter: number } {
  if (routings.length === 0) throw new MoekitError("expertAwareBatching: needs at least one layer's routing");
  const T = routings[0].tokens;
  const signature = (t: number) =>
    routings.flatMap((r) => Array.from(r.indices.subarray(t * r.k, (t + 1) * r.k)));
  const sigs = Array.from({ length: T }, (_, t) => signature(t));
  const order = Array.from({ length: T }, (_, t) => t).sort((a, b) => {
    const sa = sigs[a], sb = sigs[b];
    for (let i = 0; i < sa.length; i++) if (sa[i] !== sb[i]) return sa[i] - sb[i];
    return a - b;
  });
  const identity = Array.from({ length: T }, (_, t) => t);
  const before = expertLoadsPerStep(routings, identity, batchSize),
    after = expertLoadsPerStep(routings, order, batchSize);
  const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
  return { order: Int32Array.from(order), before, after, meanBefore: mean(before), meanAfter: mean(after) };
}
