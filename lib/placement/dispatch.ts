/**
 * Expert-parallel dispatch of one layer's routed tokens onto a placement's replicas (own GPU first, then
 * own node, then the least-served copy) and the all-to-all bytes it moves between GPUs and nodes.
 * @module
 */

import { OptionError, ShapeError } from "../core/errors.ts";
import type { RoutingResult } from "../routing/result.ts";
import { checkRoutingIndices } from "../routing/checks.ts";
import { type PlacementLike, readPlacement, topologyOf } from "./checks.ts";
import { meanOverMax } from "./metrics.ts";

/**
 * Options of {@link dispatchTraffic}.
 *
 * @example
 * ```ts
 * import type { DispatchOptions } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const o: DispatchOptions = { bytesPerToken: 7168 }; // DeepSeek-V3, d = 7168, FP8 dispatch
 * assert.equal(o.bytesPerToken, 7168);
 * ```
 */
export interface DispatchOptions {
  /** Bytes of one token's activation as dispatched (d × element size). */
  readonly bytesPerToken: number;
  /** Source GPU of each token `[T]`. Default round-robin `t mod numGpus`. */
  readonly tokenGpu?: ArrayLike<number>;
  /** Which layer of the placement the routing belongs to. Default 0. */
  readonly layer?: number;
  /** GPUs P. Default: the placement's. */
  readonly numGpus?: number;
  /** Nodes N. Default: the placement's. */
  readonly numNodes?: number;
}

/**
 * What {@link dispatchTraffic} returns. Byte matrices are rows = source, columns = destination.
 *
 * @example
 * ```ts
 * import type { DispatchTraffic } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * const offNode = (t: DispatchTraffic) => t.interNodeBytes / (t.localBytes + t.intraNodeBytes + t.interNodeBytes);
 * assert.equal(typeof offNode, "function");
 * ```
 */
export interface DispatchTraffic {
  /** `[T·k]`: the slot serving each choice, −1 for skipped choices. */
  readonly replica: Int32Array;
  /** `[R]`: choices served by each slot. */
  readonly tokensPerReplica: Int32Array;
  /** `[P]`: token–expert pairs each GPU computes. */
  readonly tokensPerGpu: Int32Array;
  /** `[P]`: distinct tokens that land on each GPU (own tokens included). */
  readonly recvTokensPerGpu: Int32Array;
  /** `[P][P]`: bytes per (source, destination) GPU; a token counts once per destination GPU. */
  readonly dispatchBytes: Float64Array[];
  /** `[N][N]`: bytes per (source, destination) node; a token counts once per destination node. */
  readonly nodeBytes: Float64Array[];
  /** Bytes that stay on their GPU (the diagonal of `dispatchBytes`). */
  readonly localBytes: number;
  /** Bytes between GPUs of one node (NVLink). */
  readonly intraNodeBytes: number;
  /** Bytes between nodes (RDMA). */
  readonly interNodeBytes: number;
  /** Served choices on the source GPU, on another GPU of its node, on another node. */
  readonly choiceLocality: readonly [number, number, number];
  /** mean / max of `tokensPerGpu` (1 when max = 0). */
  readonly gpuBalancedness: number;
  /** GPUs P. */
  readonly numGpus: number;
  /** Nodes N. */
  readonly numNodes: number;
}

/**
 * Sends one layer's routed tokens to concrete replicas and counts the dispatch all-to-all bytes. Each
 * choice goes to a replica of its expert on the token's GPU, else on its node, else anywhere: the least
 * served one (lower slot on ties), in token order. A token travels once to each GPU that holds one of
 * its replicas. Skipped choices (index −1 or not kept) get replica −1.
 *
 * @example
 * ```ts
 * import { dispatchTraffic, rebalanceExperts } from "@moekit/moekit/placement";
 * import assert from "node:assert/strict";
 * // 4 experts on 2 nodes × 1 GPU; two tokens (one per GPU), each choosing experts 0 and 3
 * const p = rebalanceExperts([[1, 1, 1, 1]], { numReplicas: 4, numGroups: 2, numNodes: 2, numGpus: 2 });
 * const routing = {
 *   tokens: 2, experts: 4, k: 2, scoreFunction: "softmax" as const,
 *   indices: new Int32Array([0, 3, 0, 3]), weights: new Float32Array(4), scores: new Float32Array(4),
 * };
 * const t = dispatchTraffic(routing, p, { bytesPerToken: 100 });
 * assert.deepEqual(Array.from(t.replica), [0, 3, 0, 3]);
 * assert.deepEqual([t.localBytes, t.interNodeBytes], [200, 200]);
 * ```
 */
export function dispatchTraffic(
  routing: RoutingResult,
  placement: PlacementLike,
  options: DispatchOptions,
): DispatchTraffic {
  if (typeof options !== "object" || options === null) {
    throw new OptionError("options", options, "pass { bytesPerToken } (and optionally tokenGpu, layer)");
  }
  const { P, N } = topologyOf(placement, options);
  const { R, E, phy } = readPlacement(placement, -1, -1, P, "the placement");
  const L = placement.phy2log.length;
  if (typeof routing !== "object" || routing === null || !(routing.indices instanceof Int32Array)) {
    throw new OptionError("routing", typeof routing, "pass a RoutingResult (a router's route() output)");
  }
  const T = routing.tokens, k = routing.k, idx = routing.indices;
  if (routing.experts !== E) {
    throw new ShapeError(
      "routing.experts",
      [E],
      [routing.experts],
      `the placement holds E = ${E} logical experts; route with the same experts`,
    );
  }
  checkRoutingIndices(routing);
  const tokenGpu = options.tokenGpu;
  if (tokenGpu !== undefined) {
    if (typeof tokenGpu !== "object" || tokenGpu === null || tokenGpu.length !== T) {
      throw new ShapeError(
        "tokenGpu",
        [T],
        [tokenGpu?.length ?? -1],
        "one source GPU per token of the routing",
      );
    }
    for (let t = 0; t < T; t++) {
      const g = tokenGpu[t];
      if (!Number.isInteger(g) || g < 0 || g >= P) {
        throw new OptionError(`tokenGpu[${t}]`, g, `source GPUs must be integers in 0..${P - 1}`);
      }
    }
  }
  const bytes = options.bytesPerToken;
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes <= 0) {
    throw new OptionError("bytesPerToken", bytes, "must be a positive finite number (d × element size)");
  }
  const layer = options.layer ?? 0;
  if (!Number.isInteger(layer) || layer < 0 || layer >= L) {
    throw new OptionError("layer", layer, `must be an integer in 0..${L - 1} (the placement's layers)`);
  }

  // slots of each expert, ascending (CSR)
  const S = R / P, Pn = P / N, slotsPerNode = R / N, row = phy.subarray(layer * R, (layer + 1) * R);
  const start = new Int32Array(E + 1), list = new Int32Array(R);
  for (let s = 0; s < R; s++) start[row[s] + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  const fill = start.slice(0, E);
  for (let s = 0; s < R; s++) list[fill[row[s]]++] = s;

  const served = new Int32Array(R), replica = new Int32Array(T * k).fill(-1);
  const gpuCount = new Float64Array(P * P), nodeCount = new Float64Array(N * N);
  const recv = new Int32Array(P);
  const gpuStamp = new Int32Array(P).fill(-1), nodeStamp = new Int32Array(N).fill(-1);
  const locality: [number, number, number] = [0, 0, 0];
  const keep = routing.keep;
  for (let t = 0; t < T; t++) {
    const g = tokenGpu === undefined ? t % P : tokenGpu[t], gNode = Math.floor(g / Pn);
    for (let j = 0; j < k; j++) {
      const i = t * k + j, e = idx[i];
      if (e < 0 || (keep !== undefined && keep[i] !== 1)) continue;
      const a = start[e], b = start[e + 1];
      let best = -1, bestServed = Infinity;
      // the pool: candidates on the token's GPU, else its node, else all (first minimum wins)
      for (let c = a; c < b; c++) {
        const s = list[c];
        if (Math.floor(s / S) === g && served[s] < bestServed) {
          best = s;
          bestServed = served[s];
        }
      }
      if (best < 0) {
        for (let c = a; c < b; c++) {
          const s = list[c];
          if (Math.floor(s / slotsPerNode) === gNode && served[s] < bestServed) {
            best = s;
            bestServed = served[s];
          }
        }
      }
      if (best < 0) {
        for (let c = a; c < b; c++) {
          const s = list[c];
          if (served[s] < bestServed) {
            best = s;
            bestServed = served[s];
          }
        }
      }
      replica[i] = best;
      served[best]++;
      const dst = Math.floor(best / S), dNode = Math.floor(dst / Pn);
      locality[dst === g ? 0 : dNode === gNode ? 1 : 2]++;
      if (gpuStamp[dst] !== t) {
        gpuStamp[dst] = t;
        gpuCount[g * P + dst]++;
        recv[dst]++;
      }
      if (nodeStamp[dNode] !== t) {
        nodeStamp[dNode] = t;
        nodeCount[gNode * N + dNode]++;
      }
    }
  }
  const tokensPerGpu = new Int32Array(P);
  for (let s = 0; s < R; s++) tokensPerGpu[Math.floor(s / S)] += served[s];
  const dispatchBytes: Float64Array[] = [];
  let localBytes = 0, intraNodeBytes = 0, interNodeBytes = 0;
  for (let src = 0; src < P; src++) {
    const r = new Float64Array(P);
    for (let dst = 0; dst < P; dst++) {
      r[dst] = gpuCount[src * P + dst] * bytes;
      if (src === dst) localBytes += r[dst];
      else if (Math.floor(src / Pn) === Math.floor(dst / Pn)) intraNodeBytes += r[dst];
      else interNodeBytes += r[dst];
    }
    dispatchBytes.push(r);
  }
  const nodeBytes = Array.from({ length: N }, (_, a) => {
    const r = new Float64Array(N);
    for (let b = 0; b < N; b++) r[b] = nodeCount[a * N + b] * bytes;
    return r;
  });
  return {
    replica,
    tokensPerReplica: served,
    tokensPerGpu,
    recvTokensPerGpu: recv,
    dispatchBytes,
    nodeBytes,
    localBytes,
    intraNodeBytes,
    interNodeBytes,
    choiceLocality: locality,
    gpuBalancedness: meanOverMax(tokensPerGpu).ratio,
    numGpus: P,
    numNodes: N,
  };
}
