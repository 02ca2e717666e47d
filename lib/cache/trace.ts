/**
 * Expert access traces: a routing run turned into the `(layer, expert)` keys an expert cache sees, in
 * execution order (docs/routing.md, "Expert-cache simulation").
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";

/**
 * A flat trace of expert keys `layer·E + expert` (so integer order is the lexicographic order of
 * `[layer, expert]` pairs).
 *
 * @example
 * ```ts
 * import { accessTrace, type AccessTrace } from "@moekit/moekit/cache";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(2), k: 1 }).route(matrix.fromArrays([[0, 1]]));
 * const tr: AccessTrace = accessTrace([r, r, r]);
 * assert.deepEqual([tr.layers, tr.experts, Math.floor(tr.keys[2] / tr.experts), tr.keys[2] % tr.experts], [3, 2, 2, 1]);
 * ```
 */
export interface AccessTrace {
  /** The keys in access order. */
  readonly keys: Int32Array;
  /** Experts per layer E (key = layer·E + expert). */
  readonly experts: number;
  /** Layers L. */
  readonly layers: number;
}

/**
 * Builds the access trace of an L-layer routing run. `order: "token"` (decode: token-major, then layer,
 * then choice order; default); `order: "batch"` (batches of `batchSize` tokens: per layer, each expert the
 * batch uses once, ascending). Only kept assignments load an expert.
 *
 * @example
 * ```ts
 * import { accessTrace } from "@moekit/moekit/cache";
 * import { matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = topKRouter({ weight: matrix.identity(3), k: 1 }).route(matrix.fromArrays([[1, 0, 0], [0, 0, 1]]));
 * assert.deepEqual(Array.from(accessTrace([r, r]).keys), [0, 3, 2, 5]); // token-major: (0,e0) (1,e0) (0,e2) (1,e2)
 * ```
 */
export function accessTrace(
  routings: readonly RoutingResult[],
  options: { readonly order?: "token" | "batch"; readonly batchSize?: number } = {},
): AccessTrace {
  if (routings.length === 0) throw new MoekitError("accessTrace: needs the routing of at least one layer");
  const { tokens: T, experts: E } = routings[0];
  routings.forEach((r, l) => {
    if (r.tokens !== T || r.experts !== E) {
      throw new MoekitError(
        `accessTrace: layer ${l} routes ${r.tokens} tokens to ${r.experts} experts; layer 0 has ${T} and ${E}`,
      );
    }
  });
  const order = options.order ?? "token", keys: number[] = [];
  if (order === "token") {
    for (let t = 0; t < T; t++) {
      routings.forEach((r, l) => {
        for (let j = 0; j < r.k; j++) if (isKept(r, t * r.k + j)) keys.push(l * E + r.indices[t * r.k + j]);
      });
    }
  } else if (order === "batch") {
    const B = options.batchSize ?? 1;
    if (!Number.isInteger(B) || B < 1) throw new OptionError("batchSize", B, "must be an integer ≥ 1");
    const used = new Uint8Array(E);
    for (let t0 = 0; t0 < T; t0 += B) {
      routings.forEach((r, l) => {
        used.fill(0);
        for (let i = t0 * r.k; i < Math.min(T, t0 + B) * r.k; i++) if (isKept(r, i)) used[r.indices[i]] = 1;
        for (let e = 0; e < E; e++) if (used[e]) keys.push(l * E + e);
      });
    }
  } else {
    throw new OptionError("order", order, `use "token" or "batch"`);
  }
  return { keys: Int32Array.from(keys), experts: E, layers: routings.length };
}
