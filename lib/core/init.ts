/**
 * PyTorch-style seeded initialisation: `nn.Linear` weights and biases are `U(−1/√fan_in, 1/√fan_in)`.
 * Internal helpers shared by the layers that create their own weights.
 * @module
 */

import { type Mat, matrix } from "./matrix.ts";
import type { Rng } from "./random.ts";

/** A `[rows, cols]` weight drawn from `U(−1/√fanIn, 1/√fanIn)` (fanIn defaults to cols, as nn.Linear). */
export function uniformWeight(rng: Rng, rows: number, cols: number, fanIn = cols): Mat {
  const b = 1 / Math.sqrt(fanIn), m = matrix.zeros(rows, cols);
  rng.fillUniform(m.data, -b, b);
  return m;
}

/** A length-n vector drawn from `U(−1/√fanIn, 1/√fanIn)`. */
export function uniformVector(rng: Rng, n: number, fanIn: number): Float32Array {
  return uniformWeight(rng, 1, n, fanIn).data;
}
