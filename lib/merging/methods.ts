/**
 * The merge-method registry (merging.md §3): every task-arithmetic method is a configuration of the one
 * generalized task-arithmetic engine; `linear`, `slerp`, `nuslerp` and `model_stock` interpolate.
 * @module
 */

import type { SparsifyMethod } from "./sparsify.ts";

/**
 * A registry entry.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit";
 * console.log(mergeMethods.ties); // { kind: "gta", sparsify: "magnitude", consensus: "sum", normalize: true, rescale: false, paper: "arXiv 2306.01708" }
 * ```
 */
export type MergeMethodConfig =
  | {
    readonly kind: "gta";
    readonly sparsify: SparsifyMethod | null;
    readonly consensus: "sum" | "count" | null;
    readonly normalize: boolean;
    readonly rescale: boolean;
    readonly paper: string;
  }
  | { readonly kind: "linear" | "slerp" | "nuslerp" | "model_stock"; readonly paper: string };

/**
 * All merge methods by their mergekit names.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit";
 * console.log(Object.keys(mergeMethods).length); // 12
 * ```
 */
export const mergeMethods: Readonly<Record<string, MergeMethodConfig>> = {
  task_arithmetic: {
    kind: "gta",
    sparsify: null,
    consensus: null,
    normalize: false,
    rescale: false,
    paper: "arXiv 2212.04089",
  },
  ties: {
    kind: "gta",
    sparsify: "magnitude",
    consensus: "sum",
    normalize: true,
    rescale: false,
    paper: "arXiv 2306.01708",
  },
  breadcrumbs: {
    kind: "gta",
    sparsify: "magnitude_outliers",
    consensus: null,
    normalize: false,
    rescale: false,
    paper: "arXiv 2312.06795",
  },
  breadcrumbs_ties: {
    kind: "gta",
    sparsify: "magnitude_outliers",
    consensus: "sum",
    normalize: false,
    rescale: false,
    paper: "arXiv 2312.06795",
  },
  dare_linear: {
    kind: "gta",
    sparsify: "random",
    consensus: null,
    normalize: false,
    rescale: true,
    paper: "arXiv 2311.03099",
  },
  dare_ties: {
    kind: "gta",
    sparsify: "random",
    consensus: "sum",
    normalize: false,
    rescale: true,
    paper: "arXiv 2311.03099",
  },
  della: {
    kind: "gta",
    sparsify: "della_magprune",
    consensus: "sum",
    normalize: true,
    rescale: true,
    paper: "arXiv 2406.11617",
  },
  della_linear: {
    kind: "gta",
    sparsify: "della_magprune",
    consensus: null,
    normalize: false,
    rescale: true,
    paper: "arXiv 2406.11617",
  },
  linear: { kind: "linear", paper: "arXiv 2203.05482" },
  slerp: { kind: "slerp", paper: "Shoemake 1985" },
  nuslerp: { kind: "nuslerp", paper: "mergekit" },
  model_stock: { kind: "model_stock", paper: "arXiv 2403.19522" },
};
