/**
 * `moekit inspect | route | compress` on a Hugging Face MoE model folder: what the model is, how it routes
 * captured hidden states (load, drops under a capacity factor, co-activation, with plots), and a
 * compressed copy. Progress on stderr; exit 2 with a one-line reason on bad input.
 * @module
 */

import { parseCommandLine, UsageError, usageErrorText } from "./args.ts";
import "../kernels/mod.ts"; // registers the WebAssembly / native gate GEMM backends for the routers
import { MoekitError } from "../core/errors.ts";
import type { Mat } from "../core/matrix.ts";
import type { RoutingResult } from "../routing/result.ts";
import { applyCapacity } from "../routing/capacity.ts";
import { loadMetrics } from "../routing/metrics.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { loadTensor } from "../checkpoints/tensors.ts";
import { type MoeModel, openMoeModel } from "../checkpoints/model.ts";
import { coactivationPlot, dropVsCapacityPlot, layerLoadHeatmap, loadPlot } from "../plots/charts.ts";
import type { Plot } from "../plots/plot.ts";
import { checkOutputFolder } from "../io/output.ts";
import {
  calibrate,
  type CompressedLayer,
  compressionReport,
  deltaCompress,
  mergeExperts,
  PRUNE_METHODS,
  pruneExperts,
  quantizeRTN,
  rtnLayer,
  svdLayer,
} from "../compression/mod.ts";
import type { MoeLayer, SwiGLUExpert } from "../moe/layer.ts";
import { type LayerEdit, saveMoeModel } from "../checkpoints/save.ts";
import { quantizedMatrix, type StoredExpert } from "../checkpoints/formats.ts";
import { parseSize } from "./merge_cli.ts";
import { checkPlotTargets, type PlotFile, plotFiles, writePlotFiles } from "./plot_files.ts";

/** The plots `route --plots DIR` writes, each as `<name>.json` and `<name>.svg`. */
const ROUTE_PLOTS = ["layer-load", "load", "drop-vs-capacity", "coactivation"];

const USAGE = `usage: deno run -A mod.ts <command> …

  inspect <model-dir> [--json]
      family, layers, experts, top-k, MoE layers, parameters (total, active per token), dtype, layout, shards
  route <model-dir> --hidden <file> [--name T] [--layers 0,2-5|all] [--capacity-factor 1.25] [--plots DIR] [--overwrite] [--json]
      routes hidden states through each MoE layer's router: load per expert, drops under the capacity
      factor, co-activation. <file>: safetensors with layers.{l}.input tensors (one per layer), or one
      [tokens, d] tensor (.npy or safetensors; --name picks it) used for every layer. --plots writes
      ${ROUTE_PLOTS.join(", ")} (.json + .svg) into DIR; existing files are never replaced unless --overwrite
  compress <model-dir> <out-dir> --method prune|merge|svd|delta|rtn --calibration <file> [--layers …] [--name T]
           [--out-shard-size 5B] [--overwrite]
      compresses each MoE layer on the calibration tokens, prints compressionReport per layer, writes the model:
        prune --keep N [--prune-method enumerate|greedy|count|weightSum|reap]   NAEE; the model's own layout
        merge --groups G        MC-SMoE; moekit format (E router rows + expert_map)
        svd [--ratio 0.25 | --rank R]   randomized SVD factors; moekit format
        delta [--ratio 0.25 | --rank R] base + low-rank deltas, written as the reconstructed dense experts
        rtn [--bits 4] [--group-size 128]   RTN codes; moekit format
      the output folder must be new or empty unless --overwrite`;

/**
 * Parses `0,2-5` or `all` into layer indices among `moe`; a bad list is a {@link UsageError} naming `--layers`.
 *
 * @example
 * ```ts
 * import { parseLayers } from "./model_cli.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseLayers("0,2-3", [0, 1, 2, 3]), [0, 2, 3]);
 * assert.throws(() => parseLayers("7", [0, 1]), /^UsageError: --layers: layer 7 is not an MoE layer/);
 * ```
 */
export function parseLayers(spec: string | undefined, moe: readonly number[]): number[] {
  if (spec === undefined || spec === "all") return [...moe];
  const out: number[] = [];
  for (const part of spec.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--layers ${JSON.stringify(spec)}: use a list like 0,2-5 or all`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a) throw new UsageError(`--layers: the range ${a}-${b} is empty; write it low-high (${b}-${a})`);
    for (let l = a; l <= b; l++) {
      if (!moe.includes(l)) {
        throw new UsageError(`--layers: layer ${l} is not an MoE layer (MoE layers: ${moe.join(", ")})`);
      }
      if (!out.includes(l)) out.push(l); // a layer named twice is routed (or compressed) once
    }
  }
  return out;
}

function fmtCount(n: number): string {
  return n >= 1e9
    ? `${(n / 1e9).toFixed(2)} B`
    : n >= 1e6
    ? `${(n / 1e6).toFixed(2)} M`
    : n >= 1e3
    ? `${(n / 1e3).toFixed(1)} K`
    : String(n);
}

const progress = (line: string) => console.error(line);

/**
 * The facts `inspect` prints, as an object.
 *
 * @example
 * ```ts
 * import { inspectModel } from "@moekit/moekit";
 * import assert from "node:assert/strict";
 * assert.equal(typeof inspectModel, "function");
 * ```
 */
export function inspectModel(model: MoeModel): Record<string, unknown> {
  const c = model.config, p = model.params();
  return {
    dir: model.dir,
    family: c.family,
    architecture: (c.raw.architectures as string[] | undefined)?.[0],
    layers: c.layers,
    moeLayers: c.moeLayers,
    experts: c.experts,
    topK: c.topK,
    hidden: c.hidden,
    expertHidden: c.expertHidden,
    shared: c.shared ?? null,
    routing: {
      scoring: c.scoring,
      normTopkProb: c.normTopkProb,
      routedScalingFactor: c.routedScalingFactor,
      grouping: c.grouping ?? null,
      routerBias: c.routerBias,
      correctionBias: c.correctionBias,
    },
    activation: c.activation,
    params: p.total,
    activeParamsPerToken: p.activePerToken,
    dtype: c.dtype,
    layout: [...new Set(c.moeLayers.map((l) => model.info(l).layout))].join(", "),
    shards: model.shards,
  };
}

function printInspect(i: Record<string, unknown>): void {
  const c = i as {
    family: string;
    architecture?: string;
    layers: number;
    moeLayers: number[];
    experts: number;
    topK: number;
    hidden: number;
    expertHidden: number;
    shared: { hidden: number; gated: boolean } | null;
    routing: Record<string, unknown>;
    params: number;
    activeParamsPerToken: number;
    dtype: string;
    layout: string;
    shards: string[];
  };
  const r = c.routing as {
    scoring: string;
    normTopkProb: boolean;
    routedScalingFactor: number;
    grouping: { nGroup: number; topkGroup: number } | null;
  };
  const moe = c.moeLayers.length === c.layers ? "all" : c.moeLayers.join(", ");
  console.log(`family        ${c.family}${c.architecture ? ` (${c.architecture})` : ""}`);
  console.log(`layers        ${c.layers} (MoE: ${moe})`);
  console.log(`experts       E = ${c.experts}, top-k = ${c.topK}`);
  console.log(
    `routing       ${r.scoring}, ${r.normTopkProb ? "renormalised" : "not renormalised"}` +
      `${r.routedScalingFactor !== 1 ? `, × ${r.routedScalingFactor}` : ""}` +
      `${r.grouping ? `, ${r.grouping.topkGroup} of ${r.grouping.nGroup} groups` : ""}`,
  );
  console.log(`sizes         d = ${c.hidden}, expert f = ${c.expertHidden}`);
  console.log(
    `shared        ${c.shared ? `f = ${c.shared.hidden}${c.shared.gated ? ", sigmoid gate" : ""}` : "none"}`,
  );
  console.log(
    `parameters    ${fmtCount(c.params)} total, ${fmtCount(c.activeParamsPerToken)} active per token`,
  );
  console.log(`dtype         ${c.dtype}`);
  console.log(`layout        ${c.layout}`);
  console.log(`shards        ${c.shards.length}${c.shards.length <= 4 ? ` (${c.shards.join(", ")})` : ""}`);
}

/** Hidden states per layer from a file: `layers.{l}.input` tensors, or one tensor for every layer. */
async function hiddenStates(
  path: string,
  layers: readonly number[],
  name?: string,
): Promise<Map<number, Mat>> {
  const out = new Map<number, Mat>();
  if (name === undefined && !path.endsWith(".npy")) {
    const f = await openSafetensors(path);
    const perLayer = layers.every((l) => f.tensors.has(`layers.${l}.input`));
    f.close();
    if (perLayer) {
      for (const l of layers) out.set(l, await loadTensor(path, `layers.${l}.input`));
      return out;
    }
  }
  const x = await loadTensor(path, name);
  for (const l of layers) out.set(l, x);
  return out;
}

async function runInspect(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    options: { json: { type: "boolean" } },
  });
  if (positionals.length !== 1) throw new UsageError("inspect: expected one <model-dir>");
  const model = await openMoeModel(positionals[0], { routers: false });
  try {
    const info = inspectModel(model);
    if (values.json) console.log(JSON.stringify(info, null, 2));
    else printInspect(info);
  } finally {
    model.close();
  }
  return 0;
}

async function runRoute(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    options: {
      hidden: { type: "string" },
      name: { type: "string" },
      layers: { type: "string" },
      "capacity-factor": { type: "string" },
      plots: { type: "string" },
      overwrite: { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  if (positionals.length !== 1) throw new UsageError("route: expected one <model-dir>");
  const overwrite = values.overwrite ?? false;
  if (overwrite && values.plots === undefined) {
    throw new UsageError("route: --overwrite applies to --plots DIR only (route writes nothing else)");
  }
  if (!values.hidden) throw new UsageError("route: --hidden <file> is required (.npy or safetensors)");
  const cf = values["capacity-factor"] === undefined ? 1.25 : Number(values["capacity-factor"]);
  if (!(cf > 0) || !Number.isFinite(cf)) {
    throw new UsageError(`--capacity-factor ${values["capacity-factor"]}: use a number > 0`);
  }
  // the plot files are checked before any work: a second run is refused at once, not after the routing
  const plotNames = ROUTE_PLOTS.flatMap((n) => [`${n}.json`, `${n}.svg`]);
  if (values.plots !== undefined) checkPlotTargets(values.plots, plotNames, overwrite);
  const t0 = performance.now();
  const model = await openMoeModel(positionals[0]);
  try {
    const layers = parseLayers(values.layers, model.config.moeLayers);
    const xs = await hiddenStates(values.hidden, layers, values.name);
    for (const [l, x] of xs) {
      if (x.cols !== model.config.hidden) {
        throw new MoekitError(
          `${values.hidden}: layer ${l} hidden states are [${x.rows}, ${x.cols}] but the model has d = ${model.config.hidden}`,
        );
      }
    }
    progress(
      `opened ${model.dir} (${model.config.family}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`,
    );
    const routings: RoutingResult[] = [], rows = [];
    const dropRows: { series: string; capacityFactor: number; droppedFraction: number }[] = [];
    for (const l of layers) {
      const x = xs.get(l)!, r = model.router(l).route(x);
      routings.push(r);
      const m = loadMetrics(r);
      const capped = (factor: number) => {
        const c = applyCapacity(r, { capacityFactor: factor });
        return loadMetrics({ ...r, weights: c.weights, keep: c.keep, slot: c.slot, capacity: c.capacity });
      };
      for (const factor of [0.5, 0.75, 1, 1.25, 1.5, 2]) {
        dropRows.push({
          series: `layer ${l}`,
          capacityFactor: factor,
          droppedFraction: capped(factor).droppedFraction,
        });
      }
      const E = r.experts, pairs: { a: number; b: number; tokens: number }[] = [];
      for (let a = 0; a < E; a++) {
        for (let b = a + 1; b < E; b++) pairs.push({ a, b, tokens: m.coactivation.data[a * E + b] });
      }
      pairs.sort((p, q) => q.tokens - p.tokens || p.a - q.a || p.b - q.b);
      rows.push({
        layer: l,
        tokens: r.tokens,
        load: Array.from(m.counts),
        cv: m.cv,
        maxVio: m.maxVio,
        entropyNorm: m.entropyNorm,
        capacityFactor: cf,
        droppedFraction: capped(cf).droppedFraction,
        topCoactivation: pairs.slice(0, 5),
      });
      progress(`layer ${l}: routed ${r.tokens} tokens`);
    }
    if (values.plots !== undefined) {
      const plots: Record<string, Plot> = {
        "layer-load": layerLoadHeatmap(routings, {
          title: `${model.config.family}: load share per layer and expert`,
        }),
        "load": loadPlot(Object.fromEntries(layers.map((l, i) => [`layer ${l}`, routings[i]])), {
          title: `${model.config.family}: expert load`,
        }),
        "drop-vs-capacity": dropVsCapacityPlot(dropRows),
        "coactivation": coactivationPlot(routings[0], { title: `layer ${layers[0]}: expert co-activation` }),
      };
      // every plot rendered in memory first, then written all or nothing
      const files: PlotFile[] = [];
      for (const name of ROUTE_PLOTS) files.push(...await plotFiles(name, plots[name]));
      await writePlotFiles(values.plots, files, overwrite);
      progress(
        `plots (SVG, + .json specs): ${ROUTE_PLOTS.map((n) => `${values.plots}/${n}.svg`).join(", ")}; ` +
          "no PNG here: Plot.save to a .png path (needs --allow-ffi --allow-read --allow-env --allow-sys)",
      );
    }
    if (values.json) {
      console.log(JSON.stringify({ model: model.dir, family: model.config.family, layers: rows }, null, 2));
    } else {
      console.log(`${model.config.family}: E = ${model.config.experts}, k = ${model.config.topK}`);
      console.log("layer  tokens      cv  maxVio  entropy  dropped@cf  top co-activated pairs");
      for (const r of rows) {
        console.log(
          `${String(r.layer).padStart(5)}  ${String(r.tokens).padStart(6)}  ${r.cv.toFixed(3).padStart(6)}  ${
            r.maxVio.toFixed(3).padStart(6)
          }  ${r.entropyNorm.toFixed(3).padStart(7)}  ${
            (100 * r.droppedFraction).toFixed(1).padStart(6)
          } %@${cf}  ${r.topCoactivation.slice(0, 3).map((p) => `${p.a}+${p.b}:${p.tokens}`).join(" ")}`,
        );
      }
    }
  } finally {
    model.close();
  }
  return 0;
}

/**
 * Runs `inspect`, `route` or `compress` with the given arguments; returns the exit code (0 ok, 2 bad input,
 * with a one-line reason on stderr, followed by a hint to run with `--help` when the command line itself is
 * wrong).
 *
 * @example
 * ```ts
 * import { runModelCli } from "@moekit/moekit";
 * import assert from "node:assert/strict";
 * assert.equal(await runModelCli("inspect", ["/nonexistent-model"]), 2);
 * ```
 */
export async function runModelCli(command: string, args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (command === "inspect") return await runInspect(args);
    if (command === "route") return await runRoute(args);
    if (command === "compress") return await runCompress(args);
    throw new UsageError(`unknown command ${JSON.stringify(command)}; use inspect, route or compress`);
  } catch (e) {
    if (e instanceof UsageError) {
      const known = ["inspect", "route", "compress"].includes(command);
      console.error(usageErrorText(e.message, `deno run -A mod.ts${known ? ` ${command}` : ""}`));
      return 2;
    }
    if (e instanceof MoekitError) {
      console.error(`error: ${(e as Error).message.split("\n")[0]}`);
      return 2;
    }
    throw e;
  }
}

const COMPRESS_METHODS = ["prune", "merge", "svd", "delta", "rtn"] as const;
type CompressMethod = typeof COMPRESS_METHODS[number];

/** The options each method reads: another method's option is an error, not silently ignored. */
const METHOD_OPTIONS: Record<CompressMethod, readonly string[]> = {
  prune: ["keep", "prune-method"],
  merge: ["groups"],
  svd: ["ratio", "rank"],
  delta: ["ratio", "rank"],
  rtn: ["bits", "group-size"],
};

/** Throws when an option of another method is given, when --ratio and --rank are both given, or an unknown --prune-method. */
function checkMethodOptions(method: CompressMethod, values: Record<string, unknown>): void {
  const own = METHOD_OPTIONS[method];
  for (const name of new Set(Object.values(METHOD_OPTIONS).flat())) {
    if (values[name] !== undefined && !own.includes(name)) {
      throw new UsageError(
        `compress: --${name} does not apply to --method ${method} (its options: ${
          own.map((o) => `--${o}`).join(", ")
        })`,
      );
    }
  }
  if (values.ratio !== undefined && values.rank !== undefined) {
    throw new UsageError(`compress: give --ratio or --rank, not both`);
  }
  const pm = values["prune-method"];
  if (pm !== undefined && !(PRUNE_METHODS as readonly unknown[]).includes(pm)) {
    throw new UsageError(`compress: --prune-method ${JSON.stringify(pm)}; use ${PRUNE_METHODS.join(", ")}`);
  }
}

function intOption(v: string | undefined, name: string, fallback?: number, method?: string): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (v === undefined) {
    const N = name === "groups" ? "G" : "N";
    throw new UsageError(`compress: --${name} ${N} is required${method ? ` for --method ${method}` : ""}`);
  }
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    throw new UsageError(`compress: --${name} ${v ?? ""}: use an integer ≥ 1`);
  }
  return n;
}

/** Stored experts and a router-slot map from a compressed layer whose slots may share expert objects. */
function distinct(experts: readonly SwiGLUExpert[]): { experts: SwiGLUExpert[]; map?: number[] } {
  const seen = new Map<SwiGLUExpert, number>(), out: SwiGLUExpert[] = [];
  const map = experts.map((e) => {
    if (!seen.has(e)) {
      seen.set(e, out.length);
      out.push(e);
    }
    return seen.get(e)!;
  });
  return out.length === experts.length ? { experts: out } : { experts: out, map };
}

/** Compresses one layer with a moekit compression method: the edit to save and the report's compressed layer. */
function compressLayer(
  method: CompressMethod,
  layer: MoeLayer,
  x: Mat,
  o: {
    keep: number;
    pruneMethod: string;
    groups: number;
    ratio?: number;
    rank?: number;
    bits: number;
    groupSize: number;
  },
): { edit: LayerEdit; compressed: CompressedLayer; note: string } {
  const E = layer.router.experts;
  switch (method) {
    case "prune": {
      const p = pruneExperts(layer, x, { keep: o.keep, method: o.pruneMethod as "enumerate" });
      const keep = Array.from({ length: E }, (_, e) => e).filter((e) => !p.dropped.includes(e));
      return { edit: { keep }, compressed: p, note: `dropped [${p.dropped.join(", ")}]` };
    }
    case "merge": {
      const m = mergeExperts(layer, calibrate(layer, x), { numGroups: o.groups });
      const { experts, map } = distinct(m.layer.experts);
      return {
        edit: { experts, expertMap: map ?? experts.map((_, i) => i) },
        compressed: m,
        note: `${experts.length} merged experts`,
      };
    }
    case "svd": {
      const lr = svdLayer(layer, { ratio: o.ratio, rank: o.rank, randomized: true, seed: 0 });
      const slots = new Array<number>(E);
      const experts: StoredExpert[] = lr.factors.map((g, i) => {
        g.slots.forEach((s) => (slots[s] = i));
        const { b1, b2, b3 } = layer.experts[g.slots[0]];
        const fac = (l: { a: Mat; b: Mat }) => ({ kind: "lowrank" as const, a: l.a, b: l.b });
        return {
          w1: fac(g.w1),
          w3: fac(g.w3),
          w2: fac(g.w2),
          ...(b1 ? { b1 } : {}),
          ...(b3 ? { b3 } : {}),
          ...(b2 ? { b2 } : {}),
        };
      });
      const identity = experts.length === E && slots.every((s, i) => s === i);
      return {
        edit: { experts, ...(identity ? {} : { expertMap: slots }) },
        compressed: lr,
        note: `ranks ${lr.factors[0].w1.rank}/${lr.factors[0].w3.rank}/${lr.factors[0].w2.rank}`,
      };
    }
    case "rtn": {
      const { experts, map } = distinct(layer.experts);
      const q = (w: Mat) => quantizedMatrix(quantizeRTN(w, o.bits, o.groupSize));
      const stored: StoredExpert[] = experts.map((e) => ({ ...e, w1: q(e.w1), w3: q(e.w3), w2: q(e.w2) }));
      return {
        edit: { experts: stored, ...(map ? { expertMap: map } : {}) },
        compressed: rtnLayer(layer, o.bits, o.groupSize),
        note: `${o.bits}-bit, groups of ${o.groupSize}`,
      };
    }
    case "delta": {
      // deltaCompress exposes the reconstructed experts (base + low-rank deltas), written densely
      const dc = deltaCompress(layer, calibrate(layer, x), { ratio: o.ratio, rank: o.rank });
      const { experts, map } = distinct(dc.layer.experts);
      return {
        edit: { experts, ...(map ? { expertMap: map } : {}) },
        compressed: dc,
        note: `max weight error ${
          dc.maxWeightError.toExponential(2)
        } (written as dense reconstructed experts)`,
      };
    }
  }
}

async function runCompress(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    options: {
      method: { type: "string" },
      keep: { type: "string" },
      "prune-method": { type: "string" },
      groups: { type: "string" },
      ratio: { type: "string" },
      rank: { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string" },
      calibration: { type: "string" },
      name: { type: "string" },
      layers: { type: "string" },
      overwrite: { type: "boolean" },
      "out-shard-size": { type: "string" },
    },
  });
  if (positionals.length !== 2) throw new UsageError("compress: expected <model-dir> <out-dir>");
  const [modelDir, outDir] = positionals;
  const method = (values.method ?? "") as CompressMethod;
  if (values.method === undefined) {
    throw new UsageError(`compress: --method is required; use ${COMPRESS_METHODS.join(", ")}`);
  }
  if (!COMPRESS_METHODS.includes(method)) {
    throw new UsageError(
      `compress: --method ${JSON.stringify(values.method ?? "")}; use ${COMPRESS_METHODS.join(", ")}`,
    );
  }
  checkMethodOptions(method, values);
  if (!values.calibration) {
    throw new UsageError("compress: --calibration <file> is required (.npy or safetensors)");
  }
  const ratio = values.ratio === undefined ? undefined : Number(values.ratio);
  if (ratio !== undefined && !(ratio > 0 && ratio <= 1)) {
    throw new UsageError(`compress: --ratio ${values.ratio}: use a number in (0, 1]`);
  }
  const o = {
    keep: method === "prune" ? intOption(values.keep, "keep", undefined, "prune") : 0,
    pruneMethod: values["prune-method"] ?? "enumerate",
    groups: method === "merge" ? intOption(values.groups, "groups", undefined, "merge") : 0,
    ratio: ratio ?? (values.rank === undefined ? 0.25 : undefined),
    rank: values.rank === undefined ? undefined : intOption(values.rank, "rank"),
    bits: intOption(values.bits, "bits", 4),
    groupSize: intOption(values["group-size"], "group-size", 128),
  };
  if (o.bits > 8) throw new UsageError(`compress: --bits ${o.bits}: RTN supports 1 to 8 bits`);
  const shardBytes = values["out-shard-size"] === undefined ? undefined : parseSize(values["out-shard-size"]);
  const overwrite = values.overwrite ?? false;
  // everything is checked before the long work: the output folder, the model, the layers, the tokens
  await checkOutputFolder(outDir, { overwrite, inputs: [modelDir] });
  const model = await openMoeModel(modelDir);
  try {
    const { experts, topK, hidden } = model.config;
    if (method === "prune" && (o.keep < topK || o.keep > experts)) {
      throw new UsageError(`compress: --keep ${o.keep} must be in k..E = ${topK}..${experts}`);
    }
    if (method === "merge" && (o.groups < topK || o.groups > experts)) {
      throw new UsageError(`compress: --groups ${o.groups} must be in k..E = ${topK}..${experts}`);
    }
    const maxRank = Math.min(model.config.expertHidden, hidden);
    if (o.rank !== undefined && o.rank > maxRank) {
      throw new UsageError(
        `compress: --rank ${o.rank} exceeds min(f, d) = ${maxRank}, the largest rank an expert matrix has`,
      );
    }
    const layers = parseLayers(values.layers, model.config.moeLayers);
    const xs = await hiddenStates(values.calibration, layers, values.name);
    for (const [l, x] of xs) {
      if (x.cols !== hidden) {
        throw new MoekitError(
          `${values.calibration}: layer ${l} tokens are [${x.rows}, ${x.cols}]; the model has d = ${hidden}`,
        );
      }
    }
    const edits: Record<number, LayerEdit> = {};
    console.log("layer  method  relErr   routingAgree  top1Agree  bytesRatio  notes");
    for (const l of layers) {
      const t0 = performance.now();
      progress(`layer ${l}: reading experts, ${method}`);
      const layer = await model.layer(l), x = xs.get(l)!;
      const { edit, compressed, note } = compressLayer(method, layer, x, o);
      edits[l] = edit;
      const r = compressionReport(layer, compressed, x);
      console.log(
        `${String(l).padStart(5)}  ${method.padEnd(6)}  ${r.relativeError.toFixed(4)}  ${
          r.routingAgreement.toFixed(4).padStart(12)
        }  ${r.top1Agreement.toFixed(4).padStart(9)}  ${r.bytesRatio.toFixed(4).padStart(10)}  ${note}`,
      );
      progress(`layer ${l}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    let written = 0;
    const result = await saveMoeModel(model, outDir, {
      layers: edits,
      overwrite,
      shardBytes,
      onTensor: () => {
        if (++written % 500 === 0) progress(`writing: ${written} tensors`);
      },
    });
    progress(`wrote ${outDir} (${result.files.length} shard${result.files.length > 1 ? "s" : ""})`);
    console.log(
      result.transformersLoadable
        ? `${outDir}: written in the model's own layout (transformers loads it unchanged)`
        : `${outDir}: layers ${
          result.moekitLayers.join(", ")
        } in moekit's format (openMoeModel reads it; materialize() gives a plain checkpoint)`,
    );
  } finally {
    model.close();
  }
  return 0;
}
