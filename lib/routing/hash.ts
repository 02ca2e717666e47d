/**
 * Hash-layer routing (Roller et al. 2021): a fixed token-id → expert table, weight 1, no gate.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";

/**
 * Options of {@link hashRouter}.
 *
 * @example
 * ```ts
 * import { type HashRouterOptions } from "@moekit/moekit";
 * const o: HashRouterOptions = { experts: 8, vocabSize: 32000, seed: 1 };
 * console.log(o.experts); // 8
 * ```
 */
export interface HashRouterOptions {
  /** Number of experts E. */
  readonly experts: number;
  /** An explicit table `vocab → expert`. */
  readonly table?: ArrayLike<number>;
  /** Build a seeded random balanced table of this size (each expert gets ⌊V/E⌋ or ⌈V/E⌉ ids). */
  readonly vocabSize?: number;
  /** Seed of the random table. Default 0. */
  readonly seed?: number;
}

/**
 * Hash routing: `expert = table[tokenId]`, or `tokenId mod E` for ids outside the table (or with no
 * table). Needs `route(x, { tokenIds })`; x only gives T.
 *
 * @example
 * ```ts
 * import { hashRouter, matrix } from "@moekit/moekit";
 * const r = hashRouter({ experts: 4 }).route(matrix.zeros(3, 2), { tokenIds: [5, 6, 11] });
 * console.log(Array.from(r.indices)); // [1, 2, 3]
 * ```
 */
export function hashRouter(options: HashRouterOptions): Router {
  const E = options.experts;
  if (!Number.isInteger(E) || E < 1) throw new OptionError("experts", E, "must be an integer ≥ 1");
  let table: Int32Array | undefined;
  if (options.table) {
    table = Int32Array.from(options.table);
    table.forEach((e, i) => {
      if (!(e >= 0 && e < E)) throw new OptionError(`table[${i}]`, e, `must be an expert in 0..${E - 1}`);
    });
  } else if (options.vocabSize !== undefined) {
    const V = options.vocabSize;
    if (!Number.isInteger(V) || V < 1) throw new OptionError("vocabSize", V, "must be an integer ≥ 1");
    table = new Int32Array(V);
    for (let i = 0; i < V; i++) table[i] = i % E;
    const rng = new Rng(options.seed ?? 0);
    for (let i = V - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [table[i], table[j]] = [table[j], table[i]];
    }
  }
  return {
    name: "hash",
    experts: E,
    k: 1,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      const ids = opts.tokenIds;
      if (!ids) throw new MoekitError("hashRouter.route needs { tokenIds }: one id per row of X");
      if (ids.length !== x.rows) {
        throw new ShapeError("tokenIds", [x.rows], [ids.length], "one id per row of X");
      }
      const T = x.rows, indices = new Int32Array(T);
      for (let t = 0; t < T; t++) {
        const id = ids[t];
        if (!Number.isInteger(id) || id < 0) {
          throw new OptionError(`tokenIds[${t}]`, id, "ids must be integers ≥ 0");
        }
        indices[t] = table && id < table.length ? table[id] : id % E;
      }
      return {
        tokens: T,
        experts: E,
        k: 1,
        indices,
        weights: new Float32Array(T).fill(1),
        scores: new Float32Array(T).fill(1),
        scoreFunction: "softmax",
      };
    },
  };
}
