/**
 * DeepSeek's expert-parallel load balancer (EPLB): replicate the heaviest experts, then pack the copies
 * onto GPUs so that GPU loads even out, keeping each expert group on one node (hierarchical policy) or
 * ignoring groups (global policy). Deterministic: stable descending sorts, lower index wins every tie,
 * float64 arithmetic.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { checkPositiveInt, checkTopology, type LoadMatrix, type PlacementLike, readLoads } from "./checks.ts";

export type { LoadMatrix, PlacementLike } from "./checks.ts";

/**
 * How {@link rebalanceExperts} places experts: `"hierarchical"` keeps each expert group on one node
 * (needs `numGroups % numNodes = 0`), `"global"` packs all replicas onto all GPUs, `"auto"` picks
 * hierarchical when the group count allows it.
 *
 * @example
 * ```ts
 * import type { PlacementPolicy } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const p: PlacementPolicy = "global";
 * assert.equal(p, "global");
 * ```
 */
export type PlacementPolicy = "auto" | "hierarchical" | "global";

/**
 * Options of {@link rebalanceExperts}.
 *
 * @example
 * ```ts
 * import type { RebalanceOptions } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const v3: RebalanceOptions = { numReplicas: 288, numGroups: 8, numNodes: 4, numGpus: 32 };
 * assert.equal(v3.numReplicas / v3.numGpus, 9); // slots per GPU
 * ```
 */
export interface RebalanceOptions {
  /** Physical experts (slots) per layer R, ≥ E; `R − E` are redundant copies. A multiple of `numGpus`. */
  readonly numReplicas: number;
  /** Expert groups G (E divisible by G); group g = experts `g·E/G … (g+1)·E/G − 1`. */
  readonly numGroups: number;
  /** Nodes (servers) N. */
  readonly numNodes: number;
  /** GPUs P in the expert-parallel group, a multiple of `numNodes`. */
  readonly numGpus: number;
  /** `"auto"` (default), `"hierarchical"` or `"global"`. */
  readonly policy?: PlacementPolicy;
}

/**
 * An expert-parallel placement of every layer: which logical expert each slot holds and where each
 * expert's replicas are. Slot `s` lives on GPU `⌊s / (R/P)⌋`, GPU `g` on node `⌊g / (P/N)⌋`.
 *
 * @example
 * ```ts
 * import { type Placement, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const p: Placement = rebalanceExperts([[4, 1, 1, 2]], { numReplicas: 4, numGroups: 1, numNodes: 1, numGpus: 2 });
 * assert.deepEqual([p.layers, p.experts, p.replicas, p.width], [1, 4, 4, 1]);
 * ```
 */
export interface Placement extends PlacementLike {
  /** `[L][R]`: the logical expert held by each slot. */
  readonly phy2log: Int32Array[];
  /** `[L][E][W]`: the slots of each expert's replicas in rank order (rank 0 = the original), −1 after. */
  readonly log2phy: Int32Array[][];
  /** `[L][E]`: replicas per expert (≥ 1; a row sums to R). */
  readonly logcnt: Int32Array[];
  /** The policy that was applied (`"identity"` for {@link identityPlacement}). */
  readonly policy: "hierarchical" | "global" | "identity";
  /** Layers L. */
  readonly layers: number;
  /** Logical experts per layer E. */
  readonly experts: number;
  /** Slots per layer R. */
  readonly replicas: number;
  /** Width W of `log2phy`: the largest replica count over all layers and experts. */
  readonly width: number;
  /** GPUs P. */
  readonly numGpus: number;
  /** Nodes N. */
  readonly numNodes: number;
  /** Expert groups G the placement was made with. */
  readonly numGroups: number;
}

/** Scratch buffers for one call, sized for the largest step. */
interface Scratch {
  order: Int32Array;
  packLoad: Float64Array;
  packCount: Int32Array;
  packOf: Int32Array;
  rankOf: Int32Array;
  ratio: Float64Array;
}

/**
 * Balanced packing (§3): `n` items `v[0..n)` into `m` packs of `n/m` items. Writes each item's pack and
 * rank. `n = m` → item i to pack i (no sort); else stable descending order, each item to the least
 * loaded non-full pack (first on ties).
 */
function pack(v: Float64Array, n: number, m: number, sc: Scratch): void {
  const { packOf, rankOf } = sc;
  if (n === m) {
    for (let i = 0; i < n; i++) {
      packOf[i] = i;
      rankOf[i] = 0;
    }
    return;
  }
  const order = sc.order.subarray(0, n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => (v[a] > v[b] ? -1 : v[a] < v[b] ? 1 : a - b));
  const load = sc.packLoad, count = sc.packCount, per = n / m;
  load.fill(0, 0, m);
  count.fill(0, 0, m);
  for (let o = 0; o < n; o++) {
    const i = order[o];
    let best = -1, bestLoad = Infinity;
    for (let p = 0; p < m; p++) {
      if (count[p] < per && load[p] < bestLoad) {
        best = p;
        bestLoad = load[p];
      }
    }
    packOf[i] = best;
    rankOf[i] = count[best];
    load[best] += v[i];
    count[best]++;
  }
}

/**
 * Replication (§4): `m` items into `k` physical items; each extra copy goes to the item with the largest
 * `w / count` (first on ties). Writes phys → item, phys → rank, and counts.
 */
function replicate(
  w: Float64Array,
  m: number,
  k: number,
  phy: Int32Array,
  rank: Int32Array,
  cnt: Int32Array,
  ratio: Float64Array,
): void {
  for (let j = 0; j < m; j++) {
    phy[j] = j;
    rank[j] = 0;
    cnt[j] = 1;
    ratio[j] = w[j];
  }
  for (let p = m; p < k; p++) {
    let best = 0, bestV = ratio[0];
    for (let j = 1; j < m; j++) {
      if (ratio[j] > bestV) {
        best = j;
        bestV = ratio[j];
      }
    }
    phy[p] = best;
    rank[p] = cnt[best];
    cnt[best]++;
    ratio[best] = w[best] / cnt[best];
  }
}

/**
 * Places one layer with `G` groups on `N` nodes (§5; the global policy is G = N = 1, §6). Writes
 * `phy2log [R]`, the replica rank of each slot `[R]` and `logcnt [E]`.
 */
function placeLayer(
  w: Float64Array,
  off: number,
  E: number,
  R: number,
  G: number,
  N: number,
  P: number,
  outPhy: Int32Array,
  outRank: Int32Array,
  outCnt: Int32Array,
  b: LayerBuffers,
  sc: Scratch,
): void {
  const gs = E / G, gpn = G / N, En = E / N, Rn = R / N, Pn = P / N, S = R / P;
  // step 1: groups to nodes
  const gl = b.groupLoad;
  for (let g = 0; g < G; g++) {
    let s = 0;
    for (let i = 0; i < gs; i++) s += w[off + g * gs + i];
    gl[g] = s;
  }
  pack(gl, G, N, sc);
  const mlog2log = b.mlog2log;
  for (let g = 0; g < G; g++) {
    const base = (sc.packOf[g] * gpn + sc.rankOf[g]) * gs;
    for (let i = 0; i < gs; i++) mlog2log[base + i] = g * gs + i;
  }
  for (let n = 0; n < N; n++) {
    // step 2: replicate inside the node, node-local order
    const lw = b.localLoad;
    for (let li = 0; li < En; li++) lw[li] = w[off + mlog2log[n * En + li]];
    replicate(lw, En, Rn, b.phy2local, b.phyRank, b.localCnt, sc.ratio);
    // step 3: physical items to the node's GPUs
    const items = b.itemLoad;
    for (let p = 0; p < Rn; p++) items[p] = lw[b.phy2local[p]] / b.localCnt[b.phy2local[p]];
    pack(items, Rn, Pn, sc);
    for (let p = 0; p < Rn; p++) {
      const s = n * Rn + sc.packOf[p] * S + sc.rankOf[p];
      outPhy[s] = mlog2log[n * En + b.phy2local[p]];
      outRank[s] = b.phyRank[p];
    }
    for (let li = 0; li < En; li++) outCnt[mlog2log[n * En + li]] = b.localCnt[li];
  }
}

interface LayerBuffers {
  groupLoad: Float64Array;
  mlog2log: Int32Array;
  localLoad: Float64Array;
  phy2local: Int32Array;
  phyRank: Int32Array;
  localCnt: Int32Array;
  itemLoad: Float64Array;
}

/** Builds `log2phy [L][E][W]` (views on one buffer per layer) from slots, ranks and counts. */
function assembleLog2phy(
  phy2log: Int32Array[],
  ranks: Int32Array[],
  logcnt: Int32Array[],
  E: number,
): { log2phy: Int32Array[][]; width: number } {
  let W = 1;
  for (const c of logcnt) for (let e = 0; e < E; e++) if (c[e] > W) W = c[e];
  const log2phy = phy2log.map((row, l) => {
    const buf = new Int32Array(E * W).fill(-1);
    for (let s = 0; s < row.length; s++) buf[row[s] * W + ranks[l][s]] = s;
    return Array.from({ length: E }, (_, e) => buf.subarray(e * W, (e + 1) * W));
  });
  return { log2phy, width: W };
}

/**
 * Turns per-layer expert loads `[L, E]` into an expert-parallel placement exactly as DeepSeek's EPLB:
 * replicate the heaviest experts into `numReplicas` slots, then pack them onto `numGpus` GPUs so GPU loads
 * even out. With the hierarchical policy (default when `numGroups % numNodes = 0`), groups are first
 * packed onto nodes and every replica of an expert stays on its group's node. Ties: lower index wins.
 *
 * @example
 * ```ts
 * import { rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * // one heavy expert gets the one redundant slot; 2 GPUs of 3 slots
 * const p = rebalanceExperts([[10, 2, 3, 1, 4]], { numReplicas: 6, numGroups: 1, numNodes: 1, numGpus: 2 });
 * assert.deepEqual(Array.from(p.logcnt[0]), [2, 1, 1, 1, 1]);
 * assert.deepEqual(Array.from(p.phy2log[0]), [0, 4, 3, 0, 2, 1]); // GPU 0 | GPU 1
 * assert.deepEqual(Array.from(p.log2phy[0][0]), [0, 3]);
 * ```
 */
export function rebalanceExperts(weight: LoadMatrix, options: RebalanceOptions): Placement {
  const { L, E, w } = readLoads(weight);
  if (typeof options !== "object" || options === null) {
    throw new OptionError("options", options, "pass { numReplicas, numGroups, numNodes, numGpus }");
  }
  const { numReplicas: R, numGroups: G, numNodes: N, numGpus: P } = options;
  checkPositiveInt("numReplicas", R);
  checkPositiveInt("numGroups", G);
  checkPositiveInt("numNodes", N);
  checkPositiveInt("numGpus", P);
  if (R < E) {
    throw new OptionError("numReplicas", R, `must be ≥ E = ${E} (every logical expert needs a slot)`);
  }
  checkTopology(P, N);
  if (R % P !== 0) {
    throw new OptionError(
      "numReplicas",
      R,
      `must be a multiple of numGpus = ${P} (every GPU holds numReplicas / numGpus slots)`,
    );
  }
  if (E % G !== 0) {
    throw new OptionError("numGroups", G, `must divide the E = ${E} experts per layer`);
  }
  const policy = options.policy ?? "auto";
  if (policy !== "auto" && policy !== "hierarchical" && policy !== "global") {
    throw new OptionError("policy", policy, `use "auto", "hierarchical" or "global"`);
  }
  if (policy === "hierarchical" && G % N !== 0) {
    throw new OptionError(
      "policy",
      policy,
      `needs numGroups = ${G} divisible by numNodes = ${N}; use "global" (or "auto")`,
    );
  }
  const hier = policy === "hierarchical" || (policy === "auto" && G % N === 0);
  const g = hier ? G : 1, n = hier ? N : 1;
  const big = Math.max(g, R, E);
  const sc: Scratch = {
    order: new Int32Array(big),
    packLoad: new Float64Array(big),
    packCount: new Int32Array(big),
    packOf: new Int32Array(big),
    rankOf: new Int32Array(big),
    ratio: new Float64Array(big),
  };
  const b: LayerBuffers = {
    groupLoad: new Float64Array(g),
    mlog2log: new Int32Array(E),
    localLoad: new Float64Array(E / n),
    phy2local: new Int32Array(R / n),
    phyRank: new Int32Array(R / n),
    localCnt: new Int32Array(E / n),
    itemLoad: new Float64Array(R / n),
  };
  const phy2log: Int32Array[] = [], ranks: Int32Array[] = [], logcnt: Int32Array[] = [];
  for (let l = 0; l < L; l++) {
    const phy = new Int32Array(R), rank = new Int32Array(R), cnt = new Int32Array(E);
    placeLayer(w, l * E, E, R, g, n, P, phy, rank, cnt, b, sc);
    phy2log.push(phy);
    ranks.push(rank);
    logcnt.push(cnt);
  }
  const { log2phy, width } = assembleLog2phy(phy2log, ranks, logcnt, E);
  return {
    phy2log,
    log2phy,
    logcnt,
    policy: hier ? "hierarchical" : "global",
    layers: L,
    experts: E,
    replicas: R,
    width,
    numGpus: P,
    numNodes: N,
    numGroups: G,
  };
}

/**
 * The placement without EPLB, a baseline to compare with: `R = E`, slot `s` holds expert `s` (experts
 * `g·E/P …` on GPU g), in every layer.
 *
 * @example
 * ```ts
 * import { identityPlacement } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const p = identityPlacement({ layers: 2, experts: 4, numGpus: 2, numNodes: 1 });
 * assert.deepEqual(Array.from(p.phy2log[1]), [0, 1, 2, 3]);
 * assert.equal(p.policy, "identity");
 * ```
 */
export function identityPlacement(options: {
  /** Layers L. */
  readonly layers: number;
  /** Experts E (a multiple of numGpus). */
  readonly experts: number;
  /** GPUs P. */
  readonly numGpus: number;
  /** Nodes N. */
  readonly numNodes: number;
}): Placement {
  const { layers: L, experts: E, numGpus: P, numNodes: N } = options;
  checkPositiveInt("layers", L);
  checkPositiveInt("experts", E);
  checkTopology(P, N);
  if (E % P !== 0) {
    throw new OptionError("experts", E, `must be a multiple of numGpus = ${P} (R = E slots split over GPUs)`);
  }
  const phy2log: Int32Array[] = [], ranks: Int32Array[] = [], logcnt: Int32Array[] = [];
  for (let l = 0; l < L; l++) {
    phy2log.push(Int32Array.from({ length: E }, (_, s) => s));
    ranks.push(new Int32Array(E));
    logcnt.push(new Int32Array(E).fill(1));
  }
  const { log2phy, width } = assembleLog2phy(phy2log, ranks, logcnt, E);
  return {
    phy2log,
    log2phy,
    logcnt,
    policy: "identity",
    layers: L,
    experts: E,
    replicas: E,
    width,
    numGpus: P,
    numNodes: N,
    numGroups: 1,
  };
}
