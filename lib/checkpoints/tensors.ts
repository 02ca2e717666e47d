/**
 * Bringing activations in: `loadTensor` reads a `.npy` array (float32/float16/float64, C order) or a tensor of a
 * safetensors file as a float32 matrix, so hidden states captured from a real run can be routed.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError } from "../core/errors.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { f16ToNumber } from "../io/dtype.ts";

/**
 * An unreadable activation file: the message names the file and what is wrong.
 *
 * @example
 * ```ts
 * import { TensorFileError } from "@moekit/moekit/checkpoints";
 * import assert from "node:assert/strict";
 * assert.match(new TensorFileError("x.npy", "Fortran order").message, /x\.npy: Fortran order/);
 * ```
 */
export class TensorFileError extends MoekitError {
  /** The file. */
  readonly path: string;
  /** Builds the message from the file and the problem. */
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.path = path;
  }
}

/** `[a, b, …, d]` → `[a·b·…, d]`: leading dimensions become rows (batch × sequence → tokens). */
function asRows(path: string, data: Float32Array, shape: readonly number[]): Mat {
  if (shape.length === 0) return matrix.from(data, 1, 1);
  const cols = shape[shape.length - 1];
  if (cols === 0) throw new TensorFileError(path, `shape [${shape.join(",")}] has no columns`);
  return matrix.from(data, data.length / cols, cols);
}

/**
 * Reads an activation tensor as a float32 matrix `[rows, last dim]` (leading dimensions flattened, so
 * `[batch, seq, d]` becomes `[batch·seq, d]`):
 * - `.npy`: float32 (`<f4`), float16 (`<f2`) or float64 (`<f8`, numpy's default, rounded to float32), C
 *   order; Fortran order, object arrays and other dtypes are refused with a {@link TensorFileError} that
 *   says how to convert;
 * - safetensors: the tensor `name` (optional when the file holds one tensor), F32/F16/BF16/F64.
 *
 * @example
 * ```ts
 * import { loadTensor } from "@moekit/moekit/checkpoints";
 * import { writeSafetensors } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [{ name: "layers.0.input", dtype: "BF16", shape: [2, 3, 4], data: new Float32Array(24).fill(0.5) }]);
 * const x = await loadTensor(path);
 * assert.deepEqual([x.rows, x.cols, x.data[0]], [6, 4, 0.5]);
 * await Deno.remove(path);
 * ```
 */
export async function loadTensor(path: string, name?: string): Promise<Mat> {
  const head = await readHead(path);
  if (head[0] === 0x93 && String.fromCharCode(...head.subarray(1, 6)) === "NUMPY") {
    if (name !== undefined) {
      throw new TensorFileError(path, `a .npy file holds one array; drop the name ${name}`);
    }
    return readNpy(path, await Deno.readFile(path));
  }
  const file = await openSafetensors(path);
  try {
    const names = [...file.tensors.keys()];
    const pick = name ?? (names.length === 1 ? names[0] : undefined);
    // the first names, and how many more (a listing cut short must say so)
    const some = names.slice(0, 8).join(", ") + (names.length > 8 ? `, … (${names.length - 8} more)` : "");
    if (pick === undefined) {
      throw new TensorFileError(path, `holds ${names.length} tensors; name one of ${some}`);
    }
    const info = file.tensors.get(pick);
    if (!info) throw new TensorFileError(path, `has no tensor ${pick}; it has ${some}`);
    if (!["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
      throw new TensorFileError(
        path,
        `tensor ${pick} is ${info.dtype}; activations must be F32, F16, BF16 or F64`,
      );
    }
    const t = await file.read(pick);
    const data = t.data instanceof Float32Array
      ? t.data
      : Float32Array.from(t.data, (v, i) => toFloat32(path, v, i));
    return asRows(path, data, info.shape);
  } finally {
    file.close();
  }
}

async function readHead(path: string): Promise<Uint8Array> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new TensorFileError(path, `cannot open (${(e as Error).message})`);
  }
  try {
    const buf = new Uint8Array(6);
    let got = 0;
    while (got < 6) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    f.close();
  }
}

/** A float64 element as float32; a finite value beyond float32's range is a {@link TensorFileError}. */
function toFloat32(path: string, v: number, i: number): number {
  const f = Math.fround(v);
  if (f === v || Number.isFinite(f) || !Number.isFinite(v)) return f;
  throw new TensorFileError(path, `element ${i} (${v}) is beyond float32's range (±3.4e38)`);
}

/** Bytes per element of the `.npy` dtypes read (little-endian floats; float64 is rounded to float32). */
const NPY_SIZES: Record<string, number> = { "<f8": 8, "<f4": 4, "<f2": 2, "|f2": 2 };

/** Parses a `.npy` file (format versions 1–3). */
export function readNpy(path: string, bytes: Uint8Array): Mat {
  const major = bytes[6];
  if (![1, 2, 3].includes(major)) throw new TensorFileError(path, `unknown .npy format version ${major}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12, dataStart = start + headerLen;
  if (dataStart > bytes.length) throw new TensorFileError(path, `.npy header runs past the end of the file`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(start, dataStart));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new TensorFileError(
      path,
      `.npy header ${JSON.stringify(header.trim())} lacks descr, fortran_order or shape`,
    );
  }
  if (descr.includes("O")) {
    throw new TensorFileError(
      path,
      `.npy holds an object array (descr '${descr}'); save a numeric array (np.float32)`,
    );
  }
  if (fortran === "True") {
    throw new TensorFileError(
      path,
      `.npy is in Fortran (column-major) order; save np.ascontiguousarray(x) instead`,
    );
  }
  const size = NPY_SIZES[descr];
  if (size === undefined) {
    throw new TensorFileError(
      path,
      `.npy dtype '${descr}' is not float32 ('<f4'), float16 ('<f2') or float64 ('<f8'); save x.astype(np.float32)`,
    );
  }
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  if (shape.some((v) => !Number.isSafeInteger(v) || v < 0)) {
    throw new TensorFileError(path, `.npy shape (${shapeText}) is not a tuple of integers`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.length - dataStart !== n * size) {
    throw new TensorFileError(
      path,
      `.npy data is ${bytes.length - dataStart} bytes; shape (${shapeText}) of ${descr} needs ${n * size}`,
    );
  }
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    data[i] = size === 8
      ? toFloat32(path, view.getFloat64(dataStart + 8 * i, true), i)
      : size === 4
      ? view.getFloat32(dataStart + 4 * i, true)
      : f16ToNumber(view.getUint16(dataStart + 2 * i, true));
  }
  return asRows(path, data, shape);
}
