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
 * Simulates an expert cache on a trace (plain numbers, or an {@link AccessTrace}) of non-negative integer
 * keys. No policy scans the cache for a victim: LRU, FIFO, LFU and Belady find it in O(log capacity),
 * lookahead passes at most `horizon` keys (O(log capacity) without a horizon).
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
  if (!(expertBytes >= 0) || !Number.isFinite(expertBytes)) {
    throw new OptionError("expertBytes", expertBytes, "must be a finite number ≥ 0 (bytes per expert)");
  }
  for (let i = 0; i < n; i++) {
    if (keys[i] !== (keys[i] | 0) || keys[i] < 0) {
      throw new OptionError(
        `trace[${i}]`,
        keys[i],
        "cache keys must be integers in 0..2³¹−1 (an expert id, or layer·E + expert)",
      );
    }
  }
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

  // Victims without a scan of the cache. Every policy but lookahead ranks a cached key by its own state
  // alone, and uniquely (times, keys and next-use positions are): a max-heap of (rank, key) entries,
  // pushed whenever a key's rank changes and skipped when stale, gives the victim in O(log capacity).
  /** Eviction rank of a cached key: the largest [primary, tie-break] is evicted. */
  const rank = (key: number): [number, number] => {
    switch (policy) {
      case "lru":
        return [-lastUse.get(key)!, 0];
      case "fifo":
        return [-inserted.get(key)!, 0];
      case "lfu": // fewest accesses since the start; equal counts → least recently used
        return [-count.get(key)!, -lastUse.get(key)!];
      case "belady": // farthest next use (never = n); equal → smallest key
        return [nextUse.get(key)!, -key];
      default: // lookahead: the heap holds next uses (see victim)
        return [nextUse.get(key)!, 0];
    }
  };
  const lookahead = policy === "lookahead";
  const heap = new RankHeap(), never = new Map<number, true>();
  const ranked = (key: number) => {
    const [a, b] = rank(key);
    heap.push(a, b, key);
    if (heap.size > 4 * capacity + 1024) heap.rebuild(lastUse.keys(), rank);
    if (lookahead && a === n) never.set(key, true);
  };
  const current = (key: number, a: number, b: number) => {
    if (!lastUse.has(key)) return false;
    const [ra, rb] = rank(key);
    return ra === a && rb === b;
  };
  /**
   * Lookahead ranks a key [next use within the horizon, beyond it = unknown = never (n); equal → least
   * recently used]: the victim is the least recently used key whose next use lies beyond the horizon (a walk
   * over `lastUse`, kept in recency order, that passes at most `horizon` keys; with no horizon, the keys
   * never used again, kept apart in `never` in the same order), else the farthest next use (the heap).
   */
  const beyondHorizon = (now: number, protect?: number): number => {
    if (horizon === Infinity) {
      for (const key of never.keys()) if (key !== protect) return key;
      return -1;
    }
    for (const key of lastUse.keys()) {
      if (key === protect) continue;
      const nu = nextUse.get(key)!;
      if (nu - now > horizon || nu === n) return key;
    }
    return -1;
  };
  const victim = (now: number, protect?: number): number => {
    if (!lookahead) return heap.top(current);
    const far = beyondHorizon(now, protect);
    if (far >= 0) return far;
    const v = heap.top((key, a, b) => key !== protect && current(key, a, b));
    if (protect !== undefined && lastUse.has(protect)) ranked(protect); // top() dropped its entry
    return v;
  };
  const evict = (key: number) => {
    evictions.push(key);
    never.delete(key);
    lastUse.delete(key);
    inserted.delete(key);
    nextUse.delete(key);
    fresh.delete(key);
  };
  const insert = (key: number, nextPos: number) => {
    lastUse.set(key, clock);
    inserted.set(key, clock);
    nextUse.set(key, nextPos);
    ranked(key);
  };

  for (let i = 0; i < n; i++) {
    const key = keys[i];
    clock++;
    count.set(key, (count.get(key) ?? 0) + 1);
    if (lastUse.has(key)) {
      hits++;
      if (fresh.delete(key)) prefetchHits++;
      lastUse.delete(key); // re-inserted: lastUse iterates from the least recently used key
      lastUse.set(key, clock);
      nextUse.set(key, next[i]);
      ranked(key);
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

/**
 * A binary max-heap of `(a, b, key)` entries ordered by `a`, then `b` (the cache's eviction ranks). Stale
 * entries stay until they reach the top, where {@link RankHeap.top}'s check drops them.
 */
class RankHeap {
  #a: number[] = [];
  #b: number[] = [];
  #key: number[] = [];

  get size(): number {
    return this.#key.length;
  }

  push(a: number, b: number, key: number): void {
    this.#a.push(a);
    this.#b.push(b);
    this.#key.push(key);
    let i = this.#key.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** The key of the highest entry that `valid` accepts, dropping the ones above it it rejects; −1 if none. */
  top(valid: (key: number, a: number, b: number) => boolean): number {
    while (this.#key.length > 0) {
      if (valid(this.#key[0], this.#a[0], this.#b[0])) return this.#key[0];
      this.#popTop();
    }
    return -1;
  }

  /** Replaces the entries with one per key of `keys`, at its current rank (drops every stale entry). */
  rebuild(keys: Iterable<number>, rank: (key: number) => [number, number]): void {
    this.#a = [];
    this.#b = [];
    this.#key = [];
    for (const key of keys) {
      const [a, b] = rank(key);
      this.push(a, b, key);
    }
  }

  #above(i: number, j: number): boolean {
    return this.#a[i] > this.#a[j] || (this.#a[i] === this.#a[j] && this.#b[i] > this.#b[j]);
  }

  #swap(i: number, j: number): void {
    [this.#a[i], this.#a[j]] = [this.#a[j], this.#a[i]];
    [this.#b[i], this.#b[j]] = [this.#b[j], this.#b[i]];
    [this.#key[i], this.#key[j]] = [this.#key[j], this.#key[i]];
  }

  #popTop(): void {
    const last = this.#key.length - 1;
    this.#swap(0, last);
    this.#a.pop();
    this.#b.pop();
    this.#key.pop();
    for (let i = 0;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < last && this.#above(l, m)) m = l;
      if (r < last && this.#above(r, m)) m = r;
      if (m === i) break;
      this.#swap(i, m);
      i = m;
    }
  }
}
