/**
 * Hash-layer routing (Roller et al. 2021; docs/routing.md, "Hash layers"): a fixed token-id → expert
 * table, weight 1, no gate. A selector over a logit source that ignores X.
 * @module
 */

import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import type { LogitSource } from "./gate.ts";
import type { Selector } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { Router } from "./result.ts";

/**
 * Options of {@link hashRouter}.
 *
 * @example
 * ```ts
 * import { type HashRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: HashRouterOptions = { experts: 8, vocabSize: 32000, seed: 1 };
 * assert.equal(o.experts, 8);
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
 * The hash selector: `expert = table[tokenId]` (or `tokenId mod E` outside the table), weight and score
 * 1, `scoreFunction: "none"` (no gate probabilities: logit-based losses refuse it). Reads
 * `route(x, { tokenIds })`. Under an expert mask, a token hashed to a removed expert is an error.
 *
 * @example
 * ```ts
 * import { hashSelect } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(hashSelect({ experts: 4 }).scoreFunction, "none");
 * ```
 */
export function hashSelect(options: { readonly experts: number; readonly table?: Int32Array }): Selector {
  const E = options.experts, table = options.table;
  return {
    name: "hash",
    k: 1,
    scoreFunction: "none",
    needsAllTokens: false,
    validate(experts) {
      if (experts !== E) throw new OptionError("experts", E, `the source has ${experts} experts`);
    },
    select(logits, tokenOffset, out, ctx) {
      const ids = ctx.options?.tokenIds;
      if (!ids) throw new MoekitError("hashRouter.route needs { tokenIds }: one id per row of X");
      if (ids.length !== ctx.tokens) {
        throw new ShapeError("tokenIds", [ctx.tokens], [ids.length], "one id per row of X");
      }
      for (let i = 0; i < logits.rows; i++) {
        const t = tokenOffset + i, id = ids[t];
        if (!Number.isInteger(id) || id < 0) {
          throw new OptionError(`tokenIds[${t}]`, id, "ids must be integers ≥ 0");
        }
        const e = table && id < table.length ? table[id] : id % E;
        if (logits.data[i * E + e] === -Infinity) {
          throw new OptionError(
            "expertMask",
            `expert ${e} removed`,
            `token ${t} (id ${id}) hashes to it; hash routing has no scores to fall back on — remap the table`,
          );
        }
        out.indices[t] = e;
        out.weights[t] = 1;
        out.scores[t] = 1;
      }
    },
  };
}

/**
 * Hash routing: `expert = table[tokenId]`, or `tokenId mod E` for ids outside the table (or with no
 * table). Needs `route(x, { tokenIds })`; x only gives T.
 *
 * @example
 * ```ts
 * import { hashRouter, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = hashRouter({ experts: 4 }).route(matrix.zeros(3, 2), { tokenIds: [5, 6, 11] });
 * assert.deepEqual(Array.from(r.indices), [1, 2, 3]);
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
  // no gate: X only gives T (any width); the zero logits carry the expert mask
  const noLogits: LogitSource = {
    experts: E,
    inputDim: -1,
    logits(_x, out) {
      out.data.fill(0);
      return out;
    },
  };
  return composeRouter({ name: "hash", gate: noLogits, selector: hashSelect({ experts: E, table }) });
}
