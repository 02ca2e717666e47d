/**
 * Expert weights as moekit stores them besides plain dense matrices: low-rank factors, RTN codes and
 * deltas over a shared base — the "moekit-experts/1" format of compressed checkpoints — and the
 * conversions back to dense float32 matrices.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, ShapeError } from "../core/errors.ts";
import type { SwiGLUExpert } from "../moe/layer.ts";

/**
 * A matrix stored as the product `a·b` (`a [rows,r]`, `b [r,cols]`), e.g. an SVD-compressed expert weight.
 *
 * @example
 * ```ts
 * import { type LowRankMatrix, matrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const m: LowRankMatrix = { kind: "lowrank", a: matrix.zeros(4, 1), b: matrix.zeros(1, 3) };
 * assert.equal(m.kind, "lowrank");
 * ```
 */
export interface LowRankMatrix {
  /** Tag. */
  readonly kind: "lowrank";
  /** Left factor `[rows, r]`. */
  readonly a: Mat;
  /** Right factor `[r, cols]`. */
  readonly b: Mat;
}

/**
 * A matrix stored as RTN codes: value = `scale·(code − zero)` per row-group of `groupSize` columns
 * (bits ≥ 2), or `±scale` (bits = 1, code 1 = positive).
 *
 * @example
 * ```ts
 * import { materializeMatrix, type QuantizedMatrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const q: QuantizedMatrix = {
 *   kind: "rtn", rows: 1, cols: 2, bits: 2, groupSize: 2,
 *   codes: new Uint8Array([0, 3]), scale: new Float32Array([0.5]), zero: new Float32Array([1]),
 * };
 * assert.deepEqual(Array.from(materializeMatrix(q).data), [-0.5, 1]);
 * ```
 */
export interface QuantizedMatrix {
  /** Tag. */
  readonly kind: "rtn";
  /** Rows. */
  readonly rows: number;
  /** Columns. */
  readonly cols: number;
  /** Bits per weight, 1..8. */
  readonly bits: number;
  /** Columns per group. */
  readonly groupSize: number;
  /** One code per weight, row-major (0 .. 2^bits − 1). */
  readonly codes: Uint8Array;
  /** Per row-group scale `[rows·⌈cols/groupSize⌉]`. */
  readonly scale: Float32Array;
  /** Per row-group zero point (unused for 1 bit). */
  readonly zero: Float32Array;
}

/**
 * A matrix stored as a low-rank delta `a·b` over the layer's shared base expert (D²-MoE style).
 *
 * @example
 * ```ts
 * import { type DeltaMatrix, matrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const m: DeltaMatrix = { kind: "delta", a: matrix.zeros(4, 1), b: matrix.zeros(1, 3) };
 * assert.equal(m.kind, "delta");
 * ```
 */
export interface DeltaMatrix {
  /** Tag. */
  readonly kind: "delta";
  /** Left factor `[rows, r]`. */
  readonly a: Mat;
  /** Right factor `[r, cols]`. */
  readonly b: Mat;
}

/**
 * One expert weight as written to a checkpoint: dense, or one of the moekit forms.
 *
 * @example
 * ```ts
 * import { matrix, type StoredMatrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const dense: StoredMatrix = matrix.zeros(2, 2);
 * assert.ok("rows" in dense);
 * ```
 */
export type StoredMatrix = Mat | LowRankMatrix | QuantizedMatrix | DeltaMatrix;

/**
 * An expert as written to a checkpoint (nn.Linear layout, as {@link SwiGLUExpert}).
 *
 * @example
 * ```ts
 * import { isDense, matrix, type StoredExpert } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const e: StoredExpert = { w1: matrix.zeros(4, 2), w3: matrix.zeros(4, 2), w2: matrix.zeros(2, 4) };
 * assert.ok(isDense(e.w2));
 * ```
 */
export interface StoredExpert {
  /** Gate projection `[f,d]`. */
  readonly w1: StoredMatrix;
  /** Up projection `[f,d]`. */
  readonly w3: StoredMatrix;
  /** Down projection `[d,f]`. */
  readonly w2: StoredMatrix;
  /** Optional biases (GPT-OSS). */
  readonly b1?: Float32Array;
  /** Optional up bias. */
  readonly b3?: Float32Array;
  /** Optional down bias. */
  readonly b2?: Float32Array;
}

/**
 * Whether a stored matrix is a plain dense `Mat`.
 *
 * @example
 * ```ts
 * import { isDense, matrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * assert.ok(isDense(matrix.zeros(2, 2)));
 * assert.ok(!isDense({ kind: "lowrank", a: matrix.zeros(2, 1), b: matrix.zeros(1, 2) }));
 * ```
 */
export function isDense(m: StoredMatrix): m is Mat {
  return !("kind" in m);
}

/** Rows and columns of a stored matrix. */
export function storedShape(m: StoredMatrix): [number, number] {
  if (isDense(m)) return [m.rows, m.cols];
  if (m.kind === "rtn") return [m.rows, m.cols];
  return [m.a.rows, m.b.cols];
}

/**
 * The dense float32 matrix a stored matrix stands for (`base` is the layer's shared base for deltas).
 *
 * @example
 * ```ts
 * import { materializeMatrix, matrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const m = materializeMatrix({ kind: "lowrank", a: matrix.fromArrays([[1], [2]]), b: matrix.fromArrays([[3, 4]]) });
 * assert.deepEqual(Array.from(m.data), [3, 4, 6, 8]);
 * ```
 */
export function materializeMatrix(m: StoredMatrix, base?: Mat): Mat {
  if (isDense(m)) return m;
  if (m.kind === "lowrank" || m.kind === "delta") {
    if (m.a.cols !== m.b.rows) {
      throw new ShapeError(`${m.kind} factor b`, [m.a.cols, -1], [m.b.rows, m.b.cols]);
    }
    const p = matrix.matmul(m.a, m.b);
    if (m.kind === "delta") {
      if (!base) throw new MoekitError("a delta matrix needs the layer's base expert");
      matrix.assertShape("delta base", base, p.rows, p.cols);
      for (let i = 0; i < p.data.length; i++) p.data[i] += base.data[i];
    }
    return p;
  }
  const { rows, cols, bits, groupSize, codes, scale, zero } = m;
  const groups = Math.ceil(cols / groupSize), out = matrix.zeros(rows, cols);
  if (codes.length !== rows * cols) throw new ShapeError("rtn codes", [rows * cols], [codes.length]);
  if (scale.length !== rows * groups) throw new ShapeError("rtn scale", [rows * groups], [scale.length]);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const g = i * groups + Math.floor(j / groupSize), q = codes[i * cols + j];
      out.data[i * cols + j] = bits === 1 ? (q ? scale[g] : -scale[g]) : scale[g] * (q - zero[g]);
    }
  }
  return out;
}

/**
 * The dense SwiGLU expert a stored expert stands for.
 *
 * @example
 * ```ts
 * import { materializeExpert, matrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const e = materializeExpert({ w1: matrix.zeros(4, 2), w3: matrix.zeros(4, 2), w2: matrix.zeros(2, 4) });
 * assert.equal(e.w1.rows, 4);
 * ```
 */
export function materializeExpert(e: StoredExpert, base?: SwiGLUExpert): SwiGLUExpert {
  return {
    w1: materializeMatrix(e.w1, base?.w1),
    w3: materializeMatrix(e.w3, base?.w3),
    w2: materializeMatrix(e.w2, base?.w2),
    ...(e.b1 ? { b1: e.b1 } : {}),
    ...(e.b3 ? { b3: e.b3 } : {}),
    ...(e.b2 ? { b2: e.b2 } : {}),
  };
}

/**
 * RTN codes from dequantised values and their scales (the inverse of the dequantisation), for results of
 * `quantizeRTN` that keep only values, scales and zero points.
 *
 * @example
 * ```ts
 * import { matrix, quantizedMatrix } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const q = quantizedMatrix({
 *   values: matrix.fromArrays([[-0.5, 1]]), bits: 2, groupSize: 2,
 *   scale: new Float32Array([0.5]), zero: new Float32Array([1]),
 * });
 * assert.deepEqual(Array.from(q.codes), [0, 3]);
 * ```
 */
export function quantizedMatrix(q: {
  readonly values: Mat;
  readonly bits: number;
  readonly groupSize: number;
  readonly scale: Float32Array;
  readonly zero: Float32Array;
}): QuantizedMatrix {
  const { rows, cols } = q.values, groups = Math.ceil(cols / q.groupSize), qmax = 2 ** q.bits - 1;
  if (!Number.isInteger(q.bits) || q.bits < 1 || q.bits > 8) {
    throw new MoekitError(`quantizedMatrix: bits = ${q.bits} must be in 1..8`);
  }
  const codes = new Uint8Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const g = i * groups + Math.floor(j / q.groupSize), v = q.values.data[i * cols + j];
      const c = q.bits === 1 ? (v >= 0 ? 1 : 0) : Math.round(v / q.scale[g] + q.zero[g]);
      codes[i * cols + j] = Math.min(qmax, Math.max(0, Number.isFinite(c) ? c : 0));
    }
  }
  return {
    kind: "rtn",
    rows,
    cols,
    bits: q.bits,
    groupSize: q.groupSize,
    codes,
    scale: Float32Array.from(q.scale),
    zero: Float32Array.from(q.zero),
  };
}

/** Packs codes of `bits` bits, each row starting on a byte, low bits first: `[rows, ⌈cols·bits/8⌉]`. */
export function packCodes(codes: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  const rowBytes = Math.ceil((cols * bits) / 8), out = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const bit = j * bits, c = codes[i * cols + j];
      for (let b = 0; b < bits; b++) {
        if ((c >> b) & 1) out[i * rowBytes + ((bit + b) >> 3)] |= 1 << ((bit + b) & 7);
      }
    }
  }
  return out;
}

/** Unpacks {@link packCodes}. */
export function unpackCodes(packed: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  const rowBytes = Math.ceil((cols * bits) / 8), out = new Uint8Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const bit = j * bits;
      let c = 0;
      for (let b = 0; b < bits; b++) {
        c |= ((packed[i * rowBytes + ((bit + b) >> 3)] >> ((bit + b) & 7)) & 1) << b;
      }
      out[i * cols + j] = c;
    }
  }
  return out;
}

const FP4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];

/**
 * Decodes MXFP4 blocks (GPT-OSS): `blocks [..., G, 16]` bytes of E2M1 values (low nibble first), `scales
 * [..., G]` exponents, value = fp4 · 2^(scale − 127); returns `[..., G·32]` as float32.
 *
 * @example
 * ```ts
 * import { decodeMxfp4 } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * const blocks = new Uint8Array(16); blocks[0] = 0x2f; // low nibble 0xf = −6, high 0x2 = 1
 * const v = decodeMxfp4(blocks, new Uint8Array([128]));
 * assert.deepEqual([v.length, v[0], v[1]], [32, -12, 2]);
 * ```
 */
export function decodeMxfp4(blocks: Uint8Array, scales: Uint8Array): Float32Array {
  if (blocks.length !== scales.length * 16) {
    throw new ShapeError("MXFP4 blocks", [scales.length * 16], [blocks.length], "16 bytes per scale");
  }
  const out = new Float32Array(blocks.length * 2);
  for (let g = 0; g < scales.length; g++) {
    const s = 2 ** (scales[g] - 127);
    for (let b = 0; b < 16; b++) {
      const byte = blocks[g * 16 + b], o = g * 32 + 2 * b;
      out[o] = FP4[byte & 15] * s;
      out[o + 1] = FP4[byte >> 4] * s;
    }
  }
  return out;
}
