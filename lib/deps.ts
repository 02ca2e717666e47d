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
/** Vega-Lite 5 (spec compiler) and Vega 5 (SVG renderer), loaded on the first plot render only. */
export const loadVega = () => Promise.all([import("npm:vega-lite@5.23.0"), import("npm:vega@5.33.0")]);
/** resvg (a native module) loads only when a PNG is asked for, so importing moekit needs no --allow-ffi. */
export const loadResvg = () => import("npm:@resvg/resvg-js@2.6.2");
