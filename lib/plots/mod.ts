/**
 * Plots: Vega-Lite charts rendered to SVG/PNG and shown inline in Jupyter.
 * @module
 */

export * from "../core/mod.ts";
export * from "./plot.ts";
export * from "./charts.ts";
export { FONT_CANDIDATES, pngFont } from "./render.ts";
