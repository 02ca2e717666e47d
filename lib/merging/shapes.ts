/**
 * The shape rules of merging, in one place: a model tensor with the reference's shape is merged as is;
 * an embedding (`embed_tokens`, `lm_head`, `wte`, `word_embeddings`, `embed_in`, `embed_out`) at least as
 * large in both dimensions contributes its leading sub-matrix (mergekit's `rectify_embed_sizes`); any
 * other mismatch is not merged. Both {@link merge} and the checkpoint planner use these rules.
 * @module
 */

import type { Tensor } from "../io/tensor.ts";

/** Tensor names that hold token embeddings or the output head. */
export const EMBEDDING = /embed_tokens|lm_head|wte|word_embeddings|embed_in|embed_out/;

/** How a model tensor of `shape` merges against the reference `ref`. */
export function shapeRule(
  name: string | undefined,
  shape: readonly number[],
  ref: readonly number[],
): "same" | "submatrix" | "mismatch" {
  if (shape.length === ref.length && shape.every((d, i) => d === ref[i])) return "same";
  if (
    name !== undefined && EMBEDDING.test(name) && shape.length === 2 && ref.length === 2 &&
    shape[0] >= ref[0] && shape[1] >= ref[1]
  ) return "submatrix";
  return "mismatch";
}

/** The leading `[rows, cols]` sub-matrix of a 2-D tensor, in float64. */
export function leadingSubmatrix(t: Tensor, shape: readonly number[]): Float64Array {
  const [r, c] = shape, cols = t.shape[1], sub = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) sub[i * c + j] = t.data[i * cols + j];
  return sub;
}
