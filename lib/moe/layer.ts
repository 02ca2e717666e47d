/**
 * SwiGLU experts and the MoE layer forward: route, dispatch, run each expert on its tokens, combine.
 * Dropped tokens get 0 from the MoE block (the residual carries them).
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, ShapeError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";
import { uniformWeight } from "../core/init.ts";
import type { RouteOptions, Router, RoutingResult } from "../routing/result.ts";
import { combineExpertOutputs, dispatch, gatherExpertInputs } from "./dispatch.ts";

/**
 * One SwiGLU expert `E(x) = W2·(silu(W1·x) ⊙ W3·x)` in nn.Linear layout.
 *
 * @example
 * ```ts
 * import { matrix, type SwiGLUExpert } from "@moekit/moekit";
 * const e: SwiGLUExpert = { w1: matrix.zeros(16, 4), w3: matrix.zeros(16, 4), w2: matrix.zeros(4, 16) };
 * console.log(e.w1.rows); // 16
 * ```
 */
export interface SwiGLUExpert {
  /** Gate projection `[f,d]`. */
  readonly w1: Mat;
  /** Up projection `[f,d]`. */
  readonly w3: Mat;
  /** Down projection `[d,f]`. */
  readonly w2: Mat;
}

/**
 * Runs a SwiGLU expert on rows `x [n,d]`, returning `[n,d]`.
 *
 * @example
 * ```ts
 * import { matrix, swigluForward } from "@moekit/moekit";
 * const e = { w1: matrix.identity(2), w3: matrix.identity(2), w2: matrix.identity(2) };
 * const y = swigluForward(e, matrix.fromArrays([[1, 0]]));
 * console.log(y.data[0].toFixed(4)); // 0.7311 = silu(1)·1
 * ```
 */
export function swigluForward(expert: SwiGLUExpert, x: Mat): Mat {
  const a = matrix.matmulT(x, expert.w1), b = matrix.matmulT(x, expert.w3);
  for (let i = 0; i < a.data.length; i++) {
    const v = a.data[i];
    a.data[i] = (v / (1 + Math.exp(-v))) * b.data[i];
  }
  return matrix.matmulT(a, expert.w2);
}

/**
 * Seeded random SwiGLU experts with PyTorch's nn.Linear init range `U(−1/√in, 1/√in)`.
 *
 * @example
 * ```ts
 * import { randomExperts } from "@moekit/moekit";
 * const experts = randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 1 });
 * console.log(experts.length, experts[0].w2.rows); // 4 8
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
 * A router and its experts.
 *
 * @example
 * ```ts
 * import { type MoeLayer } from "@moekit/moekit";
 * const describe = (l: MoeLayer) => `${l.router.name} × ${l.experts.length}`;
 * console.log(typeof describe); // function
 * ```
 */
export interface MoeLayer {
  /** The router. */
  readonly router: Router;
  /** One expert per router output. */
  readonly experts: readonly SwiGLUExpert[];
  /** Forward pass: the MoE output `[T,d]` (no residual) and the routing. */
  forward(x: Mat, options?: RouteOptions): { output: Mat; routing: RoutingResult };
}

/**
 * The MoE block output for a given routing: dispatch, run each expert on its tokens, combine
 * (`y[t] = Σ_j w[t,j]·E_{idx[t,j]}(x_t)` over kept choices; no residual).
 *
 * @example
 * ```ts
 * import { expertsForward, matrix, randomExperts, topKRouter } from "@moekit/moekit";
 * const experts = randomExperts({ experts: 4, dim: 8, hidden: 8, seed: 1 });
 * const x = matrix.randn(3, 8, { seed: 2 });
 * const y = expertsForward(experts, x, topKRouter({ weight: matrix.randn(4, 8), k: 2 }).route(x));
 * console.log(y.rows, y.cols); // 3 8
 * ```
 */
export function expertsForward(experts: readonly SwiGLUExpert[], x: Mat, routing: RoutingResult): Mat {
  if (routing.experts !== experts.length) {
    throw new MoekitError(
      `the routing is over ${routing.experts} experts but ${experts.length} experts were given`,
    );
  }
  if (routing.tokens !== x.rows) throw new ShapeError("MoE input X", [routing.tokens, -1], [x.rows, x.cols]);
  const disp = dispatch(routing), output = matrix.zeros(x.rows, experts[0].w2.rows);
  for (let e = 0; e < experts.length; e++) {
    if (disp.offsets[e + 1] === disp.offsets[e]) continue;
    combineExpertOutputs(output, disp, e, swigluForward(experts[e], gatherExpertInputs(x, disp, e)));
  }
  return output;
}

/**
 * Builds an MoE layer: `y[t] = Σ_j w[t,j]·E_{idx[t,j]}(x_t)` over kept choices.
 *
 * @example
 * ```ts
 * import { matrix, moeLayer, randomExperts, topKRouter } from "@moekit/moekit";
 * const layer = moeLayer({
 *   router: topKRouter({ weight: matrix.randn(4, 8, { seed: 1 }), k: 2 }),
 *   experts: randomExperts({ experts: 4, dim: 8, hidden: 16, seed: 2 }),
 * });
 * const { output, routing } = layer.forward(matrix.randn(5, 8, { seed: 3 }));
 * console.log(output.rows, output.cols, routing.k); // 5 8 2
 * ```
 */
export function moeLayer(
  options: { readonly router: Router; readonly experts: readonly SwiGLUExpert[] },
): MoeLayer {
  const { router, experts } = options;
  if (experts.length !== router.experts) {
    throw new MoekitError(
      `moeLayer: the router has ${router.experts} experts but ${experts.length} were given`,
    );
  }
  const d = experts[0].w2.rows;
  for (const [e, ex] of experts.entries()) {
    const f = ex.w1.rows;
    matrix.assertShape(`expert ${e} w1`, ex.w1, f, d);
    matrix.assertShape(`expert ${e} w3`, ex.w3, f, d);
    matrix.assertShape(`expert ${e} w2`, ex.w2, d, f);
  }
  return {
    router,
    experts,
    forward(x, routeOptions) {
      if (x.cols !== d) throw new ShapeError("MoE input X", [-1, d], [x.rows, x.cols]);
      const routing = router.route(x, routeOptions);
      return { output: expertsForward(experts, x, routing), routing };
    },
  };
}

/**
 * Runs an L-layer MoE stack with residuals, `x_{l+1} = x_l + MoE_l(x_l)`, where `route(l, x_l)` decides
 * layer l's routing — so routers that carry state between layers (RMoE) or decide ahead (pre-gating)
 * drive the same stack. Returns every layer's input and routing.
 *
 * @example
 * ```ts
 * import { matrix, randomExperts, runRoutedStack, topKRouter } from "@moekit/moekit";
 * const experts = [0, 1].map((l) => randomExperts({ experts: 4, dim: 8, hidden: 8, seed: l }));
 * const gates = [0, 1].map((l) => topKRouter({ weight: matrix.randn(4, 8, { seed: 5 + l }), k: 1 }));
 * const run = runRoutedStack(experts, matrix.randn(6, 8), (l, x) => gates[l].route(x));
 * console.log(run.routings.length); // 2
 * ```
 */
export function runRoutedStack(
  experts: readonly (readonly SwiGLUExpert[])[],
  x: Mat,
  route: (layer: number, input: Mat) => RoutingResult,
): { output: Mat; inputs: Mat[]; routings: RoutingResult[] } {
  const inputs: Mat[] = [], routings: RoutingResult[] = [];
  let h = x;
  for (let l = 0; l < experts.length; l++) {
    inputs.push(h);
    const routing = route(l, h);
    routings.push(routing);
    const out = expertsForward(experts[l], h, routing);
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
 * import { matrix, moeLayer, randomExperts, runMoeStack, topKRouter } from "@moekit/moekit";
 * const layers = [0, 1].map((l) =>
 *   moeLayer({
 *     router: topKRouter({ weight: matrix.randn(4, 8, { seed: l }), k: 1 }),
 *     experts: randomExperts({ experts: 4, dim: 8, hidden: 8, seed: 10 + l }),
 *   })
 * );
 * const run = runMoeStack(layers, matrix.randn(6, 8, { seed: 5 }));
 * console.log(run.routings.length, run.inputs.length); // 2 2
 * ```
 */
export function runMoeStack(
  layers: readonly MoeLayer[],
  x: Mat,
  options?: RouteOptions,
): { output: Mat; inputs: Mat[]; routings: RoutingResult[] } {
  return runRoutedStack(layers.map((l) => l.experts), x, (l, h) => layers[l].router.route(h, options));
}
