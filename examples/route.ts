/**
 * moekit's first run: routes a seeded synthetic token stream (a Gaussian mixture of topics, through a
 * few MoE layers) with many routers and prints a comparison table and per-expert load bars.
 *
 *   deno run examples/route.ts                      # defaults, no permissions needed
 *   deno run examples/route.ts --router topk,switch --experts 32 --top-k 4 --json
 */

import { checkWorkSize, intFlag, parseFlags, usageError } from "./flags.ts";
import { checkPlotTargets, type PlotFile, plotFiles, writePlotFiles } from "./plot_files.ts";
// Only the areas the comparison needs load up front (routing + the MoE stack, the synthetic stream);
// the plots, and the Vega packages behind them, load only when plots are written.
import {
  balanceLoss,
  baseRouter,
  capacityRouter,
  deepseekV3Router,
  expertChoiceRouter,
  gshardRouter,
  hashRouter,
  type LoadMetrics,
  loadMetrics,
  type Mat,
  matrix,
  MoekitError,
  moeLayer,
  noisyTopKRouter,
  randomExperts,
  type RouteOptions,
  type Router,
  type RoutingResult,
  runBiasBalancing,
  runMoeStack,
  sinkhornRouter,
  switchRouter,
  topKRouter,
} from "../lib/moe/mod.ts";
import { topicStream } from "../lib/data/mod.ts";
// loading the kernels registers the WebAssembly (and native BLAS) gate backends the routers pick from
import { kernelInfo } from "../lib/kernels/mod.ts";

const USAGE = `usage: deno run examples/route.ts [options]

  --tokens N            tokens in the stream (default 4096)
  --experts E           experts per layer (default 16)
  --top-k K             choices per token for top-k routers (default 2)
  --layers L            MoE layers (default 4)
  --dim D               hidden size (default 64)
  --router LIST         comma-separated routers or "all" (default all):
                        {ROUTERS}
  --capacity-factor CF  capacity factor of switch and topk-cap (default 1.25); gshard and
                        expert-choice keep their own capacity
  --seed S              seed of the stream and the weights (default 0)
  --json                print JSON instead of tables
  --plots DIR           where plots go when writing is allowed (default moekit-plots):
                        deno run --allow-write=moekit-plots examples/route.ts        (SVG + JSON)
                        deno run --allow-write=moekit-plots {PNG_FLAGS} examples/route.ts
                                                                       (also PNG; or -A)
                        Existing files are never replaced unless --overwrite is given
  --overwrite           allow the plots to replace existing files
  --help                this text`;

interface Config {
  tokens: number;
  experts: number;
  k: number;
  layers: number;
  dim: number;
  cf: number;
  seed: number;
}

type RouterFactory = (gate: ReturnType<typeof matrix.randn>, c: Config) => {
  router: Router;
  options?: RouteOptions;
};

const FACTORIES: Record<string, RouterFactory> = {
  topk: (w, c) => ({ router: topKRouter({ weight: w, k: c.k }) }),
  "topk-raw": (w, c) => ({ router: topKRouter({ weight: w, k: c.k, normTopkProb: false }) }),
  switch: (w, c) => ({ router: switchRouter({ weight: w, capacityFactor: c.cf }) }),
  "topk-cap": (w, c) => ({
    router: capacityRouter({ weight: w, k: c.k, capacityFactor: c.cf, policy: "probs" }),
  }),
  gshard: (w) => ({ router: gshardRouter({ weight: w }) }),
  "deepseek-v3": (w, c) => ({
    router: deepseekV3Router({
      weight: w,
      k: c.k,
      ...(c.experts % 4 === 0 && c.k <= c.experts / 2 ? { nGroup: 4, topkGroup: 2 } : {}),
    }),
  }),
  "deepseek-v3-bal": (w, c) => {
    const router = deepseekV3Router({ weight: w, k: c.k });
    return { router, balance: true } as ReturnType<RouterFactory>;
  },
  "expert-choice": (w) => ({ router: expertChoiceRouter({ weight: w, capacityFactor: 2 }) }),
  noisy: (w, c) => ({
    router: noisyTopKRouter({ weight: w, k: c.k, seed: c.seed }),
    options: { training: true },
  }),
  hash: (_w, c) => ({ router: hashRouter({ experts: c.experts, vocabSize: 4096, seed: c.seed }) }),
  sinkhorn: (w, c) => ({ router: sinkhornRouter({ weight: w, k: c.k }), options: { training: true } }),
  base: (w) => ({ router: baseRouter({ weight: w, groupSize: 256 }), options: { training: true } }),
};

/** The plots written when writing is allowed, each as `<name>.json`, `.svg` and (when allowed) `.png`. */
const PLOT_NAMES = ["load", "layer-load", "coactivation"];

/** The flags PNG output needs besides --allow-write (the plots module says the same at run time). */
const PNG_FLAGS = "--allow-ffi --allow-read --allow-env --allow-sys";

function usage(): string {
  return USAGE.replace("{ROUTERS}", Object.keys(FACTORIES).join(", ")).replace("{PNG_FLAGS}", PNG_FLAGS);
}

function fail(message: string): never {
  return usageError(usage(), message);
}
const int = (values: Record<string, unknown>, name: string, def: number, min: number) =>
  intFlag(usage(), values, name, def, min);

function parse(): {
  config: Config;
  routers: string[];
  json: boolean;
  plots: string;
  overwrite: boolean;
  kGiven: boolean;
  cfGiven: boolean;
} {
  const v = parseFlags(usage(), {
    tokens: { type: "string" },
    experts: { type: "string" },
    "top-k": { type: "string" },
    layers: { type: "string" },
    dim: { type: "string" },
    router: { type: "string" },
    "capacity-factor": { type: "string" },
    plots: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
    overwrite: { type: "boolean" },
    help: { type: "boolean" },
  }) as Record<string, unknown>;
  const config: Config = {
    tokens: int(v, "tokens", 4096, 1),
    experts: int(v, "experts", 16, 2),
    k: int(v, "top-k", 2, 1),
    layers: int(v, "layers", 4, 1),
    dim: int(v, "dim", 64, 1),
    seed: int(v, "seed", 0, 0),
    cf: v["capacity-factor"] === undefined ? 1.25 : Number(v["capacity-factor"]),
  };
  if (!(config.cf >= 0) || !Number.isFinite(config.cf)) {
    fail(`--capacity-factor must be a number ≥ 0, got "${v["capacity-factor"]}"`);
  }
  if (config.k > config.experts) fail(`--top-k ${config.k} exceeds --experts ${config.experts}`);
  // the stream X [T,d], each layer's hidden states and its [T,E] logits and scores
  checkWorkSize(
    usage(),
    `--tokens ${config.tokens} × (--dim ${config.dim}, --experts ${config.experts})`,
    config.tokens * (3 * config.dim + 2 * config.experts),
  );
  const list = String(v.router ?? "all");
  const routers = list === "all" ? Object.keys(FACTORIES) : list.split(",").map((s) => s.trim());
  for (const r of routers) {
    if (!FACTORIES[r]) {
      fail(`--router: unknown router "${r}"; the routers are ${Object.keys(FACTORIES).join(", ")} (or all)`);
    }
  }
  return {
    config,
    routers,
    json: Boolean(v.json),
    plots: String(v.plots ?? "moekit-plots"),
    overwrite: Boolean(v.overwrite),
    kGiven: v["top-k"] !== undefined,
    cfGiven: v["capacity-factor"] !== undefined,
  };
}

interface Row {
  router: string;
  metrics: LoadMetrics;
  aux: number | undefined;
  /** why the router could not run (shown instead of its metrics) */
  note?: string;
  /** the router's k differs from --top-k, or it has its own capacity (shown below the table) */
  notes?: string[];
}

function sumMetrics(results: RoutingResult[]): LoadMetrics {
  // pool the layers: one routing result with all layers' assignments
  const first = results[0];
  const pooled: RoutingResult = {
    ...first,
    tokens: results.reduce((s, r) => s + r.tokens, 0),
    indices: Int32Array.from(results.flatMap((r) => Array.from(r.indices))),
    weights: Float32Array.from(results.flatMap((r) => Array.from(r.weights))),
    scores: Float32Array.from(results.flatMap((r) => Array.from(r.scores))),
    keep: first.keep ? Uint8Array.from(results.flatMap((r) => Array.from(r.keep!))) : undefined,
    logits: undefined,
  };
  return loadMetrics(pooled);
}

async function main(): Promise<void> {
  const { config: c, routers, json, plots, overwrite, kGiven, cfGiven } = parse();
  const plotWriter = json ? undefined : await plotsAllowed(plots, overwrite);
  const stream = topicStream({ tokens: c.tokens, dim: c.dim, topics: 8, seed: c.seed });
  const gates = Array.from(
    { length: c.layers },
    (_, l) => matrix.randn(c.experts, c.dim, { seed: c.seed * 1000 + l + 1, std: 1 / Math.sqrt(c.dim) * 2 }),
  );
  // The backbone: an L-layer Mixtral-style MoE stack; every router then routes each layer's input.
  const stack = gates.map((w, l) =>
    moeLayer({
      router: topKRouter({ weight: w, k: Math.min(2, c.experts) }),
      experts: randomExperts({
        experts: c.experts,
        dim: c.dim,
        hidden: c.dim,
        seed: c.seed * 1000 + 500 + l,
      }),
    })
  );
  const started = performance.now();
  const { inputs } = runMoeStack(stack, stream.hidden);
  const rows: Row[] = [];
  for (const name of routers) {
    const results: RoutingResult[] = [];
    let note: string | undefined;
    try {
      for (let l = 0; l < c.layers; l++) {
        const made = FACTORIES[name](gates[l], c) as ReturnType<RouterFactory> & { balance?: boolean };
        if (made.balance) {
          // aux-loss-free balancing: 30 bias updates on this layer's stream before measuring
          runBiasBalancing(made.router as Router & { bias: Float32Array }, Array(30).fill(inputs[l]), {
            gamma: 0.01,
          });
        }
        results.push(
          made.router.route(inputs[l], { ...made.options, tokenIds: stream.tokenIds, returnLogits: true }),
        );
      }
    } catch (e) {
      if (!(e instanceof MoekitError)) throw e;
      note = e.message;
    }
    if (note) {
      rows.push({ router: name, metrics: undefined as never, aux: undefined, note });
      continue;
    }
    let aux: number | undefined;
    try {
      // expert choice has no aux loss by design (k = E slots per token)
      aux = results[0].logits && name !== "expert-choice" ? balanceLoss(results) : undefined;
    } catch {
      aux = undefined;
    }
    // routers with a fixed k by design (Switch top-1, GShard top-2, expert choice, hash, BASE) say so
    // when --top-k asked for something else, instead of silently routing with their own k
    const k = results[0].k;
    const kNote = kGiven && k !== c.k
      ? name === "expert-choice"
        ? `expert choice: each expert picks its tokens (${k} slots per token); --top-k ${c.k} does not apply`
        : `${name} routes top-${k} by design; --top-k ${c.k} does not apply`
      : undefined;
    // --capacity-factor sets the token-choice capacity ceil(k·T·cf/E) of switch and topk-cap; GShard's
    // capacity (2·ceil(T/E)) has no factor, and expert choice's c (C = round(c·T/E) tokens per expert,
    // about k·cf in token-choice terms) means something else: both keep their own, and say so
    const cap = results[0].capacity;
    const cfNote = !cfGiven
      ? undefined
      : name === "gshard"
      ? `gshard has its own capacity, 2·ceil(T/E) = ${cap} slots per expert; --capacity-factor ${c.cf} does not apply`
      : name === "expert-choice"
      ? `expert choice has its own capacity factor, c = 2 (each expert takes round(c·T/E) = ${cap} tokens); ` +
        `--capacity-factor ${c.cf} does not apply`
      : undefined;
    const notes = [kNote, cfNote].filter((n) => n !== undefined);
    rows.push({ router: name, metrics: sumMetrics(results), aux, ...(notes.length ? { notes } : {}) });
  }
  const seconds = (performance.now() - started) / 1000;
  if (json) {
    console.log(JSON.stringify(
      {
        config: c,
        backend: kernelInfo().backend,
        seconds,
        routers: rows.map((r) =>
          r.note ? { router: r.router, skipped: r.note } : {
            router: r.router,
            ...(r.notes ? { note: r.notes.join("; ") } : {}),
            cv: r.metrics.cv,
            maxVio: r.metrics.maxVio,
            entropyNorm: r.metrics.entropyNorm,
            droppedFraction: r.metrics.droppedFraction,
            auxLoss: r.aux ?? null,
            counts: Array.from(r.metrics.counts),
          }
        ),
      },
      null,
      2,
    ));
    return;
  }
  printTables(c, rows, seconds);
  if (plotWriter) await savePlots(plotWriter, rows, inputs, stack.map((l) => l.router), c);
  else printPlotHint(plots);
}

const SPARK = "▁▂▃▄▅▆▇█";

function printTables(c: Config, rows: Row[], seconds: number): void {
  console.log(
    `moekit routing comparison — ${c.tokens} tokens × ${c.layers} layers, d = ${c.dim}, E = ${c.experts}, ` +
      `k = ${c.k}, cf = ${c.cf}, seed ${c.seed} (${seconds.toFixed(2)} s, ${kernelInfo().backend} backend)\n`,
  );
  const head = [
    "router",
    "load CV",
    "MaxVio",
    "entropy",
    "dropped %",
    "aux loss",
    `per-expert load (pooled over layers${
      c.experts > 64 ? `; ${Math.ceil(c.experts / 64)} experts per character` : ""
    })`,
  ];
  const body = rows.map((r) => {
    if (r.note) return [r.router, "-", "-", "-", "-", "-", `skipped: ${r.note}`];
    const m = r.metrics;
    // one character per expert, or per bucket of experts (their total) beyond 64 experts
    const per = Math.ceil(m.counts.length / 64);
    const loads = Array.from(
      { length: Math.ceil(m.counts.length / per) },
      (_, b) => m.counts.slice(b * per, (b + 1) * per).reduce((a: number, v: number) => a + v, 0),
    );
    const max = Math.max(...loads);
    const spark = loads.map((v) => SPARK[max > 0 ? Math.min(7, Math.floor((v / max) * 7.999)) : 0]).join("");
    return [
      r.router,
      m.cv.toFixed(3),
      m.maxVio.toFixed(3),
      m.entropyNorm.toFixed(3),
      (100 * m.droppedFraction).toFixed(1),
      r.aux === undefined ? "-" : r.aux.toFixed(3),
      spark,
    ];
  });
  // a skipped router's note runs past the table: it does not widen the last column
  const measured = body.filter((_, r) => !rows[r].note);
  const widths = head.map((h, i) =>
    Math.max(h.length, ...(i === 6 ? measured : body).map((b) => b[i].length))
  );
  const line = (cells: string[]) =>
    cells.map((s, i) => (i === 0 ? s.padEnd(widths[i]) : i === 6 ? s : s.padStart(widths[i]))).join("  ");
  console.log(line(head));
  console.log(widths.map((w) => "─".repeat(w)).join("  "));
  for (const b of body) console.log(line(b));
  console.log(
    "\nentropy = normalised load entropy (1 = balanced); aux loss = Megatron/Switch scale (1 = balanced)",
  );
  for (const r of rows) for (const note of r.notes ?? []) console.log(`note: ${note}`);
  const first = rows.find((r) => !r.note);
  if (!first) return;
  console.log(
    `\nper-expert load, ${first.router} (share of kept assignments; │ = balanced share ${
      (100 / c.experts).toFixed(1)
    } %)`,
  );
  const fr = first.metrics.fraction, maxF = Math.max(...fr), width = 40;
  const balancedCol = Math.round((1 / c.experts / maxF) * width);
  // up to 32 experts: all in order; more: the 12 busiest and the 6 idlest
  const order = Array.from({ length: c.experts }, (_, e) => e);
  const shown = c.experts <= 32
    ? order
    : [...order.sort((a, b) => fr[b] - fr[a] || a - b).slice(0, 12), -1, ...order.slice(-6)];
  for (const e of shown) {
    if (e < 0) {
      console.log(`  … ${c.experts - 18} experts in between`);
      continue;
    }
    const n = Math.round((fr[e] / maxF) * width);
    const bar = Array.from({ length: width + 1 }, (_, i) => (i < n ? "█" : i === balancedCol ? "│" : " "))
      .join("");
    console.log(`  e${String(e).padStart(3, "0")} ${bar} ${(100 * fr[e]).toFixed(1).padStart(5)} %`);
  }
}

await main();

interface PlotWriter {
  dir: string;
  overwrite: boolean;
  /** why no PNG is written ("" when it is) */
  pngProblem: string;
  plotsModule: typeof import("../lib/plots/mod.ts");
}

/**
 * Before any work: when writing to `dir` is allowed, loads the plots module and stops (exit 2) if a plot
 * file exists there and `--overwrite` is not given; returns nothing when writing there is not allowed.
 */
async function plotsAllowed(dir: string, overwrite: boolean): Promise<PlotWriter | undefined> {
  if (Deno.permissions.querySync({ name: "write", path: dir }).state !== "granted") return undefined;
  const plotsModule = await import("../lib/plots/mod.ts");
  const missing = plotsModule.pngPermissionsMissing();
  const pngProblem = missing.length ? `${missing.join(" ")} missing (PNG needs ${PNG_FLAGS}, or -A)` : "";
  const exts = pngProblem ? ["json", "svg"] : ["json", "svg", "png"];
  checkPlotTargets(dir, PLOT_NAMES.flatMap((n) => exts.map((e) => `${n}.${e}`)), overwrite);
  return { dir, overwrite, pngProblem, plotsModule };
}

/** Says which flags save the plots (when writing to `dir` is not allowed). */
function printPlotHint(dir: string): void {
  console.log(
    `\nplots: run with --allow-write=${dir} to save them as SVG + JSON; for PNG too:\n` +
      `  deno run --allow-write=${dir} ${PNG_FLAGS} examples/route.ts` +
      (dir === "moekit-plots" ? "" : ` --plots ${dir}`) +
      "\n(with Deno from npm, as in the README: `npx -y deno@2.9.6 run …` in place of `deno run …`)",
  );
}

/** Renders the load plots in memory, then writes them all or nothing (existing files kept). */
async function savePlots(
  w: PlotWriter,
  rows: Row[],
  inputs: Mat[],
  stackRouters: Router[],
  c: Config,
): Promise<void> {
  const { coactivationPlot, layerLoadHeatmap, loadPlot } = w.plotsModule;
  const measured = Object.fromEntries(rows.filter((r) => !r.note).map((r) => [r.router, r.metrics]));
  const layers = inputs.map((x, l) => stackRouters[l].route(x));
  const plots = [
    loadPlot(measured, { title: `expert load per router (${c.tokens} tokens × ${c.layers} layers)` }),
    layerLoadHeatmap(layers, { title: "top-k backbone: load per layer and expert" }),
    coactivationPlot(layers[0], { title: "layer 0 expert co-activation" }),
  ];
  const files: PlotFile[] = [];
  let pngProblem = w.pngProblem;
  for (const [i, plot] of plots.entries()) {
    files.push(...await plotFiles(PLOT_NAMES[i], plot));
    if (pngProblem) continue;
    try {
      files.push([`${PLOT_NAMES[i]}.png`, await plot.toPNG()]);
    } catch (e) {
      if (!(e instanceof MoekitError)) throw e;
      pngProblem = e.message; // e.g. no font installed: say so once, keep the SVGs
    }
  }
  const written = await writePlotFiles(w.dir, files, w.overwrite);
  console.log(
    `\nplots written to ${w.dir}/: ${written.join(", ")}${pngProblem ? `\n  no PNG: ${pngProblem}` : ""}`,
  );
}
