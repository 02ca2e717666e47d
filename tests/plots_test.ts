import assert from "node:assert/strict";
import {
  biasConvergencePlot,
  CACHE_POLICIES,
  cacheHitRatePlot,
  capacityRouter,
  coactivationPlot,
  compressionPlot,
  deepseekV3Router,
  dropCurve,
  dropVsCapacityPlot,
  layerLoadHeatmap,
  loadPlot,
  matrix,
  type Plot,
  pngFont,
  runBiasBalancing,
  simulateCache,
  switchRouter,
  topicStream,
  topKRouter,
} from "../mod.ts";

function allPlots(E: number): [string, Plot, string[]][] {
  const x = topicStream({ tokens: 512, dim: 16, seed: 1 }).hidden,
    w = matrix.randn(E, 16, { seed: 2, std: 0.5 });
  const r = topKRouter({ weight: w, k: 2 }).route(x);
  const layers = [3, 4, 5].map((s) =>
    topKRouter({ weight: matrix.randn(E, 16, { seed: s }), k: 2 }).route(x)
  );
  const steps = runBiasBalancing(deepseekV3Router({ weight: w, k: 2 }), Array(15).fill(x), { gamma: 0.01 });
  const trace = Array.from({ length: 200 }, (_, i) => (i * 7) % 13);
  return [
    ["load", loadPlot({ topk: r, switch: switchRouter({ weight: w }).route(x) }), [
      "expert",
      "share of assignments",
      "router",
    ]],
    ["layer-load", layerLoadHeatmap(layers), ["expert", "layer", "share"]],
    [
      "drop",
      dropVsCapacityPlot([
        ...dropCurve("switch", (cf) => switchRouter({ weight: w, capacityFactor: cf }), x, [0.25, 0.5, 1, 2]),
        ...dropCurve(
          "top-2 probs",
          (cf) => capacityRouter({ weight: w, capacityFactor: cf, policy: "probs" }),
          x,
          [0.25, 0.5, 1, 2],
        ),
      ]),
      ["capacity factor", "dropped fraction"],
    ],
    ["coactivation", coactivationPlot(r), ["expert", "share of tokens"]],
    ["bias", biasConvergencePlot({ "γ = 0.01": steps }), ["step", "MaxVio"]],
    [
      "cache",
      cacheHitRatePlot(
        CACHE_POLICIES.flatMap((policy) =>
          [2, 4, 8].map((capacity) => ({
            policy,
            capacity,
            hitRate: simulateCache(trace, { capacity, policy }).hitRate,
          }))
        ),
      ),
      ["cache size (experts)", "hit rate"],
    ],
    [
      "compression",
      compressionPlot([{ method: "svd", bytes: 1e5, error: 0.3 }, { method: "svd", bytes: 4e5, error: 0.1 }]),
      ["bytes", "relative output error"],
    ],
  ];
}

Deno.test("every plot renders to well-formed SVG and PNG with its axis titles (E = 16 and E = 256)", async () => {
  const font = pngFont();
  assert.match(font, /\.ttf$/);
  for (const E of [16, 256]) {
    for (const [name, plot, titles] of allPlots(E)) {
      const svg = await plot.toSVG();
      assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"), `${name}: an SVG document`);
      assert.ok(svg.length > 2000, `${name}: non-trivial SVG (${svg.length} chars)`);
      for (const t of titles) {
        assert.ok(svg.includes(`>${t}<`), `${name} (E ${E}): axis title "${t}" in the SVG`);
      }
      const png = await plot.toPNG(1);
      assert.deepEqual(
        Array.from(png.subarray(0, 8)),
        [137, 80, 78, 71, 13, 10, 26, 10],
        `${name}: PNG signature`,
      );
      const view = new DataView(png.buffer, png.byteOffset);
      const [w, h] = [view.getUint32(16), view.getUint32(20)];
      assert.ok(w > 100 && h > 80, `${name}: ${w}×${h} px`);
      assert.ok(png.length > 3000, `${name}: ${png.length} bytes of PNG`);
      assert.equal(plot.fontUsed, font);
    }
  }
});

Deno.test("large E keeps labels thin; plots save by extension; the Jupyter bundle carries Vega-Lite v5 and a PNG", async () => {
  const [, load] = allPlots(256)[0];
  assert.match(JSON.stringify(load.spec), /datum.value % 16 === 0/);
  const dir = await Deno.makeTempDir();
  for (const ext of ["json", "svg", "png"]) await load.save(`${dir}/load.${ext}`);
  assert.equal(
    JSON.parse(await Deno.readTextFile(`${dir}/load.json`)).$schema,
    "https://vega.github.io/schema/vega-lite/v5.json",
  );
  await assert.rejects(() => load.save(`${dir}/load.pdf`), /use a .json, .svg or .png/);
  const display = (load as unknown as Record<symbol, () => Promise<Record<string, unknown>>>)[
    Symbol.for("Jupyter.display")
  ];
  const bundle = await display.call(load);
  assert.deepEqual(bundle["application/vnd.vegalite.v5+json"], load.spec);
  assert.ok(
    typeof bundle["image/png"] === "string" && atob(bundle["image/png"] as string).startsWith("\x89PNG"),
  );
});

Deno.test("PNG without read permission names the missing permission, not a font to install", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { Plot, pngFont, pngPermissionsMissing } from "${
        new URL("../lib/plots/mod.ts", import.meta.url).href
      }";
try { pngFont(); } catch (e) { console.log((e as Error).message); }
console.log(pngPermissionsMissing().join(" "));
try { await new Plot({ mark: "bar" }).toPNG(); } catch (e) { console.log((e as Error).message); }
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-ffi", "--allow-sys", script],
      env: { NO_COLOR: "1" },
    }).output();
    const [font, missing, png] = new TextDecoder().decode(out.stdout).trim().split("\n");
    assert.match(font, /^no font for PNG text: reading font files is not allowed; run with --allow-read/);
    assert.doesNotMatch(font, /DejaVu/);
    assert.equal(missing, "--allow-read --allow-env");
    assert.match(
      png,
      /^PNG output needs --allow-read \(all of --allow-ffi --allow-read --allow-env --allow-sys/,
    );
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("deno task plots: the gallery's SVGs come out formatted (deno fmt --check), with no warnings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-plots-" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../examples/plots.ts", import.meta.url).pathname, dir],
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);
    assert.doesNotMatch(stderr, /punycode|DeprecationWarning/);
    const svgs = [...Deno.readDirSync(dir)].filter((f) => f.name.endsWith(".svg")).map((f) =>
      `${dir}/${f.name}`
    );
    assert.equal(svgs.length, 7);
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--check", "--config", new URL("../deno.json", import.meta.url).pathname, ...svgs],
    }).output();
    assert.equal(check.code, 0, new TextDecoder().decode(check.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
