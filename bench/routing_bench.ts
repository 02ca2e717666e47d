/**
 * Routing throughput on the model shapes of the peer kit (T = 4096), JS reference vs WebAssembly SIMD:
 *   deno bench                                   (no flags needed; or: deno task bench)
 * tokens/s = 4096 / (time per iteration). Inputs are seeded N(0,1) tokens and N(0, 1/d) gates, as in
 * the peer kit of `deno task bench:peers`. Large shapes run few iterations. With `MOEKIT_BENCH_QUICK=1`
 * (and `--allow-env`) every shape runs once on 64 tokens, a smoke test for CI (`deno task bench:ci`).
 */

import { allocTokens, deepseekV3Router, kernelInfo, matrix, topKRouter } from "../mod.ts";

const quick =
  Deno.permissions.querySync({ name: "env", variable: "MOEKIT_BENCH_QUICK" }).state === "granted" &&
  Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const T = quick ? 64 : 4096;
const shapes = [
  { name: "mixtral d4096 E8 k2", d: 4096, E: 8, k: 2, n: 10 },
  { name: "olmoe d2048 E64 k8", d: 2048, E: 64, k: 8, n: 10 },
  { name: "switch d768 E128 k1", d: 768, E: 128, k: 1, n: 10 },
  { name: "deepseek-v3 d7168 E256 k8", d: 7168, E: 256, k: 8, n: 3 },
];
const simd = kernelInfo().simd;

for (const s of shapes) {
  const x = matrix.randn(T, s.d, { seed: 1 });
  const xWasm = allocTokens(T, s.d);
  xWasm.data.set(x.data);
  const w = matrix.randn(s.E, s.d, { seed: 2, std: 1 / Math.sqrt(s.d) });
  const js = topKRouter({ weight: w, k: s.k, backend: "js" });
  const wasm = topKRouter({ weight: w, k: s.k });
  const opts = { group: s.name, n: quick ? 1 : s.n, warmup: quick ? 0 : 1 };
  Deno.bench({ name: `js ${s.name}`, baseline: true, ...opts, fn: () => void js.route(x) });
  Deno.bench({ name: `wasm-${simd} (copy X) ${s.name}`, ...opts, fn: () => void wasm.route(x) });
  Deno.bench({ name: `wasm-${simd} (token buffer) ${s.name}`, ...opts, fn: () => void wasm.route(xWasm) });
  if (s.E === 256) {
    const ds = deepseekV3Router({ weight: w, preset: "deepseek-v3" });
    Deno.bench({
      name: `deepseek-v3 grouped (token buffer) ${s.name}`,
      ...opts,
      fn: () => void ds.route(xWasm),
    });
  }
}
