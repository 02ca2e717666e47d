/**
 * Randomized vs dense SVD on a 4096×1024 matrix (a realistic expert slice with a decaying spectrum):
 * time and relative Frobenius error of the rank-r reconstruction, for a few ranks.
 *
 *   deno run bench/svd_compare.ts [--rows 4096] [--cols 1024]
 */

import { parseArgs } from "node:util";
import { lowRankProduct, matrix, randomizedSvd, svdCompress } from "../mod.ts";

const a = parseArgs({
  args: Deno.args,
  options: { rows: { type: "string", default: "4096" }, cols: { type: "string", default: "1024" } },
}).values;
const m = Number(a.rows), n = Number(a.cols);
// W = U diag(σ) Vᵀ-like: a product of Gaussians with a power-law column scaling, plus noise
const inner = 256, left = matrix.randn(m, inner, { seed: 1 }), right = matrix.randn(inner, n, { seed: 2 });
for (let j = 0; j < inner; j++) for (let i = 0; i < m; i++) left.data[i * inner + j] *= 1 / (1 + j) ** 1.2;
const w = matrix.matmul(left, right);
const noise = matrix.randn(m, n, { seed: 3, std: 1e-3 });
w.data.forEach((_, i) => (w.data[i] += noise.data[i]));
const normW = matrix.frobenius(w);
const relErr = (p: typeof w) => {
  let s = 0;
  for (let i = 0; i < w.data.length; i++) s += (w.data[i] - p.data[i]) ** 2;
  return Math.sqrt(s) / normW;
};

console.log(
  `${m}×${n}: dense SVD (ml-matrix, float64) vs randomized SVD (oversample 10, 2 power iterations)`,
);
let t = performance.now();
const ranks = [16, 64, 128];
const denseAll = svdCompress(w, { rank: Math.max(...ranks) });
const denseMs = performance.now() - t;
console.log(`dense SVD: ${(denseMs / 1000).toFixed(1)} s (one decomposition serves every rank)`);
for (const r of ranks) {
  t = performance.now();
  const rnd = randomizedSvd(w, r, { seed: 4 });
  const ms = performance.now() - t;
  const tail = Array.from(denseAll.singularValues).slice(r).reduce((s, v) => s + v * v, 0);
  const optimal = Math.sqrt(tail) / normW, speedup = denseMs / ms;
  console.log(
    `rank ${String(r).padStart(3)}: randomized ${(ms / 1000).toFixed(2)} s (${
      speedup.toFixed(1)
    }× faster), ` +
      `error ${relErr(lowRankProduct(rnd)).toExponential(3)} vs the dense (optimal) ${
        optimal.toExponential(3)
      }`,
  );
}
