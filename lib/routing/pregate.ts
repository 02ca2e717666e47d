/**
 * Pre-gating (docs/routing.md, "Pre-gating"): the Read-ME decoupled pre-router, which decides every layer's experts
 * from the layer-0 input before the backbone runs, and Pre-gated MoE, where layer l's gate picks layer
 * l+1's experts.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { uniformVector, uniformWeight } from "../core/init.ts";
import { linearGate } from "./gate.ts";
import { softmaxTopK } from "./select.ts";
import { composeRouter } from "./compose.ts";
import type { RouteOptions, Router, RoutingResult } from "./result.ts";

/**
 * One residual block of the pre-router: `y ← y + W2·silu(W1·RMSNorm(y) + b1) + b2`.
 *
 * @example
 * ```ts
 * import { matrix, type PreGateBlock } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const b: PreGateBlock = {
 *   norm: new Float32Array(8).fill(1), w1: matrix.zeros(16, 8), b1: new Float32Array(16),
 *   w2: matrix.zeros(8, 16), b2: new Float32Array(8),
 * };
 * assert.equal(b.w1.rows, 16);
 * ```
 */
export interface PreGateBlock {
  /** RMSNorm weight `[d]`. */
  readonly norm: Float32Array;
  /** `[h,d]`. */
  readonly w1: Mat;
  /** `[h]`. */
  readonly b1: Float32Array;
  /** `[d,h]`. */
  readonly w2: Mat;
  /** `[d]`. */
  readonly b2: Float32Array;
}

/**
 * Options of {@link preGateRouter}: explicit weights, or sizes and a seed.
 *
 * @example
 * ```ts
 * import { type PreGateRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: PreGateRouterOptions = { layers: 32, dim: 64, experts: 7, k: 1, sharedHead: true, seed: 0 };
 * assert.ok(o.sharedHead);
 * ```
 */
export interface PreGateRouterOptions {
  /** The residual blocks. */
  readonly blocks?: readonly PreGateBlock[];
  /** Output RMSNorm weight `[d]`. */
  readonly outNorm?: Float32Array;
  /** One head `[E,d]` per layer, or a single shared head (the Read-ME case). */
  readonly heads?: readonly Mat[];
  /** Head biases `[E]`, one per head. Default zeros. */
  readonly headBiases?: readonly Float32Array[];
  /** Number of backbone layers L the routing is for (with a shared head). */
  readonly layers?: number;
  /** With seeded init: hidden size d. */
  readonly dim?: number;
  /** With seeded init: experts E. Default 8. */
  readonly experts?: number;
  /** With seeded init: block width h. Default 2d. */
  readonly hidden?: number;
  /** With seeded init: number of blocks. Default 2. */
  readonly depth?: number;
  /** With seeded init: one head shared by all layers. Default false. */
  readonly sharedHead?: boolean;
  /** Choices per token. Default 1 (Read-ME). */
  readonly k?: number;
  /** RMSNorm epsilon. Default 1e-6. */
  readonly eps?: number;
  /** Seed. Default 0. */
  readonly seed?: number;
}

/**
 * A router that decides all L layers' routing from the layer-0 input.
 *
 * @example
 * ```ts
 * import { matrix, preGateRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const pre = preGateRouter({ layers: 4, dim: 8, experts: 4, seed: 1 });
 * assert.equal(pre.routeLayers(matrix.randn(3, 8, { seed: 2 })).length, 4);
 * ```
 */
export interface PreGateRouter {
  /** Layers L. */
  readonly layers: number;
  /** Experts E. */
  readonly experts: number;
  /** Choices per token. */
  readonly k: number;
  /** The pre-router's features `z = RMSNorm_out(blocks(x0))` `[T,d]`. */
  features(x0: Mat): Mat;
  /** Every layer's routing, from the layer-0 input (token embeddings). */
  routeLayers(x0: Mat, options?: RouteOptions): RoutingResult[];
}

/** `w ⊙ x / sqrt(mean(x²) + eps)` per row, into a new matrix. */
function rmsNorm(x: Mat, w: Float32Array, eps: number): Mat {
  const out = matrix.zeros(x.rows, x.cols), d = x.cols;
  for (let t = 0; t < x.rows; t++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x.data[t * d + j] ** 2;
    const inv = 1 / Math.sqrt(s / d + eps);
    for (let j = 0; j < d; j++) out.data[t * d + j] = w[j] * x.data[t * d + j] * inv;
  }
  return out;
}

/**
 * Read-ME-style decoupled pre-router (the non-autoregressive predictor of docs/routing.md, "Pre-gating"): token
 * embeddings → residual RMSNorm MLP blocks → RMSNorm → per-layer heads (or one shared head) → softmax
 * top-k renormalised. With a shared head and k = 1 every layer gets the same expert, weight 1.
 *
 * @example
 * ```ts
 * import { matrix, preGateRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const pre = preGateRouter({ layers: 3, dim: 8, experts: 4, sharedHead: true, k: 1, seed: 1 });
 * const [a, b, c] = pre.routeLayers(matrix.randn(5, 8, { seed: 2 }));
 * assert.ok(Array.from(a.indices).join() === Array.from(c.indices).join());
 * assert.equal(b.weights[0], 1);
 * ```
 */
export function preGateRouter(options: PreGateRouterOptions): PreGateRouter {
  const eps = options.eps ?? 1e-6, k = options.k ?? 1;
  let { blocks, outNorm, heads } = options;
  const rng = new Rng(options.seed ?? 0);
  const pieces = { blocks, outNorm, heads, headBiases: options.headBiases };
  const missing = ["blocks", "outNorm", "heads"].filter((n) =>
    pieces[n as keyof typeof pieces] === undefined
  );
  const anyGiven = Object.values(pieces).some((v) => v !== undefined);
  if (anyGiven && missing.length > 0) {
    throw new OptionError(
      "preGateRouter weights",
      `missing ${missing.join(", ")}`,
      "give every trained piece (blocks, outNorm and heads), or none for a seeded init",
    );
  }
  if (!blocks || !outNorm || !heads) {
    const d = options.dim, L = options.layers, E = options.experts ?? 8;
    if (!Number.isInteger(d) || d! < 1 || !Number.isInteger(L) || L! < 1) {
      throw new OptionError(
        "layers/dim",
        `${L}/${d}`,
        "give blocks, outNorm and heads, or layers and dim for a seeded init",
      );
    }
    const h = options.hidden ?? 2 * d!;
    blocks = Array.from({ length: options.depth ?? 2 }, (_, i) => ({
      norm: new Float32Array(d!).fill(1),
      w1: uniformWeight(rng.derive(`w1.${i}`), h, d!),
      b1: uniformVector(rng.derive(`b1.${i}`), h, d!),
      w2: uniformWeight(rng.derive(`w2.${i}`), d!, h),
      b2: uniformVector(rng.derive(`b2.${i}`), d!, h),
    }));
    outNorm = new Float32Array(d!).fill(1);
    heads = Array.from(
      { length: options.sharedHead ? 1 : L! },
      (_, l) => uniformWeight(rng.derive(`head.${l}`), E, d!),
    );
  }
  const d = outNorm.length;
  blocks.forEach((b, i) => {
    const h = b.w1.rows;
    if (b.norm.length !== d) throw new ShapeError(`block ${i} norm`, [d], [b.norm.length]);
    matrix.assertShape(`block ${i} w1`, b.w1, h, d);
    matrix.assertShape(`block ${i} w2`, b.w2, d, h);
    if (b.b1.length !== h) throw new ShapeError(`block ${i} b1`, [h], [b.b1.length]);
    if (b.b2.length !== d) throw new ShapeError(`block ${i} b2`, [d], [b.b2.length]);
  });
  const L = heads.length === 1 ? options.layers ?? 1 : heads.length;
  if (heads.length !== 1 && options.layers !== undefined && options.layers !== heads.length) {
    throw new MoekitError(
      `preGateRouter: ${heads.length} heads for layers = ${options.layers}; give one head per layer or one shared head`,
    );
  }
  const E = heads[0].rows;
  const routers = heads.map((head, i) =>
    composeRouter({
      name: "pregate",
      gate: linearGate({ weight: head, bias: options.headBiases?.[i] }),
      selector: softmaxTopK({ k }),
    })
  );
  const blockList = blocks, norm = outNorm;
  const features = (x0: Mat): Mat => {
    matrix.assertShape("pre-router input (token embeddings)", x0, -1, d);
    matrix.assertFinite("pre-router input (token embeddings)", x0);
    let y = matrix.clone(x0);
    for (const b of blockList) {
      const a = matrix.matmulT(rmsNorm(y, b.norm, eps), b.w1);
      matrix.addRowVector(a, b.b1);
      for (let i = 0; i < a.data.length; i++) a.data[i] = a.data[i] / (1 + Math.exp(-a.data[i]));
      const upd = matrix.addRowVector(matrix.matmulT(a, b.w2), b.b2);
      for (let i = 0; i < y.data.length; i++) upd.data[i] += y.data[i];
      y = upd;
    }
    return rmsNorm(y, norm, eps);
  };
  return {
    layers: L,
    experts: E,
    k,
    features,
    routeLayers(x0, opts) {
      const z = features(x0);
      if (routers.length === 1) {
        const r = routers[0].route(z, opts);
        return Array.from({ length: L }, () => r);
      }
      return routers.map((r) => r.route(z, opts));
    },
  };
}

/**
 * Pre-gated MoE (arXiv 2308.12066): layer 0 routes with its own gate `W_gate0`; the gate in block l
 * selects block l+1's experts from block l's input, `X_l W_pre[l]ᵀ`, so the next experts are known one
 * layer ahead.
 *
 * @example
 * ```ts
 * import { matrix, preGatedNextLayerRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const pg = preGatedNextLayerRouter({
 *   gate0: matrix.randn(4, 8, { seed: 1 }),
 *   pre: [matrix.randn(4, 8, { seed: 2 }), matrix.randn(4, 8, { seed: 3 })],
 *   k: 2,
 * });
 * const xs = [0, 1, 2].map((l) => matrix.randn(5, 8, { seed: 10 + l }));
 * assert.equal(pg.routeLayers(xs).length, 3);
 * assert.equal(pg.layers, 3);
 * ```
 */
export function preGatedNextLayerRouter(options: {
  readonly gate0: Mat;
  readonly pre: readonly Mat[];
  readonly k?: number;
}): {
  readonly layers: number;
  readonly experts: number;
  readonly k: number;
  /** Layer 0's router. */
  readonly first: Router;
  /** The router in block l that picks block l+1's experts. */
  readonly next: readonly Router[];
  /** All layers' routings from all layers' inputs (the last input is not needed). */
  routeLayers(inputs: readonly Mat[], options?: RouteOptions): RoutingResult[];
} {
  const k = options.k ?? 2, E = options.gate0.rows, d = options.gate0.cols;
  options.pre.forEach((w, l) =>
    matrix.assertShape(`W_pre[${l}]`, w, E, d, "every pre-gate is [E,d] like W_gate0")
  );
  const make = (w: Mat) =>
    composeRouter({ name: "pregated", gate: linearGate({ weight: w }), selector: softmaxTopK({ k }) });
  const first = make(options.gate0), next = options.pre.map(make), L = next.length + 1;
  return {
    layers: L,
    experts: E,
    k,
    first,
    next,
    routeLayers(inputs, opts) {
      if (inputs.length !== L && inputs.length !== L - 1) {
        throw new MoekitError(
          `preGatedNextLayerRouter: ${inputs.length} layer inputs for ${L} layers (give ${L - 1} or ${L})`,
        );
      }
      return [first.route(inputs[0], opts), ...next.map((r, l) => r.route(inputs[l], opts))];
    },
  };
}
