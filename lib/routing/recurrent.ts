/**
 * The layerwise recurrent router (RMoE, arXiv 2408.06793; docs/routing.md, "RMoE recurrent router"): one GRU cell shared by all
 * layers carries a routing state per token from layer to layer.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { uniformVector, uniformWeight } from "../core/init.ts";
import { sigmoid } from "../core/numeric.ts";
import { type Selector, softmaxTopK } from "./select.ts";
import { composeRouter } from "./compose.ts";
import { linearGate } from "./gate.ts";
import type { RouteOptions, RoutingResult } from "./result.ts";

/**
 * Weights of a recurrent cell in `torch.nn.GRUCell` layout (gate order r, z, n).
 *
 * @example
 * ```ts
 * import { type GruWeights, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const w: GruWeights = {
 *   weightIh: matrix.zeros(3 * 4, 8), weightHh: matrix.zeros(3 * 4, 4),
 *   biasIh: new Float32Array(12), biasHh: new Float32Array(12),
 * };
 * assert.equal(w.weightIh.rows, 12);
 * ```
 */
export interface GruWeights {
  /** `[3r, in]` = `[W_ir; W_iz; W_in]` (`[r, in]` for the plain RNN cell). */
  readonly weightIh: Mat;
  /** `[3r, r]` = `[W_hr; W_hz; W_hn]` (`[r, r]` for the plain RNN cell). */
  readonly weightHh: Mat;
  /** `[3r]` (or `[r]`). */
  readonly biasIh: Float32Array;
  /** `[3r]` (or `[r]`); `b_hn` sits inside `r ⊙ (W_hn h + b_hn)`. */
  readonly biasHh: Float32Array;
}

/**
 * A recurrent cell stepping a batch of states: `h' = cell(x, h)` row by row.
 *
 * @example
 * ```ts
 * import { gruCell, type RecurrentCell } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const cell: RecurrentCell = gruCell({ inputSize: 4, hiddenSize: 2, seed: 1 });
 * assert.equal(cell.kind, "gru");
 * assert.equal(cell.hiddenSize, 2);
 * ```
 */
export interface RecurrentCell {
  /** `"gru"` or `"rnn"`. */
  readonly kind: "gru" | "rnn";
  /** Input width. */
  readonly inputSize: number;
  /** State width r. */
  readonly hiddenSize: number;
  /** The weights. */
  readonly weights: GruWeights;
  /** One step for every row: `x [T,in]`, `h [T,r]` → `h' [T,r]`. */
  step(x: Mat, h: Mat): Mat;
}

/**
 * Options of {@link gruCell}: explicit weights, or sizes and a seed for PyTorch's default init
 * `U(−1/√r, 1/√r)` on every weight and bias.
 *
 * @example
 * ```ts
 * import { type GruCellOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: GruCellOptions = { inputSize: 256, hiddenSize: 256, seed: 0 };
 * assert.equal(o.hiddenSize, 256);
 * ```
 */
export interface GruCellOptions {
  /** Input width (with seeded init). */
  readonly inputSize?: number;
  /** State width r (with seeded init). */
  readonly hiddenSize?: number;
  /** Explicit weights (take precedence over sizes). */
  readonly weights?: GruWeights;
  /** `"gru"` (default) or `"rnn"`: `h' = tanh(W_in x + b_in + W_hn h + b_hn)`. */
  readonly cell?: "gru" | "rnn";
  /** Seed of the init. Default 0. */
  readonly seed?: number;
}

/**
 * A GRU cell exactly as `torch.nn.GRUCell`: `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(…)`,
 * `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`; or the plain RNN cell.
 *
 * @example
 * ```ts
 * import { gruCell, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * // docs/routing.md, "RMoE recurrent router": r = 1, all W = 1, b = 0, x = 1, h = 0.5 → h' = 0.570642
 * const one = matrix.full(3, 1, 1);
 * const cell = gruCell({
 *   weights: { weightIh: one, weightHh: one, biasIh: new Float32Array(3), biasHh: new Float32Array(3) },
 * });
 * assert.equal(cell.step(matrix.full(1, 1, 1), matrix.full(1, 1, 0.5)).data[0].toFixed(6), "0.570642");
 * ```
 */
export function gruCell(options: GruCellOptions): RecurrentCell {
  const kind = options.cell ?? "gru";
  if (kind !== "gru" && kind !== "rnn") throw new OptionError("cell", kind, `use "gru" or "rnn"`);
  const gates = kind === "gru" ? 3 : 1;
  let weights = options.weights;
  if (!weights) {
    const n = options.inputSize, r = options.hiddenSize;
    if (!Number.isInteger(n) || n! < 1 || !Number.isInteger(r) || r! < 1) {
      throw new OptionError(
        "inputSize/hiddenSize",
        `${n}/${r}`,
        "give explicit weights or both sizes as integers ≥ 1",
      );
    }
    const rng = new Rng(options.seed ?? 0);
    weights = {
      weightIh: uniformWeight(rng.derive("weight_ih"), gates * r!, n!, r!),
      weightHh: uniformWeight(rng.derive("weight_hh"), gates * r!, r!, r!),
      biasIh: uniformVector(rng.derive("bias_ih"), gates * r!, r!),
      biasHh: uniformVector(rng.derive("bias_hh"), gates * r!, r!),
    };
  }
  const r = weights.weightHh.cols, inputSize = weights.weightIh.cols;
  matrix.assertShape("weight_ih", weights.weightIh, gates * r, -1, `GRUCell layout [${gates}·r, in]`);
  matrix.assertShape("weight_hh", weights.weightHh, gates * r, r, `GRUCell layout [${gates}·r, r]`);
  if (weights.biasIh.length !== gates * r) {
    throw new ShapeError("bias_ih", [gates * r], [weights.biasIh.length]);
  }
  if (weights.biasHh.length !== gates * r) {
    throw new ShapeError("bias_hh", [gates * r], [weights.biasHh.length]);
  }
  const w = weights;
  // the two products run on the gate GEMM (WebAssembly SIMD where available)
  const ih = linearGate({ weight: w.weightIh }), hh = linearGate({ weight: w.weightHh });
  return {
    kind,
    inputSize,
    hiddenSize: r,
    weights: w,
    step(x, h) {
      matrix.assertShape("cell input x", x, -1, inputSize);
      matrix.assertShape("cell state h", h, x.rows, r);
      const gi = ih.logits(x, matrix.zeros(x.rows, gates * r)),
        gh = hh.logits(h, matrix.zeros(x.rows, gates * r));
      const out = matrix.zeros(x.rows, r), G = gates * r;
      for (let t = 0; t < x.rows; t++) {
        const o = t * G;
        for (let i = 0; i < r; i++) {
          const hPrev = h.data[t * r + i];
          if (kind === "rnn") {
            out.data[t * r + i] = Math.tanh(gi.data[o + i] + w.biasIh[i] + gh.data[o + i] + w.biasHh[i]);
            continue;
          }
          const rr = sigmoid(gi.data[o + i] + w.biasIh[i] + gh.data[o + i] + w.biasHh[i]);
          const z = sigmoid(gi.data[o + r + i] + w.biasIh[r + i] + gh.data[o + r + i] + w.biasHh[r + i]);
          const n = Math.tanh(
            gi.data[o + 2 * r + i] + w.biasIh[2 * r + i] +
              rr * (gh.data[o + 2 * r + i] + w.biasHh[2 * r + i]),
          );
          out.data[t * r + i] = (1 - z) * n + z * hPrev;
        }
      }
      return out;
    },
  };
}

/**
 * Options of {@link recurrentRouter}: explicit weights, or sizes and a seed.
 *
 * @example
 * ```ts
 * import { type RecurrentRouterOptions } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const o: RecurrentRouterOptions = { layers: 4, dim: 64, experts: 8, hiddenSize: 32, k: 2, seed: 1 };
 * assert.equal(o.layers, 4);
 * ```
 */
export interface RecurrentRouterOptions {
  /** `W_proj[l] [r,d]` per layer (RMoE `weight1`). */
  readonly projections?: readonly Mat[];
  /** `W_out[l] [E,r]` per layer (RMoE `weight2`). */
  readonly heads?: readonly Mat[];
  /** The shared cell (default: a seeded GRU with input = hidden = r). */
  readonly cell?: RecurrentCell;
  /** With seeded init: number of MoE layers L. */
  readonly layers?: number;
  /** With seeded init: hidden size d. */
  readonly dim?: number;
  /** With seeded init: experts E. Default 8. */
  readonly experts?: number;
  /** With seeded init: state width r. Default 256. */
  readonly hiddenSize?: number;
  /** With seeded init: `"gru"` (default) or `"rnn"`. */
  readonly cellKind?: "gru" | "rnn";
  /** Choices per token. Default 2. */
  readonly k?: number;
  /** Selector applied to each layer's logits. Default softmax top-k, renormalised (Mixtral routing). */
  readonly selector?: Selector;
  /** Seed of the init. Default 0. */
  readonly seed?: number;
}

/**
 * The routing of one layer plus the carried state.
 *
 * @example
 * ```ts
 * import { type RecurrentStep } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const width = (s: RecurrentStep) => s.state.cols;
 * assert.equal(typeof width, "function");
 * ```
 */
export interface RecurrentStep {
  /** This layer's routing. */
  readonly routing: RoutingResult;
  /** The GRU state `h_l [T,r]` after this layer. */
  readonly state: Mat;
}

/**
 * RMoE router.
 *
 * @example
 * ```ts
 * import { matrix, recurrentRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const rmoe = recurrentRouter({ layers: 3, dim: 16, experts: 4, hiddenSize: 8, k: 2, seed: 1 });
 * const xs = [0, 1, 2].map((l) => matrix.randn(5, 16, { seed: l }));
 * const { routings, states } = rmoe.routeStack(xs);
 * assert.equal(routings.length, 3);
 * assert.equal(states[2].cols, 8);
 * ```
 */
export interface RecurrentRouter {
  /** Number of layers L. */
  readonly layers: number;
  /** Experts E. */
  readonly experts: number;
  /** Choices per token. */
  readonly k: number;
  /** The shared cell. */
  readonly cell: RecurrentCell;
  /** `W_proj[l]`. */
  readonly projections: readonly Mat[];
  /** `W_out[l]`. */
  readonly heads: readonly Mat[];
  /** Routes layer l's input `x [T,d]` given the previous state (zeros for l = 0 when omitted). */
  routeLayer(layer: number, x: Mat, previous?: Mat, options?: RouteOptions): RecurrentStep;
  /** Routes all L layers' inputs at once (the inputs must already be known). */
  routeStack(inputs: readonly Mat[], options?: RouteOptions): { routings: RoutingResult[]; states: Mat[] };
}

function withoutExtras(r: RoutingResult): RoutingResult {
  const { extras: _drop, ...rest } = r;
  return rest;
}

/**
 * Builds an RMoE router: `h₋₁ = 0; x'_l = X_l W_proj[l]ᵀ; h_l = GRU(x'_l, h_{l−1}); logits_l = h_l W_out[l]ᵀ`,
 * then the selector (default Mixtral softmax top-k). Seeded init follows PyTorch's defaults.
 *
 * @example
 * ```ts
 * import { matrix, recurrentRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const rmoe = recurrentRouter({ layers: 2, dim: 8, experts: 4, hiddenSize: 4, k: 1, seed: 3 });
 * const step0 = rmoe.routeLayer(0, matrix.randn(3, 8, { seed: 1 }));
 * const step1 = rmoe.routeLayer(1, matrix.randn(3, 8, { seed: 2 }), step0.state);
 * assert.equal(step1.routing.indices.length, 3);
 * ```
 */
export function recurrentRouter(options: RecurrentRouterOptions): RecurrentRouter {
  let { projections, heads, cell } = options;
  const seed = options.seed ?? 0, rng = new Rng(seed);
  const given = { projections, heads, cell };
  const missing = Object.entries(given).filter(([, v]) => v === undefined).map(([n]) => n);
  if (missing.length < 3 && (!projections || !heads)) {
    throw new OptionError(
      "recurrentRouter weights",
      `missing ${missing.join(", ")}`,
      "give every trained piece (projections and heads; cell optional only with both), or none for a seeded init",
    );
  }
  if (!projections || !heads) {
    const L = options.layers, d = options.dim, E = options.experts ?? 8, r = options.hiddenSize ?? 256;
    if (!Number.isInteger(L) || L! < 1 || !Number.isInteger(d) || d! < 1) {
      throw new OptionError(
        "layers/dim",
        `${L}/${d}`,
        "give projections and heads, or layers and dim for a seeded init",
      );
    }
    for (const [name, v] of [["experts", E], ["hiddenSize", r]] as const) {
      if (!Number.isInteger(v) || v < 1) {
        throw new OptionError(
          name,
          v,
          `must be an integer ≥ 1 for a seeded init (default ${name === "experts" ? 8 : 256})`,
        );
      }
    }
    projections = Array.from({ length: L! }, (_, l) => uniformWeight(rng.derive(`proj.${l}`), r, d!));
    heads = Array.from({ length: L! }, (_, l) => uniformWeight(rng.derive(`head.${l}`), E, r));
  }
  const L = projections.length;
  if (heads.length !== L) {
    throw new MoekitError(
      `recurrentRouter: ${projections.length} projections but ${heads.length} heads; give one of each per layer`,
    );
  }
  if (L < 1) throw new MoekitError("recurrentRouter: needs at least one layer");
  const r = projections[0].rows, d = projections[0].cols, E = heads[0].rows;
  projections.forEach((p, l) =>
    matrix.assertShape(`W_proj[${l}]`, p, r, d, "every layer's projection is [r,d]")
  );
  heads.forEach((h, l) => matrix.assertShape(`W_out[${l}]`, h, E, r, "every layer's head is [E,r]"));
  cell ??= gruCell({
    inputSize: r,
    hiddenSize: r,
    cell: options.cellKind,
    seed: rng.derive("cell").nextUint32(),
  });
  if (cell.inputSize !== r || cell.hiddenSize !== r) {
    throw new ShapeError(
      "recurrent cell",
      [r, r],
      [cell.inputSize, cell.hiddenSize],
      "RMoE's cell has input = hidden = r",
    );
  }
  const selector = options.selector ?? softmaxTopK({ k: options.k ?? 2 });
  const theCell = cell, projs = projections, hds = heads;
  const projGates = projs.map((weight) => linearGate({ weight })),
    headGates = hds.map((weight) => linearGate({ weight }));
  // one router per layer, built once: its logit source steps the GRU from the state passed in
  // `route(x, { state })` and hands the new state back as the side output "state"
  const routers = hds.map((_head, l) =>
    composeRouter({
      name: "rmoe",
      selector,
      gate: {
        experts: E,
        inputDim: d,
        publishes: ["state"],
        logits(x, out, ctx) {
          const prev = ctx?.options.state;
          if (!prev) throw new MoekitError("the RMoE logit source needs the previous state");
          const h = theCell.step(projGates[l].logits(x, matrix.zeros(x.rows, r)), prev);
          ctx.side.state = h;
          return headGates[l].logits(h, out);
        },
      },
      tileTokens: Number.MAX_SAFE_INTEGER, // the state update sees all tokens in one step
    })
  );
  const routeLayer = (layer: number, x: Mat, previous?: Mat, opts?: RouteOptions): RecurrentStep => {
    if (!Number.isInteger(layer) || layer < 0 || layer >= L) {
      throw new OptionError("layer", layer, `the router has layers 0..${L - 1}`);
    }
    const h = previous ?? matrix.zeros(x.rows, r);
    matrix.assertShape(`state before layer ${layer}`, h, x.rows, r);
    const routed = routers[layer].route(x, { ...opts, state: h });
    const { state, ...rest } = routed.extras as { state: Mat };
    const routing = Object.keys(rest).length > 0 ? { ...routed, extras: rest } : withoutExtras(routed);
    return { routing, state };
  };
  return {
    layers: L,
    experts: E,
    k: selector.k,
    cell: theCell,
    projections: projs,
    heads: hds,
    routeLayer,
    routeStack(inputs, opts) {
      if (inputs.length !== L) {
        throw new MoekitError(
          `recurrentRouter.routeStack: ${inputs.length} layer inputs for a ${L}-layer router`,
        );
      }
      const routings: RoutingResult[] = [], states: Mat[] = [];
      let h: Mat | undefined;
      for (let l = 0; l < L; l++) {
        const s = routeLayer(l, inputs[l], h, opts);
        routings.push(s.routing);
        states.push(h = s.state);
      }
      return { routings, states };
    },
  };
}
