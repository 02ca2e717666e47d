/**
 * Core: the matrix type, seeded random streams, typed errors and interop.
 * @module
 */

export * from "./errors.ts";
export * from "./random.ts";
export * from "./matrix.ts";
export {
  fromMlMatrix,
  fromNdarray,
  type MlMatrixLike,
  type NdArrayLike,
  toMlMatrix,
  toNdarray,
} from "./interop.ts";
export { kthLargestMagnitude, magnitudeRangeMask, topMagnitudeMask } from "./selection.ts";
