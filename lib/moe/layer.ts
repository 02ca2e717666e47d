/**
 * SwiGLU experts and the MoE layer forward: route, dispatch, run each expert on its tokens, combine.
 * Dropped tokens get 0 from the MoE block (the residual carries them).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { uniformWeight } from "../core/init.ts";
import { isKept, type RouteOptions, type Router, type RoutingResult } from "../routing/result.ts";
import { skipChoices } from "../routing/skip.ts";
import { combineExpertOutputs, dispatch, gatherExpertInputs } from "./dispatch.ts";

/**
 * One gated expert in nn.Linear layout: `E(x) = W2·act(W1·x + b1, W3·x + b3) + b2`, where `act` is the
 * layer's {@link ExpertActivation} (SwiGLU `silu(g)·u` unless said otherwise). Biases are optional
 * (GPT-OSS has them; Mixtral, OLMoE, Qwen and DeepSeek do not).
 *
 * @example
 * ```ts
 * import { matrix, type SwiGLUExpert } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const e: SwiGLUExpert = { w1: matrix.zeros(16, 4), w3: matrix.zeros(16, 4), w2: matrix.zeros(4, 16) };
 * assert.equal(e.w1.rows, 16);
 * ```
 */
export interface SwiGLUExpert {
  /** Gate projection `[f,d]`. */
  readonly w1: Mat;
  /** Up projection `[f,d]`. */
  readonly w3: Mat;
  /** Down projection `[d,f]`. */
  readonly w2: Mat;
  /** Optional gate bias `[f]`. */
  readonly b1?: Float32Array;
  /** Optional up bias `[f]`. */
  readonly b3?: Float32Array;
  /** Optional down bias `[d]`. */
  readonly b2?: Float32Array;
}

/**
 * The gated activation of an expert, `h = act(g, u)` with `g = W1·x + b1`, `u = W3·x + b3`:
 * - `{ kind: "silu" }` (default): `silu(g)·u` — Mixtral, OLMoE, Qwen-MoE, DeepSeek.
 * - `{ kind: "clamped_swiglu", alpha, limit }`: GPT-OSS — `g ← min(g, limit)`, `u ← clamp(u, −limit, limit)`,
 *   `h = (u + 1)·g·sigmoid(alpha·g)` (GPT-OSS: alpha 1.702, limit 7).
 *
 * @example
 * ```ts
 * import { type ExpertActivation } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const gptOss: ExpertActivation = { kind: "clamped_swiglu", alpha: 1.702, limit: 7 };
 * assert.equal(gptOss.kind, "clamped_swiglu");
 * ```
 */
export type ExpertActivation =
  | { readonly kind: "silu" }
  | { readonly kind: "clamped_swiglu"; readonly alpha: number; readonly limit: number };

const SILU: ExpertActivation = { kind: "silu" };

/**
 * Runs one expert on rows `x [n,d]`, returning `[n,d]` (float32, like the frameworks).
 *
 * @example
 * ```ts
 * import { matrix, swigluForward } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const e = { w1: matrix.identity(2), w3: matrix.identity(2), w2: matrix.identity(2) };
 * const y = swigluForward(e, matrix.fromArrays([[1, 0]]));
 * assert.equal(y.data[0].toFixed(4), "0.7311"); // silu(1)·1
 * const z = swigluForward(e, matrix.fromArrays([[1, 0]]), { kind: "clamped_swiglu", alpha: 1.702, limit: 7 });
 * assert.equal(z.data[0].toFixed(4), (2 / (1 + Math.exp(-1.702))).toFixed(4)); // (1 + 1)·1·σ(1.702)
 * ```
 */
export function swigluForward(expert: SwiGLUExpert, x: Mat, activation: ExpertActivation = SILU): Mat {
  const h = expertHidden(expert, x, activation);
  if (h.cols !== expert.w2.cols) {
    throw new ShapeError("expert w2", [-1, h.cols], [expert.w2.rows, expert.w2.cols]);
  }
  const y = matrix.matmulT(h, expert.w2);
  addRowBias(y, expert.b2);
  return y;
}

/**
 * The expert's intermediate activations `H = act(X·W1ᵀ + b1, X·W3ᵀ + b3)` `[n,f]` for rows `x [n,d]` — what
 * the down projection W2 sees (calibration keeps them to whiten W2).
 *
 * @example
 * ```ts
 * import { expertHidden, matrix } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const e = { w1: matrix.identity(2), w3: matrix.identity(2), w2: matrix.identity(2) };
 * const h = expertHidden(e, matrix.fromArrays([[1, 2]]));
 * assert.deepEqual(Array.from(h.data, (v) => +v.toFixed(4)), [0.7311, 3.5232]); // silu(1)·1, silu(2)·2
 * ```
 */
export function expertHidden(expert: SwiGLUExpert, x: Mat, activation: ExpertActivation = SILU): Mat {
  return gatedHidden(expert, x, x, activation);
}

/**
 * `act(X1·W1ᵀ + b1, X3·W3ᵀ + b3)` with separate inputs of the gate and up projections (Compressed Experts
 * scale them differently). Internal: not re-exported by the barrel.
 */
export function gatedHidden(
  expert: SwiGLUExpert,
  x1: Mat,
  x3: Mat,
  activation: ExpertActivation = SILU,
): Mat {
  checkActivation(activation);
  if (expert.w3.rows !== expert.w1.rows) {
    throw new ShapeError(
      "expert w3",
      [expert.w1.rows, expert.w1.cols],
      [expert.w3.rows, expert.w3.cols],
      "the gate (w1) and up (w3) projections must both be [f,d]",
    );
  }
  const a = matrix.matmulT(x1, expert.w1), b = matrix.matmulT(x3, expert.w3);
  addRowBias(a, expert.b1);
  addRowBias(b, expert.b3);
  const A = a.data, B = b.data;
  if (activation.kind === "silu") {
    for (let i = 0; i < A.length; i++) {
      const v = A[i];
      A[i] = (v / (1 + Math.exp(-v))) * B[i];
    }
  } else {
    const { alpha, limit } = activation;
    for (let i = 0; i < A.length; i++) {
      const g = Math.min(A[i], limit), u = Math.min(Math.max(B[i], -limit), limit);
      A[i] = (u + 1) * (g / (1 + Math.exp(-alpha * g)));
    }
  }
  return a;
}

/** Throws unless `activation` is one of the {@link ExpertActivation} kinds with valid parameters. */
function checkActivation(activation: ExpertActivation): void {
  const a = activation as { kind?: unknown; alpha?: unknown; limit?: unknown };
  if (a?.kind === "silu") return;
  if (a?.kind !== "clamped_swiglu") {
    throw new OptionError(
      "activation.kind",
      a?.kind,
      `use "silu" or "clamped_swiglu" (with alpha and limit)`,
    );
  }
  if (!(typeof a.limit === "number" && a.limit > 0) || !Number.isFinite(a.alpha)) {
    throw new OptionError("activation", JSON.stringify(activation), "needs a finite alpha and a limit > 0");
  }
}

/** Adds a bias `[cols]` to every row of `m` in place (expert biases). Internal. */
export function addRowBias(m: Mat, bias: Float32Array | undefined): void {
  if (!bias) return;
  if (bias.length !== m.cols) throw new ShapeError("expert bias", [m.cols], [bias.length]);
  for (let r = 0; r < m.rows; r++) {
    const o = r * m.cols;
    for (let c = 0; c < m.cols; c++) m.data[o + c] += bias[c];
  }
}

/**
 * Seeded random SwiGLU experts with PyTorch's nn.Linear init range `U(−1/√in, 1/√in)`.
 *
 * @example
 * ```ts
 * import { randomExperts } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const experts = randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 1 });
 * assert.deepEqual([experts.length, experts[0].w2.rows], [4, 8]);
 * ```
 */
export function randomExperts(
  options: {
    readonly experts: number;
    readonly dim: number;
    readonly hidden: number;
    readonly seed?: number;
  },
): SwiGLUExpert[] {
  const rng = new Rng(options.seed ?? 0), { dim: d, hidden: f } = options;
  return Array.from({ length: options.experts }, (_, e) => ({
    w1: uniformWeight(rng.derive(`w1.${e}`), f, d),
    w3: uniformWeight(rng.derive(`w3.${e}`), f, d),
    w2: uniformWeight(rng.derive(`w2.${e}`), d, f),
  }));
}

/**
 * Shared experts of a layer (Qwen2-MoE, DeepSeek-V2/V3): run on every token and added to the routed
 * output, optionally scaled by a sigmoid gate `sigmoid(x·gᵀ)` with `g [1,d]` (Qwen2-MoE's
 * `shared_expert_gate`; DeepSeek has no gate).
 *
 * @example
 * ```ts
 * import { matrix, randomExperts, type SharedExperts } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const shared: SharedExperts = { experts: randomExperts({ experts: 1, dim: 8, hidden: 16 }), gate: matrix.zeros(1, 8) };
 * assert.equal(shared.experts.length, 1);
 * ```
 */
export interface SharedExperts {
  /** Experts applied to every token (their outputs are summed). */
  readonly experts: readonly SwiGLUExpert[];
  /** Optional sigmoid gate weight `[1,d]`. */
  readonly gate?: Mat;
}

/**
 * Options of {@link moeLayer}: the router, its experts, and the family's extras.
 *
 * @example
 * ```ts
 * import { matrix, type MoeLayerOptions, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const o: MoeLayerOptions = {
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * };
 * assert.equal(o.experts.length, 4);
 * ```
 */
export interface MoeLayerOptions {
  /** The router (any moekit router). */
  readonly router: Router;
  /** One expert per router output (slots may share one expert object, e.g. after merging). */
  readonly experts: readonly SwiGLUExpert[];
  /** The experts' activation. Default `{ kind: "silu" }`. */
  readonly activation?: ExpertActivation;
  /** Shared experts added to every token's output. */
  readonly shared?: SharedExperts;
  /**
   * Experts removed from routing, `[E]` with 0 = removed (NAEE pruning): their logits are −∞ before
   * scoring, so the remaining experts share the probability mass. Passed to the router as
   * `RouteOptions.expertMask`. Default: every expert routable.
   */
  readonly expertMask?: Uint8Array;
  /** Dynamic skipping applied to every routing of the layer (see {@link SkipOptions}). Default: none. */
  readonly skip?: SkipOptions;
}

/**
 * A router, its experts and the layer forward.
 *
 * @example
 * ```ts
 * import { matrix, type MoeLayer, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const layer: MoeLayer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16 }),
 * });
 * assert.equal(layer.dim, 8);
 * ```
 */
export interface MoeLayer extends MoeLayerOptions {
  /** The activation in use. */
  readonly activation: ExpertActivation;
  /** Model width d. */
  readonly dim: number;
  /** Forward pass: the MoE output `[T,d]` (no residual) and the routing. */
  forward(x: Mat, options?: RouteOptions): { output: Mat; routing: RoutingResult };
  /** The block output for a given routing of `x` (routed experts + shared experts). */
  forwardRouted(x: Mat, routing: RoutingResult): Mat;
  /** The layer's routing of `x`: the router with the layer's expert mask, then its skipping. */
  route(x: Mat, options?: RouteOptions): RoutingResult;
  /**
   * A forward pass that also returns what each expert saw: its routed input rows `X_e` and intermediate
   * activations `H_e` (in dispatch order: the expert's kept choices by token), for calibration.
   */
  trace(x: Mat, options?: RouteOptions): MoeTrace;
}

/**
 * What {@link MoeLayer.trace} returns: the forward pass plus every expert's routed inputs and intermediates.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, type MoeTrace, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
 * });
 * const t: MoeTrace = layer.trace(matrix.randn(5, 8, { seed: 3 }));
 * assert.equal(t.inputs.reduce((n, m) => n + m.rows, 0), 10); // 5 tokens × k = 2
 * assert.equal(t.hidden[0].cols, 16);
 * ```
 */
export interface MoeTrace {
  /** The MoE block output `[T,d]` (routed + shared experts). */
  readonly output: Mat;
  /** The routing used. */
  readonly routing: RoutingResult;
  /** Per routed expert: its input rows `X_e [n_e,d]`. */
  readonly inputs: readonly Mat[];
  /** Per routed expert: its intermediates `H_e = act(W1·X_e + b1, W3·X_e + b3)` `[n_e,f]`. */
  readonly hidden: readonly Mat[];
}

/**
 * The routed-experts output for a given routing: dispatch, run each expert on its tokens, combine
 * (`y[t] = Σ_j w[t,j]·E_{idx[t,j]}(x_t)` over kept choices; no residual, no shared experts).
 *
 * @example
 * ```ts
 * import { expertsForward, matrix, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const experts = randomExperts({ experts: 4, dim: 8, hidden: 8, seed: 1 });
 * const x = matrix.randn(3, 8, { seed: 2 });
 * const y = expertsForward(experts, x, topKRouter({ weight: matrix.randn(4, 8), k: 2 }).route(x));
 * assert.deepEqual([y.rows, y.cols], [3, 8]);
 * ```
 */
export function expertsForward(
  experts: readonly SwiGLUExpert[],
  x: Mat,
  routing: RoutingResult,
  activation: ExpertActivation = SILU,
): Mat {
  return runExperts(experts, x, routing, activation).output;
}

function runExperts(
  experts: readonly SwiGLUExpert[],
  x: Mat,
  routing: RoutingResult,
  activation: ExpertActivation,
  capture?: { inputs: Mat[]; hidden: Mat[] },
): { output: Mat } {
  if (routing.experts !== experts.length) {
    throw new MoekitError(
      `the routing is over ${routing.experts} experts but ${experts.length} experts were given`,
    );
  }
  if (routing.tokens !== x.rows) throw new ShapeError("MoE input X", [routing.tokens, -1], [x.rows, x.cols]);
  const disp = dispatch(routing), output = matrix.zeros(x.rows, experts[0].w2.rows);
  for (let e = 0; e < experts.length; e++) {
    if (disp.offsets[e + 1] === disp.offsets[e]) {
      capture?.inputs.push(matrix.zeros(0, x.cols));
      capture?.hidden.push(matrix.zeros(0, experts[e].w1.rows));
      continue;
    }
    const xe = gatherExpertInputs(x, disp, e), ex = experts[e];
    const h = expertHidden(ex, xe, activation);
    if (capture) {
      capture.inputs.push(xe);
      capture.hidden.push(h); // read-only from here on: the down projection only reads it
    }
    const y = matrix.matmulT(h, ex.w2);
    addRowBias(y, ex.b2);
    combineExpertOutputs(output, disp, e, y);
  }
  return { output };
}

/**
 * Adds the shared experts' output to `out` in place: `out += gate(x)·Σ_s S_s(x)`, gate = `sigmoid(x·gᵀ)` or 1.
 *
 * @example
 * ```ts
 * import { addSharedExperts, matrix, randomExperts, swigluForward } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const x = matrix.randn(2, 4, { seed: 1 }), shared = randomExperts({ experts: 1, dim: 4, hidden: 8 });
 * const out = addSharedExperts(matrix.zeros(2, 4), x, { experts: shared, gate: matrix.zeros(1, 4) });
 * assert.ok(Math.abs(out.data[0] - 0.5 * swigluForward(shared[0], x).data[0]) < 1e-7); // sigmoid(0) = 0.5
 * ```
 */
export function addSharedExperts(
  out: Mat,
  x: Mat,
  shared: SharedExperts,
  activation: ExpertActivation = SILU,
): Mat {
  const d = x.cols, gate = shared.gate ? matrix.matmulT(x, shared.gate) : undefined;
  for (const ex of shared.experts) {
    const y = swigluForward(ex, x, activation);
    for (let t = 0; t < x.rows; t++) {
      const g = gate ? 1 / (1 + Math.exp(-gate.data[t])) : 1;
      for (let c = 0; c < d; c++) out.data[t * d + c] += g * y.data[t * d + c];
    }
  }
  return out;
}

function checkExpert(what: string, ex: SwiGLUExpert, d: number): void {
  const f = ex.w1.rows, hint = `mismatched expert shapes: every expert maps the width d = ${d} to d`;
  matrix.assertShape(`${what} w1`, ex.w1, f, d, hint);
  matrix.assertShape(`${what} w3`, ex.w3, f, d, hint);
  matrix.assertShape(`${what} w2`, ex.w2, d, f, hint);
  for (const [name, b, n] of [["b1", ex.b1, f], ["b3", ex.b3, f], ["b2", ex.b2, d]] as const) {
    if (b && b.length !== n) throw new ShapeError(`${what} ${name}`, [n], [b.length]);
  }
}

/**
 * The layer's dynamic skipping (NAEE, Lu et al., arXiv 2402.14800): per token, choice j ≥ 1 is skipped
 * when its score is below `beta` × the score of choice 0 (strict `<`), by `skipChoices` of routing.
 *
 * @example
 * ```ts
 * import { type SkipOptions } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const s: SkipOptions = { beta: 0.45 };
 * assert.equal(s.renormalize, undefined); // inferred from each routing
 * ```
 */
export interface SkipOptions {
  /** Threshold β ≥ 0 (finite): 0 skips nothing, β > 1 leaves only each token's first choice. */
  readonly beta: number;
  /**
   * Rescale a token's remaining weights to what its weights summed to before skipping (routers that
   * renormalise their top-k: Mixtral, Qwen3, DeepSeek-V3 — a top-2 token left with one expert gets weight
   * 1), or leave them (OLMoE, Qwen2: the first weight stays its score). Default: inferred per routing —
   * true when a kept choice's weight differs from its score (the router rescaled its scores). Pass it for
   * routers that scale raw scores without renormalising (DeepSeek-V2's `routed_scaling_factor`).
   */
  readonly renormalize?: boolean;
}

function applySkip(r: RoutingResult, skip: SkipOptions): RoutingResult {
  let renormalize = skip.renormalize;
  if (renormalize === undefined) {
    renormalize = false;
    for (let i = 0; i < r.indices.length && !renormalize; i++) {
      if (isKept(r, i) && r.weights[i] !== r.scores[i]) renormalize = true;
    }
  }
  return skipChoices(r, { beta: skip.beta, renormalize });
}

function checkMask(mask: Uint8Array, E: number, k: number, what: string): void {
  if (!(mask instanceof Uint8Array) || mask.length !== E) {
    throw new ShapeError(
      what,
      [E],
      [(mask as { length?: number })?.length ?? -1],
      "one entry per expert, 0 = removed",
    );
  }
  let live = 0;
  for (let e = 0; e < E; e++) {
    if (mask[e] > 1) throw new OptionError(`${what}[${e}]`, mask[e], "must be 0 (removed) or 1 (kept)");
    live += mask[e];
  }
  if (live < k) {
    throw new OptionError(what, `${live} of ${E} experts kept`, `top-${k} routing needs at least ${k}`);
  }
}

/**
 * Builds an MoE block: `y[t] = Σ_j w[t,j]·E_{idx[t,j]}(x_t) + gate(x_t)·Σ_s S_s(x_t)` over kept choices
 * (shared experts only when given). Any router, any expert activation; optionally with removed experts
 * (`expertMask`, passed to the router) and dynamic skipping (`skip`), which every routing of the layer applies.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
 * });
 * const { output, routing } = layer.forward(matrix.randn(5, 8, { seed: 3 }));
 * assert.deepEqual([output.rows, output.cols, routing.k], [5, 8, 2]);
 * const skipping = moeLayer({ ...layer, skip: { beta: 2 } }); // β > 1: first choices only
 * assert.ok(skipping.route(matrix.randn(5, 8, { seed: 3 })).keep!.every((v, i) => v === (i % 2 ? 0 : 1)));
 * ```
 */
export function moeLayer(options: MoeLayerOptions): MoeLayer {
  const { router, experts, shared, expertMask, skip } = options, activation = options.activation ?? SILU;
  if (experts.length !== router.experts) {
    throw new MoekitError(
      `moeLayer: the router has ${router.experts} experts but ${experts.length} were given`,
    );
  }
  if (experts.length === 0) throw new MoekitError("moeLayer: no experts were given");
  checkActivation(activation);
  const d = experts[0].w2.rows;
  for (const [e, ex] of experts.entries()) checkExpert(`expert ${e}`, ex, d);
  for (const [s, ex] of (shared?.experts ?? []).entries()) checkExpert(`shared expert ${s}`, ex, d);
  if (shared?.gate) matrix.assertShape("shared expert gate", shared.gate, 1, d);
  if (expertMask) checkMask(expertMask, router.experts, router.k, "expertMask");
  if (skip && !(skip.beta >= 0 && Number.isFinite(skip.beta))) {
    throw new OptionError("skip.beta", skip.beta, "must be a finite number ≥ 0");
  }
  const checkX = (x: Mat) => {
    if (x.cols !== d) throw new ShapeError("MoE input X", [-1, d], [x.rows, x.cols]);
  };
  const forwardRouted = (x: Mat, routing: RoutingResult) => {
    checkX(x);
    const out = expertsForward(experts, x, routing, activation);
    return shared ? addSharedExperts(out, x, shared, activation) : out;
  };
  const route = (x: Mat, routeOptions: RouteOptions = {}) => {
    checkX(x);
    let mask = expertMask;
    if (routeOptions.expertMask) {
      checkMask(routeOptions.expertMask, router.experts, router.k, "RouteOptions.expertMask");
      mask = expertMask ? expertMask.map((m, e) => m & routeOptions.expertMask![e]) : routeOptions.expertMask;
      checkMask(mask, router.experts, router.k, "expertMask (layer and call combined)");
    }
    const r = router.route(x, mask ? { ...routeOptions, expertMask: mask } : routeOptions);
    return skip ? applySkip(r, skip) : r;
  };
  return {
    router,
    experts,
    activation,
    dim: d,
    ...(shared ? { shared } : {}),
    ...(expertMask ? { expertMask } : {}),
    ...(skip ? { skip } : {}),
    forwardRouted,
    route,
    forward(x, routeOptions) {
      const routing = route(x, routeOptions);
      return { output: forwardRouted(x, routing), routing };
    },
    trace(x, routeOptions) {
      const routing = route(x, routeOptions), capture = { inputs: [] as Mat[], hidden: [] as Mat[] };
      const out = runExperts(experts, x, routing, activation, capture).output;
      const output = shared ? addSharedExperts(out, x, shared, activation) : out;
      return { output, routing, inputs: capture.inputs, hidden: capture.hidden };
    },
  };
}

/**
 * Runs an L-layer MoE stack with residuals, `x_{l+1} = x_l + MoE_l(x_l)`, where `route(l, x_l)` decides
 * layer l's routing — so routers that carry state between layers (RMoE) or decide ahead (pre-gating)
 * drive the same stack. Layers are {@link MoeLayer}s or bare expert lists (SwiGLU, no shared experts).
 * Returns every layer's input and routing.
 *
 * @example
 * ```ts
 * import { matrix, randomExperts, runRoutedStack, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const experts = [0, 1].map((l) => randomExperts({ experts: 4, dim: 8, hidden: 8, seed: l }));
 * const gates = [0, 1].map((l) => topKRouter({ weight: matrix.randn(4, 8, { seed: 5 + l }), k: 1 }));
 * const run = runRoutedStack(experts, matrix.randn(6, 8), (l, x) => gates[l].route(x));
 * assert.equal(run.routings.length, 2);
 * ```
 */
export function runRoutedStack(
  layers: readonly (MoeLayer | readonly SwiGLUExpert[])[],
  x: Mat,
  route: (layer: number, input: Mat) => RoutingResult,
): { output: Mat; inputs: Mat[]; routings: RoutingResult[] } {
  const inputs: Mat[] = [], routings: RoutingResult[] = [];
  let h = x;
  for (let l = 0; l < layers.length; l++) {
    inputs.push(h);
    const routing = route(l, h);
    routings.push(routing);
    const layer = layers[l];
    const out = "forwardRouted" in layer
      ? layer.forwardRouted(h, routing)
      : expertsForward(layer, h, routing);
    for (let i = 0; i < out.data.length; i++) out.data[i] += h.data[i];
    h = out;
  }
  return { output: h, inputs, routings };
}

/**
 * Runs an L-layer stack of {@link MoeLayer}s with residuals, `x_{l+1} = x_l + MoE_l(x_l)`, returning each
 * layer's input and routing.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, runMoeStack, topKRouter } from "@moekit/moekit/moe";
 * import assert from "node:assert/strict";
 * const layers = [0, 1].map((l) =>
 *   moeLayer({
 *     router: topKRouter({ weight: matrix.randn(4, 8, { seed: l }), k: 1 }),
 *     experts: randomExperts({ experts: 4, dim: 8, hidden: 8, seed: 10 + l }),
 *   })
 * );
 * const run = runMoeStack(layers, matrix.randn(6, 8, { seed: 5 }));
 * assert.deepEqual([run.routings.length, run.inputs.length], [2, 2]);
 * ```
 */
export function runMoeStack(
  layers: readonly MoeLayer[],
  x: Mat,
  options?: RouteOptions,
): { output: Mat; inputs: Mat[]; routings: RoutingResult[] } {
  return runRoutedStack(layers, x, (l, h) => layers[l].route(h, options));
}
