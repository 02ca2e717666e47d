import assert from "node:assert/strict";
import {
  bf16Bits,
  bf16ToNumber,
  CheckpointError,
  decodeFloats,
  type EncodedBytes,
  encodeFloats,
  f16Bits,
  f16ToNumber,
  openCheckpoint,
  openSafetensors,
  SafetensorsError,
  type TensorChunks,
  writeCheckpoint,
  writeSafetensors,
  writeSafetensorsStream,
} from "../lib/io/mod.ts";
import { writeSafetensorsFile } from "../lib/io/safetensors.ts";
import { MoekitError } from "../lib/core/errors.ts";
import { withTempDir } from "./harness.ts";

/** Runs `f` with a fresh temporary folder, removed afterwards (also on failure). */
const inTemp = (f: (dir: string) => Promise<void>) => withTempDir(f, "moekit-io-");

Deno.test("dtype conversions: bf16 and f16 round to nearest even", () => {
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

Deno.test("safetensors: the 72-byte example of the format, byte for byte", () =>
  inTemp(async (dir) => {
    const path = `${dir}/a.safetensors`;
    await writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [2], data: [1, -2] }]);
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, 72);
    assert.deepEqual(Array.from(bytes.subarray(0, 8)), [0x38, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(
      new TextDecoder().decode(bytes.subarray(8, 64)),
      '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ',
    );
    assert.deepEqual(Array.from(bytes.subarray(64)), [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.safetensors"], "no temporary left");
  }));

Deno.test("safetensors round trips: F32, F64, F16, BF16 (rounded), passthrough dtypes, scalars and empty tensors", () =>
  inTemp(async (dir) => {
    const path = `${dir}/r.safetensors`;
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
    await assert.rejects(() => f.read("nope"), /no tensor named "nope"/);
    // the reference order: 8-byte dtypes first, then by name → element-aligned offsets
    const order = [...f.tensors.values()].sort((a, b) => a.begin - b.begin).map((t) => t.name);
    assert.deepEqual(order.slice(0, 2), ["f64", "ids"]);
    f.close();
    assert.deepEqual(Array.from(decodeFloats(encodeFloats([1.5], "BF16"), "BF16")), [1.5]);
    await assert.rejects(() => f.read("f32"), (e) => e instanceof SafetensorsError && e.rule === "closed");
  }));

const enc = new TextEncoder();

/** Builds a file from header bytes (or text, or an object) and a data buffer. */
function build(header: unknown, data: Uint8Array, lengthOverride?: bigint, trailing = 0): Uint8Array {
  const json = header instanceof Uint8Array
    ? header
    : enc.encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length + trailing);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Header bytes from text with raw bytes spliced in at `marker`. */
function withBytes(text: string, marker: string, bytes: number[]): Uint8Array {
  const [a, b] = text.split(marker);
  return new Uint8Array([...enc.encode(a), ...bytes, ...enc.encode(b)]);
}

const ENTRY = '"dtype":"F32","shape":[2],"data_offsets":[0,8]';

Deno.test("invalid files: each is a SafetensorsError naming the rule and the byte offset", () =>
  inTemp(async (dir) => {
    const ok = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
    const d8 = new Uint8Array(8);
    /** [what, file, rule, offset (or the text whose position in the header is the offset), message] */
    const cases: [string, Uint8Array, string, number | string | undefined, RegExp][] = [
      [
        "truncated below 8 bytes",
        new Uint8Array(5),
        "file-size",
        0,
        /too short for the 8-byte header length/,
      ],
      [
        "header length > file",
        build(ok, d8, 10_000n),
        "header-length",
        0,
        /header length 10000 exceeds the file/,
      ],
      [
        "header length > 100 MB",
        build(ok, d8, 2n ** 40n),
        "header-length",
        0,
        /exceeds the 100000000-byte limit/,
      ],
      [
        "header length 2^64-1",
        build(ok, d8, 2n ** 64n - 1n),
        "header-length",
        0,
        /exceeds the 100000000-byte limit/,
      ],
      [
        "bad JSON",
        build(`{"a": {${ENTRY},`, d8),
        "json",
        "",
        /invalid JSON at byte \d+: expected a string key/,
      ],
      ["not an object", build("[1,2]", new Uint8Array(0)), "header-start", 8, /does not start with '\{'/],
      ["leading space", build(` {"a":{${ENTRY}}}`, d8), "header-start", 8, /does not start with '\{'/],
      [
        "unknown dtype",
        build({ a: { dtype: "F31", shape: [2], data_offsets: [0, 8] } }, d8),
        "dtype",
        '"F31"',
        /tensor "a": unknown dtype "F31"/,
      ],
      [
        "shape/bytes mismatch",
        build({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, d8),
        "size",
        "[0,8]",
        /shape \[3\] × F32 is 12 bytes but data_offsets span 8/,
      ],
      [
        "overlap",
        build({
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
        }, d8),
        "overlap",
        undefined,
        /overlap the previous tensor/,
      ],
      [
        "hole",
        build({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, d8),
        "hole",
        undefined,
        /hole in the data buffer at bytes 0..4/,
      ],
      [
        "past the end",
        build({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, d8),
        "bounds",
        "[0,16]",
        /past the end/,
      ],
      [
        "trailing garbage",
        build(ok, d8, undefined, 3),
        "trailing",
        undefined,
        /3 trailing bytes after the last tensor/,
      ],
      ["truncated data", build(ok, d8).subarray(0, 66), "bounds", "[0,8]", /past the end/],
      [
        "metadata with a number",
        build({ __metadata__: { a: 1 }, ...ok }, d8),
        "metadata",
        "1",
        /value of "a" is 1/,
      ],
      [
        "metadata a list",
        build({ __metadata__: ["pt"], ...ok }, d8),
        "metadata",
        '["pt"]',
        /not an object of strings/,
      ],
      [
        "metadata null",
        build({ __metadata__: null, ...ok }, d8),
        "metadata",
        "null",
        /not an object of strings/,
      ],
      [
        "metadata nested",
        build({ __metadata__: { a: { b: "c" } }, ...ok }, d8),
        "metadata",
        '{"b"',
        /value of "a" is an object/,
      ],
      [
        "negative shape",
        build({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, d8),
        "integer",
        "-2",
        /shape\[0\] is -2/,
      ],
      [
        "2.0 in shape",
        build(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, d8),
        "integer",
        "2.0",
        /written 2\.0/,
      ],
      [
        "2e0 in data_offsets",
        build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}`, d8),
        "integer",
        "8e0",
        /written 8e0/,
      ],
      [
        "a string in shape",
        build(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, d8),
        "integer",
        '"2"',
        /not an integer/,
      ],
      [
        "2^53 in shape",
        build(`{"a":{"dtype":"F32","shape":[9007199254740992],"data_offsets":[0,8]}}`, d8),
        "integer",
        "9007",
        /\[0, 2\^53\)/,
      ],
      [
        "1e400",
        build(`{"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,8]}}`, d8),
        "integer",
        "1e400",
        /written 1e400/,
      ],
      [
        "invalid UTF-8 (0xff)",
        build(withBytes(`{"a#":{${ENTRY}}}`, "#", [0xff]), d8),
        "utf8",
        11,
        /invalid UTF-8 at byte 11/,
      ],
      [
        "overlong UTF-8",
        build(withBytes(`{"a#":{${ENTRY}}}`, "#", [0xc0, 0x80]), d8),
        "utf8",
        11,
        /invalid UTF-8/,
      ],
      [
        "UTF-8 surrogate",
        build(withBytes(`{"a#":{${ENTRY}}}`, "#", [0xed, 0xa0, 0x80]), d8),
        "utf8",
        11,
        /invalid UTF-8/,
      ],
      [
        "truncated UTF-8",
        build(withBytes(`{"a#":{${ENTRY}}}`, "#", [0xe2, 0x82]), d8),
        "utf8",
        11,
        /invalid UTF-8/,
      ],
      [
        "lone high surrogate",
        build(`{"a\\ud800":{${ENTRY}}}`, d8),
        "surrogate",
        "\\ud800",
        /lone high surrogate/,
      ],
      [
        "lone low surrogate",
        build(`{"a\\udc00":{${ENTRY}}}`, d8),
        "surrogate",
        "\\udc00",
        /lone low surrogate/,
      ],
      [
        "high + non-low",
        build(`{"a\\ud800\\u0041":{${ENTRY}}}`, d8),
        "surrogate",
        "\\ud800",
        /lone high surrogate/,
      ],
      [
        "duplicate key",
        build(`{"a":{${ENTRY}},"a":{${ENTRY}}}`, d8),
        "duplicate-key",
        8 + `{"a":{${ENTRY}},`.length,
        /duplicate key "a"/,
      ],
      ["entry not an object", build(`{"a":[1]}`, d8), "entry", "[1]", /entry is \[1\], not an object/],
      [
        "missing data_offsets",
        build(`{"a":{"dtype":"F32","shape":[2]}}`, d8),
        "entry",
        `{"dtype`,
        /needs dtype, shape and data_offsets/,
      ],
      [
        "3 offsets",
        build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, d8),
        "offsets",
        "[0,8,8]",
        /not \[begin, end\]/,
      ],
      [
        "end < begin",
        build(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, d8),
        "offsets",
        "[8,0]",
        /end before/,
      ],
    ];
    for (const [what, bytes, rule, at, pattern] of cases) {
      const path = `${dir}/f.safetensors`;
      await Deno.writeFile(path, bytes);
      const header = new TextDecoder().decode(bytes.subarray(8));
      const offset = typeof at === "string"
        ? (at === "" ? bytes.length - 8 : 8 + enc.encode(header.slice(0, header.indexOf(at))).length)
        : at;
      await assert.rejects(
        () => openSafetensors(path),
        (e) => {
          assert.ok(e instanceof SafetensorsError, `${what}: ${e}`);
          assert.equal(e.rule, rule, `${what}: ${e.message}`);
          assert.match(e.message, pattern, what);
          assert.ok(e.message.startsWith(path), what);
          if (offset !== undefined) {
            if (at === "") assert.ok(e.offset !== undefined && e.offset >= 8, what);
            else assert.equal(e.offset, offset, `${what}: ${e.message}`);
          }
          return true;
        },
        what,
      );
    }
    // accepted: a valid surrogate pair, a 0-sized tensor, extra fields in an entry, padding spaces
    await Deno.writeFile(
      `${dir}/ok.safetensors`,
      build(
        `{"\\ud83d\\ude00":{${ENTRY},"extra":[1.5]},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[8,8]}}   `,
        d8,
      ),
    );
    const f = await openSafetensors(`${dir}/ok.safetensors`);
    assert.deepEqual([...f.tensors.keys()].sort(), ["e", "😀"]);
    assert.deepEqual(Array.from((await f.read("😀")).data), [0, 0]);
    f.close();
  }));

Deno.test("deep nesting is rejected at once at any depth, and error messages stay short", () =>
  inTemp(async (dir) => {
    for (const depth of [4_000_000, 10_000_000]) {
      const path = `${dir}/deep.safetensors`;
      await Deno.writeFile(
        path,
        build(`{"a":{${ENTRY},"x":${"[".repeat(depth)}${"]".repeat(depth)}}}`, new Uint8Array(8)),
      );
      await assert.rejects(() => openSafetensors(path), (e) => {
        assert.ok(e instanceof SafetensorsError);
        assert.equal(e.rule, "nesting");
        // rejected at the first bracket past the 32-level limit, whatever the depth of the file: the two
        // outer objects are levels 1–2, so the 31st "[" (level 33) is the one named, 8 + the header
        // prefix + 30 bytes into the file (the parser stops there and never scans the rest)
        assert.equal(e.offset, 8 + `{"a":{${ENTRY},"x":`.length + 30);
        assert.ok(e.message.length < 300, `message of ${e.message.length} characters`);
        return true;
      });
    }
    // a 5 MB tensor name in an error: cut, saying how much
    const long = "n".repeat(5_000_000);
    await Deno.writeFile(
      `${dir}/long.safetensors`,
      build({ [long]: { dtype: "X", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)),
    );
    await assert.rejects(() => openSafetensors(`${dir}/long.safetensors`), (e) => {
      assert.ok(e instanceof SafetensorsError && e.rule === "dtype");
      assert.ok(e.message.length < 400, `message of ${e.message.length} characters`);
      assert.match(e.message, /4999920 more characters cut/);
      return true;
    });
    // a 1 MB shape list and a 1 MB number: summarised
    const shape = `[${Array(200_000).fill(2).join(",")}]`;
    await Deno.writeFile(
      `${dir}/list.safetensors`,
      build(`{"a":{"dtype":"F32","shape":${shape},"data_offsets":[0,4]}}`, new Uint8Array(8)),
    );
    await assert.rejects(
      () => openSafetensors(`${dir}/list.safetensors`),
      (e) =>
        e instanceof SafetensorsError && e.rule === "size" && e.message.length < 400 &&
        /199992 more/.test(e.message),
    );
    await Deno.writeFile(
      `${dir}/num.safetensors`,
      build(
        `{"a":{"dtype":"F32","shape":[${"9".repeat(1_000_000)}],"data_offsets":[0,8]}}`,
        new Uint8Array(8),
      ),
    );
    await assert.rejects(
      () => openSafetensors(`${dir}/num.safetensors`),
      (e) =>
        e instanceof SafetensorsError && e.rule === "integer" && e.message.length < 400 &&
        /more characters cut/.test(e.message),
    );
  }));

Deno.test("untyped errors are gone: a folder, a missing checkpoint, broken index files", () =>
  inTemp(async (dir) => {
    await assert.rejects(
      () => openSafetensors(dir),
      (e) => e instanceof SafetensorsError && e.path === dir && /is a folder/.test(e.message),
    );
    await assert.rejects(
      () => openCheckpoint(`${dir}/nowhere`),
      (e) => e instanceof CheckpointError && e.path === `${dir}/nowhere` && /does not exist/.test(e.message),
    );
    await writeSafetensors(`${dir}/ck/model.safetensors`, [{
      name: "a",
      dtype: "F32",
      shape: [1],
      data: [1],
    }]);
    const index = `${dir}/ck/model.safetensors.index.json`;
    const cases: [string, RegExp][] = [
      ["null", /must hold a JSON object/],
      ["[1]", /must hold a JSON object/],
      ['{"weight_map": null}', /has no weight_map object/],
      ['{"metadata": {}}', /has no weight_map object/],
      ['{"weight_map": {"a": 3}}', /weight_map entry a is not a file name/],
      ['{"weight_map": {"a": "../model.safetensors"}}', /shards must be files inside the folder/],
      ['{"weight_map": {"a": "/etc/passwd"}}', /shards must be files inside the folder/],
      [
        '{"weight_map": {"a": "model.safetensors", "b": "model.safetensors"}}',
        /the index lists b, which no shard holds/,
      ],
      ['{"weight_map": {"a": "other.safetensors"}}', /other\.safetensors: cannot open/],
      ["{nope", /is not valid JSON/],
    ];
    for (const [text, pattern] of cases) {
      await Deno.writeTextFile(index, text);
      await assert.rejects(
        () => openCheckpoint(`${dir}/ck`),
        (e) => e instanceof CheckpointError && pattern.test(e.message) && e.path.startsWith(`${dir}/ck`),
        text,
      );
    }
  }));

Deno.test("concurrent reads: 64 tensors read at once, every byte checked (one file and a sharded checkpoint)", () =>
  inTemp(async (dir) => {
    const sizes = Array.from({ length: 64 }, (_, i) => 1 + ((i * 7919) % 97) * 211); // 1 .. ~20 K elements
    const value = (t: number, j: number) => ((t * 131 + j * 7) % 251) - 125;
    const specs = sizes.map((n, t) => ({ name: `t${t}`, dtype: "F32" as const, shape: [n] }));
    const produce = (name: string) =>
      Float32Array.from({ length: sizes[+name.slice(1)] }, (_, j) => value(+name.slice(1), j));
    await writeCheckpoint(`${dir}/one`, specs, produce);
    await writeCheckpoint(`${dir}/sharded`, specs, produce, { shardBytes: 64_000 });
    for (const which of ["one", "sharded"]) {
      const ck = await openCheckpoint(`${dir}/${which}`);
      const order = specs.map((_, t) => t).sort((a, b) => ((a * 37) % 64) - ((b * 37) % 64));
      const got = await Promise.all(order.map((t) => (t % 2 ? ck.read(`t${t}`) : ck.readBytes(`t${t}`))));
      for (const [k, t] of order.entries()) {
        const g = got[k];
        const data = g instanceof Uint8Array
          ? new Float32Array(g.buffer, g.byteOffset, g.byteLength / 4)
          : g.data;
        assert.equal(data.length, sizes[t], `${which} t${t} length`);
        for (let j = 0; j < data.length; j++) {
          if (data[j] !== value(t, j)) {
            assert.fail(`${which} t${t}[${j}] = ${data[j]}, expected ${value(t, j)}`);
          }
        }
      }
      ck.close();
    }
  }));

Deno.test("checkpoints: shards planned by bytes, index written last, reopened by name; a failed write leaves nothing", () =>
  inTemp(async (dir) => {
    const specs = Array.from(
      { length: 5 },
      (_, i) => ({ name: `layers.${i}.w`, dtype: "BF16" as const, shape: [4, 4] }),
    );
    const files = await writeCheckpoint(
      `${dir}/ck`,
      specs,
      (name) => Array(16).fill(Number(name.split(".")[1])),
      { shardBytes: 70 },
    );
    assert.equal(files.length, 3); // 32 bytes per tensor: 2 per shard
    const index = JSON.parse(await Deno.readTextFile(`${dir}/ck/model.safetensors.index.json`));
    assert.equal(index.metadata.total_size, 160);
    assert.equal(index.weight_map["layers.4.w"], "model-00003-of-00003.safetensors");
    const ck = await openCheckpoint(`${dir}/ck`);
    assert.deepEqual([...ck.names].sort(), specs.map((s) => s.name));
    assert.deepEqual(Array.from((await ck.read("layers.3.w")).data), Array(16).fill(3));
    ck.close();
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ck"], "no temporary folder left");
    // a failing producer leaves nothing: no output, no temporary folder
    await assert.rejects(() =>
      writeCheckpoint(`${dir}/ck2`, specs, (name) => {
        if (name === "layers.3.w") throw new Error("boom");
        return Array(16).fill(1);
      }, { shardBytes: 70 }), /boom/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ck"]);
    await assert.rejects(() => openCheckpoint(`${dir}/ck2`), /does not exist/);
    // wrong byte counts and duplicate names are refused
    await assert.rejects(
      () => writeCheckpoint(`${dir}/ck3`, specs, () => [1]),
      /has 2 bytes, its shape \[4,4\] × BF16 needs 32/,
    );
    await assert.rejects(
      () => writeCheckpoint(`${dir}/ck3`, [specs[0], specs[0]], () => Array(16).fill(0)),
      /appears twice/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ck"]);
  }));

Deno.test("ranged reads: any byte range of a tensor, bounds checked before anything is read", () =>
  inTemp(async (dir) => {
    const vals = Float32Array.from({ length: 30 }, (_, i) => i - 7.5);
    await writeCheckpoint(
      `${dir}/ck`,
      [
        { name: "a", dtype: "F32", shape: [2] },
        { name: "w", dtype: "BF16", shape: [5, 6] },
      ],
      (name) => (name === "a" ? [1, 2] : vals),
      { shardBytes: 8 },
    );
    const ck = await openCheckpoint(`${dir}/ck`);
    try {
      const whole = await ck.readBytes("w");
      // rows 1..3 of [5, 6] bf16: bytes 12..36 of the tensor, whichever shard holds it
      assert.deepEqual(await ck.readRange("w", 12, 36), whole.subarray(12, 36));
      assert.deepEqual(
        Array.from(decodeFloats(await ck.readRange("w", 12, 36), "BF16")),
        Array.from(vals.subarray(6, 18)),
      );
      assert.deepEqual(await ck.readRange("w", 60, 60), new Uint8Array(0));
      assert.deepEqual(await ck.readRange("a", 4, 8), encodeFloats([2], "F32"));
      // reads at once stay each its own range
      const got = await Promise.all([0, 12, 24, 36, 48].map((b) => ck.readRange("w", b, b + 12)));
      assert.deepEqual(
        got.map((g) => Array.from(g)),
        [0, 12, 24, 36, 48].map((b) => Array.from(whole.subarray(b, b + 12))),
      );
      for (const [start, end] of [[-1, 4], [4, 2], [0, 61], [0.5, 4], [0, Infinity]]) {
        await assert.rejects(() => ck.readRange("w", start, end), (e) => {
          assert.ok(e instanceof SafetensorsError, String(e));
          assert.equal(e.rule, "range");
          assert.match(
            e.message,
            /tensor "w": byte range .* is not inside its 60 bytes; use integers with 0 ≤ start ≤ end ≤ 60/,
          );
          return true;
        });
      }
      await assert.rejects(() => ck.readRange("nope", 0, 1), CheckpointError);
      // into a reused buffer: a view of its start, no fresh memory
      const buf = new Uint8Array(40);
      const got24 = await ck.readRange("w", 24, 48, buf);
      assert.equal(got24.buffer, buf.buffer);
      assert.deepEqual(got24, whole.subarray(24, 48));
      assert.deepEqual(await ck.readRange("w", 0, 40, buf), whole.subarray(0, 40));
      await assert.rejects(
        () => ck.readRange("w", 0, 41, buf),
        (e) =>
          e instanceof SafetensorsError && e.rule === "range" &&
          /do not fit the 40-byte buffer given/.test(e.message),
      );
      const f = await openSafetensors(`${dir}/ck/model-00002-of-00002.safetensors`);
      assert.deepEqual(await f.readRange("w", 2, 4), whole.subarray(2, 4));
      f.close();
      await assert.rejects(
        () => f.readRange("w", 0, 2),
        (e) => e instanceof SafetensorsError && e.rule === "closed",
      );
    } finally {
      ck.close();
    }
  }));

Deno.test("tensors written in pieces are the same bytes as whole tensors; a wrong total writes nothing", () =>
  inTemp(async (dir) => {
    const vals = Float32Array.from({ length: 35 }, (_, i) => Math.sin(i) * 1000);
    const ids = new Uint8Array(24).map((_, i) => i);
    const specs = [
      { name: "b", dtype: "BF16" as const, shape: [5, 7] },
      { name: "h", dtype: "F16" as const, shape: [35] },
      { name: "f", dtype: "F32" as const, shape: [7, 5] },
      { name: "d", dtype: "F64" as const, shape: [35] },
      { name: "ids", dtype: "I64" as const, shape: [3] },
    ];
    const whole = (name: string) => (name === "ids" ? ids : name === "d" ? Float64Array.from(vals) : vals);
    /** Pieces of 1, 3, 0, 8, … entries (bytes for ids), sync or async. */
    const pieces = (name: string): TensorChunks => {
      const all = whole(name), cuts = name === "ids" ? [0, 5, 5, 16, 24] : [0, 1, 4, 4, 12, 30, 35];
      const parts = cuts.slice(1).map((c, i) => all.subarray(cuts[i], c));
      return name === "f" ? { chunks: parts } : {
        chunks: (async function* () {
          yield* parts;
        })(),
      };
    };
    await writeSafetensorsStream(`${dir}/whole.safetensors`, specs, whole);
    await writeSafetensorsStream(`${dir}/pieces.safetensors`, specs, pieces);
    assert.deepEqual(
      await Deno.readFile(`${dir}/pieces.safetensors`),
      await Deno.readFile(`${dir}/whole.safetensors`),
    );
    // a plain array, and a float tensor larger than the writer's encoding slice (2^20 entries)
    const big = Float32Array.from({ length: (1 << 20) + 3 }, (_, i) => i / 7);
    await writeSafetensorsStream(`${dir}/big.safetensors`, [{
      name: "x",
      dtype: "BF16",
      shape: [big.length],
    }], () => big);
    const got = await openSafetensors(`${dir}/big.safetensors`);
    assert.deepEqual(await got.readBytes("x"), encodeFloats(big, "BF16"));
    got.close();
    // too few or too many entries in the pieces: an error, and no output
    for (
      const [n, pattern] of [[34, /has 68 bytes in its pieces, its shape \[5,7\] × BF16 needs 70/], [
        36,
        /has at least 72 bytes/,
      ]] as const
    ) {
      let after = 0;
      await assert.rejects(
        () =>
          writeCheckpoint(
            `${dir}/out`,
            specs.slice(0, 2),
            (name) =>
              name === "b"
                ? { chunks: [vals.subarray(0, 30), Float32Array.from({ length: n - 30 }, () => 1)] }
                : (after++, vals),
          ),
        pattern,
      );
      assert.equal(after, 0);
      // a producer that fails after its first piece: the same
      await assert.rejects(
        () =>
          writeCheckpoint(`${dir}/out`, specs.slice(0, 1), () => ({
            chunks: (async function* () {
              yield vals.subarray(0, 10);
              throw new Error("the block's merge failed");
            })(),
          })),
        /the block's merge failed/,
      );
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
        "big.safetensors",
        "pieces.safetensors",
        "whole.safetensors",
      ]);
    }
  }));

Deno.test("bytes already encoded are written as they are; a wrong length is an error before the tensor's first byte, and no output", () =>
  inTemp(async (dir) => {
    const vals = Float32Array.from({ length: 35 }, (_, i) => Math.sin(i) * 1000 + i / 3);
    const specs = [
      { name: "b", dtype: "BF16" as const, shape: [5, 7] },
      { name: "h", dtype: "F16" as const, shape: [35] },
      { name: "f", dtype: "F32" as const, shape: [35] },
    ];
    await writeSafetensorsStream(`${dir}/values.safetensors`, specs, () => vals);
    // whole for b and f, in pieces (encoded and plain values mixed) for h
    const enc = (name: string, a = 0, b = 35) =>
      encodeFloats(vals.subarray(a, b), specs.find((s) => s.name === name)!.dtype);
    const produce = (name: string): EncodedBytes | TensorChunks =>
      name === "h"
        ? { chunks: [{ encoded: enc("h", 0, 10) }, vals.subarray(10, 20), { encoded: enc("h", 20) }] }
        : { encoded: enc(name) };
    await writeSafetensorsStream(`${dir}/encoded.safetensors`, specs, produce);
    assert.deepEqual(
      await Deno.readFile(`${dir}/encoded.safetensors`),
      await Deno.readFile(`${dir}/values.safetensors`),
    );
    // the bytes are not re-read as values: arbitrary bf16 patterns (a NaN payload) pass through unchanged
    const odd = new Uint8Array([0x81, 0x7f, 0x01, 0xff]);
    await writeSafetensorsStream(
      `${dir}/odd.safetensors`,
      [{ name: "x", dtype: "BF16", shape: [2] }],
      () => ({
        encoded: odd,
      }),
    );
    const f = await openSafetensors(`${dir}/odd.safetensors`);
    assert.deepEqual(await f.readBytes("x"), odd);
    f.close();
    // too short or too long, whole or as a piece: a typed error naming the lengths, nothing written
    for (
      const [data, pattern] of [
        [
          { encoded: new Uint8Array(68) },
          /tensor "?b"? has 68 encoded bytes, its shape \[5,7\] × BF16 needs 70/,
        ],
        [{ encoded: new Uint8Array(72) }, /has 72 encoded bytes/],
        [
          { chunks: [{ encoded: new Uint8Array(60) }, { encoded: new Uint8Array(12) }] },
          /has at least 72 bytes/,
        ],
        [{ chunks: [{ encoded: new Uint8Array(60) }] }, /has 60 bytes in its pieces/],
      ] as const
    ) {
      const produce = (name: string) => (name === "b" ? data : vals);
      await assert.rejects(
        () => writeCheckpoint(`${dir}/out`, specs, produce),
        (e: unknown) => e instanceof MoekitError && pattern.test(e.message),
      );
      await assert.rejects(() => writeSafetensorsStream(`${dir}/out.safetensors`, specs, produce), pattern);
      if ("encoded" in data) {
        // the file writer itself: only the header is on disk, not one byte of the tensor
        const raw = `${dir}/raw.safetensors`;
        await assert.rejects(() => writeSafetensorsFile(raw, specs, produce), pattern);
        const header = await Deno.readFile(raw);
        assert.equal(header.length, 8 + Number(new DataView(header.buffer).getBigUint64(0, true)));
        await Deno.remove(raw);
      }
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "encoded.safetensors",
      "odd.safetensors",
      "values.safetensors",
    ]);
  }));

Deno.test("the file writer syncs its data to disk in the background every so many bytes; the bytes are the same", () =>
  inTemp(async (dir) => {
    const specs = ["a", "b", "c", "d"].map((name) => ({ name, dtype: "F32" as const, shape: [1000] }));
    const vals = (i: number) => Float32Array.from({ length: 1000 }, (_, j) => Math.sin(i * 1000 + j));
    // each tensor in 4 pieces of 1000 bytes, a pause after each: the syncs have time to finish
    const produce = (_name: string, i: number): TensorChunks => ({
      chunks: (async function* () {
        for (let k = 0; k < 4; k++) {
          yield vals(i).subarray(250 * k, 250 * (k + 1));
          await new Promise((r) => setTimeout(r, 5));
        }
      })(),
    });
    const syncs: number[] = [];
    await writeSafetensorsFile(`${dir}/synced.safetensors`, specs, produce, {
      syncEvery: 3000,
      onSync: (written) => syncs.push(written),
    });
    assert.ok(syncs.length >= 3 && syncs.length <= 5, `syncs at ${syncs}`);
    assert.ok(syncs[0] >= 3000 && syncs.every((w, k) => !k || w - syncs[k - 1] >= 3000), `syncs at ${syncs}`);
    // the default: 32 MiB between syncs, none in a small file
    const none: number[] = [];
    await writeSafetensorsFile(`${dir}/plain.safetensors`, specs, produce, { onSync: (w) => none.push(w) });
    assert.deepEqual(none, []);
    const whole = specs.map((s, i) => ({ ...s, data: vals(i) }));
    await writeSafetensors(`${dir}/whole.safetensors`, whole);
    const want = await Deno.readFile(`${dir}/whole.safetensors`);
    assert.deepEqual(await Deno.readFile(`${dir}/synced.safetensors`), want);
    assert.deepEqual(await Deno.readFile(`${dir}/plain.safetensors`), want);
    // a sync still running when the writer fails is waited for (no operation left behind) and the error is
    // the writer's
    await assert.rejects(
      () =>
        writeSafetensorsFile(
          `${dir}/failed.safetensors`,
          specs,
          (name, i) => (name === "c" ? new Float32Array(3) : vals(i)),
          { syncEvery: 1 },
        ),
      /has 12 bytes/,
    );
  }));
