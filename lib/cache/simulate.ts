/**
 * Expert-cache simulation: LRU, FIFO, LFU (counts kept across evictions), Belady MIN (farthest next use,
 * ties → smallest key) and a lookahead policy that evicts by next use within the horizon a pre-gate
 * provides, optionally prefetching the keys it knows are coming (docs/routing.md, "Expert-cache simulation").
 * @module
 */

import { OptionError } from "../core/errors.ts";
import type { AccessTrace } from "./trace.ts";

/**
 * A cache replacement policy.
 *
 * @example
 * ```ts
 * import { type CachePolicy, simulateCache } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * const p: CachePolicy = "belady";
 * assert.equal(simulateCache([0, 1, 0], { capacity: 1, policy: p }).hits, 0);
 * ```
 */
export type CachePolicy = "lru" | "fifo" | "lfu" | "belady" | "lookahead";

/**
 * The policies, in the order tables list them.
 *
 * @example
 * ```ts
 * import { CACHE_POLICIES } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * assert.deepEqual(CACHE_POLICIES, ["belady", "lookahead", "lfu", "lru", "fifo"]);
 * ```
 */
export const CACHE_POLICIES: readonly CachePolicy[] = ["belady", "lookahead", "lfu", "lru", "fifo"];

/**
 * Options of {@link simulateCache}.
 *
 * @example
 * ```ts
 * import { type CacheOptions, simulateCache } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * const o: CacheOptions = { capacity: 2, policy: "lookahead", horizon: 4, prefetch: 1, expertBytes: 1 << 20 };
 * const s = simulateCache([0, 1, 2, 0, 1, 2], o);
 * assert.equal(s.bytesMoved, (s.misses + s.prefetches) * (1 << 20));
 * ```
 */
export interface CacheOptions {
  /** Experts the cache holds, ≥ 1. */
  readonly capacity: number;
  /** Replacement policy. */
  readonly policy: CachePolicy;
  /** Lookahead: how many future accesses the pre-gate reveals (default: the whole trace, = Belady). */
  readonly horizon?: number;
  /** Lookahead: load up to this many upcoming keys ahead of use (within the horizon). Default 0. */
  readonly prefetch?: number;
  /** Bytes per expert, for `bytesMoved`. Default 1. */
  readonly expertBytes?: number;
}

/**
 * What a cache run did.
 *
 * @example
 * ```ts
 * import { type CacheStats, simulateCache } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * const s: CacheStats = simulateCache([0, 1, 0, 1], { capacity: 2, policy: "lru" });
 * assert.deepEqual([s.hits, s.misses, s.hitRate, s.evictions.length], [2, 2, 0.5, 0]);
 * ```
 */
export interface CacheStats {
  /** Accesses found in the cache (including keys a prefetch brought in). */
  readonly hits: number;
  /** Accesses that had to wait for a load (cold misses count). */
  readonly misses: number;
  /** `hits / accesses` (0 for an empty trace). */
  readonly hitRate: number;
  /** Evicted keys in order. */
  readonly evictions: Int32Array;
  /** Loads done ahead of use by prefetching. */
  readonly prefetches: number;
  /** Accesses served by a prefetched key. */
  readonly prefetchHits: number;
  /** `(misses + prefetches) · expertBytes`. */
  readonly bytesMoved: number;
}

/**
 * Simulates an expert cache on a trace (plain numbers, or an {@link AccessTrace}).
 *
 * @example
 * ```ts
 * import { simulateCache } from "@moekit/moekit/cache";
 * import assert from "node:assert/strict";
 * const trace = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 0, 1]; // expert keys in access order
 * const run = (policy: "lru" | "fifo" | "lfu" | "belady") => {
 *   const s = simulateCache(trace, { capacity: 3, policy });
 *   return [s.hits, Array.from(s.evictions)];
 * };
 * assert.deepEqual(run("lru"), [6, [2, 0, 3]]);
 * assert.deepEqual(run("fifo"), [5, [0, 1, 2, 3]]);
 * assert.deepEqual(run("lfu"), [7, [2, 3]]);
 * assert.deepEqual(run("belady"), [7, [2, 3]]);
 * ```
 */
export function simulateCache(trace: ArrayLike<number> | AccessTrace, options: CacheOptions): CacheStats {
  const keys: ArrayLike<number> = Array.isArray(trace) || ArrayBuffer.isView(trace)
    ? trace as ArrayLike<number>
    : (trace as AccessTrace).keys;
  const { capacity, policy } = options;
  if (!Number.isInteger(capacity) || capacity < 1) {
    throw new OptionError("capacity", capacity, "a cache holds an integer ≥ 1 experts");
  }
  if (!CACHE_POLICIES.includes(policy)) {
    throw new OptionError("policy", policy, `use one of ${CACHE_POLICIES.join(", ")}`);
  }
  const n = keys.length, horizon = options.horizon ?? Infinity, depth = options.prefetch ?? 0;
  if (!(horizon >= 0)) throw new OptionError("horizon", horizon, "must be ≥ 0");
  if (!Number.isInteger(depth) || depth < 0) {
    throw new OptionError("prefetch", depth, "must be an integer ≥ 0");
  }
  if (depth > 0 && policy !== "lookahead") {
    throw new OptionError("prefetch", depth, `prefetching needs policy "lookahead"`);
  }
  const expertBytes = options.expertBytes ?? 1;
  // next[i] = position of the next access to keys[i] after i (n = never)
  const next = new Int32Array(n), seen = new Map<number, number>();
  for (let i = n - 1; i >= 0; i--) {
    next[i] = seen.get(keys[i]) ?? n;
    seen.set(keys[i], i);
  }
  // per cached key: last use time, insertion time, next use position, prefetched-and-unused flag
  const lastUse = new Map<number, number>(),
    inserted = new Map<number, number>(),
    nextUse = new Map<number, number>();
  const fresh = new Set<number>(), count = new Map<number, number>();
  const evictions: number[] = [];
  let hits = 0, misses = 0, prefetches = 0, prefetchHits = 0, clock = 0;

  /** Eviction rank of a cached key: the largest [primary, tie-break] is evicted. */
  const rank = (key: number, now: number): [number, number] => {
    switch (policy) {
      case "lru":
        return [-lastUse.get(key)!, 0];
      case "fifo":
        return [-inserted.get(key)!, 0];
      case "lfu": // fewest accesses since the start; equal counts → least recently used
        return [-count.get(key)!, -lastUse.get(key)!];
      case "belady": // farthest next use (never = n); equal → smallest key
        return [nextUse.get(key)!, -key];
      default: { // next use within the horizon, beyond it = unknown = never; equal → least recently used
        const nu = nextUse.get(key)!;
        return [nu - now > horizon ? n : nu, -lastUse.get(key)!];
      }
    }
  };
  const victim = (now: number, protect?: number): number => {
    let best = -1, bestRank: [number, number] = [-Infinity, -Infinity];
    for (const key of lastUse.keys()) {
      if (key === protect) continue;
      const r = rank(key, now);
      if (r[0] > bestRank[0] || (r[0] === bestRank[0] && r[1] > bestRank[1])) {
        best = key;
        bestRank = r;
      }
    }
    return best;
  };
  const evict = (key: number) => {
    evictions.push(key);
    lastUse.delete(key);
    inserted.delete(key);
    nextUse.delete(key);
    fresh.delete(key);
  };
  const insert = (key: number, nextPos: number) => {
    lastUse.set(key, clock);
    inserted.set(key, clock);
    nextUse.set(key, nextPos);
  };

  for (let i = 0; i < n; i++) {
    const key = keys[i];
    clock++;
    count.set(key, (count.get(key) ?? 0) + 1);
    if (lastUse.has(key)) {
      hits++;
      if (fresh.delete(key)) prefetchHits++;
      lastUse.set(key, clock);
      nextUse.set(key, next[i]);
    } else {
      misses++;
      if (lastUse.size >= capacity) evict(victim(i));
      insert(key, next[i]);
    }
    // prefetch the next `depth` distinct upcoming keys, evicting only keys needed later than them
    for (let j = i + 1, loaded = 0; j < n && j - i <= horizon && loaded < depth; j++) {
      const up = keys[j];
      if (lastUse.has(up)) continue;
      if (lastUse.size >= capacity) {
        const v = victim(i, key);
        if (v < 0 || nextUse.get(v)! <= j) break; // nothing is needed later than this key
        evict(v);
      }
      clock++;
      insert(up, j);
      fresh.add(up);
      prefetches++;
      loaded++;
    }
  }
  return {
    hits,
    misses,
    hitRate: n > 0 ? hits / n : 0,
    evictions: Int32Array.from(evictions),
    prefetches,
    prefetchHits,
    bytesMoved: (misses + prefetches) * expertBytes,
  };
}
