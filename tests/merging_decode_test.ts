// The merge engine's decode paths (lib/io/dtype.ts decodeFloatsInto / decodeFloatsInPlace) against
// decodeFloats: the same floats, bit for bit, for every entry (NaN payloads, infinities, subnormals included).
import assert from "node:assert/strict";
import { decodeFloats, type Dtype, encodeFloats } from "../lib/io/mod.ts";
import { decodeFloatsInPlace, decodeFloatsInto } from "../lib/io/dtype.ts";

/** Every 16-bit pattern, then a few random ones: as little-endian bytes. */
function allHalves(): Uint8Array {
  const b = new Uint8Array(2 * 65536 + 6);
  for (let i = 0; i < 65536; i++) {
    b[2 * i] = i & 0xff;
    b[2 * i + 1] = i >>> 8;
  }
  b.set([1, 2, 3, 4, 5, 6], 2 * 65536);
  return b;
}

const bits = (a: Float32Array | Float64Array) =>
  a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a;

for (const dtype of ["BF16", "F16"] as Dtype[]) {
  Deno.test(`decode ${dtype}: into a buffer, in its own grown buffer, and from an odd offset`, () => {
    const raw = allHalves(), want = bits(decodeFloats(raw, dtype));
    const out = decodeFloatsInto(raw, dtype, new Float32Array(raw.length / 2));
    assert.deepEqual(bits(out), want);
    const odd = new Uint8Array(raw.length + 1);
    odd.set(raw, 1);
    assert.deepEqual(bits(decodeFloatsInto(odd.subarray(1), dtype, new Float32Array(raw.length / 2))), want);
    const own = raw.slice();
    const inPlace = decodeFloatsInPlace(own, dtype);
    assert.equal(own.byteLength, 0, "the raw buffer is detached");
    assert.equal(inPlace.byteOffset, 0);
    assert.deepEqual(bits(inPlace), want);
    // a view into a larger buffer is not taken over
    const big = new Uint8Array(raw.length + 8);
    big.set(raw, 8);
    assert.deepEqual(bits(decodeFloatsInPlace(big.subarray(8), dtype)), want);
    assert.equal(big.byteLength, raw.length + 8);
  });
}

Deno.test("decodeFloatsInto: F32 copies; wrong sizes, dtypes and overlaps are refused", () => {
  const raw = new Uint8Array(new Float32Array([1.5, -2, 3e-40]).buffer);
  assert.deepEqual(Array.from(decodeFloatsInto(raw, "F32", new Float32Array(3))), [
    1.5,
    -2,
    new Float32Array([3e-40])[0],
  ]);
  assert.throws(
    () => decodeFloatsInto(raw, "F32", new Float32Array(2)),
    /12 bytes of F32 are 3 entries, the output holds 2/,
  );
  assert.throws(() => decodeFloatsInto(raw, "F64", new Float32Array(1)), /F16, BF16 or F32/);
  const shared = new ArrayBuffer(16);
  assert.throws(
    () => decodeFloatsInto(new Uint8Array(shared, 2, 8), "BF16", new Float32Array(shared, 0, 4)),
    /overlap/,
  );
});

Deno.test("encodeFloats BF16: a Float32Array encodes to the same bytes as its values as numbers", () => {
  // every float32 whose top 16 bits run over all patterns, with low halves around the rounding ties
  const n = 65536 * 5, f = new Float32Array(n), u = new Uint32Array(f.buffer);
  const lows = [0, 0x7fff, 0x8000, 0x8001, 0xffff];
  for (let i = 0; i < 65536; i++) for (let j = 0; j < 5; j++) u[5 * i + j] = ((i << 16) | lows[j]) >>> 0;
  const fast = encodeFloats(f, "BF16"), slow = encodeFloats(Array.from(f), "BF16");
  assert.deepEqual(fast, slow);
  // hand-checked: 1 + 2^-8 (a tie, even below) → 1; 1 + 3·2^-8 (a tie, odd below) → 1 + 2^-6; NaN → 0x7fc0
  const h = new Uint16Array(
    encodeFloats(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, NaN, -0]), "BF16").buffer,
  );
  assert.deepEqual(Array.from(h), [0x3f80, 0x3f82, 0x7fc0, 0x8000]);
});

Deno.test("runJob: bf16 inputs decode in their own memory and are released once merged", async () => {
  const { runJob } = await import("../lib/merging/merge_run.ts");
  const bf = (xs: number[]) => encodeFloats(new Float32Array(xs), "BF16");
  const base = bf([1, 2, 3, 4]), a = bf([2, 2, 5, 4]), b = bf([1, 0, 3, 8]);
  const raw = (bytes: Uint8Array) => ({ shape: [4], dtype: "BF16" as Dtype, bytes });
  const out = runJob({
    options: { method: "task_arithmetic", name: "w", consumeInputs: true, output: "f32" },
    base: raw(base),
    models: [{ tensor: raw(a), params: { weight: 1 } }, { tensor: raw(b), params: { weight: 0.5 } }],
  });
  // base + (a − base) + 0.5·(b − base) = [2, 1, 5, 6]
  assert.deepEqual(Array.from(out.data), [2, 1, 5, 6]);
  for (const x of [base, a, b]) assert.equal(x.buffer.byteLength, 0, "raw bytes detached");
  assert.ok(out.data instanceof Float32Array && out.data.buffer.byteLength === 16, "the result is intact");
});
