import assert from "node:assert/strict";
import {
  dispatchTraffic,
  expertLoadMatrix,
  identityPlacement,
  matrix,
  MoekitError,
  NonFiniteError,
  OptionError,
  type Placement,
  placementMetrics,
  rebalanceExperts,
  type RebalanceOptions,
  redundancySweep,
  Rng,
  ShapeError,
} from "../lib/placement/mod.ts";
import { type RoutingResult, topKRouter } from "../lib/routing/mod.ts";
import { gpuLoadPlot, redundancyPlot, trafficHeatmap } from "../lib/plots/mod.ts";

/** |a − b| ≤ tol elementwise. */
function assertClose(actual: ArrayLike<number> | number, expected: ArrayLike<number> | number, tol: number) {
  const a = typeof actual === "number" ? [actual] : Array.from(actual);
  const e = typeof expected === "number" ? [expected] : Array.from(expected);
  assert.equal(a.length, e.length);
  a.forEach((v, i) => assert.ok(Math.abs(v - e[i]) <= tol, `index ${i}: ${v} vs ${e[i]}`));
}

const arr = (a: ArrayLike<number>) => Array.from(a);
const rows = (a: readonly ArrayLike<number>[]) => a.map(arr);

/** A hand-made routing result (the shape every router returns). */
function routingOf(choices: number[][], experts: number, keep?: number[]): RoutingResult {
  const k = choices[0].length, n = choices.length * k;
  return {
    tokens: choices.length,
    experts,
    k,
    indices: Int32Array.from(choices.flat()),
    weights: new Float32Array(n),
    scores: new Float32Array(n),
    scoreFunction: "softmax",
    ...(keep ? { keep: Uint8Array.from(keep) } : {}),
  };
}

// ───────────────────────── worked examples (placement spec §11) ─────────────────────────

const EX1_W = [
  [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
  [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
];
const EX1_OPTS = { numReplicas: 16, numGroups: 4, numNodes: 2, numGpus: 8 };

Deno.test("Example 1 (the upstream EPLB README example): hierarchical placement, log2phy in rank order", () => {
  const p = rebalanceExperts(EX1_W, EX1_OPTS);
  assert.equal(p.policy, "hierarchical");
  assert.deepEqual(rows(p.phy2log), [
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
  ]);
  assert.deepEqual(rows(p.logcnt), [
    [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
    [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1],
  ]);
  assert.equal(p.width, 2);
  assert.deepEqual(p.log2phy.map(rows), [
    [[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1], [9, -1], [8, 10], [
      14,
      -1,
    ]],
    [[13, -1], [15, 11], [8, -1], [14, -1], [9, -1], [10, 12], [2, 4], [0, -1], [6, 3], [7, -1], [1, -1], [
      5,
      -1,
    ]],
  ]);
  // a Mat (float32) gives the same placement for these integer loads
  assert.deepEqual(rows(rebalanceExperts(matrix.fromArrays(EX1_W), EX1_OPTS).phy2log), rows(p.phy2log));
});

Deno.test("Example 1 metrics: GPU and node loads, balancedness, imbalance", () => {
  const m = placementMetrics(EX1_W, rebalanceExperts(EX1_W, EX1_OPTS));
  assert.deepEqual(arr(m.gpuLoad[0]), [121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152]);
  assert.deepEqual(arr(m.nodeLoad[0]), [446, 587]);
  assert.deepEqual(arr(m.maxGpuLoad), [156, 179.5]);
  assert.deepEqual(arr(m.meanGpuLoad), [129.125, 144.5]);
  assertClose(m.balancedness, [129.125 / 156, 144.5 / 179.5], 1e-12);
  assertClose(m.imbalance, [1.208132, 1.242215], 1e-6);
  assertClose(m.nodeBalancedness, [0.879898, 0.896124], 1e-6);
  assertClose(m.meanBalancedness, (129.125 / 156 + 144.5 / 179.5) / 2, 1e-12);
  assertClose(m.overallBalancedness, (129.125 + 144.5) / (156 + 179.5), 1e-12);
});

const EX2_W = [[120, 30, 75, 10, 240, 55, 90, 20]];
const EX2_OPTS = { numReplicas: 12, numGroups: 1, numNodes: 2, numGpus: 4 };

Deno.test("Example 2: global policy (G % N ≠ 0) with replication and packing ties", () => {
  const p = rebalanceExperts(EX2_W, EX2_OPTS);
  assert.equal(p.policy, "global");
  assert.deepEqual(arr(p.phy2log[0]), [4, 0, 3, 4, 5, 1, 4, 6, 6, 2, 0, 7]);
  assert.deepEqual(arr(p.logcnt[0]), [2, 1, 1, 1, 3, 1, 2, 1]);
  assert.equal(p.width, 3);
  assert.deepEqual(rows(p.log2phy[0]), [
    [10, 1, -1],
    [5, -1, -1],
    [9, -1, -1],
    [2, -1, -1],
    [0, 3, 6],
    [4, -1, -1],
    [7, 8, -1],
    [11, -1, -1],
  ]);
  const m = placementMetrics(EX2_W, p);
  assert.deepEqual(arr(m.gpuLoad[0]), [150, 165, 170, 155]);
  assert.deepEqual(arr(m.nodeLoad[0]), [315, 325]);
  assertClose(m.balancedness, [160 / 170], 1e-12);
  assert.deepEqual(arr(m.imbalance), [1.0625]);
  assertClose(m.nodeBalancedness, [320 / 325], 1e-12);
  // "global" asked for explicitly gives the same
  assert.deepEqual(
    arr(rebalanceExperts(EX2_W, { ...EX2_OPTS, policy: "global" }).phy2log[0]),
    arr(p.phy2log[0]),
  );
});

Deno.test("Example 3: dispatch on Example 2's placement (replicas, bytes, locality)", () => {
  const p = rebalanceExperts(EX2_W, EX2_OPTS);
  const routing = routingOf([[4, 0], [4, 6], [0, 2], [4, 5], [6, 4], [2, 1], [4, 0], [7, 3]], 8);
  const t = dispatchTraffic(routing, p, { bytesPerToken: 7168, tokenGpu: [0, 1, 2, 3, 0, 1, 2, 3] });
  assert.deepEqual(arr(t.replica), [0, 1, 3, 7, 10, 9, 6, 4, 8, 0, 9, 5, 6, 10, 11, 2]);
  assert.deepEqual(arr(t.tokensPerReplica), [2, 1, 1, 1, 1, 1, 2, 1, 1, 2, 2, 1]);
  assert.deepEqual(arr(t.tokensPerGpu), [4, 3, 4, 5]);
  assert.deepEqual(arr(t.recvTokensPerGpu), [3, 3, 4, 4]);
  assert.deepEqual(rows(t.dispatchBytes), [
    [14336, 0, 7168, 0],
    [0, 14336, 7168, 7168],
    [0, 0, 7168, 14336],
    [7168, 7168, 7168, 7168],
  ]);
  assert.deepEqual(rows(t.nodeBytes), [[28672, 21504], [14336, 28672]]);
  assert.deepEqual([t.localBytes, t.intraNodeBytes, t.interNodeBytes], [43008, 21504, 35840]);
  assert.deepEqual(t.choiceLocality, [7, 4, 5]);
  assert.equal(t.gpuBalancedness, 0.8);
  // round-robin is the default source GPU; skipped choices (−1, keep = 0) get no replica
  assert.deepEqual(arr(dispatchTraffic(routing, p, { bytesPerToken: 7168 }).replica), arr(t.replica));
  const skipped = dispatchTraffic(
    { ...routing, indices: Int32Array.from([-1, 0, ...routing.indices.slice(2)]) },
    p,
    { bytesPerToken: 1 },
  );
  assert.equal(skipped.replica[0], -1);
  const dropped = dispatchTraffic({ ...routing, keep: new Uint8Array(16).fill(1).fill(0, 0, 2) }, p, {
    bytesPerToken: 1,
  });
  assert.deepEqual(arr(dropped.replica.slice(0, 2)), [-1, -1]);
  assert.equal(dropped.recvTokensPerGpu[0], 2);
});

// ───────────────────────── a reference in upstream's structure ─────────────────────────

/**
 * Upstream's algorithm written the way eplb.py writes it (tensor steps: pack, replicate, permutation
 * inverses, gathers), over plain arrays with stable sorts: an independent check of the library code.
 */
function reference(w: number[][], R: number, G: number, N: number, P: number, hier: boolean) {
  const stableDesc = (v: number[]) => v.map((_, i) => i).sort((a, b) => v[b] - v[a] || a - b);
  const balancedPacking = (v: number[], m: number) => {
    const n = v.length, per = n / m;
    if (per === 1) return { pack: v.map((_, i) => i), rank: v.map(() => 0) };
    const pack = Array(n).fill(-1), rank = Array(n).fill(-1), load = Array(m).fill(0), cnt = Array(m).fill(0);
    for (const i of stableDesc(v)) {
      let best = -1;
      for (let p = 0; p < m; p++) if (cnt[p] < per && (best < 0 || load[p] < load[best])) best = p;
      pack[i] = best;
      rank[i] = cnt[best]++;
      load[best] += v[i];
    }
    return { pack, rank };
  };
  const replicateExperts = (v: number[], k: number) => {
    const phy2log = v.map((_, i) => i), rank = v.map(() => 0), cnt = v.map(() => 1);
    for (let p = v.length; p < k; p++) {
      const ratio = v.map((x, j) => x / cnt[j]);
      const j = ratio.indexOf(Math.max(...ratio));
      phy2log.push(j);
      rank.push(cnt[j]++);
    }
    return { phy2log, rank, cnt };
  };
  const inverse = (perm: number[]) => {
    const inv = Array(perm.length);
    perm.forEach((v, i) => (inv[v] = i));
    return inv;
  };
  const g = hier ? G : 1, n = hier ? N : 1;
  return w.map((row) => {
    const E = row.length, gs = E / g;
    const gl = Array.from(
      { length: g },
      (_, i) => row.slice(i * gs, (i + 1) * gs).reduce((a, b) => a + b, 0),
    );
    const gp = balancedPacking(gl, n);
    const log2mlog = row.map((_, e) => {
      const gi = Math.floor(e / gs);
      return (gp.pack[gi] * (g / n) + gp.rank[gi]) * gs + (e % gs);
    });
    const mlog2log = inverse(log2mlog);
    const En = E / n, Rn = R / n, pphy2log: number[] = [], pphyrank: number[] = [], mlogcnt: number[] = [];
    for (let node = 0; node < n; node++) {
      const tpm = mlog2log.slice(node * En, (node + 1) * En).map((e: number) => row[e]);
      const rep = replicateExperts(tpm, Rn);
      mlogcnt.push(...rep.cnt);
      const tpp = rep.phy2log.map((mi) => tpm[mi] / rep.cnt[mi]);
      const pk = balancedPacking(tpp, P / n);
      const phy2pphy = pk.pack.map((q, i) => q * (R / P) + pk.rank[i]);
      const pphy2phy = inverse(phy2pphy);
      for (const ph of pphy2phy) {
        pphy2log.push(mlog2log[node * En + rep.phy2log[ph]]);
        pphyrank.push(rep.rank[ph]);
      }
    }
    const logcnt = row.map((_, e) => mlogcnt[log2mlog[e]]);
    return { phy2log: pphy2log, rank: pphyrank, logcnt };
  });
}

function randomCase(rng: Rng, tieHeavy: boolean) {
  const N = 1 + rng.int(3), Pn = 1 + rng.int(3), P = N * Pn;
  const G = [1, N, 2 * N][rng.int(3)], gs = 1 + rng.int(4), E = G * gs;
  let R = Math.ceil(E / P) * P + P * rng.int(3);
  if (R < E) R += P;
  const L = 1 + rng.int(3);
  const w = Array.from(
    { length: L },
    () =>
      Array.from(
        { length: E },
        () => tieHeavy ? rng.int(4) * 8 : rng.uniform() < 0.1 ? 0 : Math.round(rng.uniform() * 1000) / 8,
      ),
  );
  return { w, opts: { numReplicas: R, numGroups: G, numNodes: N, numGpus: P } as RebalanceOptions };
}

/** Checks the §7 invariants; returns the slot → rank map per layer. */
function checkInvariants(p: Placement, E: number, opts: RebalanceOptions): void {
  const { numReplicas: R, numGpus: P, numNodes: N, numGroups: G } = opts;
  for (let l = 0; l < p.layers; l++) {
    const cnt = new Array(E).fill(0);
    for (const e of p.phy2log[l]) cnt[e]++;
    assert.deepEqual(arr(p.logcnt[l]), cnt, "logcnt counts the slots");
    assert.equal(cnt.reduce((a, b) => a + b, 0), R);
    assert.ok(cnt.every((c) => c >= 1), "every expert has a replica");
    assert.equal(p.phy2log[l].length, R);
    assert.equal((R / P) * P, R, "each GPU holds exactly R/P slots");
    for (let e = 0; e < E; e++) {
      const slots = arr(p.log2phy[l][e]);
      assert.equal(slots.length, p.width);
      for (let r = 0; r < p.width; r++) {
        if (r < cnt[e]) assert.equal(p.phy2log[l][slots[r]], e, "log2phy and phy2log are inverse");
        else assert.equal(slots[r], -1);
      }
      assert.equal(new Set(slots.slice(0, cnt[e])).size, cnt[e]);
      if (p.policy === "hierarchical") {
        const node = (s: number) => Math.floor(s / (R / N));
        const gNode = node(p.log2phy[l][Math.floor(e / (E / G)) * (E / G)][0]);
        assert.ok(slots.slice(0, cnt[e]).every((s) => node(s) === gNode), "a group stays on one node");
      }
    }
    if (R === E) assert.deepEqual(arr(p.phy2log[l]).sort((a, b) => a - b), [...Array(E).keys()]);
  }
  assert.equal(p.width, Math.max(...p.logcnt.flatMap(arr)));
}

Deno.test("random and tie-heavy inputs: the library matches the upstream-structured reference and keeps the invariants", () => {
  const rng = new Rng(2024);
  for (let c = 0; c < 300; c++) {
    const { w, opts } = randomCase(rng, c % 3 === 0);
    const E = w[0].length;
    for (const policy of ["auto", "global"] as const) {
      const p = rebalanceExperts(w, { ...opts, policy });
      const hier = policy === "auto" && opts.numGroups % opts.numNodes === 0;
      assert.equal(p.policy, hier ? "hierarchical" : "global");
      checkInvariants(p, E, opts);
      const ref = reference(w, opts.numReplicas, opts.numGroups, opts.numNodes, opts.numGpus, hier);
      ref.forEach((r, l) => {
        const label = `case ${c} ${policy} layer ${l}: ${JSON.stringify({ w: w[l], ...opts })}`;
        assert.deepEqual(arr(p.phy2log[l]), r.phy2log, label);
        assert.deepEqual(arr(p.logcnt[l]), r.logcnt, label);
        r.rank.forEach((rank, s) => assert.equal(p.log2phy[l][r.phy2log[s]][rank], s, label));
      });
    }
  }
});

Deno.test("placement is deterministic, layer-independent and invariant to power-of-two scaling; zero loads", () => {
  const rng = new Rng(7);
  const w = Array.from({ length: 4 }, () => Array.from({ length: 32 }, () => rng.int(100)));
  const opts = { numReplicas: 48, numGroups: 8, numNodes: 4, numGpus: 16 };
  const p = rebalanceExperts(w, opts);
  assert.deepEqual(rows(rebalanceExperts(w, opts).phy2log), rows(p.phy2log));
  assert.deepEqual(
    rows(rebalanceExperts(w.map((r) => r.map((v) => v * 1024)), opts).phy2log),
    rows(p.phy2log),
  );
  assert.deepEqual(rows(rebalanceExperts([w[2]], opts).phy2log), [arr(p.phy2log[2])]);
  // an all-zero row gives every redundant copy to expert 0 (all ratios 0: the first wins)
  const z = rebalanceExperts([new Array(8).fill(0)], {
    numReplicas: 12,
    numGroups: 1,
    numNodes: 1,
    numGpus: 4,
  });
  assert.deepEqual(arr(z.logcnt[0]), [5, 1, 1, 1, 1, 1, 1, 1]);
  const mz = placementMetrics([new Array(8).fill(0)], z);
  assert.deepEqual([mz.balancedness[0], mz.imbalance[0], mz.nodeBalancedness[0], mz.overallBalancedness], [
    1,
    1,
    1,
    1,
  ]);
  // R = E: a pure permutation, and "hierarchical" asked for explicitly
  const perm = rebalanceExperts(w, { ...opts, numReplicas: 32, policy: "hierarchical" });
  for (const row of perm.phy2log) assert.deepEqual(arr(row).sort((a, b) => a - b), [...Array(32).keys()]);
});

Deno.test("rebalancing beats the identity placement on skewed loads, and more redundancy never hurts here", () => {
  const rng = new Rng(3);
  const w = Array.from(
    { length: 6 },
    () => Array.from({ length: 64 }, (_, e) => 1000 / (1 + ((e * 7 + rng.int(64)) % 64))),
  );
  const base = placementMetrics(w, identityPlacement({ layers: 6, experts: 64, numGpus: 16, numNodes: 2 }));
  const rows0 = redundancySweep(w, { numGroups: 8, numNodes: 2, numGpus: 16, redundant: [0, 16, 32, 64] });
  assert.deepEqual(rows0.map((r) => `${r.policy}:${r.redundant}:${r.replicas}`), [
    "hierarchical:0:64",
    "hierarchical:16:80",
    "hierarchical:32:96",
    "hierarchical:64:128",
    "global:0:64",
    "global:16:80",
    "global:32:96",
    "global:64:128",
  ]);
  for (const r of rows0) assert.ok(r.balancedness > base.overallBalancedness, JSON.stringify(r));
  const global = rows0.filter((r) => r.policy === "global").map((r) => r.balancedness);
  assert.ok(global[3] > global[0] && global[3] > 0.95, `global: ${global}`);
  assert.ok(global[3] <= 1 && Math.min(...rows0.map((r) => r.meanBalancedness)) > 0);
});

// ───────────────────────── brute force: how far the greedy is from optimal ─────────────────────────

/** All ways to split items into m packs of n/m items; calls back with each pack's items. */
function* balancedPartitions(items: number[], m: number): Generator<number[][]> {
  const per = items.length / m;
  const packs: number[][] = Array.from({ length: m }, () => []);
  function* place(i: number): Generator<number[][]> {
    if (i === items.length) {
      yield packs;
      return;
    }
    for (let p = 0; p < m; p++) {
      if (packs[p].length === per) continue;
      packs[p].push(items[i]);
      yield* place(i + 1);
      packs[p].pop();
      if (packs[p].length === 0) break; // packs are interchangeable: the first empty one is enough
    }
  }
  yield* place(0);
}

function* compositions(total: number, parts: number): Generator<number[]> {
  if (parts === 1) {
    yield [total];
    return;
  }
  for (let c = 1; c <= total - parts + 1; c++) {
    for (const rest of compositions(total - c, parts - 1)) yield [c, ...rest];
  }
}

Deno.test("greedy vs brute-force optimum on tiny inputs (reports the gap; never better than optimal)", () => {
  const rng = new Rng(11);
  const packGaps: number[] = [], wholeGaps: number[] = [];
  for (let c = 0; c < 60; c++) {
    const E = 4 + rng.int(3), P = 2 + rng.int(2), R = Math.ceil((E + 1) / P) * P;
    const w = Array.from({ length: E }, () => 1 + rng.int(50));
    const p = rebalanceExperts([w], { numReplicas: R, numGroups: 1, numNodes: 1, numGpus: P });
    const greedyMax = placementMetrics([w], p).maxGpuLoad[0];
    // optimum of the packing step alone (the greedy's replica counts)
    const cnt = arr(p.logcnt[0]);
    const items = arr(p.phy2log[0]).map((e) => w[e] / cnt[e]);
    let packOpt = Infinity;
    for (const packs of balancedPartitions(items, P)) {
      packOpt = Math.min(packOpt, Math.max(...packs.map((q) => q.reduce((a, b) => a + b, 0))));
    }
    // optimum over replica counts too
    let wholeOpt = Infinity;
    for (const counts of compositions(R, E)) {
      const its = counts.flatMap((k, e) => new Array(k).fill(w[e] / k));
      for (const packs of balancedPartitions(its, P)) {
        wholeOpt = Math.min(wholeOpt, Math.max(...packs.map((q) => q.reduce((a, b) => a + b, 0))));
      }
    }
    assert.ok(greedyMax >= packOpt - 1e-9 && packOpt >= wholeOpt - 1e-9, `case ${c}`);
    packGaps.push(greedyMax / packOpt - 1);
    wholeGaps.push(greedyMax / wholeOpt - 1);
  }
  const pct = (v: number[]) =>
    `mean ${(100 * v.reduce((a, b) => a + b, 0) / v.length).toFixed(2)} %, worst ${
      (100 * Math.max(...v)).toFixed(2)
    } %, optimal in ${v.filter((g) => g < 1e-12).length}/${v.length}`;
  console.log(
    `greedy max GPU load above the optimum: packing step ${pct(packGaps)}; replication + packing ${
      pct(wholeGaps)
    }`,
  );
});

// ───────────────────────── metrics and dispatch on real routing ─────────────────────────

Deno.test("dispatch invariants on a routed stream: bytes add up, replicas hold the expert, local copies win", () => {
  const E = 16, k = 4, T = 300;
  const routing = topKRouter({ weight: matrix.randn(E, 8, { seed: 1 }), k }).route(
    matrix.randn(T, 8, { seed: 2 }),
  );
  const loads = expertLoadMatrix([routing]);
  const p = rebalanceExperts(loads, { numReplicas: 24, numGroups: 4, numNodes: 2, numGpus: 8 });
  const tokenGpu = Array.from({ length: T }, (_, t) => (t * 5) % 8);
  const tr = dispatchTraffic(routing, p, { bytesPerToken: 3, tokenGpu });
  const S = 3, node = (g: number) => Math.floor(g / 4);
  let choices = 0;
  for (let i = 0; i < T * k; i++) {
    const s = tr.replica[i], e = routing.indices[i], g = tokenGpu[Math.floor(i / k)];
    assert.equal(p.phy2log[0][s], e);
    choices++;
    const slots = arr(p.log2phy[0][e]).filter((x) => x >= 0);
    if (slots.some((x) => Math.floor(x / S) === g)) {
      assert.equal(Math.floor(s / S), g, `choice ${i}: own GPU`);
    } else if (slots.some((x) => node(Math.floor(x / S)) === node(g))) {
      assert.equal(node(Math.floor(s / S)), node(g));
    }
  }
  assert.equal(arr(tr.tokensPerReplica).reduce((a, b) => a + b, 0), choices);
  assert.equal(arr(tr.tokensPerGpu).reduce((a, b) => a + b, 0), choices);
  assert.equal(tr.choiceLocality.reduce((a, b) => a + b, 0), choices);
  const total = tr.dispatchBytes.flatMap(arr).reduce((a, b) => a + b, 0);
  assert.equal(tr.localBytes + tr.intraNodeBytes + tr.interNodeBytes, total);
  assert.equal(arr(tr.recvTokensPerGpu).reduce((a, b) => a + b, 0) * 3, total);
  assert.equal(tr.nodeBytes[0][1] + tr.nodeBytes[1][0] <= tr.interNodeBytes, true);
  // the realised GPU load follows the expected one: both sum to the assignments
  const m = placementMetrics(loads, p);
  assert.equal(arr(m.gpuLoad[0]).reduce((a, b) => a + b, 0), T * k);
});

Deno.test("expertLoadMatrix: counts kept choices per layer; sums steps; EMA with and without a previous state", () => {
  const a = routingOf([[0, 1], [0, 2]], 3), b = routingOf([[2, 2], [1, -1]], 3, [1, 0, 1, 1]);
  assert.deepEqual(rows(expertLoadMatrix([a, b])), [[2, 1, 1], [0, 1, 1]]);
  assert.deepEqual(rows(expertLoadMatrix([[a], [b], [a]])), [[4, 3, 3]]);
  assert.deepEqual(rows(expertLoadMatrix([[a], [b]], { decay: 0.75 })), [[1.5, 1, 1]]);
  assert.deepEqual(rows(expertLoadMatrix([b], { decay: 0.5, previous: [[2, 1, 1]] })), [[1, 1, 1]]);
  assert.deepEqual(rows(expertLoadMatrix([[a], [b]], { decay: 0 })), [[0, 1, 1]]);
  assert.throws(() => expertLoadMatrix([]), /routings is empty/);
  assert.throws(
    () => expertLoadMatrix([a, routingOf([[0]], 4)]),
    (e) => e instanceof ShapeError && /routings\[0\]\[1\]\.experts/.test(e.message),
  );
  assert.throws(() => expertLoadMatrix([[a], [a, b]]), /routings\[1\]/);
  assert.throws(
    () => expertLoadMatrix([a], { decay: 1 }),
    (e) => e instanceof OptionError && e.option === "decay",
  );
  assert.throws(() => expertLoadMatrix([a], { previous: [[1, 1, 1]] }), /decay/);
  assert.throws(() => expertLoadMatrix([a], { decay: 0.5, previous: [[1, 1]] }), /previous/);
});

// ───────────────────────── bad inputs (spec §10) ─────────────────────────

function throwsNaming(
  fn: () => unknown,
  cls: new (...args: never[]) => MoekitError,
  ...words: (string | RegExp)[]
): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    for (const w of words) {
      if (typeof w === "string") {
        assert.ok((e as Error).message.includes(w), `"${w}" in: ${(e as Error).message}`);
      } else assert.match((e as Error).message, w);
    }
    return true;
  });
}

Deno.test("rebalanceExperts: every bad input of §10 gets a typed error naming the argument, in the spec's order", () => {
  const ok = { numReplicas: 4, numGroups: 2, numNodes: 2, numGpus: 2 };
  const w = [[1, 2, 3, 4]];
  throwsNaming(() => rebalanceExperts([1, 2, 3] as unknown as number[][], ok), ShapeError, "weight", "2-D");
  throwsNaming(() => rebalanceExperts([], ok), ShapeError, "weight", "layer");
  throwsNaming(() => rebalanceExperts([[]], ok), ShapeError, "weight row 0");
  throwsNaming(() => rebalanceExperts(matrix.zeros(2, 0), ok), ShapeError, "weight");
  throwsNaming(() => rebalanceExperts([[1, 2, 3, 4], [1, 2]], ok), ShapeError, "weight row 1", "[4]", "[2]");
  throwsNaming(() => rebalanceExperts("x" as unknown as number[][], ok), OptionError, "weight");
  throwsNaming(() => rebalanceExperts([[1, 2, NaN, 4]], ok), NonFiniteError, "weight", "row 0, col 2", "NaN");
  throwsNaming(
    () => rebalanceExperts([[1, 2, 3, 4], [1, Infinity, 3, 4]], ok),
    NonFiniteError,
    "row 1, col 1",
  );
  throwsNaming(
    () => rebalanceExperts([[1, -2, 3, 4]], ok),
    OptionError,
    "weight[0][1] = -2",
    "layer 0, expert 1",
  );
  // NaN is reported before a negative load that comes earlier
  throwsNaming(() => rebalanceExperts([[-1, 2, 3, 4], [1, NaN, 3, 4]], ok), NonFiniteError, "row 1");
  for (const opt of ["numReplicas", "numGroups", "numNodes", "numGpus"] as const) {
    for (const bad of [0, -1, 2.5, NaN, "4"]) {
      throwsNaming(
        () => rebalanceExperts(w, { ...ok, [opt]: bad } as RebalanceOptions),
        OptionError,
        opt,
        "integer ≥ 1",
      );
    }
  }
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, numReplicas: 2, numGpus: 1, numNodes: 1 }),
    OptionError,
    "numReplicas = 2",
    "E = 4",
  );
  throwsNaming(() => rebalanceExperts(w, { ...ok, numGpus: 3 }), OptionError, "numGpus = 3", "numNodes = 2");
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, numReplicas: 5 }),
    OptionError,
    "numReplicas = 5",
    "numGpus = 2",
  );
  throwsNaming(() => rebalanceExperts(w, { ...ok, numGroups: 3 }), OptionError, "numGroups = 3", "E = 4");
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, numGroups: 3, policy: "global" }),
    OptionError,
    "numGroups = 3",
  );
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, policy: "nodes" as "global" }),
    OptionError,
    `policy = "nodes"`,
  );
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, numGroups: 1, policy: "hierarchical" }),
    OptionError,
    "policy",
    "numGroups = 1",
    "numNodes = 2",
  );
  // the first failing check is the one reported
  throwsNaming(
    () => rebalanceExperts(w, { ...ok, numReplicas: 3, numGpus: 3 }),
    OptionError,
    "numReplicas = 3",
  );
  assert.equal(rebalanceExperts(w, { ...ok, numGroups: 1 }).policy, "global");
});

Deno.test("placementMetrics and dispatchTraffic: bad inputs get typed errors naming the argument", () => {
  const w = [[1, 2, 3, 4]];
  const p = rebalanceExperts(w, { numReplicas: 4, numGroups: 2, numNodes: 2, numGpus: 2 });
  throwsNaming(
    () => placementMetrics([[1, 2, 3, 4], [1, 2, 3, 4]], p),
    ShapeError,
    "placement",
    "[2,*]",
    "[1,4]",
  );
  throwsNaming(() => placementMetrics([[1, 2, 3]], p), ShapeError, "placement", "E = 3");
  throwsNaming(() => placementMetrics([[1, 2, 3, 4, 5]], p), ShapeError, "placement.logcnt", "E = 5");
  throwsNaming(() => placementMetrics([[1, NaN, 3, 4]], p), NonFiniteError, "weight");
  throwsNaming(
    () => placementMetrics(w, { phy2log: [[0, 1, 2, 2]], numGpus: 2, numNodes: 1 }),
    MoekitError,
    "placement",
    "expert 3",
    "no slot",
  );
  throwsNaming(
    () => placementMetrics(w, { phy2log: [[0, 1, 2, 3]], numGpus: 3, numNodes: 1 }),
    ShapeError,
    "numGpus = 3",
  );
  throwsNaming(() => placementMetrics(w, { phy2log: [[0, 1, 2, 3]] }), OptionError, "numGpus");
  throwsNaming(() => placementMetrics(w, { phy2log: [[0, 1, 2, 3]], numGpus: 2 }), OptionError, "numNodes");
  throwsNaming(() => placementMetrics(w, p, { numGpus: 3 }), OptionError, "numGpus = 3", "numNodes = 2");
  throwsNaming(
    () => placementMetrics(w, { phy2log: [[0, 1, 2, 3.5]], numGpus: 2, numNodes: 1 }),
    ShapeError,
    "phy2log[0][3] = 3.5",
  );
  throwsNaming(
    () => placementMetrics(w, { phy2log: [[0, 1], [2, 3]] } as never, { numGpus: 1, numNodes: 1 }),
    ShapeError,
    "placement.phy2log",
    "1 layers",
  );
  throwsNaming(
    () => placementMetrics(w, null as never, { numGpus: 1, numNodes: 1 }),
    MoekitError,
    "placement",
  );
  // a hand-made placement works (topology from the options)
  assert.deepEqual(
    arr(placementMetrics(w, { phy2log: [[3, 2, 1, 0]] }, { numGpus: 2, numNodes: 1 }).gpuLoad[0]),
    [7, 3],
  );

  const r = routingOf([[0, 1], [2, 3]], 4);
  const opts = { bytesPerToken: 8 };
  throwsNaming(
    () => dispatchTraffic(routingOf([[0, 1]], 5), p, opts),
    ShapeError,
    "routing.experts",
    "[4]",
    "[5]",
  );
  throwsNaming(
    () => dispatchTraffic({ ...r, indices: Int32Array.from([0, 1, 4, 3]) }, p, opts),
    OptionError,
    "routing.indices[2] = 4",
  );
  throwsNaming(
    () => dispatchTraffic({ ...r, indices: Int32Array.from([0, -2, 2, 3]) }, p, opts),
    OptionError,
    "routing.indices[1] = -2",
  );
  throwsNaming(() => dispatchTraffic(r, p, { ...opts, tokenGpu: [0] }), ShapeError, "tokenGpu", "[2]", "[1]");
  throwsNaming(
    () => dispatchTraffic(r, p, { ...opts, tokenGpu: [0, 2] }),
    OptionError,
    "tokenGpu[1] = 2",
    "0..1",
  );
  for (const bad of [0, -8, NaN, Infinity, "8"]) {
    throwsNaming(() => dispatchTraffic(r, p, { bytesPerToken: bad as number }), OptionError, "bytesPerToken");
  }
  throwsNaming(() => dispatchTraffic(r, p, { ...opts, layer: 1 }), OptionError, "layer = 1", "0..0");
  throwsNaming(() => dispatchTraffic(r, p, { ...opts, layer: -1 }), OptionError, "layer = -1");
  throwsNaming(() => dispatchTraffic(r, p, undefined as never), OptionError, "options");
  throwsNaming(() => dispatchTraffic(r, { phy2log: [[0, 1, 2, 3]] }, opts), OptionError, "numGpus");
  throwsNaming(() => dispatchTraffic({} as RoutingResult, p, opts), OptionError, "routing");

  throwsNaming(
    () => redundancySweep(w, { numGroups: 1, numNodes: 1, numGpus: 2, redundant: [1] }),
    OptionError,
    "redundant[0] = 1",
    "numGpus = 2",
  );
  throwsNaming(
    () => redundancySweep(w, { numGroups: 1, numNodes: 1, numGpus: 2, redundant: [] }),
    OptionError,
    "redundant",
  );
  throwsNaming(
    () => identityPlacement({ layers: 1, experts: 6, numGpus: 4, numNodes: 1 }),
    OptionError,
    "experts = 6",
  );
});

// ───────────────────────── plots ─────────────────────────

Deno.test("placement plots render to SVG with their titles; Jupyter bundle carries the Vega-Lite spec", async () => {
  const rng = new Rng(5);
  const w = Array.from({ length: 6 }, () => Array.from({ length: 32 }, () => rng.int(200)));
  const opts = { numReplicas: 40, numGroups: 8, numNodes: 2, numGpus: 8 };
  const before = placementMetrics(w, identityPlacement({ layers: 6, experts: 32, numGpus: 8, numNodes: 2 }));
  const p = rebalanceExperts(w, opts);
  const after = placementMetrics(w, p);
  const routing = topKRouter({ weight: matrix.randn(32, 8, { seed: 1 }), k: 4 }).route(
    matrix.randn(64, 8, { seed: 2 }),
  );
  const traffic = {
    hierarchical: dispatchTraffic(routing, p, { bytesPerToken: 7168 }),
    global: dispatchTraffic(routing, rebalanceExperts(w, { ...opts, policy: "global" }), {
      bytesPerToken: 7168,
    }),
  };
  const plots = [
    [gpuLoadPlot({ before, after }), ["GPU", "layer", "load / layer mean", "balancedness"]],
    [trafficHeatmap(traffic), ["destination GPU", "source GPU", "bytes", "inter-node"]],
    [trafficHeatmap(traffic.global), ["destination GPU"]],
    [redundancyPlot(redundancySweep(w, { ...opts, redundant: [0, 8, 16] })), [
      "redundant experts per layer",
      "hierarchical",
    ]],
  ] as const;
  for (const [plot, titles] of plots) {
    const svg = await plot.toSVG();
    assert.ok(svg.startsWith("<svg") && svg.length > 2000);
    for (const t of titles) assert.ok(svg.includes(t), `"${t}" in ${plot.spec.title}`);
    const bundle = await (plot as unknown as Record<symbol, () => Promise<Record<string, unknown>>>)[
      Symbol.for("Jupyter.display")
    ]();
    assert.deepEqual(bundle["application/vnd.vegalite.v5+json"], plot.spec);
  }
  // node boundaries: one rule per inner boundary on each axis of the heatmap
  assert.match(JSON.stringify(trafficHeatmap(traffic.global).spec), /"values":\[\{"at":4\}\]/);
  assert.throws(() => gpuLoadPlot({}), /no placement metrics/);
  assert.throws(() => redundancyPlot([]), /no rows/);
});
