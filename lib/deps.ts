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
