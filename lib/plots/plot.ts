/**
 * A plot: a Vega-Lite v5 spec that renders inline in Jupyter (Deno kernel) and saves to .json, .svg or
 * .png by file extension.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { renderPng, renderSvg } from "./render.ts";

const VEGALITE_MIME = "application/vnd.vegalite.v5+json";

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * A Vega-Lite v5 plot.
 *
 * @example
 * ```ts
 * import { Plot } from "@moekit/moekit/plots";
 * import assert from "node:assert/strict";
 * const p = new Plot({
 *   data: { values: [{ e: 0, n: 3 }, { e: 1, n: 5 }] },
 *   mark: "bar",
 *   encoding: { x: { field: "e", type: "ordinal", title: "expert" }, y: { field: "n", type: "quantitative", title: "tokens" } },
 * });
 * assert.equal(p.spec.$schema, "https://vega.github.io/schema/vega-lite/v5.json");
 * const svg = await p.toSVG();
 * assert.ok(svg.startsWith("<svg") && svg.includes("expert"));
 * ```
 */
export class Plot {
  /** The Vega-Lite v5 spec (with `$schema`). */
  readonly spec: Record<string, unknown>;
  /** The font the last PNG was drawn with. */
  fontUsed: string | undefined;

  /** Wraps a Vega-Lite spec (the v5 `$schema` is added when missing). */
  constructor(spec: Record<string, unknown>) {
    this.spec = { $schema: "https://vega.github.io/schema/vega-lite/v5.json", ...spec };
  }

  /** Renders to an SVG document. */
  toSVG(): Promise<string> {
    return renderSvg(this.spec);
  }

  /** Renders to PNG bytes (`scale` × the spec's pixel size); needs a font and --allow-ffi. */
  async toPNG(scale = 2): Promise<Uint8Array> {
    const { png, font } = await renderPng(await this.toSVG(), scale);
    this.fontUsed = font;
    return png;
  }

  /** Saves by extension: `.json` (the spec), `.svg` or `.png`. */
  async save(path: string): Promise<void> {
    const ext = path.slice(path.lastIndexOf(".")).toLowerCase();
    if (ext === ".json") await Deno.writeTextFile(path, JSON.stringify(this.spec, null, 2));
    else if (ext === ".svg") await Deno.writeTextFile(path, await this.toSVG());
    else if (ext === ".png") await Deno.writeFile(path, await this.toPNG());
    else throw new MoekitError(`Plot.save(${JSON.stringify(path)}): use a .json, .svg or .png file name`);
  }

  /** The spec, so `JSON.stringify(plot)` gives the Vega-Lite JSON. */
  toJSON(): Record<string, unknown> {
    return this.spec;
  }

  /**
   * The Jupyter display bundle (Deno kernel): the Vega-Lite MIME type, with a PNG fallback when it can be
   * drawn. Never touches `Deno.jupyter`, so plots work the same outside the kernel.
   */
  async [Symbol.for("Jupyter.display")](): Promise<Record<string, unknown>> {
    const bundle: Record<string, unknown> = {
      [VEGALITE_MIME]: this.spec,
      "text/plain": `moekit plot: ${this.spec.title ?? "untitled"}`,
    };
    try {
      bundle["image/png"] = base64(await this.toPNG());
    } catch { /* no font or native module: the Vega-Lite bundle alone */ }
    return bundle;
  }
}
