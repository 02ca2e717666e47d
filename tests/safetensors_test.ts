import assert from "node:assert/strict";
import {
  bf16Bits,
  bf16ToNumber,
  decodeFloats,
  encodeFloats,
  f16Bits,
  f16ToNumber,
  openCheckpoint,
  openSafetensors,
  SafetensorsError,
  writeCheckpoint,
  writeSafetensors,
} from "../mod.ts";

Deno.test("dtype conversions: bf16 and f16 round to nearest even (merging.md §11)", () => {
  assert.equal(bf16Bits(1 / 3), 0x3eab);
  assert.equal(bf16ToNumber(0x3eab), 0.333984375);
  const fromBits = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0];
  assert.equal(bf16Bits(fromBits(0x3f808000)), 0x3f80);
  assert.equal(bf16Bits(fromBits(0x3f818000)), 0x3f82);
  assert.equal(bf16Bits(65504), 0x4780);
  assert.equal(bf16Bits(NaN), 0x7fc0);
  const f16: [number, number][] = [
    [1 / 3, 0x3555],
    [0.1, 0x2e66],
    [65519, 0x7bff],
    [65520, 0x7c00],
    [2 ** -24, 0x0001],
    [1e-8, 0],
    [-2, 0xc000],
    [2 ** -14, 0x0400],
  ];
  for (const [x, bits] of f16) {
    assert.equal(f16Bits(x), bits, `f16(${x})`);
    assert.deepEqual(Array.from(encodeFloats([x], "F16")), [bits & 0xff, bits >> 8], `encode f16(${x})`);
  }
  assert.equal(f16ToNumber(0x3555), 0.333251953125);
  assert.equal(f16ToNumber(0x0001), 2 ** -24);
  // every f16 bit pattern round-trips (except NaNs)
  for (let b = 0; b < 0x10000; b++) {
    if ((b & 0x7c00) !== 0x7c00 || (b & 0x3ff) === 0) assert.equal(f16Bits(f16ToNumber(b)), b);
  }
});

Deno.test("safetensors: the 72-byte example of merging.md §11, byte for byte", async () => {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  await writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [2], data: [1, -2] }]);
  const bytes = await Deno.readFile(path);
  assert.equal(bytes.length, 72);
  assert.deepEqual(Array.from(bytes.subarray(0, 8)), [0x38, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(
    new TextDecoder().decode(bytes.subarray(8, 64)),
    '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ',
  );
  assert.deepEqual(Array.from(bytes.subarray(64)), [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
});

Deno.test("safetensors round trips: F32, F64, F16, BF16 (rounded), passthrough dtypes, scalars and empty tensors", async () => {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  const vals = [0, 1 / 3, -2.5, 65504, 1e-6, -0.1];
  await writeSafetensors(path, [
    { name: "f32", dtype: "F32", shape: [2, 3], data: vals },
    { name: "f64", dtype: "F64", shape: [6], data: vals },
    { name: "f16", dtype: "F16", shape: [6], data: vals },
    { name: "bf16", dtype: "BF16", shape: [3, 2], data: vals },
    { name: "ids", dtype: "I64", shape: [2], data: new Uint8Array(16).fill(7) },
    { name: "flag", dtype: "BOOL", shape: [], data: new Uint8Array([1]) },
    { name: "empty", dtype: "F32", shape: [0, 4], data: [] },
  ], { format: "pt" });
  const f = await openSafetensors(path);
  assert.deepEqual(Array.from((await f.read("f32")).data), Array.from(Float32Array.from(vals)));
  assert.deepEqual(Array.from((await f.read("f64")).data), vals);
  assert.deepEqual(Array.from((await f.read("f16")).data), vals.map((v) => f16ToNumber(f16Bits(v))));
  assert.deepEqual(Array.from((await f.read("bf16")).data), vals.map((v) => bf16ToNumber(bf16Bits(v))));
  assert.deepEqual((await f.read("bf16")).shape, [3, 2]);
  assert.deepEqual(Array.from(await f.readBytes("ids")), Array(16).fill(7));
  assert.deepEqual(Array.from(await f.readBytes("flag")), [1]);
  assert.equal((await f.read("empty")).data.length, 0);
  assert.equal(f.metadata.format, "pt");
  await assert.rejects(() => f.read("ids"), /I64, not a float dtype; use readBytes/);
  await assert.rejects(() => f.read("nope"), /no tensor named nope/);
  // the reference order: 8-byte dtypes first, then by name → element-aligned offsets
  const order = [...f.tensors.values()].sort((a, b) => a.begin - b.begin).map((t) => t.name);
  assert.deepEqual(order.slice(0, 2), ["f64", "ids"]);
  f.close();
  assert.deepEqual(Array.from(decodeFloats(encodeFloats([1.5], "BF16"), "BF16")), [1.5]);
});

/** Builds a file from a header object and a data buffer. */
function build(header: unknown, data: Uint8Array, lengthOverride?: number, trailing = 0): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length + trailing);
  new DataView(out.buffer).setBigUint64(0, BigInt(lengthOverride ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("corrupt files: each case is a SafetensorsError naming the problem", async () => {
  const ok = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const cases: [string, Uint8Array, RegExp][] = [
    ["truncated below 8 bytes", new Uint8Array(5), /too short for the 8-byte header length/],
    ["header length > file", build(ok, new Uint8Array(8), 10_000), /header length 10000 exceeds the file/],
    ["header length > 100 MB", build(ok, new Uint8Array(8), 2 ** 40), /exceeds the 100 MB limit/],
    ["bad JSON", build('{"a": {"dtype": "F32",', new Uint8Array(8)), /not valid JSON/],
    ["not an object", build("[1,2]", new Uint8Array(0)), /does not start with '\{'/],
    [
      "unknown dtype",
      build({ a: { dtype: "F31", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /tensor a: unknown dtype "F31"/,
    ],
    [
      "shape/bytes mismatch",
      build({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /shape \[3\] × F32 is 12 bytes but data_offsets span 8/,
    ],
    [
      "overlap",
      build({
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      }, new Uint8Array(8)),
      /overlap the previous tensor/,
    ],
    [
      "hole",
      build({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
      /hole in the data buffer at bytes 0..4/,
    ],
    [
      "past the end",
      build({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)),
      /past the end/,
    ],
    [
      "trailing garbage",
      build(ok, new Uint8Array(8), undefined, 3),
      /3 trailing bytes after the last tensor/,
    ],
    ["truncated data", build(ok, new Uint8Array(8)).subarray(0, 66), /past the end/],
    [
      "bad metadata",
      build({ __metadata__: { a: 1 }, ...ok }, new Uint8Array(8)),
      /__metadata__ must map strings to strings/,
    ],
    [
      "negative shape",
      build({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /not a list of integers/,
    ],
  ];
  for (const [what, bytes, pattern] of cases) {
    const path = await Deno.makeTempFile({ suffix: ".safetensors" });
    await Deno.writeFile(path, bytes);
    await assert.rejects(
      () => openSafetensors(path),
      (e) => e instanceof SafetensorsError && pattern.test(e.message) && e.message.startsWith(path),
      what,
    );
  }
});

Deno.test("checkpoints: shards planned by bytes, index written last, reopened by name", async () => {
  const dir = await Deno.makeTempDir();
  const specs = Array.from(
    { length: 5 },
    (_, i) => ({ name: `layers.${i}.w`, dtype: "BF16" as const, shape: [4, 4] }),
  );
  const files = await writeCheckpoint(
    dir,
    specs,
    (name) => Array(16).fill(Number(name.split(".")[1])),
    { shardBytes: 70 },
  );
  assert.equal(files.length, 3); // 32 bytes per tensor: 2 per shard
  const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
  assert.equal(index.metadata.total_size, 160);
  assert.equal(index.weight_map["layers.4.w"], "model-00003-of-00003.safetensors");
  const ck = await openCheckpoint(dir);
  assert.deepEqual([...ck.names].sort(), specs.map((s) => s.name));
  assert.deepEqual(Array.from((await ck.read("layers.3.w")).data), Array(16).fill(3));
  ck.close();
  const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.includes("partial"));
  assert.deepEqual(leftovers, []);
  // a failing producer leaves nothing under a final name
  const dir2 = await Deno.makeTempDir();
  await assert.rejects(() =>
    writeCheckpoint(dir2, specs, (name) => {
      if (name === "layers.3.w") throw new Error("boom");
      return Array(16).fill(1);
    }, { shardBytes: 70 }), /boom/);
  assert.deepEqual([...Deno.readDirSync(dir2)], []);
  await assert.rejects(
    () => openCheckpoint(dir2),
    /no model.safetensors.index.json and no .safetensors files/,
  );
});
