// Fuzzing the safetensors reader: seeded mutations of valid files (byte flips in header and body,
// truncation, header-length extremes, JSON mutations of every field). Every outcome must be either a
// typed SafetensorsError or an accepted file that passes the independent validity check below (the slowest
// case is printed; no timed assertion: a parse that hangs fails the run instead). CI runs
// MOEKIT_FUZZ_CASES (default 2,000) cases; `deno task fuzz` runs 20,000.
import assert from "node:assert/strict";
import { type Dtype, DTYPE_BYTES, FLOAT_DTYPES, openSafetensors, SafetensorsError } from "../lib/io/mod.ts";

const CASES = Number(Deno.env.get("MOEKIT_FUZZ_CASES") ?? 2000);
const SEED = Number(Deno.env.get("MOEKIT_FUZZ_SEED") ?? 20261201);

/** mulberry32: a small seeded generator, independent of the library. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}
type Rng = ReturnType<typeof rng>;

const DTYPES = Object.keys(DTYPE_BYTES) as Dtype[];
const NAMES = [
  "a",
  "w",
  "model.layers.0.mlp.up_proj.weight",
  "é",
  "😀",
  "tab\tname",
  'q"uote',
  "back\\slash",
  "",
  "x".repeat(300),
];

/** A raw JSON token, written as is (for `2.0`, `2e0`, broken escapes). */
class Raw {
  constructor(readonly text: string) {}
}
type J = null | boolean | number | string | Raw | J[] | { [k: string]: J } | Map<string | Raw, J>;

function ser(v: J): string {
  if (v instanceof Raw) return v.text;
  if (v instanceof Map) {
    return `{${
      [...v].map(([k, x]) => `${k instanceof Raw ? k.text : JSON.stringify(k)}:${ser(x)}`).join(",")
    }}`;
  }
  if (Array.isArray(v)) return `[${v.map(ser).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${ser(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

interface Base {
  header: Map<string | Raw, J>;
  data: Uint8Array;
  pad: string;
}

/** A valid file: 0–5 tensors of random dtypes and shapes, optional metadata, reference or random order. */
function validBase(r: Rng): Base {
  const n = r.int(6), header = new Map<string | Raw, J>();
  if (r.next() < 0.5) {
    header.set("__metadata__", { format: "pt", ...(r.next() < 0.3 ? { note: r.pick(NAMES) } : {}) });
  }
  const specs: { name: string; dtype: Dtype; shape: number[]; bytes: number }[] = [];
  const used = new Set<string>();
  for (let i = 0; i < n; i++) {
    let name = r.pick(NAMES) + (r.next() < 0.5 ? `.${i}` : "");
    while (used.has(name) || name === "__metadata__") name += "_";
    used.add(name);
    const dtype = r.pick(DTYPES), shape = Array.from({ length: r.int(4) }, () => r.int(6));
    specs.push({ name, dtype, shape, bytes: shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype] });
  }
  if (r.next() < 0.5) {
    specs.sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : 1));
  }
  let at = 0;
  for (const s of specs) {
    header.set(s.name, { dtype: s.dtype, shape: s.shape, data_offsets: [at, at + s.bytes] });
    at += s.bytes;
  }
  const data = new Uint8Array(at);
  for (let i = 0; i < at; i++) data[i] = r.int(256);
  return { header, data, pad: " ".repeat(r.int(8)) + (r.next() < 0.1 ? "\n\t " : "") };
}

const WEIRD: J[] = [
  new Raw("2.0"),
  new Raw("2e0"),
  new Raw("1E2"),
  new Raw("-0"),
  new Raw("-1"),
  new Raw("1e400"),
  new Raw("9007199254740993"),
  new Raw("18446744073709551615"),
  "2",
  null,
  true,
  [],
  [[2]],
  {},
  0,
  1,
  3,
  64,
];

/** One JSON-level mutation of the header. */
function mutateJson(r: Rng, b: Base): string {
  const h = new Map(b.header);
  const names = [...h.keys()].filter((k) => k !== "__metadata__");
  const entryOf = (k: string | Raw) => ({ ...(h.get(k) as Record<string, J>) });
  const k = names.length ? r.pick(names) : undefined;
  switch (r.int(13)) {
    case 0: // dtype
      if (k !== undefined) {
        h.set(k, {
          ...entryOf(k),
          dtype: r.pick<J>(["F31", "", "f32", "BF16 ", 3, null, ["F32"], ...DTYPES]),
        });
      }
      break;
    case 1: { // a shape element, or the shape itself
      if (k === undefined) break;
      const e = entryOf(k), shape = [...(e.shape as J[])];
      if (shape.length && r.next() < 0.7) shape[r.int(shape.length)] = r.pick(WEIRD);
      else if (r.next() < 0.5) shape.push(r.pick(WEIRD));
      else shape.pop();
      h.set(k, { ...e, shape: r.next() < 0.1 ? r.pick(WEIRD) : shape });
      break;
    }
    case 2: { // data_offsets
      if (k === undefined) break;
      const e = entryOf(k), off = [...(e.data_offsets as J[])];
      const v = r.int(6);
      if (v === 0) off.reverse();
      else if (v === 1) off[r.int(2)] = (off[0] as number) + r.int(3) - 1;
      else if (v === 2) off[r.int(2)] = r.pick(WEIRD);
      else if (v === 3) off.push(0);
      else if (v === 4) off.pop();
      else off[1] = (off[1] as number) + 8;
      h.set(k, { ...e, data_offsets: off });
      break;
    }
    case 3: // metadata
      h.set(
        "__metadata__",
        r.pick<J>([{ a: 1 }, ["pt"], null, "pt", { a: {} }, { a: null }, { a: "b", c: [] }, {}, {
          format: "pt",
        }]),
      );
      break;
    case 4: // drop a field, add an extra one (ignored by readers), or replace the entry
      if (k === undefined) break;
      if (r.next() < 0.4) {
        const e = entryOf(k);
        delete e[r.pick(["dtype", "shape", "data_offsets"])];
        h.set(k, e);
      } else if (r.next() < 0.5) h.set(k, { ...entryOf(k), extra: r.pick(WEIRD) });
      else h.set(k, r.pick(WEIRD));
      break;
    case 5: // a duplicate key (textual)
      if (k !== undefined) return ser(h).replace(/}$/, `,${JSON.stringify(k)}:${ser(h.get(k)!)}}`);
      break;
    case 6: { // lone surrogates and escapes in a name
      if (k === undefined) break;
      const e = h.get(k)!;
      h.delete(k);
      h.set(
        new Raw(
          r.pick([
            '"a\\ud800"',
            '"\\udc00"',
            '"a\\ud800\\u0041"',
            '"\\ud83d\\ude00"',
            '"\\u00e9"',
            '"a\\x"',
            '"a\\u12"',
          ]),
        ),
        e,
      );
      break;
    }
    case 7: { // deep nesting in an ignored field
      if (k === undefined) break;
      const depth = r.pick([8, 29, 30, 31, 40, 1000, 100_000, r.next() < 0.2 ? 2_000_000 : 5000]);
      h.set(k, { ...entryOf(k), x: new Raw("[".repeat(depth) + "]".repeat(depth)) });
      break;
    }
    case 8: // a tensor named __metadata__-like or a very long name
      if (k !== undefined) {
        const e = h.get(k)!;
        h.delete(k);
        h.set(r.next() < 0.5 ? "n".repeat(100_000 + r.int(10)) : "__metadata__ ", e);
      }
      break;
    case 9: // a whole extra entry
      h.set(`extra${r.int(9)}`, { dtype: r.pick(DTYPES), shape: [r.int(3)], data_offsets: [0, r.int(9)] });
      break;
    case 10: // not an object at the top
      return r.pick(["[]", "null", '"x"', "1", "{", "{}", '{"a":}', "{,}", '{"a" 1}', "{} {}"]);
    case 11: // numbers written in other ways in offsets
      if (k !== undefined) {
        const e = entryOf(k), off = e.data_offsets as number[];
        h.set(k, { ...e, data_offsets: [new Raw(`${off[0]}.0`), new Raw(`${off[1]}e0`)] });
      }
      break;
    default: // whitespace between tokens (valid)
      return ser(h).replace(/,/g, r.next() < 0.5 ? " ,\n" : ",\t");
  }
  return ser(h);
}

/** Builds the file bytes: 8-byte length, header text (+ padding), data. */
function assemble(text: string, data: Uint8Array, pad: string): Uint8Array {
  const json = new TextEncoder().encode(text + pad);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** One fuzz case: a valid base, then 1–3 mutations. */
function fuzzCase(r: Rng): { bytes: Uint8Array; kinds: string[] } {
  const b = validBase(r), kinds: string[] = [];
  let bytes = assemble(ser(b.header), b.data, b.pad);
  const rounds = 1 + r.int(3);
  for (let m = 0; m < rounds; m++) {
    const headerLen = bytes.length >= 8
      ? Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))
      : 0;
    const kind = r.pick([
      "json",
      "json",
      "json",
      "flip-header",
      "flip-body",
      "truncate",
      "length",
      "insert",
      "append",
      "none",
    ]);
    kinds.push(kind);
    if (kind === "json" && m === 0) bytes = assemble(mutateJson(r, b), b.data, b.pad);
    else if (kind === "flip-header" && bytes.length > 8) {
      const i = 8 + r.int(Math.max(1, Math.min(headerLen, bytes.length - 8)));
      if (i < bytes.length) bytes[i] ^= r.next() < 0.5 ? 1 << r.int(8) : 0x80 | r.int(128);
    } else if (kind === "flip-body" && bytes.length > 8 + headerLen) {
      bytes[8 + headerLen + r.int(bytes.length - 8 - headerLen)] ^= 1 << r.int(8);
    } else if (kind === "truncate") bytes = bytes.slice(0, r.int(bytes.length + 1));
    else if (kind === "length" && bytes.length >= 8) {
      const v = r.pick([
        0n,
        1n,
        2n,
        7n,
        BigInt(headerLen - 1),
        BigInt(headerLen + 1),
        BigInt(bytes.length - 8),
        BigInt(bytes.length),
        2n ** 31n,
        2n ** 32n,
        100_000_000n,
        100_000_001n,
        2n ** 53n,
        2n ** 63n,
        2n ** 64n - 1n,
      ]);
      new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, v < 0n ? 0n : v, true);
    } else if (kind === "insert" && bytes.length > 8) {
      const i = 8 + r.int(bytes.length - 8), out = new Uint8Array(bytes.length + 1);
      out.set(bytes.subarray(0, i));
      out[i] = r.pick([0x20, 0x7b, 0x7d, 0x22, 0x5c, 0x00, 0xff, 0xc3, 0x2c]);
      out.set(bytes.subarray(i), i + 1);
      bytes = out;
    } else if (kind === "append") {
      const out = new Uint8Array(bytes.length + 1 + r.int(8));
      out.set(bytes);
      bytes = out;
    }
  }
  return { bytes, kinds };
}

// ---- the independent validity check (written from the format's rules, not from the reader) ----

/** Object keys per object via a regex tokenizer: duplicates make a header invalid. */
function hasDuplicateKeys(text: string): boolean {
  const tokens = text.match(/"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^\s{}[\]:,"]+/g) ?? [];
  const stack: { obj: boolean; keys: Set<string> }[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t === "{" || t === "[") stack.push({ obj: t === "{", keys: new Set() });
    else if (t === "}" || t === "]") stack.pop();
    else if (t[0] === '"' && tokens[i + 1] === ":" && stack.at(-1)?.obj) {
      const key = JSON.parse(t) as string, keys = stack.at(-1)!.keys;
      if (keys.has(key)) return true;
      keys.add(key);
    }
  }
  return false;
}

/** Throws (an AssertionError) unless `bytes` is a valid safetensors file that `f` read correctly. */
async function assertValid(bytes: Uint8Array, f: Awaited<ReturnType<typeof openSafetensors>>): Promise<void> {
  assert.ok(bytes.length >= 8, "at least 8 bytes");
  const n = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true);
  assert.ok(
    n <= 100_000_000n && 8n + n <= BigInt(bytes.length),
    "header length within the limit and the file",
  );
  const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + Number(n))); // throws if not UTF-8
  assert.equal(text[0], "{", "starts with {");
  assert.ok(!hasDuplicateKeys(text), "no duplicate keys");
  // numbers keep their written form: anything but plain digits (2.0, 2e0, -1) is not an integer here
  const header = JSON.parse(
    text,
    (_k, v, ctx?: { source?: string }) =>
      typeof v === "number" && !/^\d+$/.test(ctx!.source!) ? `not an integer: ${ctx!.source}` : v,
  );
  assert.ok(header && typeof header === "object" && !Array.isArray(header), "an object");
  const strings = (v: unknown): string[] =>
    typeof v === "string"
      ? [v]
      : v && typeof v === "object"
      ? Object.entries(v).flatMap(([k, x]) => [k, ...strings(x)])
      : [];
  for (const s of strings(header)) assert.ok(!/\p{Cs}/u.test(s), "no lone surrogates");
  const bufferSize = bytes.length - 8 - Number(n);
  const spans: [number, number][] = [];
  let metadata: Record<string, string> = {};
  const ints = (xs: unknown, what: string) => {
    assert.ok(Array.isArray(xs), what);
    for (const x of xs) assert.ok(Number.isSafeInteger(x) && x >= 0 && !Object.is(x, -0), `${what}: ${x}`);
    return xs as number[];
  };
  for (const [name, e] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      assert.ok(e && typeof e === "object" && !Array.isArray(e), "metadata object");
      for (const v of Object.values(e)) assert.equal(typeof v, "string", "metadata values are strings");
      metadata = e as Record<string, string>;
      continue;
    }
    assert.ok(e && typeof e === "object" && !Array.isArray(e), "entry object");
    const { dtype, shape, data_offsets } = e as Record<string, unknown>;
    assert.ok(typeof dtype === "string" && DTYPES.includes(dtype as Dtype), `dtype ${dtype}`);
    const dims = ints(shape, "shape"), off = ints(data_offsets, "data_offsets");
    assert.equal(off.length, 2);
    assert.equal(off[1] - off[0], dims.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as Dtype], "size");
    const info = f.tensors.get(name)!;
    assert.deepEqual(
      [info.dtype, [...info.shape], info.begin, info.end],
      [dtype, dims, off[0], off[1]],
      name,
    );
    spans.push([off[0], off[1]]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [b, e] of spans) {
    assert.equal(b, at, "spans tile the buffer");
    at = e;
  }
  assert.equal(at, bufferSize, "no trailing bytes");
  assert.equal(f.tensors.size, spans.length);
  assert.deepEqual({ ...f.metadata }, metadata);
  const start = 8 + Number(n);
  for (const info of f.tensors.values()) {
    const got = await f.readBytes(info.name);
    assert.deepEqual(got, bytes.subarray(start + info.begin, start + info.end), `bytes of ${info.name}`);
    if (FLOAT_DTYPES.includes(info.dtype)) {
      assert.equal((await f.read(info.name)).data.length, (info.end - info.begin) / DTYPE_BYTES[info.dtype]);
    }
  }
}

Deno.test(`fuzz: ${CASES} mutated safetensors files (seed ${SEED}): typed errors or valid files`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-fuzz-" });
  try {
    const r = rng(SEED), path = `${dir}/f.safetensors`;
    const outcomes = new Map<string, number>();
    let worst = 0, worstKinds = "";
    for (let c = 0; c < CASES; c++) {
      const { bytes, kinds } = fuzzCase(r);
      await Deno.writeFile(path, bytes);
      const t0 = performance.now();
      let outcome: string;
      try {
        const f = await openSafetensors(path);
        try {
          await assertValid(bytes, f);
        } catch (e) {
          throw new Error(`case ${c} (${kinds}): accepted an invalid file: ${(e as Error).message}`);
        } finally {
          f.close();
        }
        outcome = "accepted and valid";
      } catch (e) {
        if (!(e instanceof SafetensorsError)) {
          throw new Error(`case ${c} (${kinds}): untyped ${(e as Error).name}: ${(e as Error).message}`);
        }
        assert.ok(e.message.length < 1000, `case ${c}: message of ${e.message.length} characters`);
        outcome = `SafetensorsError ${e.rule}`;
      }
      const ms = performance.now() - t0;
      if (ms > worst) [worst, worstKinds] = [ms, kinds.join("+")];
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    const table = [...outcomes].sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${k}: ${v}`).join("\n");
    console.log(
      `fuzz seed ${SEED}, ${CASES} cases, slowest ${worst.toFixed(1)} ms (${worstKinds}):\n${table}`,
    );
    // the generator must exercise both sides
    assert.ok((outcomes.get("accepted and valid") ?? 0) > CASES / 20, "enough valid files");
    for (
      const rule of [
        "json",
        "integer",
        "utf8",
        "surrogate",
        "nesting",
        "duplicate-key",
        "metadata",
        "header-length",
      ]
    ) {
      assert.ok((outcomes.get(`SafetensorsError ${rule}`) ?? 0) > 0, `rule ${rule} reached`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
