/**
 * Renders the README's plot gallery (PNG + SVG) from seeded runs, and formats the SVGs with `deno fmt`:
 *   deno task plots            (= deno run -A examples/plots.ts examples/plots)
 */

import {
  accessTrace,
  biasConvergencePlot,
  CACHE_POLICIES,
  cacheHitRatePlot,
  calibrate,
  capacityRouter,
  coactivationPlot,
  compressionPlot,
  compressionReport,
  deepseekV3Router,
  deltaCompress,
  dropCurve,
  dropVsCapacityPlot,
  layerLoadHeatmap,
  loadPlot,
  matrix,
  moeLayer,
  preGateRouter,
  randomExperts,
  rtnLayer,
  runBiasBalancing,
  simulateCache,
  switchRouter,
  topicStream,
  topKRouter,
} from "../mod.ts";
import { parseCommand } from "./flags.ts";

const USAGE =
  "usage: deno run -A examples/plots.ts [out-dir]   (re-renders the README gallery; default examples/plots)";
const out = parseCommand(USAGE, { help: { type: "boolean", short: "h" } }, 1).positionals[0] ??
  "examples/plots";
await Deno.mkdir(out, { recursive: true });
const stream = topicStream({ tokens: 2048, dim: 64, topics: 8, seed: 1 });
const x = stream.hidden, E = 64;
const w = matrix.randn(E, 64, { seed: 2, std: 0.25 });

const plots = {
  "load": loadPlot({
    "top-k (k 2)": topKRouter({ weight: w, k: 2 }).route(x),
    "switch (cf 1.25)": switchRouter({ weight: w, capacityFactor: 1.25 }).route(x),
    "deepseek-v3 (8 groups)": deepseekV3Router({ weight: w, k: 2, nGroup: 8, topkGroup: 4 }).route(x),
  }, { title: "expert load, E = 64 (dashed: balanced)" }),
  "layer-load": layerLoadHeatmap(
    Array.from(
      { length: 12 },
      (_, l) => topKRouter({ weight: matrix.randn(E, 64, { seed: 10 + l, std: 0.25 }), k: 8 }).route(x),
    ),
    { title: "load per layer and expert (12 layers, k = 8)" },
  ),
  "drop-vs-capacity": dropVsCapacityPlot(
    [
      ...dropCurve("switch (position)", (cf) => switchRouter({ weight: w, capacityFactor: cf }), x, [
        0.25,
        0.5,
        0.75,
        1,
        1.25,
        1.5,
        2,
        3,
      ]),
      ...dropCurve(
        "top-2 (probs)",
        (cf) => capacityRouter({ weight: w, capacityFactor: cf, policy: "probs" }),
        x,
        [0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3],
      ),
    ],
  ),
  "coactivation": coactivationPlot(
    topKRouter({ weight: matrix.randn(16, 64, { seed: 3, std: 0.3 }), k: 2 }).route(x),
  ),
  "bias-convergence": biasConvergencePlot(
    Object.fromEntries(
      [0.001, 0.005, 0.02].map((
        gamma,
      ) => [
        `γ = ${gamma}`,
        runBiasBalancing(deepseekV3Router({ weight: w, k: 4 }), Array(80).fill(x), { gamma }),
      ]),
    ),
  ),
  "cache-hit-rate": cacheHitRatePlot(
    (() => {
      const pre = preGateRouter({ layers: 4, dim: 64, experts: 8, k: 2, seed: 5 }).routeLayers(x);
      const trace = accessTrace(pre);
      return CACHE_POLICIES.flatMap((policy) =>
        [2, 4, 6, 8, 12, 16, 24].map((capacity) => ({
          policy,
          capacity,
          hitRate:
            simulateCache(trace, { capacity, policy, ...(policy === "lookahead" ? { horizon: 16 } : {}) })
              .hitRate,
        }))
      );
    })(),
    { title: "expert-cache hit rate, pre-gated routing (4 layers × 8 experts)" },
  ),
  "compression": compressionPlot(
    (() => {
      const layer = moeLayer({
        router: topKRouter({ weight: matrix.randn(8, 64, { seed: 6 }), k: 2 }),
        experts: randomExperts({ experts: 8, dim: 64, hidden: 128, seed: 7 }),
      });
      const calib = matrix.rowSlice(x, 0, 512),
        test = matrix.rowSlice(x, 512, 1024),
        stats = calibrate(layer, calib);
      const row = (method: string, c: ReturnType<typeof rtnLayer>) => {
        const r = compressionReport(layer, c, test);
        return { method, bytes: r.bytes[1], error: r.relativeError };
      };
      return [
        ...[8, 6, 4, 3, 2].map((b) => row("RTN g64", rtnLayer(layer, b, 64))),
        ...[0.5, 0.25, 0.1, 0.05].map((ratio) =>
          row("base + low-rank deltas", deltaCompress(layer, stats, { ratio }))
        ),
      ];
    })(),
  ),
};

const svgs: string[] = [];
for (const [name, plot] of Object.entries(plots)) {
  await plot.save(`${out}/${name}.png`);
  await plot.save(`${out}/${name}.svg`);
  svgs.push(`${out}/${name}.svg`);
}
// the SVGs are tracked in git: format them as `deno fmt` would, so `deno fmt --check` stays clean
const config = new URL("../deno.json", import.meta.url).pathname;
const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", "--config", config, ...svgs] })
  .output();
if (!fmt.success) {
  console.error(`deno fmt failed on the SVGs:\n${new TextDecoder().decode(fmt.stderr)}`);
  Deno.exit(1);
}
console.log(
  `wrote ${
    Object.keys(plots).length
  } plots (PNG + SVG, formatted) to ${out}/ with font ${plots.load.fontUsed}`,
);
