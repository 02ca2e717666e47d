// The DARE / DELLA mask stream (docs/merging.md, "Randomness and seeds"): a counter-mode splitmix32 stream
// keyed by (seed, tensor name, model index). The pinned values were computed independently (a few lines of
// Python following the documented definition), not by moekit.
import assert from "node:assert/strict";
import { Rng } from "../lib/core/random.ts";
import { dellaProbabilities, sparsify } from "../lib/merging/mod.ts";

const ones = (n: number) => ({ shape: [n], data: new Float64Array(n).fill(1) });

Deno.test("mask stream: key and first words of (seed 7, 'w', model 0) as documented", () => {
  const rng = new Rng(7).derive("w", 0);
  assert.equal(rng.seed, 1366177006);
  assert.deepEqual(
    Array.from(rng.counterWordsInto(new Uint32Array(10))),
    [
      4246704792,
      2404482253,
      1566446796,
      4146174377,
      1928934905,
      612770256,
      216788144,
      496428598,
      842342022,
      2568956192,
    ],
  );
  // drawing words does not advance the xoshiro stream
  const a = new Rng(7).derive("w", 0), b = new Rng(7).derive("w", 0);
  a.counterWordsInto(new Uint32Array(5));
  assert.equal(a.uniform(), b.uniform());
});

Deno.test("mask stream: DARE keeps w/2^32 < density, entry i uses word i", () => {
  const keep = (d: number) =>
    Array.from(sparsify(ones(10), { method: "random", density: d, seed: 7, name: "w", modelIndex: 0 }).data);
  assert.deepEqual(keep(0.5), [0, 0, 1, 0, 1, 1, 1, 1, 1, 0]);
  assert.deepEqual(keep(0.3), [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]);
  // another model index or seed: another stream
  const other = sparsify(ones(64), { method: "random", density: .5, seed: 7, name: "w", modelIndex: 1 }).data;
  const mine = sparsify(ones(64), { method: "random", density: .5, seed: 7, name: "w", modelIndex: 0 }).data;
  assert.notDeepEqual(other, mine);
});

Deno.test("mask stream: random access — masks across the 4096-word buffer match words drawn at their offset", () => {
  const n = 9000, d = 0.37;
  const mask = sparsify(ones(n), { method: "random", density: d, seed: 3, name: "emb", modelIndex: 2 }).data;
  const rng = new Rng(3).derive("emb", 2);
  for (const [from, len] of [[0, 17], [4090, 12], [8191, 809]]) {
    const w = rng.counterWordsInto(new Uint32Array(len), from);
    for (let i = 0; i < len; i++) {
      assert.equal(mask[from + i], w[i] / 2 ** 32 < d ? 1 : 0, `entry ${from + i}`);
    }
  }
  assert.throws(() => rng.counterWordsInto(new Uint32Array(1), -1), /offset/);
});

Deno.test("mask stream: DELLA keeps w/2^32 < p with p its rank-based probability", () => {
  const rows = 3, cols = 8, n = rows * cols;
  const x = Float64Array.from({ length: n }, (_, i) => Math.sin(1 + i * 1.7));
  const t = { shape: [rows, cols], data: x };
  const p = dellaProbabilities(t, 0.5, 0.3);
  const got = sparsify(t, {
    method: "della_magprune",
    density: 0.5,
    epsilon: 0.3,
    seed: 11,
    name: "q",
    modelIndex: 1,
  });
  const w = new Rng(11).derive("q", 1).counterWordsInto(new Uint32Array(n));
  const want = Array.from(x, (v, i) => (w[i] / 2 ** 32 < p[i] ? v : 0));
  assert.deepEqual(Array.from(got.data), want);
  assert.ok(want.some((v) => v === 0) && want.some((v) => v !== 0));
});

Deno.test("mask stream: DARE's keep test is exact at the edges of the density", () => {
  // words of (seed 7, 'w', 0): 4246704792, 2404482253, 1566446796, 4146174377, … — a density of exactly
  // w/2^32 drops that entry (keep = w < d·2^32), one ulp above keeps it
  const n = 4, first = [4246704792, 2404482253, 1566446796, 4146174377];
  const keep = (d: number) =>
    Array.from(sparsify(ones(n), { method: "random", density: d, seed: 7, name: "w", modelIndex: 0 }).data);
  assert.deepEqual(keep(first[2] / 2 ** 32), [0, 0, 0, 0]);
  assert.deepEqual(keep((first[2] + 2 ** -20) / 2 ** 32), [0, 0, 1, 0]);
  assert.deepEqual(keep(first[1] / 2 ** 32), [0, 0, 1, 0]);
  assert.deepEqual(keep(1e-300), [0, 0, 0, 0]);
  assert.deepEqual(keep(-0.5), [0, 0, 0, 0]);
  assert.deepEqual(keep(1 - 2 ** -53), [1, 1, 1, 1]);
});
