/**
 * `merge`: one output tensor from a base and N models by any registered method. The method's registry
 * entry declares its parameters and does the work; this function validates, applies the shape rules
 * and hands over.
 * @module
 */

import { MoekitError, OptionError, ShapeError } from "../core/errors.ts";
import { gtaBlockPlanner } from "./gta.ts";
import { slerpBlockPlanner } from "./interpolate.ts";
import { asTensor, sameShape, type Tensor, type TensorInput } from "../io/tensor.ts";
import { checkModelCount, mergeMethod, validateMergeParams } from "./methods.ts";
import type { MergeParams, ModelParams } from "./params.ts";
import { leadingSubmatrix, shapeRule } from "./shapes.ts";

/**
 * Options of {@link merge}.
 *
 * @example
 * ```ts
 * import { merge, type MergeOptions } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const o: MergeOptions = { method: "ties", base: { shape: [2], data: new Float64Array(2) }, models: [] };
 * assert.deepEqual(Array.from(merge(o).data), [0, 0]); // no models: the base
 * ```
 */
export interface MergeOptions {
  /** A key of {@link mergeMethods}. */
  readonly method: string;
  /** The base model's tensor: required, optional (`nuslerp`) or unused (`linear`), per method. */
  readonly base?: TensorInput;
  /** The models in config order. */
  readonly models: readonly { readonly tensor: TensorInput; readonly params?: ModelParams }[];
  /** Global parameters. */
  readonly params?: MergeParams;
  /** Tensor name: seeds DARE/DELLA streams, enables the embedding sub-matrix rule, names errors. */
  readonly name?: string;
  /** Seed of DARE/DELLA draws. Default 0. */
  readonly seed?: number;
  /** Receives warnings (a skipped model). Default `console.warn`. */
  readonly onWarning?: (message: string) => void;
  /**
   * The inputs' data (the base's and the models') may be overwritten: a float32 result is written into
   * the base's buffer, a work dtype's task vectors into the models' Float64Arrays, saving a tensor each.
   * Streaming checkpoint merges use this. Default false.
   */
  readonly consumeInputs?: boolean;
  /**
   * `"f32"`: return a Float32Array (each entry rounded once from float64). Encoded as bf16 or f32 this
   * gives the same bytes as the float64 result (those encoders round through float32) at half the memory;
   * checkpoint merges use it for such outputs. Default `"f64"`.
   */
  readonly output?: "f64" | "f32";
  /**
   * The tensors are one block (a run of consecutive entries, e.g. whole rows) of larger tensors, for
   * merges under a memory cap. Only methods whose registry entry declares `blockwise` may take it;
   * `"cuts"` methods also need each model's plan for this block, from a pre-pass over every block of the
   * tensor (`mergeBlockPlanner`, internal). Merging every block and concatenating the results gives the
   * bytes of a whole-tensor merge.
   */
  readonly block?: {
    /** Flat index, in the whole tensor, of the block's first entry (seeds DARE draws by entry). */
    readonly offset: number;
    /** Per model in config order: the planner's plan for this block (`plans(offset)`). */
    readonly plans?: readonly {
      /** The magnitude band: thresholds t1/t0 and the tie quotas left at the block's first entry. */
      readonly cut?: {
        readonly t1: number;
        readonly ties1: number;
        readonly t0: number;
        readonly ties0: number;
      };
      /** Factor applied to the kept entries (SLERP: the model's interpolation coefficient). */
      readonly scale: number;
      /** SLERP: the base's interpolation coefficient (from the angle over the whole tensor). */
      readonly baseScale?: number;
      /** Every entry dropped. */
      readonly zero: boolean;
    }[];
  };
}

/**
 * Merges one tensor by any registered method. Parameters are validated against the method's
 * declarations first (unknown names, types, ranges, allowed values: `OptionError`s that list what is
 * allowed). Models whose shape differs from the base are skipped with a warning, except embeddings
 * (`embed_tokens`, `lm_head`, …), which use their leading sub-matrix.
 *
 * @example
 * ```ts
 * import { merge } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const base = { shape: [4], data: new Float64Array(4) };
 * const a = { shape: [4], data: new Float64Array([1, -2, .5, 0]) };
 * const b = { shape: [4], data: new Float64Array([-.5, -1, 1, 2]) };
 * const out = merge({ method: "ties", base, models: [{ tensor: a, params: { weight: 1 } }, { tensor: b, params: { weight: 1 } }] });
 * assert.deepEqual(Array.from(out.data), [1, -1.5, 0.75, 2]);
 * ```
 */
export function merge(options: MergeOptions): Tensor {
  const method = mergeMethod(options.method);
  const at = options.name ? ` (tensor ${options.name})` : "";
  const block = options.block;
  if (block) {
    if (!method.blockwise) {
      throw new OptionError(
        "block",
        `a block at entry ${block.offset}`,
        `${method.name} needs the whole tensor`,
      );
    }
    if (!Number.isSafeInteger(block.offset) || block.offset < 0) {
      throw new OptionError("block.offset", block.offset, "must be an integer ≥ 0");
    }
  }
  validateMergeParams(
    method,
    (options.params ?? {}) as Record<string, unknown>,
    options.models.map((m) => (m.params ?? {}) as Record<string, unknown>),
    (k, i) => (i === undefined ? `params.${k}` : `models[${i}].${k}`) + at,
  );
  if (method.base === "required" && !options.base) {
    throw new MoekitError(
      `${options.method} needs a base tensor${options.name ? ` for ${options.name}` : ""}`,
    );
  }
  const base = method.base !== "none" && options.base ? asTensor(options.base, "base") : undefined;
  const models: { data: Float32Array | Float64Array; params: ModelParams; index: number; owned: boolean }[] =
    [];
  const ref = base ?? asTensor(options.models[0].tensor, `model 0${options.name ? ` ${options.name}` : ""}`);
  options.models.forEach((m, index) => {
    const t = asTensor(m.tensor, `model ${index}${options.name ? ` ${options.name}` : ""}`);
    const rule = shapeRule(options.name, t.shape, ref.shape);
    const params = m.params ?? {};
    if (block && rule !== "same") {
      throw new ShapeError(
        `model ${index}${options.name ? ` ${options.name}` : ""} block`,
        ref.shape,
        t.shape,
      );
    }
    if (rule === "same") models.push({ data: t.data, params, index, owned: options.consumeInputs ?? false });
    else if (rule === "submatrix" && base) {
      models.push({ data: leadingSubmatrix(t, ref.shape), params, index, owned: true });
    } else if (!base) {
      throw new ShapeError(`model ${index}${options.name ? ` ${options.name}` : ""}`, ref.shape, t.shape);
    } else {
      (options.onWarning ?? console.warn)(
        `merge ${options.name ?? "tensor"}: model ${index} has shape [${t.shape.join(",")}], the base [${
          ref.shape.join(",")
        }]; skipped`,
      );
    }
  });
  if (models.length < options.models.length) checkModelCount(method, models.length, options.name);
  const out = method.run({
    base: base?.data,
    shape: ref.shape,
    models,
    params: options.params ?? {},
    name: options.name,
    seed: options.seed ?? 0,
    output: options.output,
    baseOwned: options.consumeInputs,
    block,
  });
  return options.output === "f32" && !(out.data instanceof Float32Array)
    ? { shape: out.shape, data: Float32Array.from(out.data) }
    : out;
}

/**
 * The task vector `X − base`.
 *
 * @example
 * ```ts
 * import { matrix, taskVector } from "@moekit/moekit/merging";
 * import assert from "node:assert/strict";
 * const tv = taskVector(matrix.fromArrays([[3, 1]]), matrix.fromArrays([[1, 1]]));
 * assert.deepEqual(Array.from(tv.data), [2, 0]);
 * ```
 */
export function taskVector(model: TensorInput, base: TensorInput): Tensor {
  const x = asTensor(model, "model"), b = asTensor(base, "base");
  if (!sameShape(x.shape, b.shape)) {
    throw new ShapeError("model", b.shape, x.shape, "a task vector needs the base's shape");
  }
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] - b.data[i];
  return { shape: x.shape, data: out };
}

/**
 * The pre-pass of a merge in blocks (see {@link MergeOptions.block}): for a method and its parameters
 * over a tensor of `numel` entries, `passes` is how many times to feed it every block (in index order,
 * the same blocks each time: `add(pass, { offset, base, models })`, models in config order, decoded as
 * `merge` takes them), then `plans(offset)` is the `block.plans` of the block at `offset`. `passes` is 0
 * for elementwise methods (no pre-pass; `plans` gives undefined). Null when the method or this
 * configuration needs the whole tensor (DELLA, the TIES paper threshold, a work dtype, …).
 * Internal (not in the barrel): the checkpoint merge's memory cap uses it.
 */
export function mergeBlockPlanner(options: {
  readonly method: string;
  readonly params?: MergeParams;
  readonly models: readonly { readonly params?: ModelParams }[];
  readonly numel: number;
  readonly name?: string;
  readonly seed?: number;
}): {
  readonly passes: number;
  /**
   * After the passes before `pass`: whether `pass` must still be fed (false: the earlier passes already
   * decided every plan; feeding it anyway does nothing).
   */
  needs(pass: number): boolean;
  add(
    pass: number,
    block: {
      readonly offset: number;
      readonly base?: Float32Array | Float64Array;
      readonly models: readonly (Float32Array | Float64Array)[];
    },
  ): void;
  plans(offset: number): NonNullable<MergeOptions["block"]>["plans"];
} | null {
  const method = mergeMethod(options.method);
  const params = options.params ?? {}, models = options.models.map((m) => m.params ?? {});
  validateMergeParams(method, params as Record<string, unknown>, models as Record<string, unknown>[]);
  if (method.blockwise === "elementwise" && !(method.base === "required" && "sparsify" in method)) {
    return { passes: 0, needs: () => false, add() {}, plans: () => undefined };
  }
  if (!method.blockwise) return null;
  if (method.name === "slerp") {
    const sl = slerpBlockPlanner(params.t!, options.numel);
    return {
      passes: sl.passes,
      needs: (pass) => pass < sl.passes,
      add(pass, block) {
        if (!block.base) throw new MoekitError(`${method.name} needs the base's block`);
        sl.add(pass, block.offset, block.base, block.models[0]);
      },
      plans: (offset) => sl.plans(offset),
    };
  }
  const g = gtaBlockPlanner(method.name, params, models, options.numel, options.seed ?? 0, options.name);
  if (!g) return null;
  return {
    passes: g.passes,
    needs: (pass) => g.needs(pass),
    add(pass, block) {
      if (!block.base) throw new MoekitError(`${method.name} needs the base's block`);
      g.add(pass, block.base, block.models, block.offset);
    },
    plans: (offset) => g.plans(offset),
  };
}
