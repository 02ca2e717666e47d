/**
 * What every compression method returns (a {@link CompressedLayer}: a forward pass with its size
 * accounting), and the parameter counts behind it: {@link expertParams}, {@link activeParams}. Compression
 * works on the one MoE layer of `moeLayer` — any router, shared experts, capacity, removed experts, skipping.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { isKept, type RoutingResult } from "../routing/result.ts";
import { type MoeLayer, moeLayer, type SwiGLUExpert } from "../moe/layer.ts";

/**
 * One forward pass of a compressed layer.
 *
 * @example
 * ```ts
 * import { type CompressedForward, dense, matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 8 }),
 * });
 * const f: CompressedForward = dense(layer).forward(matrix.randn(3, 8));
 * assert.equal(f.activeParams[0], 4 * 8 + 2 * 3 * 64); // router + two experts
 * ```
 */
export interface CompressedForward {
  /** The layer output `[T,d]`. */
  readonly output: Mat;
  /**
   * The routing, in the original expert numbering; `keep` marks the experts actually computed (skipped
   * choices and Compressed Experts' auxiliary experts have keep 0).
   */
  readonly routing: RoutingResult;
  /** Parameters computed per token `[T]` (router, computed experts, shared experts, CE vectors). */
  readonly activeParams: Float64Array;
}

/**
 * A compressed layer: its forward pass and its size accounting. Methods whose result is again an MoE
 * layer (all but Compressed Experts) also return it as `layer`, so it can be compressed further.
 *
 * @example
 * ```ts
 * import { type CompressedLayer } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const describe = (c: CompressedLayer) => `${c.method}: ${c.bytes} bytes`;
 * assert.equal(describe({ method: "x", bytes: 8, params: 2, forward: () => { throw new Error(); } }), "x: 8 bytes");
 * ```
 */
export interface CompressedLayer {
  /** Method name, for tables. */
  readonly method: string;
  /** Stored bytes (router, experts, shared experts; float32 unless the method says otherwise). */
  readonly bytes: number;
  /** Stored parameters (router, experts, shared experts). */
  readonly params: number;
  /** Forward pass on tokens `X [T,d]`. */
  forward(x: Mat): CompressedForward;
}

/**
 * The shape of an expert, for counting parameters without weights.
 *
 * @example
 * ```ts
 * import { expertParams, type ExpertShape } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const mixtral: ExpertShape = { dim: 4096, hidden: 14336 };
 * assert.equal(expertParams(mixtral), 3 * 4096 * 14336);
 * ```
 */
export interface ExpertShape {
  /** Model width d. */
  readonly dim: number;
  /** Expert hidden size f. */
  readonly hidden: number;
  /** Whether the expert has biases b1, b3 `[f]` and b2 `[d]` (GPT-OSS). Default false. */
  readonly bias?: boolean;
}

/**
 * Parameters of one gated expert: `3·d·f` (+ `2f + d` with biases), from its weights or its shape.
 *
 * @example
 * ```ts
 * import { expertParams, randomExperts } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const [e] = randomExperts({ experts: 1, dim: 8, hidden: 16 });
 * assert.equal(expertParams(e), 3 * 8 * 16);
 * assert.equal(expertParams({ dim: 8, hidden: 16, bias: true }), 3 * 8 * 16 + 2 * 16 + 8);
 * ```
 */
export function expertParams(expert: SwiGLUExpert | ExpertShape): number {
  if ("w1" in expert) {
    return expert.w1.data.length + expert.w2.data.length + expert.w3.data.length +
      (expert.b1?.length ?? 0) + (expert.b2?.length ?? 0) + (expert.b3?.length ?? 0);
  }
  const { dim: d, hidden: f } = expert;
  for (const [name, v] of [["dim", d], ["hidden", f]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new OptionError(name, v, "must be an integer ≥ 1");
  }
  return 3 * d * f + (expert.bias ? 2 * f + d : 0);
}

/**
 * A model (or one layer) configuration for {@link activeParams}.
 *
 * @example
 * ```ts
 * import { type ActiveParamsOptions } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const olmoe: ActiveParamsOptions = { layers: 16, dim: 2048, hidden: 1024, k: 8, experts: 64 };
 * assert.equal(olmoe.k, 8);
 * ```
 */
export interface ActiveParamsOptions extends ExpertShape {
  /** Routed experts computed per token k. */
  readonly k: number;
  /** MoE layers. Default 1. */
  readonly layers?: number;
  /** Experts E: when given, the router (a linear gate, `E·d`) is counted too. */
  readonly experts?: number;
  /** Shared experts per layer (each `3·d·sharedHidden`, run on every token). Default 0. */
  readonly shared?: number;
  /** Hidden size of a shared expert. Default `hidden`. */
  readonly sharedHidden?: number;
  /** Mean routed choices skipped per token (NAEE dynamic skipping). Default 0. */
  readonly skippedPerToken?: number;
  /** Compressed Experts: auxiliary experts per token, not computed but replaced by `2d + f` CE vector entries. Default 0. */
  readonly nCe?: number;
}

/**
 * Parameters computed per token by the MoE layers of a configuration:
 * `layers · ((k − skipped − nCe)·expertParams + [nCe > 0]·(2d + f) + shared·3·d·f_s + E·d)`.
 * Attention and embeddings are not included.
 *
 * @example
 * ```ts
 * import { activeParams } from "@moekit/moekit/compression";
 * import assert from "node:assert/strict";
 * const mixtral = { layers: 32, dim: 4096, hidden: 14336, k: 2 };
 * assert.equal(activeParams(mixtral), 11_274_289_152); // 2·3·d·f·32 ≈ 11.27 B
 * assert.equal(Math.round(activeParams({ ...mixtral, skippedPerToken: 0.5 }) / 1e7) / 100, 8.46); // skip half the second experts
 * ```
 */
export function activeParams(options: ActiveParamsOptions): number {
  const { dim: d, hidden: f, k } = options;
  const layers = options.layers ?? 1, shared = options.shared ?? 0, skipped = options.skippedPerToken ?? 0;
  const nCe = options.nCe ?? 0, perExpert = expertParams(options);
  if (!Number.isInteger(k) || k < 1) throw new OptionError("k", k, "must be an integer ≥ 1");
  if (!Number.isInteger(layers) || layers < 0) {
    throw new OptionError("layers", layers, "must be an integer ≥ 0");
  }
  if (!Number.isInteger(shared) || shared < 0) {
    throw new OptionError("shared", shared, "must be an integer ≥ 0");
  }
  if (!Number.isInteger(nCe) || nCe < 0 || nCe >= k) {
    throw new OptionError("nCe", nCe, `must be an integer in 0..k − 1 = ${k - 1}`);
  }
  if (!(skipped >= 0 && skipped <= k - nCe - 1)) {
    throw new OptionError("skippedPerToken", skipped, `must be in [0, k − nCe − 1] = [0, ${k - nCe - 1}]`);
  }
  if (options.experts !== undefined && !(Number.isInteger(options.experts) && options.experts >= k)) {
    throw new OptionError("experts", options.experts, `must be an integer ≥ k = ${k}`);
  }
  const sharedParams = shared *
    expertParams({ dim: d, hidden: options.sharedHidden ?? f, bias: options.bias });
  const perLayer = (k - nCe - skipped) * perExpert + (nCe > 0 ? 2 * d + f : 0) + sharedParams +
    (options.experts ?? 0) * d;
  return layers * perLayer;
}

/** The experts a layer can route to (its mask's 1 entries, or all). Internal. */
export function liveExperts(layer: MoeLayer): number[] {
  const E = layer.router.experts, mask = layer.expertMask;
  return Array.from({ length: E }, (_, e) => e).filter((e) => !mask || mask[e] === 1);
}

/** Router parameters, counted as a linear gate over the routable experts (`E_live·d`). Internal. */
export function routerParams(layer: MoeLayer): number {
  return liveExperts(layer).length * layer.dim;
}

/** Shared experts and their gate. Internal. */
export function sharedParams(layer: MoeLayer): number {
  if (!layer.shared) return 0;
  return layer.shared.experts.reduce((s, e) => s + expertParams(e), 0) + (layer.shared.gate ? layer.dim : 0);
}

/** Stored parameters of a layer: router + distinct routable experts + shared experts. Internal. */
export function layerParams(layer: MoeLayer): number {
  const distinct = new Set(liveExperts(layer).map((e) => layer.experts[e]));
  let p = routerParams(layer) + sharedParams(layer);
  for (const e of distinct) p += expertParams(e);
  return p;
}

/** Parameters computed per token for a routing of the layer (router + computed experts + shared). Internal. */
export function tokenActiveParams(
  layer: MoeLayer,
  routing: RoutingResult,
  experts = layer.experts,
): Float64Array {
  const k = routing.k, fixed = routerParams(layer) + sharedParams(layer);
  const out = new Float64Array(routing.tokens).fill(fixed);
  for (let i = 0; i < routing.indices.length; i++) {
    if (isKept(routing, i)) out[Math.floor(i / k)] += expertParams(experts[routing.indices[i]]);
  }
  return out;
}

/** The same layer with other experts (same router, activation, shared experts, mask, skipping). Internal. */
export function withExperts(layer: MoeLayer, experts: readonly SwiGLUExpert[]): MoeLayer {
  return moeLayer({ ...layer, experts });
}

/** The forward of a compressed MoE layer in {@link CompressedForward} form. Internal. */
export function forwardOf(layer: MoeLayer): (x: Mat) => CompressedForward {
  return (x) => {
    const { output, routing } = layer.forward(x);
    return { output, routing, activeParams: tokenActiveParams(layer, routing) };
  };
}

/** Bytes of the parts a method leaves dense (router, biases, shared experts), at 4 bytes each. Internal. */
export function denseExtrasBytes(layer: MoeLayer, experts: Iterable<SwiGLUExpert>): number {
  let p = routerParams(layer) + sharedParams(layer);
  for (const e of experts) p += (e.b1?.length ?? 0) + (e.b2?.length ?? 0) + (e.b3?.length ?? 0);
  return 4 * p;
}

/** The layer's distinct routable experts, each with the slots that point at it (merged layers share). Internal. */
export function distinctExperts(layer: MoeLayer): { expert: SwiGLUExpert; slots: number[] }[] {
  const map = new Map<SwiGLUExpert, number[]>();
  for (const e of liveExperts(layer)) {
    const ex = layer.experts[e], slots = map.get(ex);
    if (slots) slots.push(e);
    else map.set(ex, [e]);
  }
  return [...map].map(([expert, slots]) => ({ expert, slots }));
}
