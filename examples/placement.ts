/**
 * Expert placement on a DeepSeek-V3-shaped MoE: 256 experts in 8 groups, k = 8 with group-limited routing
 * (4 groups per token), over a topic-switching synthetic stream, placed on 4 nodes × 8 GPUs with 0, 32 and
 * 64 redundant experts by DeepSeek's EPLB (hierarchical and global policies), against the placement
 * without EPLB. Loads come from the first half of the stream (an EMA over steps, as serving systems feed
 * EPLB); the table reports the expected balancedness on those loads and, on the held-out second half, the
 * realised GPU balancedness and the dispatch all-to-all bytes.
 *
 *   deno run examples/placement.ts                               # no permissions needed
 *   deno run examples/placement.ts --tokens 1024 --layers 2      # smaller and faster
 *   deno run --allow-write=placement-plots examples/placement.ts --plots placement-plots
 */

import { checkWorkSize, intFlag, parseFlags, refuse, usageError } from "./flags.ts";
import { checkPlotTargets, type PlotFile, plotFiles, writePlotFiles } from "./plot_files.ts";
import {
  type DispatchTraffic,
  dispatchTraffic,
  expertLoadMatrix,
  identityPlacement,
  matrix,
  MoekitError,
  type Placement,
  type PlacementMetrics,
  placementMetrics,
  rebalanceExperts,
  redundancySweep,
} from "../lib/placement/mod.ts";
import { deepseekV3Router, type RoutingResult } from "../lib/routing/mod.ts";
import { topicStream } from "../lib/data/mod.ts";
import { gpuLoadPlot, type Plot, redundancyPlot, trafficHeatmap } from "../lib/plots/mod.ts";

const USAGE = `usage: deno run examples/placement.ts [options]

  --tokens N          tokens in the stream; the first half sets the loads, the second is held out (default 8192)
  --layers L          MoE layers (default 4)
  --dim D             hidden size (default 64)
  --nodes N           nodes (default 4)
  --gpus-per-node G   GPUs per node (default 8)
  --redundant LIST    redundant experts per layer, comma-separated (default 0,32,64)
  --steps S           steps the first half is split into for the load EMA (default 8)
  --decay X           EMA decay per step, in [0, 1) (default 0.8)
  --seed S            seed of the stream and the gates (default 0)
  --json              print JSON instead of the table
  --plots DIR         write the plots (JSON + SVG; PNG too with -A) into DIR; needs --allow-write=DIR.
                      Existing files are never replaced unless --overwrite is given
  --overwrite         allow --plots to replace existing files
  --help              this text

Model shape (fixed): E = 256 experts, 8 groups, k = 8, 4 groups per token (DeepSeek-V3); 7168 bytes
per token dispatched (d = 7168, FP8).`;

/** The plots `--plots` writes, each as `<name>.json`, `.svg` and (when allowed) `.png`. */
const PLOT_NAMES = ["placement-gpu-load", "placement-traffic", "placement-balancedness"];

const E = 256, GROUPS = 8, K = 8, TOPK_GROUP = 4, BYTES_PER_TOKEN = 7168;

function fail(message: string): never {
  return usageError(USAGE, message);
}

interface Config {
  tokens: number;
  layers: number;
  dim: number;
  nodes: number;
  gpusPerNode: number;
  redundant: number[];
  steps: number;
  decay: number;
  seed: number;
}

function parse(): { c: Config; json: boolean; plots?: string; overwrite: boolean } {
  const v = parseFlags(USAGE, {
    tokens: { type: "string" },
    layers: { type: "string" },
    dim: { type: "string" },
    nodes: { type: "string" },
    "gpus-per-node": { type: "string" },
    redundant: { type: "string" },
    steps: { type: "string" },
    decay: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
    plots: { type: "string" },
    overwrite: { type: "boolean" },
    help: { type: "boolean" },
  }) as Record<string, string | boolean | undefined>;
  const int = (name: string, def: number, min: number) => intFlag(USAGE, v, name, def, min);
  const c: Config = {
    tokens: int("tokens", 8192, 2),
    layers: int("layers", 4, 1),
    dim: int("dim", 64, 1),
    nodes: int("nodes", 4, 1),
    gpusPerNode: int("gpus-per-node", 8, 1),
    redundant: [],
    steps: int("steps", 8, 1),
    decay: v.decay === undefined ? 0.8 : Number(v.decay),
    seed: int("seed", 0, 0),
  };
  if (!(c.decay >= 0 && c.decay < 1)) fail(`--decay must be a number in [0, 1), got "${v.decay}"`);
  // the token stream and each layer's [T,E] logits and scores
  checkWorkSize(USAGE, `--tokens ${c.tokens} × --layers ${c.layers}`, c.tokens * (c.dim + 2 * E * c.layers));
  if (c.steps > c.tokens / 2) {
    fail(`--steps ${c.steps} exceeds the ${Math.floor(c.tokens / 2)} tokens of the first half`);
  }
  const P = c.nodes * c.gpusPerNode;
  const list = String(v.redundant ?? "0,32,64");
  c.redundant = list.split(",").map((s) => {
    const n = Number(s.trim());
    if (s.trim() === "" || !Number.isInteger(n) || n < 0) {
      fail(`--redundant takes integers ≥ 0 separated by commas, got "${list}"`);
    }
    const rest = (E + n) % P;
    if (rest !== 0) {
      // the nearest redundant counts R with (256 + R) % P = 0, below (when ≥ 0) and above
      const near = [n - rest, n - rest + P].filter((r) => r >= 0).join(" or ");
      fail(
        `--redundant ${n}: ${E} + ${n} slots do not split over ${P} GPUs (${E + n} % ${P} = ${rest}); ` +
          `the nearest that do: --redundant ${near} (${E} + R must be a multiple of ${P})`,
      );
    }
    return n;
  });
  if (typeof v.plots === "string" && v.plots === "") fail("--plots needs a directory");
  return { c, json: Boolean(v.json), plots: v.plots as string | undefined, overwrite: Boolean(v.overwrite) };
}

interface Row {
  label: string;
  policy: string;
  redundant: number;
  replicas: number;
  /** Expected balancedness on the loads the placement was made from. */
  fitBalancedness: number;
  /** Expected balancedness on the held-out tokens' loads (even split among replicas). */
  heldOutEvenBalancedness: number;
  /** Realised balancedness of the held-out tokens' GPU work after dispatch (Σ mean / Σ max over layers). */
  heldOutBalancedness: number;
  localBytes: number;
  intraNodeBytes: number;
  interNodeBytes: number;
  /** Mean number of nodes a held-out token is sent to. */
  nodesPerToken: number;
  placement: Placement;
  metrics: PlacementMetrics;
  traffic: DispatchTraffic[];
}

/** Slices tokens [a, b) of a routing result. */
function sliceRouting(r: RoutingResult, a: number, b: number): RoutingResult {
  return {
    ...r,
    tokens: b - a,
    indices: r.indices.slice(a * r.k, b * r.k),
    weights: r.weights.slice(a * r.k, b * r.k),
    scores: r.scores.slice(a * r.k, b * r.k),
    keep: r.keep?.slice(a * r.k, b * r.k),
    logits: undefined,
    probs: undefined,
  };
}

function evaluate(
  label: string,
  placement: Placement,
  loads: Float64Array[],
  heldOut: RoutingResult[],
  heldOutLoads: Float64Array[],
  redundant: number,
): Row {
  const metrics = placementMetrics(loads, placement);
  const heldOutEven = placementMetrics(heldOutLoads, placement).overallBalancedness;
  const traffic = heldOut.map((r, layer) =>
    dispatchTraffic(r, placement, { bytesPerToken: BYTES_PER_TOKEN, layer })
  );
  let sumMean = 0, sumMax = 0, local = 0, intra = 0, inter = 0, nodeSends = 0;
  for (const t of traffic) {
    const work = Array.from(t.tokensPerGpu);
    sumMean += work.reduce((a, b) => a + b, 0) / work.length;
    sumMax += Math.max(...work);
    local += t.localBytes;
    intra += t.intraNodeBytes;
    inter += t.interNodeBytes;
    nodeSends += t.nodeBytes.flatMap((row) => Array.from(row)).reduce((a, b) => a + b, 0) / BYTES_PER_TOKEN;
  }
  return {
    label,
    policy: placement.policy,
    redundant,
    replicas: placement.replicas,
    fitBalancedness: metrics.overallBalancedness,
    heldOutEvenBalancedness: heldOutEven,
    heldOutBalancedness: sumMax > 0 ? sumMean / sumMax : 1,
    localBytes: local,
    intraNodeBytes: intra,
    interNodeBytes: inter,
    nodesPerToken: nodeSends / (heldOut[0].tokens * heldOut.length),
    placement,
    metrics,
    traffic,
  };
}

function run(c: Config): { rows: Row[]; loads: Float64Array[]; seconds: number; routeSeconds: number } {
  const started = performance.now();
  const P = c.nodes * c.gpusPerNode;
  const stream = topicStream({ tokens: c.tokens, dim: c.dim, topics: 8, seed: c.seed });
  const routings = Array.from({ length: c.layers }, (_, l) =>
    deepseekV3Router({
      weight: matrix.randn(E, c.dim, { seed: c.seed * 1000 + l + 1, std: 2 / Math.sqrt(c.dim) }),
      k: K,
      nGroup: GROUPS,
      topkGroup: TOPK_GROUP,
    }).route(stream.hidden));
  const half = Math.floor(c.tokens / 2);
  // the loads EPLB sees: an EMA over the steps of the first half
  const steps = Array.from({ length: c.steps }, (_, s) => {
    const a = Math.floor((s * half) / c.steps), b = Math.floor(((s + 1) * half) / c.steps);
    return routings.map((r) => sliceRouting(r, a, b));
  });
  const loads = expertLoadMatrix(steps, { decay: c.decay });
  const heldOut = routings.map((r) => sliceRouting(r, half, c.tokens));
  const heldOutLoads = expertLoadMatrix(heldOut);
  const routeSeconds = (performance.now() - started) / 1000;

  const rows: Row[] = [];
  if (E % P === 0) {
    rows.push(
      evaluate(
        `no EPLB (expert e on GPU ⌊e/${E / P}⌋)`,
        identityPlacement({ layers: c.layers, experts: E, numGpus: P, numNodes: c.nodes }),
        loads,
        heldOut,
        heldOutLoads,
        0,
      ),
    );
  }
  const policies = GROUPS % c.nodes === 0 ? ["hierarchical", "global"] as const : ["global"] as const;
  for (const policy of policies) {
    for (const r of c.redundant) {
      const placement = rebalanceExperts(loads, {
        numReplicas: E + r,
        numGroups: GROUPS,
        numNodes: c.nodes,
        numGpus: P,
        policy,
      });
      rows.push(evaluate(`${policy} +${r}`, placement, loads, heldOut, heldOutLoads, r));
    }
  }
  return { rows, loads, seconds: (performance.now() - started) / 1000, routeSeconds };
}

const mb = (b: number) => (b / 1e6).toFixed(1);

function printTable(c: Config, rows: Row[], seconds: number, routeSeconds: number): void {
  const P = c.nodes * c.gpusPerNode, half = Math.floor(c.tokens / 2);
  console.log(
    `moekit expert placement — DeepSeek-V3 shape (E = ${E}, ${GROUPS} groups, k = ${K}, ${TOPK_GROUP} groups/token), ` +
      `${c.layers} layers, ${c.nodes} nodes × ${c.gpusPerNode} GPUs; loads: EMA (decay ${c.decay}) over ${c.steps} ` +
      `steps of the first ${half} tokens; traffic: the other ${
        c.tokens - half
      } tokens, ${BYTES_PER_TOKEN} B/token ` +
      `(${seconds.toFixed(2)} s, routing ${routeSeconds.toFixed(2)} s)\n`,
  );
  const head = [
    "placement",
    "R",
    "slots/GPU",
    "balance: fit",
    "held out, even split",
    "held out, dispatched",
    "inter-node MB",
    "intra-node MB",
    "local MB",
    "nodes/token",
  ];
  const body = rows.map((r) => [
    r.label,
    String(r.replicas),
    String(r.replicas / P),
    r.fitBalancedness.toFixed(3),
    r.heldOutEvenBalancedness.toFixed(3),
    r.heldOutBalancedness.toFixed(3),
    mb(r.interNodeBytes),
    mb(r.intraNodeBytes),
    mb(r.localBytes),
    r.nodesPerToken.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((s, i) => (i === 0 ? s.padEnd(widths[i]) : s.padStart(widths[i]))).join("  ");
  console.log(line(head));
  console.log(widths.map((w) => "─".repeat(w)).join("  "));
  for (const b of body) console.log(line(b));
  console.log(
    "\nbalance = mean / max GPU load (1 = perfectly even; Σ over layers of the mean / Σ of the max). fit: expected" +
      "\non the loads the placement was made from; held out, even split: expected on the held-out half's loads" +
      "\n(each expert's tokens split evenly among its copies); held out, dispatched: the token–expert pairs each" +
      "\nGPU computes when the held-out tokens are dispatched (own GPU, then own node, then least-served copy)." +
      "\nBytes: dispatch all-to-all summed over layers; a token travels once per destination GPU (the combine" +
      "\nis the same traffic in reverse).",
  );
  const hier = rows.filter((r) => r.policy === "hierarchical"),
    glob = rows.filter((r) => r.policy === "global");
  if (hier.length && glob.length) {
    console.log(
      "\nhierarchical vs global (same redundancy). Hierarchical keeps each group, with all its replicas, on one" +
        "\nnode; global spreads replicas over nodes. Measured on the held-out tokens:",
    );
    const pairs = hier.map((h) => [h, glob.find((x) => x.redundant === h.redundant)!] as const);
    /** `global at +32, +64; hierarchical at +0` for the redundancies where each has the smaller value. */
    const lower = (f: (r: Row) => number) => {
      const who = (p: typeof pairs) => p.map(([h]) => `+${h.redundant}`).join(", ");
      const g = pairs.filter(([a, b]) => f(b) < f(a)), hi = pairs.filter(([a, b]) => f(a) < f(b));
      return [g.length ? `global at ${who(g)}` : "", hi.length ? `hierarchical at ${who(hi)}` : ""]
        .filter(Boolean).join("; ") || "neither";
    };
    console.log(`  fewer inter-node bytes: ${lower((r) => r.interNodeBytes)}`);
    console.log(`  fewer nodes per token:  ${lower((r) => r.nodesPerToken)}`);
    for (const h of hier) {
      const g = glob.find((x) => x.redundant === h.redundant)!;
      const d = g.interNodeBytes > 0 ? (100 * (h.interNodeBytes - g.interNodeBytes)) / g.interNodeBytes : 0;
      console.log(
        `  +${h.redundant}: inter-node bytes ${d <= 0 ? "" : "+"}${d.toFixed(1)} % (${
          mb(h.interNodeBytes)
        } vs ${mb(g.interNodeBytes)} MB), nodes/token ${h.nodesPerToken.toFixed(2)} vs ${
          g.nodesPerToken.toFixed(2)
        }, balancedness ${h.heldOutBalancedness.toFixed(3)} vs ${
          g.heldOutBalancedness.toFixed(3)
        } (held out)`,
      );
    }
  } else if (!hier.length) {
    console.log(`\nhierarchical skipped: ${GROUPS} groups do not divide over ${c.nodes} nodes`);
  }
}

/** PNG plots need --allow-ffi and --allow-read; without them only JSON and SVG are written. */
const pngAllowed = () =>
  Deno.permissions.querySync({ name: "ffi" }).state === "granted" &&
  Deno.permissions.querySync({ name: "read" }).state === "granted";

/** Stops before any work when the plots could not be written: no permission, or files that exist. */
function checkPlots(dir: string, overwrite: boolean): void {
  if (Deno.permissions.querySync({ name: "write", path: dir }).state !== "granted") {
    refuse(`--plots ${dir}: writing there is not allowed; run with --allow-write=${dir}`);
  }
  const exts = pngAllowed() ? ["json", "svg", "png"] : ["json", "svg"];
  checkPlotTargets(dir, PLOT_NAMES.flatMap((n) => exts.map((e) => `${n}.${e}`)), overwrite);
}

/** Renders every plot in memory, then writes them without replacing existing files (unless allowed). */
async function writePlots(dir: string, overwrite: boolean, c: Config, rows: Row[], loads: Float64Array[]) {
  const png = pngAllowed();
  const P = c.nodes * c.gpusPerNode;
  const pick = (policy: string) =>
    rows.find((r) => r.policy === policy && r.redundant === c.redundant[Math.min(1, c.redundant.length - 1)]);
  const base = rows.find((r) => r.policy === "identity");
  const hier = pick("hierarchical"), glob = pick("global")!;
  const loadRuns: Record<string, PlacementMetrics> = {};
  if (base) loadRuns[base.label] = base.metrics;
  for (const r of [hier, glob]) if (r) loadRuns[r.label] = r.metrics;
  const traffic: Record<string, DispatchTraffic> = {};
  for (const r of [base, hier, glob]) if (r) traffic[r.label] = r.traffic[0];
  const sweep = redundancySweep(loads, {
    numGroups: GROUPS,
    numNodes: c.nodes,
    numGpus: P,
    redundant: [0, 1, 2, 3, 4].map((i) => c.redundant[0] + i * P),
  });
  const plots: [string, Plot][] = [
    [PLOT_NAMES[0], gpuLoadPlot(loadRuns, { title: "expected GPU load per layer / layer mean" })],
    [PLOT_NAMES[1], trafficHeatmap(traffic, { title: "layer 0 dispatch bytes, held-out tokens" })],
    [PLOT_NAMES[2], redundancyPlot(sweep)],
  ];
  const files: PlotFile[] = [];
  for (const [name, plot] of plots) {
    files.push(...await plotFiles(name, plot));
    if (png) files.push([`${name}.png`, await plot.toPNG()]);
  }
  const written = await writePlotFiles(dir, files, overwrite);
  console.log(
    `\nplots written to ${dir}/: ${written.join(", ")}${
      png ? "" : " (add --allow-ffi --allow-read for PNG)"
    }`,
  );
}

async function main(): Promise<void> {
  const { c, json, plots, overwrite } = parse();
  if (plots !== undefined) checkPlots(plots, overwrite);
  let result;
  try {
    result = run(c);
  } catch (e) {
    if (e instanceof MoekitError) fail(e.message);
    throw e;
  }
  const { rows, loads, seconds, routeSeconds } = result;
  if (json) {
    console.log(JSON.stringify(
      {
        config: {
          ...c,
          experts: E,
          groups: GROUPS,
          k: K,
          topkGroup: TOPK_GROUP,
          bytesPerToken: BYTES_PER_TOKEN,
        },
        seconds,
        rows: rows.map(({ placement: _p, metrics: _m, traffic: _t, ...r }) => r),
      },
      null,
      2,
    ));
  } else {
    printTable(c, rows, seconds, routeSeconds);
  }
  if (plots !== undefined) await writePlots(plots, overwrite, c, rows, loads);
}

await main();
