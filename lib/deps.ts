/**
 * The npm packages moekit's library code uses, with full versioned specifiers so that `mod.ts` works
 * when imported from a URL (an import map would not be applied there). Import them from here only.
 * @module
 */

export { CholeskyDecomposition, Matrix, SingularValueDecomposition } from "npm:ml-matrix@^6.15.1";
// @ts-types="npm:@types/ndarray@^1.0.14"
export { default as ndarray } from "npm:ndarray@^1.1.1";
export { munkres } from "npm:munkres@^2.0.4";
export { parse as parseYaml } from "npm:yaml@^2.9.1";
// The plotting packages are imported through specifiers held in variables: Deno pre-loads (downloads)
// every dynamic import it can read statically, so a literal `import("npm:vega…")` would fetch about 90
// packages on the first run of any program that imports moekit, plots or not.
const VEGA_LITE = "npm:vega-lite@5.23.0", VEGA = "npm:vega@5.33.0", RESVG = "npm:@resvg/resvg-js@2.6.2";
/** Vega-Lite 5 (spec compiler) and Vega 5 (SVG renderer), loaded on the first plot render only. */
export const loadVega = (): Promise<
  [typeof import("npm:vega-lite@5.23.0"), typeof import("npm:vega@5.33.0")]
> => Promise.all([import(VEGA_LITE), import(VEGA)]);
/** resvg (a native module) loads only when a PNG is asked for, so importing moekit needs no --allow-ffi. */
export const loadResvg = (): Promise<typeof import("npm:@resvg/resvg-js@2.6.2")> => import(RESVG);
