/**
 * mergekit YAML configs (merging.md §10): parsing, validation of keys and methods, and parameter
 * evaluation — scalars, gradients interpolated over the layer index, and `{filter, value}` lists.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { parseYaml } from "../deps.ts";
import { mergeMethods } from "./methods.ts";

/** A parameter value as written in a config: scalar, gradient list, or filter list. */
export type ParamValue = number | string | boolean | ParamValue[] | { filter?: string; value: ParamValue };

/**
 * A mergekit config, validated.
 *
 * @example
 * ```ts
 * import { parseMergeConfig } from "@moekit/moekit";
 * const c = parseMergeConfig("merge_method: ties\nbase_model: ./base\nmodels:\n  - model: ./a\n    parameters: {weight: 1, density: 0.5}\n");
 * console.log(c.method, c.models[0].model); // ties ./a
 * ```
 */
export interface MergeConfig {
  /** `merge_method`. */
  readonly method: string;
  /** `base_model`. */
  readonly baseModel?: string;
  /** `models` with their `parameters`. */
  readonly models: readonly { readonly model: string; readonly parameters: Record<string, ParamValue> }[];
  /** Top-level `parameters`. */
  readonly parameters: Record<string, ParamValue>;
  /** `slices` (same-architecture layer ranges). */
  readonly slices?: readonly {
    readonly sources: readonly {
      readonly model: string;
      readonly layerRange: [number, number];
      readonly parameters: Record<string, ParamValue>;
    }[];
    readonly parameters: Record<string, ParamValue>;
  }[];
  /** Working dtype (`dtype`). */
  readonly dtype?: string;
  /** Output dtype (`out_dtype`). */
  readonly outDtype?: string;
}

/** Per-model parameter names. */
export const MODEL_PARAMS = ["weight", "density", "gamma", "epsilon"] as const;
/** Global parameter names. */
export const GLOBAL_PARAMS = [
  "normalize",
  "rescale",
  "lambda",
  "consensus",
  "int8_mask",
  "t",
  "rescale_norm",
  "filter_wise",
] as const;
const KNOWN_PARAMS = new Set<string>([...MODEL_PARAMS, ...GLOBAL_PARAMS]);
const TOP_KEYS = new Set([
  "merge_method",
  "base_model",
  "models",
  "parameters",
  "slices",
  "dtype",
  "out_dtype",
  "tokenizer_source",
  "tokenizer",
  "chat_template",
  "name",
]);

function params(v: unknown, where: string): Record<string, ParamValue> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new MoekitError(`config: ${where}.parameters must be a mapping`);
  }
  for (const k of Object.keys(v)) {
    if (!KNOWN_PARAMS.has(k)) {
      throw new MoekitError(
        `config: unknown parameter "${k}" in ${where}.parameters (known: ${[...KNOWN_PARAMS].join(", ")})`,
      );
    }
  }
  return v as Record<string, ParamValue>;
}

/**
 * Parses and validates a mergekit YAML config (unknown keys, methods and parameters are errors).
 *
 * @example
 * ```ts
 * import { parseMergeConfig } from "@moekit/moekit";
 * try {
 *   parseMergeConfig("merge_method: dare-ties\nmodels: []");
 * } catch (e) {
 *   console.log((e as Error).message.startsWith("merge_method")); // true
 * }
 * ```
 */
export function parseMergeConfig(text: string): MergeConfig {
  let raw: Record<string, unknown>;
  try {
    raw = parseYaml(text) as Record<string, unknown>;
  } catch (e) {
    throw new MoekitError(`config: not valid YAML (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== "object") throw new MoekitError("config: expected a YAML mapping");
  for (const k of Object.keys(raw)) if (!TOP_KEYS.has(k)) throw new MoekitError(`config: unknown key "${k}"`);
  const method = String(raw.merge_method ?? "");
  if (!mergeMethods[method]) {
    throw new OptionError("merge_method", method, `use one of ${Object.keys(mergeMethods).join(", ")}`);
  }
  const models = ((raw.models ?? []) as Record<string, unknown>[]).map((m, i) => {
    if (!m || typeof m.model !== "string") throw new MoekitError(`config: models[${i}] needs a "model" path`);
    return { model: m.model, parameters: params(m.parameters, `models[${i}]`) };
  });
  const slices = raw.slices === undefined
    ? undefined
    : (raw.slices as Record<string, unknown>[]).map((s, i) => ({
      parameters: params(s.parameters, `slices[${i}]`),
      sources: ((s.sources ?? []) as Record<string, unknown>[]).map((src, j) => {
        const r = src.layer_range as unknown;
        if (typeof src.model !== "string") {
          throw new MoekitError(`config: slices[${i}].sources[${j}] needs a "model"`);
        }
        if (
          !Array.isArray(r) || r.length !== 2 || !r.every((x) => Number.isInteger(x)) || r[1] <= r[0] ||
          r[0] < 0
        ) {
          throw new MoekitError(
            `config: slices[${i}].sources[${j}].layer_range must be [start, end) with 0 ≤ start < end`,
          );
        }
        return {
          model: src.model,
          layerRange: r as [number, number],
          parameters: params(src.parameters, `slices[${i}].sources[${j}]`),
        };
      }),
    }));
  if (!models.length && !slices?.length) throw new MoekitError("config: needs models or slices");
  for (const [i, s] of (slices ?? []).entries()) {
    const lens = new Set(s.sources.map((src) => src.layerRange[1] - src.layerRange[0]));
    if (lens.size > 1) {
      throw new MoekitError(
        `config: slices[${i}] sources have different layer counts (${[...lens].join(", ")})`,
      );
    }
  }
  return {
    method,
    baseModel: raw.base_model === undefined ? undefined : String(raw.base_model),
    models,
    parameters: params(raw.parameters, "top-level"),
    slices,
    dtype: raw.dtype === undefined ? undefined : String(raw.dtype),
    outDtype: raw.out_dtype === undefined ? undefined : String(raw.out_dtype),
  };
}

/**
 * Evaluates a parameter for one tensor (mergekit `evaluate_setting`): filter lists pick the first entry
 * whose filter is absent, `"*"` or a substring of the name; numeric lists interpolate linearly at `t`;
 * other lists index at `trunc(t·(n−1))`.
 *
 * @example
 * ```ts
 * import { evaluateParam } from "@moekit/moekit";
 * console.log([0, .25, .5, .75, 1].map((t) => evaluateParam([1, 0.7, 0.1], t, "x"))); // [1, 0.85, 0.7, 0.4, 0.1]
 * console.log(evaluateParam([{ filter: "mlp", value: 0.5 }, { value: 0 }], 0, "layers.0.mlp.up")); // 0.5
 * ```
 */
export function evaluateParam(
  v: ParamValue | undefined,
  t: number,
  name: string,
): number | string | boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) {
    if (v.length === 0) return undefined;
    if (v.every((e) => typeof e === "object" && e !== null && !Array.isArray(e))) {
      for (const e of v as { filter?: string; value: ParamValue }[]) {
        if (e.filter === undefined || e.filter === "*" || name.includes(e.filter)) {
          return evaluateParam(e.value, t, name);
        }
      }
      return undefined;
    }
    if (v.every((e) => typeof e === "number")) {
      const n = v.length, s = t * (n - 1), i0 = Math.trunc(s), i1 = Math.min(n - 1, i0 + 1), f = s - i0;
      return (1 - f) * (v[i0] as number) + f * (v[i1] as number);
    }
    return evaluateParam(v[Math.trunc(t * (v.length - 1))], t, name);
  }
  if (typeof v === "object") return evaluateParam(v.value, t, name);
  return v;
}

/** The layer index in a tensor name (`…layers.<n>.…`), or undefined. */
export function layerIndex(name: string): number | undefined {
  const m = /(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}
