// Error wording a new user meets: writing a non-float tensor from numbers names the dtype and says how
// to give its data (nothing is being merged, so no "merged floats").
import assert from "node:assert/strict";
import { OptionError } from "../lib/core/errors.ts";
import { encodeFloats } from "../lib/io/dtype.ts";
import { writeCheckpoint } from "../lib/io/checkpoint.ts";
import { withTempDir } from "./harness.ts";

const WORDS =
  'dtype = "I32": only float dtypes (F16, BF16, F32, F64) are encoded from numbers; give I32 data as its raw little-endian bytes (a Uint8Array)';

Deno.test("encodeFloats / writeCheckpoint with an I32 spec and numbers: the message says what to give", async () => {
  assert.throws(
    () => encodeFloats([1, 2], "I32"),
    (e: Error) => e instanceof OptionError && e.message === WORDS,
  );
  await withTempDir(async (dir) => {
    const spec = [{ name: "ids", dtype: "I32" as const, shape: [2] }];
    await assert.rejects(
      () => writeCheckpoint(`${dir}/out`, spec, () => [1, 2]),
      (e: Error) => e instanceof OptionError && e.message === WORDS,
    );
    // the raw bytes are written as given
    await writeCheckpoint(`${dir}/ok`, spec, () => new Uint8Array(new Int32Array([1, 2]).buffer));
    assert.ok(Deno.statSync(`${dir}/ok/model.safetensors`).isFile);
  });
});
