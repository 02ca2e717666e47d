/**
 * safetensors reading and writing, one tensor at a time. The reader validates the whole header before
 * any tensor is read and reports every violation as a {@link SafetensorsError} with the rule and the byte
 * offset (the rules are listed in the repository's `docs/io.md`): file and header length, strict UTF-8
 * JSON (no lone surrogates, no duplicate keys, nesting at most 32 deep), an object of tensor entries and
 * an optional `__metadata__` string map, known dtypes, shapes and offsets written as non-negative
 * integers, shape × dtype size = byte span, and spans that tile the data buffer exactly. Reads are safe
 * under any interleaving. The writer streams tensors into a private temporary folder and renames the
 * finished file into place.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { decodeFloats, type Dtype, DTYPE_BYTES, encodeFloats, FLOAT_DTYPES } from "./dtype.ts";
import { SafetensorsError } from "./errors.ts";
import {
  cut,
  describe,
  JsonProblem,
  type Located,
  parseFastJson,
  parseStrictJson,
  Written,
} from "./header_json.ts";
import { stageOutput } from "./output.ts";
import type { Tensor } from "./tensor.ts";

export { SafetensorsError };

/**
 * One tensor's entry in a header.
 *
 * @example
 * ```ts
 * import { type TensorInfo } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const info: TensorInfo = { name: "a", dtype: "F32", shape: [2], begin: 0, end: 8 };
 * assert.equal(info.end - info.begin, 8);
 * ```
 */
export interface TensorInfo {
  /** Tensor name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: Dtype;
  /** Shape (`[]` = scalar). */
  readonly shape: readonly number[];
  /** Byte offset in the data buffer (inclusive). */
  readonly begin: number;
  /** Byte offset in the data buffer (exclusive). */
  readonly end: number;
}

/** The reference reader's header limit (bytes). */
const MAX_HEADER = 100_000_000;
/** A valid header nests 3 deep (`{name: {shape: [..]}}`); anything much deeper is rejected at once. */
const MAX_DEPTH = 32;

/**
 * Parses and validates a safetensors header from the file's first bytes and its size. Throws a
 * {@link SafetensorsError} naming the rule and byte offset of the first violation.
 *
 * @example
 * ```ts
 * import { parseSafetensorsHeader } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const json = new TextEncoder().encode('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ');
 * const head = new Uint8Array(8 + json.length);
 * new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
 * head.set(json, 8);
 * const h = parseSafetensorsHeader("a.safetensors", head, head.length + 8);
 * assert.equal(h.dataStart, 64);
 * assert.deepEqual(h.tensors.get("a")!.shape, [2]);
 * ```
 */
export function parseSafetensorsHeader(
  path: string,
  head: Uint8Array,
  fileSize: number,
): { dataStart: number; tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  function fail(rule: string, problem: string, offset?: number): never {
    throw new SafetensorsError(path, rule, problem, offset);
  }
  if (fileSize < 8 || head.length < 8) {
    fail("file-size", `file of ${fileSize} bytes is too short for the 8-byte header length`, 0);
  }
  const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) {
    fail("header-length", `header length ${n} exceeds the ${MAX_HEADER}-byte limit`, 0);
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    fail("header-length", `header length ${len} exceeds the file (${fileSize} bytes)`, 0);
  }
  if (head.length < 8 + len) fail("header-length", `header truncated: ${head.length - 8} of ${len} bytes`, 8);
  if (len === 0 || head[8] !== 0x7b) fail("header-start", "the header does not start with '{'", 8);
  const json = head.subarray(8, 8 + len);
  // ordinary headers take the fast path; anything unusual, and every error, is decided by the strict
  // reader, which knows where each value is
  const fast = parseFastJson(json, MAX_DEPTH);
  if (fast !== undefined) {
    try {
      return checkHeader(path, fast, undefined, 8 + len, fileSize);
    } catch (e) {
      if (!(e instanceof SafetensorsError)) throw e;
    }
  }
  let located: Located;
  try {
    located = parseStrictJson(json, 8, MAX_DEPTH);
  } catch (e) {
    if (e instanceof JsonProblem) fail(e.rule, e.problem, e.offset);
    throw e;
  }
  return checkHeader(path, located.root, located.at, 8 + len, fileSize);
}

/** The header's rules on the parsed JSON; `at` (when known) gives byte offsets for the messages. */
function checkHeader(
  path: string,
  root: unknown,
  at: Located["at"] | undefined,
  dataStart: number,
  fileSize: number,
): { dataStart: number; tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  function fail(rule: string, problem: string, offset?: number): never {
    throw new SafetensorsError(path, rule, problem, offset);
  }
  const where = (container: object, key?: string | number) => at?.(container, key);
  const isObject = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Written);
  if (!isObject(root)) fail("header-start", "the header is not a JSON object", 8);
  const bufferSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const meta: [string, string][] = [];
  const uint = (list: unknown[], i: number, what: () => string): number => {
    const v = list[i];
    if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && !Object.is(v, -0)) return v; // the common case
    const offset = where(list, i);
    if (v instanceof Written) {
      if (!v.integer) {
        fail(
          "integer",
          `${what()} is written ${v.text}; it must be written as an integer (no '.' or exponent)`,
          offset,
        );
      }
      if (!Number.isSafeInteger(v.value) || v.value < 0 || v.text[0] === "-") {
        fail("integer", `${what()} is ${v.text}; it must be an integer in [0, 2^53)`, offset);
      }
      return v.value;
    }
    if (typeof v !== "number") fail("integer", `${what()} is ${describe(v)}, not an integer`, offset);
    if (!Number.isSafeInteger(v) || v < 0 || Object.is(v, -0)) {
      fail("integer", `${what()} is ${describe(v)}; it must be an integer in [0, 2^53)`, offset);
    }
    return v;
  };
  for (const [name, v] of Object.entries(root)) {
    if (name === "__metadata__") {
      if (!isObject(v)) {
        fail("metadata", `__metadata__ is ${describe(v)}, not an object of strings`, where(root, name));
      }
      for (const k in v) {
        if (typeof v[k] !== "string") {
          fail(
            "metadata",
            `__metadata__ value of ${JSON.stringify(cut(k))} is ${describe(v[k])}, not a string`,
            where(v, k),
          );
        }
        meta.push([k, v[k] as string]);
      }
      continue;
    }
    const tn = { toString: () => `tensor ${JSON.stringify(cut(name))}` }; // built only for a message
    if (!isObject(v)) fail("entry", `${tn}: entry is ${describe(v)}, not an object`, where(root, name));
    if (!Object.hasOwn(v, "dtype") || !Object.hasOwn(v, "shape") || !Object.hasOwn(v, "data_offsets")) {
      fail("entry", `${tn}: entry needs dtype, shape and data_offsets`, where(root, name));
    }
    const { dtype, shape, data_offsets: off } = v;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      fail(
        "dtype",
        `${tn}: unknown dtype ${describe(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
        where(v, "dtype"),
      );
    }
    if (!Array.isArray(shape)) {
      fail("shape", `${tn}: shape is ${describe(shape)}, not a list`, where(v, "shape"));
    }
    const dims: number[] = [];
    for (let i = 0; i < shape.length; i++) dims.push(uint(shape, i, () => `${tn}: shape[${i}]`));
    if (!Array.isArray(off) || off.length !== 2) {
      fail("offsets", `${tn}: data_offsets is ${describe(off)}, not [begin, end]`, where(v, "data_offsets"));
    }
    const b = uint(off, 0, () => `${tn}: data_offsets[0]`), e = uint(off, 1, () => `${tn}: data_offsets[1]`);
    if (e < b) {
      fail("offsets", `${tn}: data_offsets [${b}, ${e}] end before they begin`, where(v, "data_offsets"));
    }
    let numel = 1;
    for (const d of dims) numel *= d;
    const bytes = numel * DTYPE_BYTES[dtype as Dtype];
    if (!Number.isSafeInteger(bytes)) {
      fail("size", `${tn}: shape ${describe(shape)} × ${dtype} overflows 2^53 bytes`, where(v, "shape"));
    }
    if (e - b !== bytes) {
      fail(
        "size",
        `${tn}: shape ${describe(shape)} × ${dtype} is ${bytes} bytes but data_offsets span ${e - b}`,
        where(v, "data_offsets"),
      );
    }
    if (e > bufferSize) {
      fail(
        "bounds",
        `${tn}: data ends at file offset ${dataStart + e}, past the end (${fileSize} bytes)`,
        where(v, "data_offsets"),
      );
    }
    tensors.set(name, { name, dtype: dtype as Dtype, shape: dims, begin: b, end: e });
  }
  const spans = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const t of spans) {
    const tn = `tensor ${JSON.stringify(cut(t.name))}`;
    if (t.begin < pos) {
      fail(
        "overlap",
        `${tn}: bytes ${t.begin}..${t.end} overlap the previous tensor (ends at ${pos})`,
        dataStart + t.begin,
      );
    }
    if (t.begin > pos) {
      fail("hole", `hole in the data buffer at bytes ${pos}..${t.begin} (before ${tn})`, dataStart + pos);
    }
    pos = t.end;
  }
  if (pos !== bufferSize) {
    fail("trailing", `${bufferSize - pos} trailing bytes after the last tensor`, dataStart + pos);
  }
  // an ordinary object whose keys are data properties (a key "__proto__" stays a key)
  return { dataStart, tensors, metadata: Object.fromEntries(meta) };
}

/**
 * An open safetensors file: the validated header, and tensors read on demand. Reads may run
 * concurrently (`Promise.all` over many tensors): each returns exactly its own tensor's bytes.
 *
 * @example
 * ```ts
 * import { openSafetensors, writeSafetensors } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/a.safetensors`, [
 *   { name: "a", dtype: "F32", shape: [2], data: new Float32Array([1, -2]) },
 *   { name: "b", dtype: "F32", shape: [1], data: [3] },
 * ]);
 * const f = await openSafetensors(`${dir}/a.safetensors`);
 * const [a, b] = await Promise.all([f.read("a"), f.read("b")]);
 * assert.deepEqual([...a.data, ...b.data], [1, -2, 3]);
 * f.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export interface SafetensorsFile {
  /** The file. */
  readonly path: string;
  /** Tensor entries by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** `__metadata__`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Reads a float tensor (F16/BF16/F32 → Float32Array, F64 → Float64Array). */
  read(name: string): Promise<Tensor>;
  /** Reads a tensor's raw bytes (any dtype). */
  readBytes(name: string): Promise<Uint8Array>;
  /**
   * Reads bytes `[start, end)` of a tensor's data (offsets from the tensor's first byte), for example a
   * block of rows of a row-major tensor: rows `[r0, r1)` of a tensor with `c` entries per row of `s`
   * bytes are `[r0·c·s, r1·c·s)`. With `into` (at least `end − start` bytes long) the bytes are read into
   * its start and a view of them is returned: one buffer reused for many reads (no fresh memory per
   * read). A range outside `0 ≤ start ≤ end ≤` the tensor's size (or not integers), or an `into` too
   * short, is a `SafetensorsError` with rule `range`, raised before anything is read.
   */
  readRange(name: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array>;
  /** Closes the file; later reads throw a `SafetensorsError`. */
  close(): void;
}

/**
 * Opens and validates a safetensors file (reads only the header). Every problem — a missing file, a
 * folder, a malformed header — is a {@link SafetensorsError} naming the path.
 *
 * @example
 * ```ts
 * import { openSafetensors, SafetensorsError } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * await assert.rejects(() => openSafetensors("/nonexistent.safetensors"), SafetensorsError);
 * await assert.rejects(() => openSafetensors("/tmp"), /is a folder/);
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(path, "open", `cannot open (${(e as Error).message})`);
  }
  try {
    const st = await file.stat();
    if (!st.isFile) {
      throw new SafetensorsError(
        path,
        "open",
        "is a folder, not a safetensors file (use openCheckpoint for folders)",
      );
    }
    const size = st.size, reader = positionalReader(file, path);
    const first = await reader(0, Math.min(size, 8));
    const len = size >= 8 ? new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true) : 0n;
    const head = size >= 8 && len <= BigInt(MAX_HEADER) && 8 + Number(len) <= size
      ? await reader(0, 8 + Number(len))
      : first;
    const { dataStart, tensors, metadata } = parseSafetensorsHeader(path, head, size);
    const info = (name: string) => {
      const t = tensors.get(name);
      if (!t) throw new SafetensorsError(path, "name", `no tensor named ${JSON.stringify(cut(name))}`);
      return t;
    };
    const readBytes = (name: string) => {
      try {
        const t = info(name);
        return reader(dataStart + t.begin, t.end - t.begin);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    const readRange = (name: string, start: number, end: number, into?: Uint8Array) => {
      try {
        const t = info(name), size = t.end - t.begin;
        if (
          !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end > size
        ) {
          throw new SafetensorsError(
            path,
            "range",
            `tensor ${
              JSON.stringify(cut(name))
            }: byte range [${start}, ${end}) is not inside its ${size} bytes; ` +
              `use integers with 0 ≤ start ≤ end ≤ ${size}`,
          );
        }
        if (into && into.length < end - start) {
          throw new SafetensorsError(
            path,
            "range",
            `tensor ${
              JSON.stringify(cut(name))
            }: bytes [${start}, ${end}) do not fit the ${into.length}-byte buffer given`,
          );
        }
        return reader(dataStart + t.begin + start, end - start, into);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    return {
      path,
      tensors,
      metadata,
      readBytes,
      readRange,
      async read(name) {
        const t = info(name);
        if (!FLOAT_DTYPES.includes(t.dtype)) {
          throw new SafetensorsError(
            path,
            "dtype",
            `tensor ${JSON.stringify(cut(name))} is ${t.dtype}, not a float dtype; use readBytes`,
          );
        }
        return { shape: t.shape, data: decodeFloats(await readBytes(name), t.dtype) };
      },
      close: () => {
        reader.closed = true;
        file.close();
      },
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * Reads of byte ranges on one handle, safe under any interleaving: each seek-and-read runs alone (a
 * queue per file), so concurrent reads never see each other's file position.
 */
function positionalReader(file: Deno.FsFile, path: string) {
  let tail: Promise<unknown> = Promise.resolve();
  const read = async (offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> => {
    if (reader.closed) throw new SafetensorsError(path, "closed", "the file was closed");
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    try {
      await file.seek(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < length) {
        const n = await file.read(out.subarray(got));
        if (n === null) {
          throw new SafetensorsError(
            path,
            "read",
            `unexpected end of file at offset ${offset + got} (wanted ${length} bytes from ${offset}); ` +
              "the file changed after it was opened",
            offset + got,
          );
        }
        got += n;
      }
    } catch (e) {
      if (e instanceof SafetensorsError) throw e;
      throw new SafetensorsError(
        path,
        reader.closed ? "closed" : "read",
        `read of ${length} bytes at offset ${offset} failed (${(e as Error).message})`,
        offset,
      );
    }
    return out;
  };
  const reader = Object.assign((offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> => {
    const run = tail.then(() => read(offset, length, into));
    tail = run.catch(() => {});
    return run;
  }, { closed: false });
  return reader;
}

/**
 * A tensor to write: floats (encoded to `dtype`) or raw bytes already in `dtype`.
 *
 * @example
 * ```ts
 * import { type TensorToWrite } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const t: TensorToWrite = { name: "w", dtype: "BF16", shape: [2, 2], data: new Float64Array(4) };
 * assert.equal(t.dtype, "BF16");
 * ```
 */
export interface TensorToWrite {
  /** Name. */
  readonly name: string;
  /** Stored dtype. */
  readonly dtype: Dtype;
  /** Shape. */
  readonly shape: readonly number[];
  /** Values (float dtypes) or the raw little-endian bytes. */
  readonly data: ArrayLike<number> | Uint8Array;
}

/** A tensor's name, dtype and shape. */
export type TensorSpec = { readonly name: string; readonly dtype: Dtype; readonly shape: readonly number[] };

/** The header bytes (length + JSON padded to a multiple of 8) for tensors in the given order. */
export function safetensorsHeader(
  specs: readonly TensorSpec[],
  metadata?: Record<string, string>,
): { bytes: Uint8Array; offsets: [number, number][] } {
  const header: Record<string, unknown> = Object.create(null); // a tensor may be named "__proto__"
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let at = 0;
  const offsets: [number, number][] = [];
  for (const s of specs) {
    const bytes = s.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [at, at + bytes] };
    offsets.push([at, at + bytes]);
    at += bytes;
  }
  const text = JSON.stringify(header), len = new TextEncoder().encode(text).length;
  const json = new TextEncoder().encode(text + " ".repeat((8 - (len % 8)) % 8));
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return { bytes: out, offsets };
}

/** Sorts tensor specs as the reference writer does: larger dtype alignment first, then by name. */
export function referenceOrder<T extends { name: string; dtype: Dtype }>(specs: readonly T[]): T[] {
  return [...specs].sort((a, b) =>
    DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
}

/**
 * A tensor produced in consecutive pieces, so that neither it nor its encoded bytes are ever held whole
 * (a merge of a large tensor in blocks of rows): each piece holds the next entries in row-major order —
 * values for a float dtype (encoded piece by piece, to the same bytes as the whole tensor), raw
 * little-endian bytes for other dtypes. Pieces may have any sizes; together they must make exactly the
 * tensor's `Π shape × dtype size` bytes, else the write fails (and a checkpoint write leaves no output).
 * The next piece is asked for only after the previous one is written.
 *
 * @example
 * ```ts
 * import { openSafetensors, type TensorChunks, writeSafetensorsStream } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * async function* rows(): AsyncGenerator<Float32Array> {
 *   for (let r = 0; r < 3; r++) yield new Float32Array([r, r]); // one row of [3, 2] at a time
 * }
 * const w: TensorChunks = { chunks: rows() };
 * await writeSafetensorsStream(`${dir}/w.safetensors`, [{ name: "w", dtype: "BF16", shape: [3, 2] }], () => w);
 * const f = await openSafetensors(`${dir}/w.safetensors`);
 * assert.deepEqual(Array.from((await f.read("w")).data), [0, 0, 1, 1, 2, 2]);
 * f.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export interface TensorChunks {
  /** The pieces, in order. */
  readonly chunks:
    | AsyncIterable<ArrayLike<number> | Uint8Array | EncodedBytes>
    | Iterable<ArrayLike<number> | Uint8Array | EncodedBytes>;
}

/**
 * Bytes already encoded in the tensor's dtype (little-endian, e.g. bf16 bits a Worker rounded), written
 * as they are: no decoding, no re-encoding. Whole, its length must be exactly the tensor's
 * `Π shape × dtype size` bytes; as a piece of {@link TensorChunks}, the next bytes of the tensor. A wrong
 * length fails the write before any byte of the tensor is written (and a checkpoint write leaves no
 * output).
 *
 * @example
 * ```ts
 * import { type EncodedBytes, openSafetensors, writeSafetensorsStream } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const w: EncodedBytes = { encoded: new Uint8Array([0x80, 0x3f, 0x00, 0xc0]) }; // bf16 1, -2
 * await writeSafetensorsStream(`${dir}/w.safetensors`, [{ name: "w", dtype: "BF16", shape: [2] }], () => w);
 * const f = await openSafetensors(`${dir}/w.safetensors`);
 * assert.deepEqual(Array.from((await f.read("w")).data), [1, -2]);
 * f.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export interface EncodedBytes {
  /** The encoded bytes. */
  readonly encoded: Uint8Array;
}

/**
 * One tensor's data for a writer: all its values (or raw bytes, for a dtype that is not a float) at once,
 * its bytes already encoded ({@link EncodedBytes}), or {@link TensorChunks}.
 *
 * @example
 * ```ts
 * import { type TensorData } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const whole: TensorData = [1, 2, 3, 4];
 * const pieces: TensorData = { chunks: [[1, 2], [3, 4]] };
 * assert.ok("chunks" in pieces && !("chunks" in whole));
 * ```
 */
export type TensorData = ArrayLike<number> | Uint8Array | TensorChunks | EncodedBytes;

/**
 * A producer of one tensor's values or bytes, whole or in pieces: called with the tensor's name and its
 * position in the file.
 *
 * @example
 * ```ts
 * import { openSafetensors, type TensorProducer, writeSafetensorsStream } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const produce: TensorProducer = (_name, index) => (index === 0 ? [1, 2] : { chunks: [[3], [4]] });
 * const specs = ["a", "b"].map((name) => ({ name, dtype: "F32" as const, shape: [2] }));
 * await writeSafetensorsStream(`${dir}/x.safetensors`, specs, produce);
 * const f = await openSafetensors(`${dir}/x.safetensors`);
 * assert.deepEqual(Array.from((await f.read("b")).data), [3, 4]);
 * f.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export type TensorProducer = (name: string, index: number) => TensorData | Promise<TensorData>;

/** Whether a producer returned pieces ({@link TensorChunks}) rather than the whole tensor. */
function isChunks(d: TensorData): d is TensorChunks {
  return typeof d === "object" && d !== null && !ArrayBuffer.isView(d) && "chunks" in d;
}

/** Whether data (or a piece) is bytes already encoded ({@link EncodedBytes}). */
function isEncoded(d: unknown): d is EncodedBytes {
  return typeof d === "object" && d !== null && !ArrayBuffer.isView(d) && "encoded" in d &&
    (d as EncodedBytes).encoded instanceof Uint8Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Entries encoded at a time when a whole float tensor is written: the encoded copy stays this small. */
const ENCODE_CHUNK = 1 << 20;

/**
 * The bytes of values (or raw bytes) of `dtype`: float values are encoded (a float32 array written as
 * F32, or a float64 one as F64, is written from its own memory: no copy), other dtypes' bytes as given.
 */
function pieceBytes(data: ArrayLike<number> | Uint8Array | EncodedBytes, dtype: Dtype): Uint8Array {
  if (isEncoded(data)) return data.encoded;
  if (!FLOAT_DTYPES.includes(dtype)) {
    if (data instanceof Uint8Array) return data;
  } else if (
    LITTLE_ENDIAN &&
    ((dtype === "F32" && data instanceof Float32Array) || (dtype === "F64" && data instanceof Float64Array))
  ) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return encodeFloats(data, dtype);
}

/** Entries `[a, b)` of values, without a copy where the values are a typed array. */
function slice(values: ArrayLike<number>, a: number, b: number): ArrayLike<number> {
  if (ArrayBuffer.isView(values) && !(values instanceof DataView)) {
    return (values as unknown as Float64Array).subarray(a, b);
  }
  return Array.prototype.slice.call(values, a, b) as number[];
}

/** Bytes written to a file between two of its background data syncs (see {@link writeSafetensorsFile}). */
const SYNC_EVERY = 32 << 20;

/**
 * Writes one safetensors file at `path`, which must not exist (created exclusively): header, then each
 * tensor as `produce` returns it — whole (float values encoded a slice at a time, so the encoded copy
 * stays small) or in pieces ({@link TensorChunks}) — then a flush to disk. Every `syncEvery` bytes
 * written (32 MiB), a data sync of the file starts in the background, behind the writes (one at a time),
 * so that the final flush finds little left to write instead of the whole file at once; a background sync
 * that fails is ignored (the final flush, which stays, reports a failing disk). Internal to `lib/io`
 * (callers write into a private temporary folder).
 */
export async function writeSafetensorsFile(
  path: string,
  specs: readonly TensorSpec[],
  produce: TensorProducer,
  options: {
    readonly metadata?: Record<string, string>;
    readonly onTensor?: (name: string, bytes: number) => void;
    /** Called with the tensor's index after half of its bytes are written (fault injection in tests). */
    readonly midTensor?: (index: number) => Promise<void>;
    /** Bytes written between two background data syncs (default 32 MiB; tests). */
    readonly syncEvery?: number;
    /** Called with the bytes written so far when a background data sync starts (tests). */
    readonly onSync?: (written: number) => void;
  } = {},
): Promise<void> {
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) throw new MoekitError(`writeSafetensors: tensor ${cut(s.name)} appears twice`);
    names.add(s.name);
    if (!Object.hasOwn(DTYPE_BYTES, s.dtype)) {
      throw new MoekitError(
        `writeSafetensors: tensor ${cut(s.name)} has unknown dtype ${cut(String(s.dtype))}`,
      );
    }
    if (!s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new MoekitError(
        `writeSafetensors: tensor ${cut(s.name)} has shape [${s.shape}]; use integers ≥ 0`,
      );
    }
  }
  const { bytes: header, offsets } = safetensorsHeader(specs, options.metadata);
  const file = await Deno.open(path, { write: true, createNew: true });
  // the background syncs: through a handle of their own (the writes on `file` would otherwise wait for
  // them), opened for writing as the writer needs no read permission, never written to
  const every = options.syncEvery ?? SYNC_EVERY;
  let total = 0, since = 0, syncing: Promise<void> | undefined;
  const wrote = (n: number) => {
    total += n;
    since += n;
    if (since < every || syncing) return;
    since = 0;
    options.onSync?.(total);
    syncing = (async () => {
      let f: Deno.FsFile | undefined;
      try {
        f = await Deno.open(path, { write: true });
        await f.syncData();
      } catch {
        // the final flush reports a failing disk
      } finally {
        f?.close();
        syncing = undefined;
      }
    })();
  };
  try {
    await writeAll(file, header);
    wrote(header.length);
    for (const [i, s] of specs.entries()) {
      const data = await produce(s.name, i);
      const want = offsets[i][1] - offsets[i][0], size = DTYPE_BYTES[s.dtype];
      const wrong = (got: string) =>
        new MoekitError(
          `writeSafetensors: tensor ${
            cut(s.name)
          } has ${got}, its shape [${s.shape}] × ${s.dtype} needs ${want}`,
        );
      // every byte of the tensor goes through `put`, which stops a producer that gives too many bytes
      // before they are written, and calls the fault-injection hook after exactly half of them
      const half = options.midTensor && want >= 2 ? want >> 1 : -1;
      let written = 0;
      const put = async (bytes: Uint8Array) => {
        if (written + bytes.length > want) throw wrong(`at least ${written + bytes.length} bytes`);
        if (half >= 0 && written < half && written + bytes.length >= half) {
          await writeAll(file, bytes.subarray(0, half - written));
          await options.midTensor!(i);
          await writeAll(file, bytes.subarray(half - written));
        } else await writeAll(file, bytes);
        written += bytes.length;
        wrote(bytes.length);
      };
      if (isChunks(data)) {
        for await (const piece of data.chunks) await put(pieceBytes(piece, s.dtype));
        if (written !== want) throw wrong(`${written} bytes in its pieces`);
      } else if (isEncoded(data)) {
        if (data.encoded.length !== want) throw wrong(`${data.encoded.length} encoded bytes`);
        await put(data.encoded);
      } else if (!FLOAT_DTYPES.includes(s.dtype) && data instanceof Uint8Array) {
        if (data.length !== want) throw wrong(`${data.length} bytes`);
        await put(data);
      } else {
        if (data.length * size !== want) throw wrong(`${data.length * size} bytes`);
        for (let a = 0; a < data.length; a += ENCODE_CHUNK) {
          await put(pieceBytes(slice(data, a, Math.min(data.length, a + ENCODE_CHUNK)), s.dtype));
        }
      }
      options.onTensor?.(s.name, want);
    }
    await syncing;
    await file.syncData();
  } finally {
    await syncing; // never rejects
    file.close();
  }
}

/**
 * Streams tensors into a safetensors file atomically: the file is written tensor by tensor in a private
 * temporary folder beside `path` (`produce` is called once per tensor, in file order, and may compute it
 * then) and renamed to `path` only when complete, replacing an existing file in one step; on any error
 * nothing changes at `path`. A folder at `path`, or `path` among `options.inputs`, is refused first.
 *
 * @example
 * ```ts
 * import { writeSafetensorsStream } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensorsStream(`${dir}/x.safetensors`, [{ name: "x", dtype: "F16", shape: [3] }], () => [1, 2, 3]);
 * assert.equal((await Deno.stat(`${dir}/x.safetensors`)).size, 70); // 8 + 56 header bytes + 6 data bytes
 * assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["x.safetensors"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeSafetensorsStream(
  path: string,
  specs: readonly TensorSpec[],
  produce: TensorProducer,
  options: {
    readonly metadata?: Record<string, string>;
    readonly onTensor?: (name: string, bytes: number) => void;
    /** Paths the output must not be. */
    readonly inputs?: readonly string[];
  } = {},
): Promise<string> {
  const staged = await stageOutput(path, { file: true, inputs: options.inputs });
  try {
    await writeSafetensorsFile(staged.content, specs, produce, options);
  } catch (e) {
    await staged.abort();
    throw e;
  }
  await staged.commit();
  return path;
}

/**
 * Writes whole tensors to a safetensors file (reference tensor order, header padded to 8 bytes),
 * atomically.
 *
 * @example
 * ```ts
 * import { openSafetensors, writeSafetensors } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/b.safetensors`, [{ name: "b", dtype: "BF16", shape: [1], data: [1 / 3] }], {
 *   format: "pt",
 * });
 * const f = await openSafetensors(`${dir}/b.safetensors`);
 * assert.equal((await f.read("b")).data[0], 0.333984375);
 * assert.equal(f.metadata.format, "pt");
 * f.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const ordered = referenceOrder(tensors);
  await writeSafetensorsStream(path, ordered, (_name, i) => ordered[i].data, { metadata });
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
}
