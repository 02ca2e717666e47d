import assert from "node:assert/strict";
import {
  accessTrace,
  CACHE_POLICIES,
  expertAwareBatching,
  matrix,
  OptionError,
  Rng,
  simulateCache,
  switchRouter,
  topKRouter,
} from "../mod.ts";

const H = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 0, 1];

Deno.test("a 12-access trace: hits and evictions of every policy at capacity 3", () => {
  const expected = {
    lru: [6, [2, 0, 3]],
    fifo: [5, [0, 1, 2, 3]],
    lfu: [7, [2, 3]],
    belady: [7, [2, 3]],
  } as const;
  for (const [policy, [hits, ev]] of Object.entries(expected)) {
    const s = simulateCache(H, { capacity: 3, policy: policy as keyof typeof expected });
    assert.equal(s.hits, hits, policy);
    assert.equal(s.misses, 12 - hits);
    assert.equal(s.hitRate, hits / 12);
    assert.deepEqual(Array.from(s.evictions), ev, policy);
  }
});

Deno.test("tie rules: LFU counts survive eviction; Belady ties → smallest key", () => {
  const t = [0, 0, 0, 1, 2, 1, 2, 0];
  assert.deepEqual(Array.from(simulateCache(t, { capacity: 2, policy: "lfu" }).evictions), [1, 2, 1]);
  assert.deepEqual(Array.from(simulateCache(t, { capacity: 2, policy: "lru" }).evictions), [0, 1]);
  assert.deepEqual(Array.from(simulateCache([5, 3, 7], { capacity: 2, policy: "belady" }).evictions), [3]);
  assert.deepEqual(Array.from(simulateCache([5, 3, 7], { capacity: 2, policy: "lru" }).evictions), [5]);
  const empty = simulateCache([], { capacity: 2, policy: "lru" });
  assert.equal(empty.hitRate, 0);
});

/** The most hits any eviction sequence can get (exhaustive search). */
function bruteForceBest(trace: number[], capacity: number): number {
  const go = (i: number, cache: number[]): number => {
    if (i === trace.length) return 0;
    const key = trace[i];
    if (cache.includes(key)) return 1 + go(i + 1, cache);
    if (cache.length < capacity) return go(i + 1, [...cache, key]);
    let best = 0;
    for (let v = 0; v < cache.length; v++) {
      best = Math.max(best, go(i + 1, [...cache.slice(0, v), ...cache.slice(v + 1), key]));
    }
    return best;
  };
  return go(0, []);
}

Deno.test("Belady is optimal (brute force on tiny traces) and ≥ every policy", () => {
  const rng = new Rng(3);
  for (let trial = 0; trial < 60; trial++) {
    const n = 6 + rng.int(5), keys = 2 + rng.int(4), cap = 1 + rng.int(3);
    const trace = Array.from({ length: n }, () => rng.int(keys));
    const belady = simulateCache(trace, { capacity: cap, policy: "belady" }).hits;
    assert.equal(belady, bruteForceBest(trace, cap), JSON.stringify({ trace, cap }));
    for (const policy of CACHE_POLICIES) {
      assert.ok(simulateCache(trace, { capacity: cap, policy }).hits <= belady);
    }
  }
});

Deno.test("lookahead: whole future = Belady; zero horizon = LRU; prefetch hides misses", () => {
  const rng = new Rng(5);
  for (let trial = 0; trial < 40; trial++) {
    const trace = Array.from({ length: 80 }, () => rng.int(10));
    for (const cap of [1, 3, 6]) {
      const bel = simulateCache(trace, { capacity: cap, policy: "belady" });
      const look = simulateCache(trace, { capacity: cap, policy: "lookahead" });
      assert.equal(look.hits, bel.hits);
      const blind = simulateCache(trace, { capacity: cap, policy: "lookahead", horizon: 0 });
      const lru = simulateCache(trace, { capacity: cap, policy: "lru" });
      assert.equal(blind.hits, lru.hits);
      assert.deepEqual(blind.evictions, lru.evictions);
    }
  }
  // a cyclic trace longer than the cache: LRU never hits; prefetching one ahead serves every access
  const cyc = Array.from({ length: 40 }, (_, i) => i % 5);
  assert.equal(simulateCache(cyc, { capacity: 4, policy: "lru" }).hits, 0);
  const pf = simulateCache(cyc, {
    capacity: 4,
    policy: "lookahead",
    horizon: 4,
    prefetch: 1,
    expertBytes: 10,
  });
  assert.ok(pf.prefetchHits > 20, `prefetch hits ${pf.prefetchHits}`);
  assert.equal(pf.bytesMoved, (pf.misses + pf.prefetches) * 10);
  assert.throws(
    () => simulateCache(cyc, { capacity: 2, policy: "lru", prefetch: 1 }),
    /needs policy "lookahead"/,
  );
});

/** The spec's table, read literally: on a miss with a full cache, scan every cached key for the victim. */
function referenceEvictions(
  trace: number[],
  capacity: number,
  policy: "lru" | "fifo" | "lfu" | "belady" | "lookahead",
  horizon = Infinity,
) {
  const cache: number[] = [], lastUse = new Map<number, number>(), inserted = new Map<number, number>();
  const count = new Map<number, number>(), evictions: number[] = [];
  let hits = 0;
  const nextUse = (key: number, i: number) => {
    const j = trace.indexOf(key, i + 1);
    return j < 0 ? Infinity : j;
  };
  // lookahead: a next use beyond the horizon is unknown, as good as never
  const ahead = (key: number, i: number) => (nextUse(key, i) - i > horizon ? Infinity : nextUse(key, i));
  trace.forEach((key, i) => {
    count.set(key, (count.get(key) ?? 0) + 1);
    if (cache.includes(key)) {
      hits++;
    } else {
      if (cache.length >= capacity) {
        // the key each policy evicts: the first of the cache sorted by its rule
        const order = [...cache].sort((a, b) =>
          policy === "lru"
            ? lastUse.get(a)! - lastUse.get(b)!
            : policy === "fifo"
            ? inserted.get(a)! - inserted.get(b)!
            : policy === "lfu"
            ? count.get(a)! - count.get(b)! || lastUse.get(a)! - lastUse.get(b)!
            : policy === "belady"
            ? nextUse(b, i) - nextUse(a, i) || a - b
            : ahead(b, i) - ahead(a, i) || lastUse.get(a)! - lastUse.get(b)!
        );
        evictions.push(order[0]);
        cache.splice(cache.indexOf(order[0]), 1);
      }
      cache.push(key);
      inserted.set(key, i);
    }
    lastUse.set(key, i);
  });
  return { hits, evictions };
}

Deno.test("simulateCache equals the policies' rules read literally on random traces (no scan vs scan)", () => {
  const rng = new Rng(11);
  for (let c = 0; c < 304; c++) {
    const keys = rng.int(12) + 1, capacity = rng.int(keys) + 1;
    // the last few are long enough for the victim heap to compact itself (over 4·capacity + 1024 entries)
    const length = c < 300 ? rng.int(300) + 1 : 3000;
    const trace = Array.from({ length }, () => Math.floor(rng.uniform() ** 2 * keys));
    const horizon = [Infinity, 0, rng.int(8), rng.int(60)][c % 4];
    for (const policy of ["lru", "fifo", "lfu", "belady", "lookahead"] as const) {
      const s = simulateCache(trace, { capacity, policy, ...(policy === "lookahead" ? { horizon } : {}) });
      const ref = referenceEvictions(trace, capacity, policy, horizon);
      assert.equal(s.hits, ref.hits, `${policy} capacity ${capacity}: ${trace}`);
      assert.deepEqual(Array.from(s.evictions), ref.evictions, `${policy} capacity ${capacity}: ${trace}`);
    }
  }
});

Deno.test("cache bad input: capacity ≤ 0, unknown policy", () => {
  assert.throws(
    () => simulateCache(H, { capacity: 0, policy: "lru" }),
    (e) => e instanceof OptionError && /capacity = 0/.test(e.message),
  );
  assert.throws(() => simulateCache(H, { capacity: -2, policy: "belady" }), OptionError);
  assert.throws(() => simulateCache(H, { capacity: 2, policy: "random" as never }), /policy = "random"/);
});

Deno.test("accessTrace: token-major then layer then choice; batch order; dropped choices load nothing", () => {
  const x = matrix.fromArrays([[3, 2, 0], [0, 2, 3]]);
  const r = topKRouter({ weight: matrix.identity(3), k: 2 }).route(x);
  const tr = accessTrace([r, r]);
  assert.deepEqual(Array.from(tr.keys), [0, 1, 3, 4, 2, 1, 5, 4]);
  assert.equal(tr.layers, 2);
  assert.deepEqual(Array.from(accessTrace([r, r], { order: "batch", batchSize: 2 }).keys), [
    0,
    1,
    2,
    3,
    4,
    5,
  ]);
  const dropped = switchRouter({ weight: matrix.identity(3), capacity: 1 }).route(
    matrix.fromArrays([[3, 0, 0], [2, 0, 0]]),
  );
  assert.deepEqual(Array.from(accessTrace([dropped]).keys), [0]);
  const short = topKRouter({ weight: matrix.identity(3), k: 2 }).route(matrix.fromArrays([[1, 2, 3]]));
  assert.throws(() => accessTrace([r, short]), /layer 1 routes 1 tokens/);
});

Deno.test("expert-aware batching lowers expert loads per step", () => {
  const w = matrix.randn(8, 16, { seed: 1 }), x = matrix.randn(256, 16, { seed: 2 });
  const r = topKRouter({ weight: w, k: 1 }).route(x);
  const b = expertAwareBatching([r], 16);
  assert.ok(b.meanAfter < b.meanBefore, `${b.meanAfter} < ${b.meanBefore}`);
  assert.deepEqual(Array.from(b.order).sort((p, q) => p - q), Array.from({ length: 256 }, (_, i) => i));
  assert.ok(b.meanAfter <= 2, "16 tokens sorted by one expert span at most 2 experts");
});
