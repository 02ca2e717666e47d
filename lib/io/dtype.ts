/**
 * safetensors dtypes and the float conversions moekit needs, bit-exact with round-to-nearest-even:
 * bf16 ↔ f32 and IEEE binary16 (f16, with subnormals) ↔ f32.
 * @module
 */

import { MoekitError, OptionError } from "../core/errors.ts";

/**
 * A safetensors dtype.
 *
 * @example
 * ```ts
 * import { DTYPE_BYTES, type Dtype } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const d: Dtype = "BF16";
 * assert.equal(DTYPE_BYTES[d], 2);
 * ```
 */
export type Dtype =
  | "BOOL"
  | "U8"
  | "I8"
  | "U16"
  | "I16"
  | "F16"
  | "BF16"
  | "U32"
  | "I32"
  | "F32"
  | "U64"
  | "I64"
  | "F64"
  | "F8_E4M3"
  | "F8_E5M2";

/**
 * Bytes per element of each dtype.
 *
 * @example
 * ```ts
 * import { DTYPE_BYTES } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.deepEqual([DTYPE_BYTES.F32, DTYPE_BYTES.I64], [4, 8]);
 * ```
 */
export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};

/** The float dtypes moekit decodes and merges; others pass through as bytes. */
export const FLOAT_DTYPES: readonly Dtype[] = ["F16", "BF16", "F32", "F64"];

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/**
 * The binary16 bits moekit writes for every NaN (a quiet NaN, no sign, no payload), whatever NaN it was
 * given, so the same values always give the same bytes; BF16 NaNs are written as 0x7fc0 likewise.
 *
 * @example
 * ```ts
 * import { encodeFloats, F16_NAN } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const bytes = encodeFloats(new Float64Array([-NaN, NaN]), "F16");
 * assert.deepEqual(Array.from(new Uint16Array(bytes.buffer)), [F16_NAN, F16_NAN]);
 * ```
 */
export const F16_NAN = 0x7e00;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * f32 → bf16 bits, round to nearest even (NaN → 0x7FC0).
 *
 * @example
 * ```ts
 * import { bf16Bits } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.equal(bf16Bits(1 / 3), 0x3eab);
 * ```
 */
export function bf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  f32[0] = x;
  const u = u32[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * bf16 bits → number (exact).
 *
 * @example
 * ```ts
 * import { bf16ToNumber } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.equal(bf16ToNumber(0x3eab), 0.333984375);
 * ```
 */
export function bf16ToNumber(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/**
 * Stores `values` as IEEE binary16 into `out` through the runtime's `Float16Array` (one rounding from
 * float64, no double rounding through float32), every NaN as {@link F16_NAN} (a NaN's bits through
 * `Float16Array` vary: V8 keeps the payload on some paths and not on others). Front to back, so `out` may
 * overlay `values`' own buffer. Returns false, storing nothing, where the runtime has no `Float16Array`.
 *
 * @example
 * ```ts
 * import { F16_NAN, storeF16 } from "./dtype.ts";
 * import assert from "node:assert/strict";
 * const out = new Uint16Array(3);
 * if (storeF16([1, NaN, 65520], out)) assert.deepEqual(Array.from(out), [0x3c00, F16_NAN, 0x7c00]);
 * ```
 */
export function storeF16(values: ArrayLike<number>, out: Uint16Array): boolean {
  const F16 = (globalThis as {
    Float16Array?: new (b: ArrayBufferLike, o: number, n: number) => { [i: number]: number };
  }).Float16Array;
  if (!F16) return false;
  const h = new F16(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < out.length; i++) {
    const v = values[i];
    if (v === v) h[i] = v;
    else out[i] = F16_NAN;
  }
  return true;
}

/**
 * f32 → IEEE binary16 bits, round to nearest even, with subnormals and overflow to ±Inf.
 *
 * @example
 * ```ts
 * import { f16Bits } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.deepEqual([f16Bits(0.1), f16Bits(65520)], [0x2e66, 0x7c00]);
 * ```
 */
export function f16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0], sign = (u >>> 16) & 0x8000, exp = (u >>> 23) & 0xff, mant = u & 0x7fffff;
  if (exp === 0xff) return mant ? F16_NAN : sign | 0x7c00; // every NaN → the one quiet NaN; ±Inf
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflow to ±0
    const m = mant | 0x800000, shift = 14 - e; // subnormal: value = m · 2^(e−1−23+… )
    const half = 1 << (shift - 1), rest = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // may carry into the exponent (→ Inf): correct
  return sign | h;
}

/**
 * IEEE binary16 bits → number (exact).
 *
 * @example
 * ```ts
 * import { f16ToNumber } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.equal(f16ToNumber(0x3555), 0.333251953125);
 * ```
 */
export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1, exp = (bits >>> 10) & 0x1f, mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Decodes little-endian bytes of a float dtype into a Float32Array (F16/BF16/F32) or Float64Array (F64).
 * F32/F64 results are views over `bytes` when it is aligned (no copy).
 *
 * @example
 * ```ts
 * import { decodeFloats } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Array.from(decodeFloats(new Uint8Array([0x80, 0x3f, 0x00, 0xc0]), "BF16")), [1, -2]);
 * ```
 */
export function decodeFloats(bytes: Uint8Array, dtype: Dtype): Float32Array | Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const size = DTYPE_BYTES[dtype];
  if (LITTLE_ENDIAN && bytes.byteOffset % size === 0) {
    // typed-array views straight over the bytes (F32/F64 results share them), bulk conversion otherwise
    if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    if (dtype === "F64") return new Float64Array(bytes.buffer, bytes.byteOffset, n);
    if (dtype === "BF16") {
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n),
        out = new Float32Array(n),
        o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = h[i] << 16;
      return out;
    }
  }
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    case "F64": {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    case "BF16": {
      const out = new Float32Array(n), o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    case "F16": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToNumber(view.getUint16(2 * i, true));
      return out;
    }
    default:
      throw new OptionError(
        "dtype",
        dtype,
        `only ${FLOAT_DTYPES.join(", ")} decode to floats; other dtypes pass through as bytes`,
      );
  }
}

/**
 * Decodes little-endian F16/BF16/F32 bytes straight into `out` (a Float32Array of the tensor's entry
 * count): no intermediate arrays. `bytes` may share its memory with `out`, starting at the same place (a
 * 2-byte tensor decoded into its own grown buffer): entries are decoded from the last one down, so each is
 * read before it is overwritten. Internal (used by the merge engine; not in the `io` barrel).
 */
export function decodeFloatsInto(bytes: Uint8Array, dtype: Dtype, out: Float32Array): Float32Array {
  if (dtype !== "F16" && dtype !== "BF16" && dtype !== "F32") {
    throw new OptionError("dtype", dtype, "decodeFloatsInto decodes F16, BF16 or F32 into a Float32Array");
  }
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  if (n !== out.length) {
    throw new MoekitError(
      `decodeFloatsInto: ${bytes.byteLength} bytes of ${dtype} are ${n} entries, the output holds ${out.length}`,
    );
  }
  const sameStart = bytes.buffer === out.buffer && bytes.byteOffset === out.byteOffset;
  if (bytes.buffer === out.buffer && !sameStart) {
    const a = bytes.byteOffset, b = out.byteOffset;
    if (a < b + out.byteLength && b < a + bytes.byteLength) {
      throw new MoekitError(
        "decodeFloatsInto: the bytes overlap the output at another offset; copy them first",
      );
    }
  }
  if (dtype === "F32") {
    if (!sameStart) out.set(decodeFloats(bytes, "F32"));
    return out;
  }
  const aligned = LITTLE_ENDIAN && bytes.byteOffset % 2 === 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "BF16") {
    const o32 = new Uint32Array(out.buffer, out.byteOffset, n);
    if (aligned && !sameStart) {
      // separate memory: front to back (faster than the backward loop the shared case needs)
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) o32[i] = h[i] << 16;
    } else if (aligned) {
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = n - 1; i >= 0; i--) o32[i] = h[i] << 16;
    } else for (let i = n - 1; i >= 0; i--) o32[i] = view.getUint16(2 * i, true) << 16;
    return out;
  }
  if (aligned) {
    const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    for (let i = n - 1; i >= 0; i--) out[i] = f16ToNumber(h[i]);
  } else for (let i = n - 1; i >= 0; i--) out[i] = f16ToNumber(view.getUint16(2 * i, true));
  return out;
}

/**
 * Decodes a tensor's own F16/BF16/F32 bytes (a whole, unshared buffer, as a file read returns) into a
 * new Float32Array and frees the raw bytes at once (`ArrayBuffer.prototype.transfer(0)` detaches them)
 * instead of at the next collection. Other inputs (a view into a larger buffer, another dtype, no
 * `transfer`) decode as {@link decodeFloats} does. `bytes` must not be used afterwards. Internal (used by
 * the merge engine; not in the `io` barrel).
 */
export function decodeFloatsInPlace(bytes: Uint8Array, dtype: Dtype): Float32Array | Float64Array {
  const buf = bytes.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  if (
    (dtype !== "F16" && dtype !== "BF16") || !(buf instanceof ArrayBuffer) ||
    typeof buf.transfer !== "function" ||
    bytes.byteOffset !== 0 || bytes.byteLength !== buf.byteLength || !LITTLE_ENDIAN
  ) return decodeFloats(bytes, dtype);
  // a fresh float32 array decoded front to back, then the raw bytes detached: cheaper than growing the
  // raw buffer in place (no copy of the raw bytes into the grown buffer), the same peak (raw + floats)
  const n = bytes.byteLength / 2, out = new Float32Array(n);
  decodeFloatsInto(bytes, dtype, out);
  buf.transfer(0);
  return out;
}

/**
 * Encodes numbers as little-endian bytes of a float dtype (round to nearest even).
 *
 * @example
 * ```ts
 * import { encodeFloats } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Array.from(encodeFloats([1, -2], "F32")), [0, 0, 128, 63, 0, 0, 0, 192]);
 * ```
 */
export function encodeFloats(values: ArrayLike<number>, dtype: Dtype): Uint8Array {
  const n = values.length, out = new Uint8Array(n * DTYPE_BYTES[dtype]), view = new DataView(out.buffer);
  switch (dtype) {
    case "F32":
      if (LITTLE_ENDIAN) new Float32Array(out.buffer).set(values); // bulk copy, same rounding as setFloat32
      else for (let i = 0; i < n; i++) view.setFloat32(4 * i, values[i], true);
      return out;
    case "F64":
      if (LITTLE_ENDIAN) new Float64Array(out.buffer).set(values);
      else for (let i = 0; i < n; i++) view.setFloat64(8 * i, values[i], true);
      return out;
    case "BF16": {
      if (LITTLE_ENDIAN && values instanceof Float32Array) {
        // float32 input: round its bits straight into the output (no chunk copy, no DataView calls)
        const u = new Uint32Array(values.buffer, values.byteOffset, n), o16 = new Uint16Array(out.buffer);
        for (let i = 0; i < n; i++) {
          const b = u[i];
          o16[i] = (b & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
        }
        return out;
      }
      // round through float32, then to bf16 with round-to-nearest-even on the bits, a chunk at a time
      const chunk = Math.max(1, Math.min(n, 1 << 20)),
        f = new Float32Array(chunk),
        u = new Uint32Array(f.buffer);
      for (let start = 0; start < n; start += chunk) {
        const len = Math.min(chunk, n - start);
        for (let i = 0; i < len; i++) f[i] = values[start + i];
        for (let i = 0; i < len; i++) {
          const b = u[i], bits = f[i] !== f[i] ? 0x7fc0 : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
          view.setUint16(2 * (start + i), bits, true);
        }
      }
      return out;
    }
    case "F16": {
      if (storeF16(values, new Uint16Array(out.buffer))) return out;
      for (let i = 0; i < n; i++) view.setUint16(2 * i, f16Bits(values[i]), true);
      return out;
    }
    default:
      throw new OptionError(
        "dtype",
        dtype,
        `only float dtypes (${FLOAT_DTYPES.join(", ")}) are encoded from numbers; ` +
          `give ${dtype} data as its raw little-endian bytes (a Uint8Array)`,
      );
  }
}
