/**
 * mergekit YAML configs (docs/merging.md, "Config files"): parsing, validation of keys and methods, and parameter
 * evaluation — scalars, gradients interpolated over the layer index, and `{filter, value}` lists.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";
import { parseYaml } from "../deps.ts";
import { type MergeMethod, mergeMethod } from "./methods.ts";
import { checkParamValue, type ParamSpec } from "./params.ts";

/** A parameter value as written in a config: scalar, gradient list, or filter list. */
export type ParamValue = number | string | boolean | ParamValue[] | { filter?: string; value: ParamValue };

/**
 * A mergekit config, validated.
 *
 * @example
 * ```ts
 * import { parseMergeConfig } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const c = parseMergeConfig("merge_method: ties\nbase_model: ./base\nmodels:\n  - model: ./a\n    parameters: {weight: 1, density: 0.5}\n");
 * assert.deepEqual([c.method, c.models[0].model], ["ties", "./a"]);
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
  /** The module name when the config used mergekit's `modules:` form (one module). */
  readonly module?: string;
  /** Where the output's tokenizer files come from (`tokenizer_source`, or `tokenizer.source`): `base` or a model. */
  readonly tokenizerSource?: string;
  /** `chat_template`: `auto` (the most common one among the models) or a Jinja template text. */
  readonly chatTemplate?: string;
}

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
  "modules",
]);

/** Checks every scalar of a config value (scalars, gradient lists, filter lists) against the declaration. */
function checkLeaves(spec: ParamSpec, v: unknown, where: string, method: string): void {
  if (Array.isArray(v)) {
    if (v.length === 0) throw new OptionError(where, "[]", "an empty list sets nothing; remove it");
    v.forEach((e, i) => checkLeaves(spec, e, `${where}[${i}]`, method));
  } else if (v !== null && typeof v === "object") {
    const f = v as { filter?: unknown; value?: unknown };
    if (f.filter !== undefined && typeof f.filter !== "string") {
      throw new OptionError(`${where}.filter`, f.filter, "a filter is a substring of tensor names");
    }
    if (!("value" in f)) throw new OptionError(where, JSON.stringify(v), "a filter entry needs a value");
    checkLeaves(spec, f.value, `${where}.value`, method);
  } else checkParamValue(spec, v, where, method);
}

/**
 * A `parameters` mapping, checked against the method's declarations: every name is declared, per-model
 * ones may appear anywhere, global ones only at the top level or on a slice, and every scalar in it has
 * the declared type and lies in the declared range or set.
 */
function params(
  v: unknown,
  where: string,
  method: MergeMethod,
  scope: "model" | "any",
): Record<string, ParamValue> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new MoekitError(`config: ${where}.parameters must be a mapping`);
  }
  const names = method.parameters.filter((p) => p.type !== "mask").map((p) => p.name);
  for (const [k, value] of Object.entries(v)) {
    const spec = method.parameters.find((p) => p.name === k && p.type !== "mask");
    if (!spec) {
      throw new OptionError(
        `${where}.parameters.${k}`,
        typeof value === "object" ? JSON.stringify(value) : value,
        `unknown parameter "${k}" in ${where} for ${method.name} (it takes ${names.join(", ")})`,
      );
    }
    if (scope === "model" && spec.scope === "global") {
      throw new OptionError(
        `${where}.parameters.${k}`,
        typeof value === "object" ? JSON.stringify(value) : value,
        `${k} is a global parameter of ${method.name}: set it in the top-level (or a slice's) parameters`,
      );
    }
    checkLeaves(spec, value, `${where}.parameters.${k}`, method.name);
  }
  return v as Record<string, ParamValue>;
}

/**
 * Parses and validates a mergekit YAML config (unknown keys, methods and parameters are errors).
 *
 * @example
 * ```ts
 * import { OptionError, parseMergeConfig } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * assert.throws(() => parseMergeConfig("merge_method: dare-ties\nmodels: []"), /merge_method = "dare-ties"/);
 * assert.throws(
 *   () => parseMergeConfig("merge_method: ties\nbase_model: b\nmodels:\n  - {model: a, parameters: {weight: 1, gamma: 0.1}}\n"),
 *   OptionError, // gamma is Breadcrumbs' parameter, not TIES'
 * );
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
  const method = String(raw.merge_method ?? ""), m = mergeMethod(method);
  let module: string | undefined;
  if (raw.modules !== undefined) {
    const mods = raw.modules as Record<string, Record<string, unknown>>;
    if (!mods || typeof mods !== "object" || Array.isArray(mods)) {
      throw new MoekitError("config: modules must be a mapping of module name → {models | slices}");
    }
    if (raw.models !== undefined || raw.slices !== undefined) {
      throw new MoekitError("config: give exactly one of models, slices or modules");
    }
    const names = Object.keys(mods);
    if (names.length !== 1) {
      throw new MoekitError(
        `config: modules has ${names.length} entries (${names.join(", ")}); moekit merges one module per ` +
          "config (it does not know which tensors belong to which module): write one config per module",
      );
    }
    module = names[0];
    const def = mods[module] ?? {};
    for (const k of Object.keys(def)) {
      if (k !== "models" && k !== "slices") {
        throw new MoekitError(`config: unknown key "${k}" in modules.${module}`);
      }
    }
    raw = { ...raw, models: def.models, slices: def.slices };
  }
  const models = ((raw.models ?? []) as Record<string, unknown>[]).map((x, i) => {
    if (!x || typeof x.model !== "string") throw new MoekitError(`config: models[${i}] needs a "model" path`);
    return { model: x.model, parameters: params(x.parameters, `models[${i}]`, m, "model") };
  });
  const slices = raw.slices === undefined
    ? undefined
    : (raw.slices as Record<string, unknown>[]).map((s, i) => ({
      parameters: params(s.parameters, `slices[${i}]`, m, "any"),
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
          parameters: params(src.parameters, `slices[${i}].sources[${j}]`, m, "model"),
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
    parameters: params(raw.parameters, "top-level", m, "any"),
    ...(module === undefined ? {} : { module }),
    slices,
    dtype: raw.dtype === undefined ? undefined : String(raw.dtype),
    outDtype: raw.out_dtype === undefined ? undefined : String(raw.out_dtype),
    ...tokenizerSettings(raw),
  };
}

/**
 * Evaluates a parameter for one tensor (mergekit `evaluate_setting`): filter lists pick the first entry
 * whose filter is absent, `"*"` or a substring of the name; numeric lists interpolate linearly at `t`;
 * other lists index at `trunc(t·(n−1))`.
 *
 * @example
 * ```ts
 * import { evaluateParam } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const v = [0, .25, .5, .75, 1].map((t) => evaluateParam([1, 0.7, 0.1], t, "x") as number);
 * assert.deepEqual(v.map((x) => +x.toFixed(10)), [1, 0.85, 0.7, 0.4, 0.1]);
 * assert.equal(evaluateParam([{ filter: "mlp", value: 0.5 }, { value: 0 }], 0, "layers.0.mlp.up"), 0.5);
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

/**
 * `tokenizer_source`, `tokenizer` and `chat_template`: what moekit does (copy the tokenizer of `base` or of
 * a model, set a chat template) and clear errors for what it does not (union vocabularies, embedding
 * resizing, per-token embedding sources, mergekit's built-in template names).
 */
function tokenizerSettings(
  raw: Record<string, unknown>,
): { tokenizerSource?: string; chatTemplate?: string } {
  const out: { tokenizerSource?: string; chatTemplate?: string } = {};
  const source = (v: unknown, key: string) => {
    if (typeof v !== "string" || v === "") {
      throw new MoekitError(`config: ${key} must be "base" or a model path`);
    }
    if (v === "union") {
      throw new MoekitError(
        `config: ${key}: union builds a merged vocabulary and resizes every model's embeddings, which moekit ` +
          `does not do; use ${key}: base (or a model path) when the models share one vocabulary`,
      );
    }
    return v.startsWith("model:") ? v.slice(6) : v;
  };
  if (raw.tokenizer_source !== undefined && raw.tokenizer !== undefined) {
    throw new MoekitError("config: give tokenizer_source or tokenizer, not both");
  }
  if (raw.tokenizer_source !== undefined) {
    out.tokenizerSource = source(raw.tokenizer_source, "tokenizer_source");
  }
  if (raw.tokenizer !== undefined) {
    const t = raw.tokenizer as Record<string, unknown>;
    if (!t || typeof t !== "object" || Array.isArray(t)) {
      throw new MoekitError("config: tokenizer must be a mapping");
    }
    for (const k of Object.keys(t)) {
      if (k === "tokens" || k === "pad_to_multiple_of") {
        throw new MoekitError(
          `config: tokenizer.${k} changes the embedding rows (${
            k === "tokens" ? "per-token embedding sources" : "padding the vocabulary"
          }), which moekit does not do; remove it`,
        );
      }
      if (k !== "source") throw new MoekitError(`config: unknown key "${k}" in tokenizer`);
    }
    if (t.source !== undefined) out.tokenizerSource = source(t.source, "tokenizer.source");
  }
  if (raw.chat_template !== undefined) {
    const c = raw.chat_template;
    if (typeof c !== "string" || c === "") throw new MoekitError("config: chat_template must be a string");
    if (c !== "auto" && !c.includes("{{") && !c.includes("{%")) {
      throw new MoekitError(
        `config: chat_template: ${
          JSON.stringify(c.slice(0, 40))
        } names one of mergekit's built-in templates, which ` +
          "moekit does not ship; give auto (the most common template among the models) or the Jinja template text",
      );
    }
    out.chatTemplate = c;
  }
  return out;
}
