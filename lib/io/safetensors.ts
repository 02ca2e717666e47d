/**
 * safetensors reading and writing, one tensor at a time (merging.md §11). The reader validates the
 * whole header before any tensor is read — length bound, JSON, dtypes, shape × dtype size = byte span,
 * offsets inside the file, sorted, non-overlapping, covering the buffer with no trailing bytes — and
 * reads each tensor's byte range on demand. The writer streams tensors into a temporary file and
 * renames it into place when complete.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { decodeFloats, type Dtype, DTYPE_BYTES, encodeFloats, FLOAT_DTYPES } from "./dtype.ts";
import type { Tensor } from "../merging/tensor.ts";

/**
 * A malformed or unreadable safetensors file; the message names the file and what is wrong (with the
 * byte offset or tensor name).
 *
 * @example
 * ```ts
 * import { SafetensorsError } from "@moekit/moekit";
 * const e = new SafetensorsError("a.safetensors", "header length 999 exceeds the file (72 bytes)");
 * console.log(e.message); // a.safetensors: header length 999 exceeds the file (72 bytes)
 * ```
 */
export class SafetensorsError extends MoekitError {
  /** The file. */
  readonly path: string;
  /** Builds the message from the file and the problem. */
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.path = path;
  }
}

/**
 * One tensor's entry in a header.
 *
 * @example
 * ```ts
 * import { type TensorInfo } from "@moekit/moekit";
 * const info: TensorInfo = { name: "a", dtype: "F32", shape: [2], begin: 0, end: 8 };
 * console.log(info.end - info.begin); // 8
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

const MAX_HEADER = 100 * 1024 * 1024;

/**
 * Parses and validates a safetensors header from the file's first bytes and its size.
 *
 * @example
 * ```ts
 * import { parseSafetensorsHeader } from "@moekit/moekit";
 * const json = new TextEncoder().encode('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ');
 * const head = new Uint8Array(8 + json.length);
 * new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
 * head.set(json, 8);
 * const h = parseSafetensorsHeader("a.safetensors", head, head.length + 8);
 * console.log(h.dataStart, h.tensors.get("a")!.shape); // 64 [2]
 * ```
 */
export function parseSafetensorsHeader(
  path: string,
  head: Uint8Array,
  fileSize: number,
): { dataStart: number; tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  if (fileSize < 8 || head.length < 8) {
    throw new SafetensorsError(path, `file of ${fileSize} bytes is too short for the 8-byte header length`);
  }
  const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) throw new SafetensorsError(path, `header length ${n} exceeds the 100 MB limit`);
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new SafetensorsError(path, `header length ${len} exceeds the file (${fileSize} bytes)`);
  }
  if (head.length < 8 + len) {
    throw new SafetensorsError(path, `header truncated: ${head.length - 8} of ${len} bytes`);
  }
  const text = new TextDecoder("utf-8", { fatal: false }).decode(head.subarray(8, 8 + len));
  if (!text.startsWith("{")) throw new SafetensorsError(path, "header (byte 8) does not start with '{'");
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(
      path,
      `header at bytes 8..${8 + len} is not valid JSON (${(e as Error).message})`,
    );
  }
  const dataStart = 8 + len, bufferSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (typeof v !== "object" || v === null || Object.values(v).some((x) => typeof x !== "string")) {
        throw new SafetensorsError(path, "__metadata__ must map strings to strings");
      }
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null) {
      throw new SafetensorsError(path, `tensor ${name}: entry is not an object`);
    }
    if (typeof e.dtype !== "string" || !(e.dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(path, `tensor ${name}: unknown dtype ${JSON.stringify(e.dtype)}`);
    }
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new SafetensorsError(
        path,
        `tensor ${name}: shape ${JSON.stringify(e.shape)} is not a list of integers ≥ 0`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 || off.some((x) => !Number.isSafeInteger(x) || x < 0) ||
      off[1] < off[0]
    ) {
      throw new SafetensorsError(
        path,
        `tensor ${name}: data_offsets ${JSON.stringify(off)} must be [begin, end] with 0 ≤ begin ≤ end`,
      );
    }
    const dtype = e.dtype as Dtype, shape = e.shape as number[];
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (off[1] - off[0] !== bytes) {
      throw new SafetensorsError(
        path,
        `tensor ${name}: shape [${shape.join(",")}] × ${dtype} is ${bytes} bytes but data_offsets span ${
          off[1] - off[0]
        }`,
      );
    }
    if (off[1] > bufferSize) {
      throw new SafetensorsError(
        path,
        `tensor ${name}: data ends at file offset ${dataStart + off[1]}, past the end (${fileSize} bytes)`,
      );
    }
    tensors.set(name, { name, dtype, shape, begin: off[0], end: off[1] });
  }
  const spans = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const t of spans) {
    if (t.begin < at) {
      throw new SafetensorsError(
        path,
        `tensor ${t.name}: bytes ${t.begin}..${t.end} overlap the previous tensor (ends at ${at})`,
      );
    }
    if (t.begin > at) {
      throw new SafetensorsError(
        path,
        `hole in the data buffer at bytes ${at}..${t.begin} (before tensor ${t.name})`,
      );
    }
    at = t.end;
  }
  if (at !== bufferSize) {
    throw new SafetensorsError(
      path,
      `${bufferSize - at} trailing bytes after the last tensor (file offset ${dataStart + at})`,
    );
  }
  return { dataStart, tensors, metadata };
}

/**
 * An open safetensors file: the validated header, and tensors read one at a time.
 *
 * @example
 * ```ts
 * import { openSafetensors, writeSafetensors } from "@moekit/moekit";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [2], data: new Float32Array([1, -2]) }]);
 * const f = await openSafetensors(path);
 * console.log(Array.from((await f.read("a")).data)); // [1, -2]
 * f.close();
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
  /** Closes the file. */
  close(): void;
}

/**
 * Opens and validates a safetensors file (reads only the header).
 *
 * @example
 * ```ts
 * import { openSafetensors } from "@moekit/moekit";
 * try {
 *   await openSafetensors("/nonexistent.safetensors");
 * } catch (e) {
 *   console.log((e as Error).name); // SafetensorsError
 * }
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(path, `cannot open (${(e as Error).message})`);
  }
  try {
    const size = (await file.stat()).size;
    const first = await readAt(file, 0, Math.min(size, 8), path);
    const len = size >= 8 ? Number(new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true)) : 0;
    const head = size >= 8 && len <= MAX_HEADER && 8 + len <= size
      ? await readAt(file, 0, 8 + len, path)
      : first;
    const { dataStart, tensors, metadata } = parseSafetensorsHeader(path, head, size);
    const info = (name: string) => {
      const t = tensors.get(name);
      if (!t) throw new SafetensorsError(path, `no tensor named ${name}`);
      return t;
    };
    const readBytes = (name: string) => {
      const t = info(name);
      return readAt(file, dataStart + t.begin, t.end - t.begin, path);
    };
    return {
      path,
      tensors,
      metadata,
      readBytes,
      async read(name) {
        const t = info(name);
        if (!FLOAT_DTYPES.includes(t.dtype)) {
          throw new SafetensorsError(path, `tensor ${name} is ${t.dtype}, not a float dtype; use readBytes`);
        }
        return { shape: t.shape, data: decodeFloats(await readBytes(name), t.dtype) };
      },
      close: () => file.close(),
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

async function readAt(file: Deno.FsFile, offset: number, length: number, path: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await file.read(out.subarray(got));
    if (n === null) {
      throw new SafetensorsError(
        path,
        `unexpected end of file at offset ${offset + got} (wanted ${length} bytes from ${offset})`,
      );
    }
    got += n;
  }
  return out;
}

/**
 * A tensor to write: floats (encoded to `dtype`) or raw bytes already in `dtype`.
 *
 * @example
 * ```ts
 * import { type TensorToWrite } from "@moekit/moekit";
 * const t: TensorToWrite = { name: "w", dtype: "BF16", shape: [2, 2], data: new Float64Array(4) };
 * console.log(t.dtype); // BF16
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

/** The header bytes (length + JSON padded to a multiple of 8) for tensors in the given order. */
export function safetensorsHeader(
  specs: readonly { name: string; dtype: Dtype; shape: readonly number[] }[],
  metadata?: Record<string, string>,
): { bytes: Uint8Array; offsets: [number, number][] } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let at = 0;
  const offsets: [number, number][] = [];
  for (const s of specs) {
    const bytes = s.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [at, at + bytes] };
    offsets.push([at, at + bytes]);
    at += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
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
 * Streams tensors into a safetensors file atomically: a temporary file beside `path` is written tensor by
 * tensor (`produce` is called once per tensor, in file order, and may compute it then) and renamed to
 * `path` only when complete; on any error the temporary file is removed.
 *
 * @example
 * ```ts
 * import { writeSafetensorsStream } from "@moekit/moekit";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensorsStream(path, [{ name: "x", dtype: "F16", shape: [3] }], () => [1, 2, 3]);
 * console.log((await Deno.stat(path)).size); // 70 = 8 + 56 header bytes + 6 data bytes
 * ```
 */
export async function writeSafetensorsStream(
  path: string,
  specs: readonly { name: string; dtype: Dtype; shape: readonly number[] }[],
  produce: (
    name: string,
    index: number,
  ) => ArrayLike<number> | Uint8Array | Promise<ArrayLike<number> | Uint8Array>,
  options: {
    metadata?: Record<string, string>;
    onTensor?: (name: string, bytes: number) => void;
    /** Leave the temporary file in place and return it (the caller renames it; see writeCheckpoint). */
    deferRename?: boolean;
  } = {},
): Promise<string> {
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) throw new MoekitError(`writeSafetensors: tensor ${s.name} appears twice`);
    names.add(s.name);
  }
  const { bytes: header, offsets } = safetensorsHeader(specs, options.metadata);
  const tmp = `${path}.partial-${Deno.pid}`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  let ok = false;
  try {
    await writeAll(file, header);
    for (const [i, s] of specs.entries()) {
      const data = await produce(s.name, i);
      const bytes = data instanceof Uint8Array && !FLOAT_DTYPES.includes(s.dtype)
        ? data
        : encodeFloats(data, s.dtype);
      if (bytes.length !== offsets[i][1] - offsets[i][0]) {
        throw new MoekitError(
          `writeSafetensors: tensor ${s.name} has ${bytes.length} bytes, its shape needs ${
            offsets[i][1] - offsets[i][0]
          }`,
        );
      }
      await writeAll(file, bytes);
      options.onTensor?.(s.name, bytes.length);
    }
    ok = true;
  } finally {
    file.close();
    if (!ok) await Deno.remove(tmp).catch(() => {});
  }
  if (options.deferRename) return tmp;
  await Deno.rename(tmp, path);
  return path;
}

/**
 * Writes whole tensors to a safetensors file (reference tensor order, header padded to 8 bytes), atomically.
 *
 * @example
 * ```ts
 * import { openSafetensors, writeSafetensors } from "@moekit/moekit";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [{ name: "b", dtype: "BF16", shape: [1], data: [1 / 3] }], { format: "pt" });
 * const f = await openSafetensors(path);
 * console.log((await f.read("b")).data[0], f.metadata.format); // 0.333984375 pt
 * f.close();
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
