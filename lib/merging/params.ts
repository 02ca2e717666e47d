/**
 * Merge parameters: the types of the values a merge takes, the declaration each registry entry makes of
 * its parameters (name, type, range, allowed values, default, per model or global), and the one
 * validation routine the engine, the config loader and the CLI share.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { f16Bits, f16ToNumber } from "../io/dtype.ts";

/**
 * Per-model parameters (mergekit names). Which ones a method takes is declared by its registry entry
 * ({@link MergeMethod.parameters}).
 *
 * @example
 * ```ts
 * import { type ModelParams } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const p: ModelParams = { weight: 1, density: 0.5 };
 * assert.equal(p.density, 0.5);
 * ```
 */
export interface ModelParams {
  /** Multiplies the (sparsified) task vector before the election. */
  readonly weight?: number;
  /** Fraction kept, in [0, 1]. Default 1. */
  readonly density?: number;
  /** Breadcrumbs: fraction of entries with the largest magnitude removed. Default 0.01. */
  readonly gamma?: number;
  /** DELLA: half-width of the keep-probability range. Default 0.15. */
  readonly epsilon?: number;
  /** DARE/DELLA keep mask for this model and tensor (1 = keep). */
  readonly mask?: Uint8Array;
}

/**
 * Global parameters (mergekit names, plus moekit's variants). Which ones a method takes is declared by
 * its registry entry.
 *
 * @example
 * ```ts
 * import { type MergeParams } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const p: MergeParams = { normalize: false, lambda: 0.5 };
 * assert.equal(p.lambda, 0.5);
 * ```
 */
export interface MergeParams {
  /** Divide by the divisor. Default: per method. */
  readonly normalize?: boolean;
  /** Rescale sparsified vectors. Default: per method. */
  readonly rescale?: boolean;
  /** Scale mixed after normalisation. Default 1. */
  readonly lambda?: number;
  /** Sign election: `"sum"` or `"count"`. Default: per method. */
  readonly consensus?: "sum" | "count";
  /** Norm matched by `rescale`: `"l1"` (default), `"l2"`, `"linf"`, `"inverse_density"` or `"none"`. */
  readonly rescaleNorm?: "l1" | "l2" | "linf" | "inverse_density" | "none";
  /** Reproduce mergekit's Breadcrumbs `nTop = 0` zeroing. Default false. */
  readonly mergekitCompat?: boolean;
  /** The variant: `"mergekit"`, `"peft"` or `"paper"`, as the method declares. Default: its first. */
  readonly semantics?: "mergekit" | "peft" | "paper";
  /** slerp interpolation factor (0 = base). */
  readonly t?: number;
  /** Memory-only in mergekit; accepted and ignored. */
  readonly int8_mask?: boolean;
  /** nuslerp: one angle for the whole tensor. Default true. */
  readonly nuslerp_flatten?: boolean;
  /** nuslerp without flattening: one angle per column (true) or per row (false). Default false. */
  readonly nuslerp_row_wise?: boolean;
  /** model_stock per-row mode (not supported: only false). */
  readonly filter_wise?: boolean;
  /** Round to this dtype after every operation (mergekit's low-precision arithmetic). Default: none. */
  readonly workDtype?: "bf16" | "f16" | "f32";
}

/**
 * A parameter's declaration in a registry entry.
 *
 * @example
 * ```ts
 * import { mergeMethods } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const density = mergeMethods.ties.parameters.find((p) => p.name === "density")!;
 * assert.deepEqual([density.scope, density.min, density.max, density.default], ["model", 0, 1, 1]);
 * ```
 */
export interface ParamSpec {
  /** The name in configs (mergekit's). */
  readonly name: string;
  /** The key in {@link ModelParams} / {@link MergeParams} (differs for moekit's camelCase options). */
  readonly key: string;
  /** Per model or global. */
  readonly scope: "model" | "global";
  /** Value type; `"mask"` is API-only (a `Uint8Array`). */
  readonly type: "number" | "boolean" | "enum" | "mask";
  /** Inclusive range of numbers. */
  readonly min?: number;
  /** Inclusive range of numbers. */
  readonly max?: number;
  /** Allowed values of enums (and of restricted booleans). */
  readonly values?: readonly (string | boolean)[];
  /** Default (absent: none, or required). */
  readonly default?: number | boolean | string;
  /** Must be given. */
  readonly required?: boolean;
  /** What it does. */
  readonly description: string;
}

/** A parameter declaration with some fields overridden (defaults that differ per method). */
export function param(base: ParamSpec, over: Partial<ParamSpec> = {}): ParamSpec {
  return { ...base, ...over };
}

/** The declarations of the parameters moekit knows, by config name; methods pick from these. */
export const PARAMS = {
  weight: {
    name: "weight",
    key: "weight",
    scope: "model",
    type: "number",
    required: true,
    description: "multiplies the model's (sparsified) task vector",
  },
  density: {
    name: "density",
    key: "density",
    scope: "model",
    type: "number",
    min: 0,
    max: 1,
    default: 1,
    description: "fraction of entries kept; 1 = no pruning",
  },
  gamma: {
    name: "gamma",
    key: "gamma",
    scope: "model",
    type: "number",
    min: 0,
    max: 1,
    default: 0.01,
    description: "fraction of entries with the largest magnitude removed",
  },
  epsilon: {
    name: "epsilon",
    key: "epsilon",
    scope: "model",
    type: "number",
    min: 0,
    max: 1,
    default: 0.15,
    description: "half-width of the keep-probability range (0 < density ± epsilon < 1)",
  },
  mask: {
    name: "mask",
    key: "mask",
    scope: "model",
    type: "mask",
    description: "explicit keep mask (1 = keep) instead of seeded draws (API only)",
  },
  normalize: {
    name: "normalize",
    key: "normalize",
    scope: "global",
    type: "boolean",
    default: false,
    description: "divide by the divisor (Σ weights, or of the agreeing models)",
  },
  rescale: {
    name: "rescale",
    key: "rescale",
    scope: "global",
    type: "boolean",
    default: false,
    description: "rescale each sparsified task vector to the norm `rescale_norm` of the unpruned one",
  },
  rescale_norm: {
    name: "rescale_norm",
    key: "rescaleNorm",
    scope: "global",
    type: "enum",
    values: ["l1", "l2", "linf", "inverse_density", "none"],
    default: "l1",
    description: "the norm `rescale` matches; inverse_density multiplies by 1/density",
  },
  lambda: {
    name: "lambda",
    key: "lambda",
    scope: "global",
    type: "number",
    default: 1,
    description: "scales the merged task vector after normalisation",
  },
  consensus: {
    name: "consensus",
    key: "consensus",
    scope: "global",
    type: "enum",
    values: ["sum", "count"],
    default: "sum",
    description: "sign election by the sum of weighted deltas or by the count of signs",
  },
  int8_mask: {
    name: "int8_mask",
    key: "int8_mask",
    scope: "global",
    type: "boolean",
    default: false,
    description: "memory-only in mergekit; accepted and ignored",
  },
  mergekit_compat: {
    name: "mergekit_compat",
    key: "mergekitCompat",
    scope: "global",
    type: "boolean",
    default: false,
    description: "reproduce mergekit's Breadcrumbs quirk (no top cut → the tensor becomes zero)",
  },
  t: {
    name: "t",
    key: "t",
    scope: "global",
    type: "number",
    min: 0,
    max: 1,
    required: true,
    description: "interpolation factor, 0 = the base model",
  },
  nuslerp_flatten: {
    name: "nuslerp_flatten",
    key: "nuslerp_flatten",
    scope: "global",
    type: "boolean",
    default: true,
    description: "one angle for the whole tensor; false = one angle per row (or column)",
  },
  nuslerp_row_wise: {
    name: "nuslerp_row_wise",
    key: "nuslerp_row_wise",
    scope: "global",
    type: "boolean",
    default: false,
    description: "without flattening: vectors along the first dimension (columns of a matrix)",
  },
  filter_wise: {
    name: "filter_wise",
    key: "filter_wise",
    scope: "global",
    type: "boolean",
    values: [false],
    default: false,
    description: "per-row model_stock (not supported: whole tensors only)",
  },
  work_dtype: {
    name: "work_dtype",
    key: "workDtype",
    scope: "global",
    type: "enum",
    values: ["bf16", "f16", "f32"],
    description: "round to this dtype after every operation (mergekit's arithmetic in the config dtype)",
  },
} as const satisfies Record<string, ParamSpec>;

const show = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : String(v));

/**
 * Checks one value against its declaration; throws an `OptionError` naming the parameter (`name`: where
 * it is) and the allowed values or range.
 */
export function checkParamValue(spec: ParamSpec, value: unknown, name: string, method: string): void {
  if (spec.type === "mask") {
    if (!(value instanceof Uint8Array)) throw new OptionError(name, value, "must be a Uint8Array (1 = keep)");
    return;
  }
  if (spec.type === "enum") {
    if (!spec.values!.includes(value as string)) {
      throw new OptionError(name, value, `${method} allows ${spec.values!.map(show).join(", ")}`);
    }
    return;
  }
  if (spec.type === "boolean") {
    if (typeof value !== "boolean") throw new OptionError(name, value, "must be true or false");
    if (spec.values && !spec.values.includes(value)) {
      throw new OptionError(name, value, `${method} allows only ${spec.values.map(show).join(", ")}`);
    }
    return;
  }
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new OptionError(name, value, "must be a finite number");
  }
  if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) {
    throw new OptionError(name, value, `must be in [${spec.min ?? "-∞"}, ${spec.max ?? "∞"}]`);
  }
}

/** A declared parameter's default (undefined if it has none). */
export function declaredDefault(
  specs: readonly ParamSpec[],
  key: string,
): number | boolean | string | undefined {
  return specs.find((p) => p.key === key)?.default;
}

/** The `semantics` parameter of a method with these variants (the first is the default). */
export function semanticsParam(variants: readonly string[]): ParamSpec {
  return {
    name: "semantics",
    key: "semantics",
    scope: "global",
    type: "enum",
    values: variants,
    default: variants[0],
    description: "which framework's semantics to reproduce",
  };
}

/** Rounding to a work dtype after each operation (undefined: no rounding, float64). */
export function workRounder(dtype: MergeParams["workDtype"]): ((x: number) => number) | undefined {
  if (dtype === undefined) return undefined;
  if (dtype === "f32") return Math.fround;
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  if (dtype === "bf16") {
    return (x) => {
      f[0] = x; // like torch on CPU: the float32 result, rounded to bf16 (nearest even)
      if (x !== x) return NaN;
      const b = u[0];
      u[0] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
      return f[0];
    };
  }
  return (x) => f16ToNumber(f16Bits(x));
}
