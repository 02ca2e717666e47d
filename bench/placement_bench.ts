/**
 * Expert placement speed at DeepSeek-V3 scale (L = 58 MoE layers, E = 256, R = 288, 8 groups, 4 nodes,
 * 32 GPUs) and how rebalancing grows with the layer count L and the slot count R:
 *   deno bench --allow-read --allow-env bench/placement_bench.ts
 * Loads are seeded log-normal token counts (mean 128 per expert, a few hot experts), like one step of
 * 4096 tokens × k = 8 routed to 256 experts. With `MOEKIT_BENCH_QUICK=1` (and env permission) every
 * benchmark runs once, with no warm-up (CI's smoke pass).
 */

import {
  dispatchTraffic,
  expertLoadMatrix,
  placementMetrics,
  rebalanceExperts,
  Rng,
} from "../lib/placement/mod.ts";
import type { RoutingResult } from "../lib/routing/mod.ts";

const QUICK =
  Deno.permissions.querySync({ name: "env", variable: "MOEKIT_BENCH_QUICK" }).state === "granted" &&
  Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const iters = QUICK ? { n: 1, warmup: 0 } : {};

const E = 256, G = 8, N = 4, P = 32, T = 4096, K = 8;

function loads(L: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from(
    { length: L },
    () => Array.from({ length: E }, () => Math.round(128 * Math.exp(0.8 * rng.normal() - 0.32))),
  );
}

function routing(seed: number): RoutingResult {
  const rng = new Rng(seed), indices = new Int32Array(T * K);
  for (let t = 0; t < T; t++) {
    // k distinct experts per token, skewed toward low ids
    const used = new Set<number>();
    while (used.size < K) used.add(Math.floor(E * rng.uniform() ** 1.5));
    indices.set([...used], t * K);
  }
  return {
    tokens: T,
    experts: E,
    k: K,
    indices,
    weights: new Float32Array(T * K),
    scores: new Float32Array(T * K),
    scoreFunction: "sigmoid",
  };
}

const v3 = loads(58, 1);
const opts = { numReplicas: 288, numGroups: G, numNodes: N, numGpus: P };
const placed = rebalanceExperts(v3, opts);
const r0 = routing(2);

Deno.bench({
  ...iters,
  name: "rebalanceExperts hierarchical L58 E256 R288",
  group: "deepseek-v3 scale",
  baseline: true,
  fn: () => void rebalanceExperts(v3, opts),
});
Deno.bench({
  ...iters,
  name: "rebalanceExperts global L58 E256 R288",
  group: "deepseek-v3 scale",
  fn: () => void rebalanceExperts(v3, { ...opts, policy: "global" }),
});
Deno.bench({
  ...iters,
  name: "placementMetrics L58 P32",
  group: "deepseek-v3 scale",
  fn: () => void placementMetrics(v3, placed),
});
Deno.bench({
  ...iters,
  name: "dispatchTraffic one layer T4096 k8",
  group: "deepseek-v3 scale",
  fn: () => void dispatchTraffic(r0, placed, { bytesPerToken: 7168, layer: 0 }),
});
Deno.bench({
  ...iters,
  name: "expertLoadMatrix 58 layers × T4096 k8",
  group: "deepseek-v3 scale",
  fn: () => void expertLoadMatrix(Array(58).fill(r0)),
});

for (const L of [1, 8, 58, 232]) {
  const w = loads(L, 3);
  Deno.bench({
    ...iters,
    name: `rebalanceExperts hierarchical L${L} R288`,
    group: "growth with L",
    baseline: L === 58,
    fn: () => void rebalanceExperts(w, opts),
  });
}

for (const R of [256, 288, 320, 384, 512, 1024]) {
  for (const policy of ["hierarchical", "global"] as const) {
    Deno.bench({
      ...iters,
      name: `rebalanceExperts ${policy} L58 R${R}`,
      group: `growth with R (${policy})`,
      baseline: R === 288,
      fn: () => void rebalanceExperts(v3, { ...opts, numReplicas: R, policy }),
    });
  }
}
