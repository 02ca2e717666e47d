/**
 * `composeRouter`: a router built from a logit source, a selector and an optional capacity policy.
 * Every router in moekit is one of these compositions (docs/routing.md, "How routers are built").
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { sigmoid, softmaxInto } from "../core/numeric.ts";
import { checkLogitsFinite, checkTokenShape } from "./checks.ts";
import type { LogitContext, LogitSource } from "./gate.ts";
import type { SelectContext, SelectionBuffers, Selector } from "./select.ts";
import { applyCapacity, type CapacityOptions, checkCapacityOptions } from "./capacity.ts";
import { SELECTOR_REGISTRY_URL } from "./registry.ts";
import type { RouteOptions, Router, RoutingResult, ScoreFunction } from "./result.ts";

/**
 * Parts and settings of a composed router.
 *
 * @example
 * ```ts
 * import { type ComposeOptions, linearGate, matrix, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: ComposeOptions = {
 *   gate: linearGate({ weight: matrix.randn(4, 8, { seed: 1 }) }),
 *   selector: softmaxTopK({ k: 2 }),
 *   capacity: { capacityFactor: 1.25 },
 * };
 * assert.equal(o.selector.k, 2);
 * ```
 */
export interface ComposeOptions {
  /** Name for tables. Default: the selector's name. */
  readonly name?: string;
  /** Where logits come from. */
  readonly gate: LogitSource;
  /** How logits become choices. */
  readonly selector: Selector;
  /** Capacity and drop policy; omit for no dropping. */
  readonly capacity?: CapacityOptions;
  /** Multiplicative router-input jitter ε: `x ← x·U(1−ε, 1+ε)`, training only (Switch: 0.01). Default 0. */
  readonly jitter?: number;
  /** Default training mode of `route`. Default false. */
  readonly training?: boolean;
  /** Default seed of `route`'s random draws. Default 0. */
  readonly seed?: number;
  /** Tokens per logits tile in the fused path. Default 64. */
  readonly tileTokens?: number;
  /** Default expert mask `[E]` (0 = expert removed), overridden by `route(x, { expertMask })`. */
  readonly expertMask?: Uint8Array;
}

/**
 * Builds a router from a logit source × selector × capacity policy.
 *
 * Per-token selectors run on tiles of `tileTokens` tokens: each tile's logits are computed, checked,
 * masked and selected at once, so the `[T,E]` logits are never built (unless asked for), and the tiles
 * may run on several threads when the compute backend offers it. All-token selectors see the whole
 * `[T,E]` logits.
 *
 * @example
 * ```ts
 * import { composeRouter, linearGate, matrix, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const router = composeRouter({
 *   gate: linearGate({ weight: matrix.randn(8, 16, { seed: 1 }) }),
 *   selector: softmaxTopK({ k: 2, normTopkProb: false }),
 *   capacity: { capacityFactor: 1, policy: "probs" },
 * });
 * const r = router.route(matrix.randn(32, 16, { seed: 2 }));
 * assert.equal(r.capacity, 8); // ceil(2·32·1/8)
 * ```
 */
export function composeRouter(options: ComposeOptions): Router {
  const { gate, selector, capacity } = options;
  selector.validate(gate.experts);
  if (capacity) checkCapacityOptions(capacity); // when the router is made, not at its first route
  const jitter = options.jitter ?? 0;
  if (!(jitter >= 0 && jitter < 1)) throw new OptionError("jitter", jitter, "must be in [0, 1)");
  const tile = options.tileTokens ?? 64;
  if (!Number.isInteger(tile) || tile < 1) {
    throw new OptionError("tileTokens", tile, "must be an integer ≥ 1");
  }
  const E = gate.experts, k = selector.k;
  if (options.expertMask) checkMask(options.expertMask, E, selector);
  return {
    name: options.name ?? selector.name,
    experts: E,
    k,
    route(x: Mat, opts: RouteOptions = {}): RoutingResult {
      checkTokenShape(x, gate.inputDim);
      const T = x.rows;
      if (T === 0 && capacity) {
        throw new ShapeError(
          "hidden states X",
          [-1, gate.inputDim],
          [0, x.cols],
          "no tokens: route at least one",
        );
      }
      const mask = opts.expertMask ?? options.expertMask;
      if (opts.expertMask) checkMask(opts.expertMask, E, selector);
      const training = opts.training ?? options.training ?? false;
      const rng = new Rng(opts.seed ?? options.seed ?? 0);
      let input = x;
      if (training && jitter > 0) input = jittered(x, jitter, rng.derive("jitter"), opts.jitter);
      else if (opts.jitter) {
        throw new OptionError("jitter", "given", "jitter applies in training only, with jitter > 0");
      }
      const out = selectionBuffers(opts.into, T, E, k, selector.marksUnkept ?? false);
      const selectRng = rng.derive("select");
      const side: Record<string, Mat> = {};
      const gateCtx = (rowOffset: number): LogitContext => ({
        training,
        rng,
        tokens: T,
        rowOffset,
        options: opts,
        side,
      });
      const outputs: Record<string, Int32Array | Float32Array | Float64Array> = {};
      const base = { training, tokens: T, options: opts, outputs };
      let logits: Mat | undefined;
      let extras: Record<string, unknown> | undefined;
      if (selector.needsAllTokens || opts.returnLogits || opts.returnProbs) {
        logits = gate.logits(input, matrix.zeros(T, E), gateCtx(0));
        checkLogitsFinite(logits, x, 0);
        if (mask) applyMask(logits, mask);
        if (selector.needsAllTokens) {
          extras = selector.select(logits, 0, out, { ...base, rng: selectRng, side }) ?? undefined;
        } else {
          // per-token selectors see the same tiles (and random streams) as in the fused path below
          for (let t0 = 0; t0 < T; t0 += tile) {
            const n = Math.min(tile, T - t0);
            const rng = selector.random ? selectRng.derive("tile", t0) : selectRng;
            selector.select(matrix.rowSlice(logits, t0, t0 + n), t0, out, { ...base, rng, side });
          }
        }
      } else {
        // the fused path: logits of one tile of tokens at a time, selected at once; never [T,E]
        const gemm = gate.linear?.gemm;
        const kind = selector.precomputed;
        const runTiles = (from: number, to: number, buffers: SelectionBuffers) => {
          const rows = Math.min(tile, T);
          const scratch = gemm?.scratch?.(rows) ?? matrix.zeros(rows, E);
          for (let t0 = from; t0 < to; t0 += tile) {
            const n = Math.min(tile, to - t0);
            const view = n === scratch.rows ? scratch : matrix.rowSlice(scratch, 0, n);
            gate.logits(matrix.rowSlice(input, t0, t0 + n), view, gateCtx(t0));
            if (mask) {
              checkLogitsFinite(view, matrix.rowSlice(x, t0, t0 + n), t0);
              applyMask(view, mask);
            }
            const pre = kind && gemm?.epilogue?.(kind, view);
            // non-finite tokens make a softmax sum NaN or ∞, so finite sums spare the full logits scan
            if (!mask && !(pre && kind === "softmaxSums" && allPositiveFinite(pre))) {
              checkLogitsFinite(view, matrix.rowSlice(x, t0, t0 + n), t0);
            }
            const ctx: SelectContext = {
              ...base,
              rng: selector.random ? selectRng.derive("tile", t0) : selectRng,
              ...(pre ? { [kind!]: pre } : {}),
            };
            selector.select(view, t0, buffers, ctx);
          }
        };
        const threaded = gemm?.runParallel && selector.spec && !mask && !out.keep && !hasDraws(opts) &&
          gemm.runParallel({
            x: input,
            ...(gate.linear?.bias ? { bias: gate.linear.bias } : {}),
            tileTokens: tile,
            k,
            selector: {
              spec: selector.spec(),
              registry: SELECTOR_REGISTRY_URL,
              ...(kind ? { epilogue: kind } : {}),
              random: selector.random ?? false,
              ...(selector.fusedTopK ? { fusedTopK: selector.fusedTopK } : {}),
            },
            training,
            seed: selectRng.seed,
            out,
            runTiles,
          });
        if (!threaded) runTiles(0, T, out);
      }
      const published = gate.publishes?.filter((n) => side[n] !== undefined);
      const sideExtras = published?.length
        ? Object.fromEntries(published.map((n) => [n, side[n]]))
        : undefined;
      const result = {
        tokens: T,
        experts: E,
        k,
        indices: out.indices,
        scores: out.scores,
        scoreFunction: selector.scoreFunction,
        ...(selector.capacityOf ? { capacity: selector.capacityOf(T, E) } : {}),
        ...(opts.returnLogits && logits ? { logits } : {}),
        ...(opts.returnProbs && logits ? { probs: scoreMatrix(logits, selector.scoreFunction) } : {}),
        ...(extras || sideExtras || Object.keys(outputs).length > 0
          ? { extras: { ...extras, ...sideExtras, ...outputs } }
          : {}),
      };
      if (!capacity) {
        return { ...result, weights: out.weights, ...(out.keep ? { keep: out.keep } : {}) };
      }
      const d = applyCapacity(
        { ...result, weights: out.weights, ...(out.keep ? { active: out.keep } : {}) },
        capacity,
      );
      return { ...result, weights: d.weights, keep: d.keep, slot: d.slot, capacity: d.capacity };
    },
  };
}

/**
 * The selection's output arrays for `T·k` choices: fresh, or `into`'s (checked, cleared: the same start as
 * fresh ones) — see {@link RouteOptions.into}.
 */
function selectionBuffers(
  into: RoutingResult | undefined,
  T: number,
  E: number,
  k: number,
  marksUnkept: boolean,
): SelectionBuffers {
  const n = T * k;
  if (!into) {
    return {
      indices: new Int32Array(n),
      weights: new Float32Array(n),
      scores: new Float32Array(n),
      ...(marksUnkept ? { keep: new Uint8Array(n).fill(1) } : {}),
    };
  }
  const { indices, weights, scores } = into;
  if (
    into.tokens !== T || into.k !== k || into.experts !== E || indices.length !== n || weights.length !== n ||
    scores.length !== n
  ) {
    throw new ShapeError(
      "into (the result to reuse)",
      [T, k],
      [into.tokens, into.k],
      `reuse a result of this router (E = ${E}, k = ${k}) routed from ${T} tokens`,
    );
  }
  const keep = marksUnkept ? (into.keep?.length === n ? into.keep : new Uint8Array(n)).fill(1) : undefined;
  return {
    indices: indices.fill(0),
    weights: weights.fill(0),
    scores: scores.fill(0),
    ...(keep ? { keep } : {}),
  };
}

function hasDraws(o: RouteOptions): boolean {
  return o.uniforms !== undefined || o.gumbel !== undefined || o.noise !== undefined ||
    o.jitter !== undefined || o.returnGroups === true;
}

function checkMask(mask: Uint8Array, E: number, selector: Selector): void {
  if (!(mask instanceof Uint8Array) || mask.length !== E) {
    throw new ShapeError("expertMask", [E], [mask?.length ?? 0], "one entry per expert (0 = removed)");
  }
  let live = 0;
  for (let e = 0; e < E; e++) {
    if (mask[e] !== 0 && mask[e] !== 1) throw new OptionError(`expertMask[${e}]`, mask[e], "must be 0 or 1");
    live += mask[e];
  }
  const need = selector.minLiveExperts ?? selector.k;
  if (live < need) {
    throw new OptionError(
      "expertMask",
      `${live} live experts`,
      `the ${selector.name} selector needs at least ${need} (k = ${selector.k})`,
    );
  }
}

function applyMask(logits: Mat, mask: Uint8Array): void {
  const E = logits.cols, L = logits.data;
  for (let e = 0; e < E; e++) {
    if (mask[e]) continue;
    for (let i = e; i < L.length; i += E) L[i] = -Infinity;
  }
}

/**
 * The gate scores over all experts (softmax or sigmoid of each logit row), as a new `[T,E]` matrix.
 *
 * @example
 * ```ts
 * import { matrix, scoreMatrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Array.from(scoreMatrix(matrix.fromArrays([[0, 0]]), "softmax").data), [0.5, 0.5]);
 * ```
 */
export function scoreMatrix(logits: Mat, fn: ScoreFunction): Mat {
  if (fn === "none") {
    throw new OptionError("scoreFunction", fn, "this router's scores are not a function of logits");
  }
  const p = matrix.zeros(logits.rows, logits.cols);
  if (fn === "softmax") {
    for (let t = 0; t < logits.rows; t++) {
      softmaxInto(logits.data, t * logits.cols, logits.cols, p.data, t * logits.cols);
    }
  } else {
    for (let i = 0; i < p.data.length; i++) p.data[i] = sigmoid(logits.data[i]);
  }
  return p;
}

function allPositiveFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (!(v[i] > 0 && v[i] < Infinity)) return false;
  return true;
}

function jittered(x: Mat, eps: number, rng: Rng, given?: Mat): Mat {
  const y = matrix.clone(x);
  if (given) {
    matrix.assertShape("jitter (multiplicative factors)", given, x.rows, x.cols, "one factor per entry of X");
    for (let i = 0; i < y.data.length; i++) {
      const f = given.data[i];
      if (!(f >= 1 - eps && f <= 1 + eps)) {
        throw new OptionError(
          `jitter[${i}]`,
          f,
          `factors must lie in [1 − ε, 1 + ε] = [${1 - eps}, ${1 + eps}]`,
        );
      }
      y.data[i] *= f;
    }
    return y;
  }
  for (let i = 0; i < y.data.length; i++) y.data[i] *= 1 - eps + 2 * eps * rng.uniform();
  return y;
}
