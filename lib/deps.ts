/**
 * The npm packages moekit's library code uses, with full versioned specifiers so that `mod.ts` works
 * when imported from a URL (an import map would not be applied there). Import them from here only.
 * @module
 */

export { CholeskyDecomposition, Matrix, SingularValueDecomposition } from "npm:ml-matrix@^6.15.1";
// @ts-types="npm:@types/ndarray@^1.0.14"
export { default as ndarray } from "npm:ndarray@^1.1.1";
export { munkres } from "npm:munkres@^2.0.4";
// @ts-types="npm:@types/js-yaml@^4.0.9"
import { CORE_SCHEMA, load } from "npm:js-yaml@^4.1.0";
/**
 * Parses YAML text with the YAML 1.2 core schema (no timestamps, no `yes`/`no` booleans; a repeated key is
 * an error). js-yaml, not the `yaml` package: that one reads the environment variables `LOG_TOKENS` and
 * `LOG_STREAM` on every parse, which fails in a Deno program run without `--allow-env`.
 */
export const parseYaml = (text: string): unknown => load(text, { schema: CORE_SCHEMA });
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
