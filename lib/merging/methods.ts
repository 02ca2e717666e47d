/**
 * The merge-method registry. Each entry is the one place that knows about its method (as mergekit's
 * `MergeMethod` classes are): its parameters (name, type, range, allowed values, default, per model or
 * global), its variants (which framework's semantics each reproduces), whether it needs a base model, the
 * rules between its parameters, and the code that merges one tensor. The engine ({@link merge}), the
 * config loader and the checkpoint planner only read these declarations.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import type { Tensor } from "../io/tensor.ts";
import { gtaMethod } from "./gta.ts";
import { linearMethod, modelStockMethod, nuslerpMethod, slerpMethod } from "./interpolate.ts";
import { checkParamValue, type MergeParams, type ModelParams, type ParamSpec } from "./params.ts";
import type { MergeOptions } from "./merge.ts";

/**
 * A variant of a method: whose semantics it reproduces.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * assert.deepEqual(mergeMethods.ties.variants.map((v) => v.name), ["mergekit", "peft", "paper"]);
 * ```
 */
export interface MergeVariant {
  /** The value of the `semantics` parameter. */
  readonly name: "mergekit" | "peft" | "paper";
  /** What it reproduces. */
  readonly reproduces: string;
}

/**
 * What a method's `run` receives: validated parameters, the base (when the method takes one) and the
 * models' data, all of the base's length (or of the first model's when there is no base).
 *
 * @example
 * ```ts
 * import { type MethodInput } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const size = (i: MethodInput) => i.shape.reduce((a, b) => a * b, 1);
 * assert.equal(size({ shape: [2, 3], models: [], params: {}, seed: 0 }), 6);
 * ```
 */
export interface MethodInput {
  /** The base tensor's data, if any. */
  readonly base?: Float32Array | Float64Array;
  /** Shape of the output. */
  readonly shape: readonly number[];
  /** The usable models in config order (`index`: position in the caller's list). */
  readonly models: readonly {
    readonly data: Float32Array | Float64Array;
    readonly params: ModelParams;
    readonly index: number;
    /** The data may be overwritten. */
    readonly owned?: boolean;
  }[];
  /** Global parameters (validated; defaults not filled in). */
  readonly params: MergeParams;
  /** Tensor name (seeds random draws, names errors). */
  readonly name?: string;
  /** Seed of random draws. */
  readonly seed: number;
  /** Array type of the result (`"f32"`: a Float32Array, rounded once per entry). Default `"f64"`. */
  readonly output?: "f64" | "f32";
  /** The base's data may be overwritten (a float32 result may be written into it). */
  readonly baseOwned?: boolean;
  /** The data is one block of a larger tensor ({@link MergeOptions.block}). */
  readonly block?: MergeOptions["block"];
}

/**
 * A registry entry.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const ties = mergeMethods.ties;
 * assert.equal(ties.base, "required");
 * assert.ok(!ties.parameters.some((p) => p.name === "gamma")); // gamma is Breadcrumbs'
 * ```
 */
export interface MergeMethod {
  /** The mergekit name. */
  readonly name: string;
  /** Where it comes from. */
  readonly paper: string;
  /** One line on what it does. */
  readonly summary: string;
  /** Whether a base model is required, optional, or not used. */
  readonly base: "required" | "optional" | "none";
  /** How many models it merges (besides the base). */
  readonly models: { readonly min: number; readonly max?: number };
  /**
   * Whether a large tensor can be merged in blocks of entries ({@link MergeOptions.block}):
   * `"elementwise"` (each entry on its own), `"cuts"` (per-tensor quantities — magnitude thresholds, a
   * rescale factor, SLERP's angle — computed first by a streaming pass over the blocks), or `false`
   * (needs the whole tensor: per-row angles, per-row ranks, several passes of norms).
   */
  readonly blockwise: "elementwise" | "cuts" | false;
  /** Every parameter it takes (a `semantics` parameter lists the variants). */
  readonly parameters: readonly ParamSpec[];
  /** Its variants; the first is the default. */
  readonly variants: readonly MergeVariant[];
  /**
   * Rules between parameters and on the number of models, after every value passed its declaration.
   * `label(name, i)` names a parameter (of model i) in errors.
   */
  check(
    models: readonly ModelParams[],
    params: MergeParams,
    label: (name: string, model?: number) => string,
  ): void;
  /** Merges one tensor. */
  run(input: MethodInput): Tensor;
}

/**
 * All merge methods by their mergekit names.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * assert.equal(Object.keys(mergeMethods).length, 13);
 * assert.equal(mergeMethods.dare_ties.parameters.find((p) => p.name === "rescale")?.default, true);
 * ```
 */
export const mergeMethods: Readonly<Record<string, MergeMethod>> = Object.fromEntries(
  [
    gtaMethod({
      name: "task_arithmetic",
      paper: "arXiv 2212.04089",
      summary: "base + Σ weight·task vector",
      sparsify: null,
      consensus: null,
      normalize: false,
      rescale: false,
      variants: ["mergekit", "peft"],
    }),
    gtaMethod({
      name: "ties",
      paper: "arXiv 2306.01708",
      summary: "magnitude pruning, sign election, mean over the agreeing models",
      sparsify: "magnitude",
      consensus: "sum",
      normalize: true,
      rescale: false,
      variants: ["mergekit", "peft", "paper"],
    }),
    gtaMethod({
      name: "magnitude_prune",
      paper: "PEFT",
      summary: "PEFT's Σ weight·magnitude-pruned task vector (no election)",
      sparsify: "magnitude",
      consensus: null,
      normalize: false,
      rescale: false,
      variants: ["peft"],
    }),
    gtaMethod({
      name: "breadcrumbs",
      paper: "arXiv 2312.06795",
      summary: "drop the largest (gamma) and the smallest entries, keep density",
      sparsify: "magnitude_outliers",
      consensus: null,
      normalize: false,
      rescale: false,
      variants: ["mergekit", "paper"],
    }),
    gtaMethod({
      name: "breadcrumbs_ties",
      paper: "arXiv 2312.06795",
      summary: "Breadcrumbs pruning with TIES' sign election",
      sparsify: "magnitude_outliers",
      consensus: "sum",
      normalize: false,
      rescale: false,
      variants: ["mergekit", "paper"],
    }),
    gtaMethod({
      name: "dare_linear",
      paper: "arXiv 2311.03099",
      summary: "random drop with rescaling, weighted sum",
      sparsify: "random",
      consensus: null,
      normalize: false,
      rescale: true,
      variants: ["mergekit", "peft"],
    }),
    gtaMethod({
      name: "dare_ties",
      paper: "arXiv 2311.03099",
      summary: "random drop with rescaling, sign election",
      sparsify: "random",
      consensus: "sum",
      normalize: false,
      rescale: true,
      variants: ["mergekit", "peft"],
    }),
    gtaMethod({
      name: "della",
      paper: "arXiv 2406.11617",
      summary: "magnitude-ranked random drop with rescaling, sign election",
      sparsify: "della_magprune",
      consensus: "sum",
      normalize: true,
      rescale: true,
      variants: ["mergekit"],
    }),
    gtaMethod({
      name: "della_linear",
      paper: "arXiv 2406.11617",
      summary: "magnitude-ranked random drop with rescaling, weighted sum",
      sparsify: "della_magprune",
      consensus: null,
      normalize: false,
      rescale: true,
      variants: ["mergekit"],
    }),
    linearMethod,
    slerpMethod,
    nuslerpMethod,
    modelStockMethod,
  ].map((m) => [m.name, m]),
);

/**
 * Looks a method up; an unknown name is an `OptionError` listing the known ones.
 *
 * @example
 * ```ts
 * import { mergeMethod, OptionError } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * assert.equal(mergeMethod("ties").name, "ties");
 * assert.throws(() => mergeMethod("dare-ties"), OptionError);
 * ```
 */
export function mergeMethod(name: string): MergeMethod {
  const m = Object.hasOwn(mergeMethods, name) ? mergeMethods[name] : undefined;
  if (!m) throw new OptionError("merge_method", name, `use one of ${Object.keys(mergeMethods).join(", ")}`);
  return m;
}

/**
 * Validates parameters against a method's declarations: every given parameter is declared (in the right
 * scope), has the declared type, lies in the declared range or set, required ones are present, and the
 * method's own rules hold. Throws an `OptionError` naming the parameter (via `label`) and what is
 * allowed. Used by {@link merge}, the config loader and the checkpoint planner, before any tensor is read.
 *
 * @example
 * ```ts
 * import { mergeMethods, OptionError, validateMergeParams } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * assert.throws(
 *   () => validateMergeParams(mergeMethods.ties, { consensus: "bogus" }, [{ weight: 1 }]),
 *   (e) => e instanceof OptionError && /"sum", "count"/.test(e.message),
 * );
 * assert.throws(() => validateMergeParams(mergeMethods.ties, {}, [{ weight: 1, gamma: 0.1 }]), /takes no per-model parameter "gamma"/);
 * ```
 */
export function validateMergeParams(
  method: MergeMethod,
  params: MergeParams | Readonly<Record<string, unknown>>,
  models: readonly (ModelParams | Readonly<Record<string, unknown>>)[],
  label: (name: string, model?: number) => string = (
    k,
    i,
  ) => (i === undefined ? `params.${k}` : `models[${i}].${k}`),
): void {
  const check = (scope: "model" | "global", given: Readonly<Record<string, unknown>>, i?: number) => {
    const specs = method.parameters.filter((p) => p.scope === scope);
    for (const [k, v] of Object.entries(given)) {
      if (v === undefined) continue;
      const spec = specs.find((p) => p.key === k);
      if (!spec) {
        const other = method.parameters.find((p) => p.key === k);
        throw new OptionError(
          label(k, i),
          v instanceof Uint8Array ? "a mask" : v,
          other
            ? `${k} is a ${other.scope === "model" ? "per-model" : "global"} parameter of ${method.name}`
            : `${method.name} takes no ${
              scope === "model" ? "per-model" : "global"
            } parameter "${k}"; it takes ${specs.map((p) => p.key).join(", ") || "none"}`,
        );
      }
      checkParamValue(spec, v, label(spec.key, i), method.name);
    }
    for (const spec of specs) {
      if (spec.required && given[spec.key] === undefined) {
        throw new OptionError(
          label(spec.key, i),
          undefined,
          `${method.name} needs ${
            spec.key === "weight" ? "a weight for every model" : spec.name
          } (${spec.description}${spec.min !== undefined ? `, in [${spec.min}, ${spec.max}]` : ""})`,
        );
      }
    }
  };
  check("global", params as Readonly<Record<string, unknown>>);
  models.forEach((m, i) => check("model", m as Readonly<Record<string, unknown>>, i));
  checkModelCount(method, models.length);
  method.check(models as readonly ModelParams[], params as MergeParams, label);
}

/** Throws unless `count` models (besides the base) are within what the method merges. */
export function checkModelCount(method: MergeMethod, count: number, tensor?: string): void {
  const { min, max } = method.models;
  if (count < min || (max !== undefined && count > max)) {
    const range = max === undefined ? `at least ${min}` : min === max ? `exactly ${min}` : `${min} to ${max}`;
    throw new MoekitError(
      `${method.name} merges ${range} model${min === 1 && (max ?? 1) === 1 ? "" : "s"}${
        method.base === "required"
          ? " besides the base"
          : method.base === "optional"
          ? " (plus an optional base)"
          : ""
      }, got ${count}${tensor ? ` for ${tensor}` : ""}`,
    );
  }
}
