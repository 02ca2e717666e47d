/**
 * Checkpoints as folders of safetensors shards: `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`. Reading resolves every tensor to its shard and validates every
 * header up front; writing plans the shards from the tensor sizes before any byte is written, writes
 * every shard to a temporary name, and renames them and then the index only when all are complete.
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { type Dtype, DTYPE_BYTES } from "./dtype.ts";
import {
  openSafetensors,
  type SafetensorsFile,
  type TensorInfo,
  writeSafetensorsStream,
} from "./safetensors.ts";
import type { Tensor } from "../merging/tensor.ts";

/**
 * A checkpoint opened for reading, tensor by tensor.
 *
 * @example
 * ```ts
 * import { type Checkpoint } from "@moekit/moekit";
 * const count = (c: Checkpoint) => c.names.length;
 * console.log(typeof count); // function
 * ```
 */
export interface Checkpoint {
  /** The folder (or file) it was opened from. */
  readonly path: string;
  /** Tensor names in storage order. */
  readonly names: readonly string[];
  /** A tensor's header entry, or undefined. */
  info(name: string): TensorInfo | undefined;
  /** Reads a float tensor. */
  read(name: string): Promise<Tensor>;
  /** Reads a tensor's raw bytes. */
  readBytes(name: string): Promise<Uint8Array>;
  /** Total bytes of tensor data. */
  readonly totalBytes: number;
  /** Closes all shards. */
  close(): void;
}

const INDEX = "model.safetensors.index.json";

/**
 * Opens a checkpoint folder (sharded with an index, a single `model.safetensors`, or every
 * `*.safetensors` in it) or a single file, validating every shard's header.
 *
 * @example
 * ```ts
 * import { openCheckpoint, writeCheckpoint } from "@moekit/moekit";
 * const dir = await Deno.makeTempDir();
 * await writeCheckpoint(dir, [{ name: "w", dtype: "F32", shape: [2] }], () => [1, 2]);
 * const ck = await openCheckpoint(dir);
 * console.log(ck.names, Array.from((await ck.read("w")).data)); // ["w"] [1, 2]
 * ck.close();
 * ```
 */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  let files: string[];
  let weightMap: Record<string, string> | undefined;
  const stat = await Deno.stat(path).catch(() => undefined);
  if (!stat) throw new MoekitError(`checkpoint ${path} does not exist`);
  if (stat.isFile) files = [path];
  else {
    const index = await Deno.readTextFile(`${path}/${INDEX}`).catch(() => undefined);
    if (index !== undefined) {
      let parsed: { weight_map?: Record<string, string> };
      try {
        parsed = JSON.parse(index);
      } catch (e) {
        throw new MoekitError(`${path}/${INDEX} is not valid JSON (${(e as Error).message})`);
      }
      if (!parsed.weight_map || typeof parsed.weight_map !== "object") {
        throw new MoekitError(`${path}/${INDEX} has no weight_map`);
      }
      weightMap = parsed.weight_map;
      files = [...new Set(Object.values(weightMap))].map((f) => `${path}/${f}`);
    } else {
      files = [];
      for await (const e of Deno.readDir(path)) {
        if (e.isFile && e.name.endsWith(".safetensors")) files.push(`${path}/${e.name}`);
      }
      files.sort();
      if (files.length === 0) {
        throw new MoekitError(`checkpoint ${path} has no ${INDEX} and no .safetensors files`);
      }
    }
  }
  const shards: SafetensorsFile[] = [];
  try {
    for (const f of files) shards.push(await openSafetensors(f));
  } catch (e) {
    shards.forEach((s) => s.close());
    throw e;
  }
  const where = new Map<string, SafetensorsFile>(), names: string[] = [];
  let totalBytes = 0;
  for (const s of shards) {
    for (const [name, info] of s.tensors) {
      if (where.has(name)) {
        throw new MoekitError(
          `checkpoint ${path}: tensor ${name} is in both ${where.get(name)!.path} and ${s.path}`,
        );
      }
      if (weightMap && weightMap[name] !== undefined && `${path}/${weightMap[name]}` !== s.path) {
        throw new MoekitError(
          `checkpoint ${path}: the index puts ${name} in ${weightMap[name]}, but it is in ${s.path}`,
        );
      }
      where.set(name, s);
      names.push(name);
      totalBytes += info.end - info.begin;
    }
  }
  if (weightMap) {
    for (const name of Object.keys(weightMap)) {
      if (!where.has(name)) {
        throw new MoekitError(`checkpoint ${path}: the index lists ${name}, which no shard holds`);
      }
    }
  }
  const shardOf = (name: string) => {
    const s = where.get(name);
    if (!s) throw new MoekitError(`checkpoint ${path} has no tensor ${name}`);
    return s;
  };
  return {
    path,
    names,
    totalBytes,
    info: (name) => where.get(name)?.tensors.get(name),
    read: (name) => shardOf(name).read(name),
    readBytes: (name) => shardOf(name).readBytes(name),
    close: () => shards.forEach((s) => s.close()),
  };
}

/**
 * Options of {@link writeCheckpoint}.
 *
 * @example
 * ```ts
 * import { type WriteCheckpointOptions } from "@moekit/moekit";
 * const o: WriteCheckpointOptions = { shardBytes: 1e9, metadata: { format: "pt" } };
 * console.log(o.shardBytes); // 1000000000
 * ```
 */
export interface WriteCheckpointOptions {
  /** Bytes per shard (tensor data). Default 5e9, as mergekit's `--out-shard-size 5B` (bytes). */
  readonly shardBytes?: number;
  /** `__metadata__` of every shard. Default `{ format: "pt" }`. */
  readonly metadata?: Record<string, string>;
  /** Called after each tensor is written. */
  readonly onTensor?: (name: string, bytes: number) => void;
}

/**
 * Writes a checkpoint tensor by tensor: shards are planned from the sizes first (in `specs` order, a
 * new shard when the next tensor would exceed `shardBytes`), `produce(name)` is awaited once per tensor
 * in that order, and nothing gets its final name until every shard is complete. A new or empty folder is
 * written beside it (`<dir>.partial-<pid>`) and renamed into place in one step; into a folder that
 * already holds files, shards are renamed one by one and the index is written last.
 * Returns the shard file names.
 *
 * @example
 * ```ts
 * import { writeCheckpoint } from "@moekit/moekit";
 * const dir = await Deno.makeTempDir();
 * const specs = ["a", "b", "c"].map((name) => ({ name, dtype: "F32" as const, shape: [4] }));
 * const files = await writeCheckpoint(dir, specs, () => [1, 2, 3, 4], { shardBytes: 32 });
 * console.log(files); // ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
 * ```
 */
export async function writeCheckpoint(
  dir: string,
  specs: readonly { name: string; dtype: Dtype; shape: readonly number[] }[],
  produce: (name: string) => ArrayLike<number> | Uint8Array | Promise<ArrayLike<number> | Uint8Array>,
  options: WriteCheckpointOptions = {},
): Promise<string[]> {
  const limit = options.shardBytes ?? 5e9;
  if (!(limit > 0)) throw new MoekitError(`shardBytes must be > 0, got ${limit}`);
  const size = (s: { dtype: Dtype; shape: readonly number[] }) =>
    s.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype];
  const shards: (typeof specs[number])[][] = [[]];
  let used = 0;
  for (const s of specs) {
    if (used > 0 && used + size(s) > limit) {
      shards.push([]);
      used = 0;
    }
    shards[shards.length - 1].push(s);
    used += size(s);
  }
  const n = shards.length;
  const names = n === 1
    ? ["model.safetensors"]
    : shards.map((_, i) => `model-${pad5(i + 1)}-of-${pad5(n)}.safetensors`);
  // a new (or empty) folder is written as a sibling temporary folder and renamed into place at the end:
  // one atomic rename, so a kill at any moment leaves no output under its final name
  const existing = await Deno.stat(dir).then((st) => st.isDirectory, () => false);
  const empty = !existing || (await Array.fromAsync(Deno.readDir(dir))).length === 0;
  const work = empty ? `${dir.replace(/\/+$/, "")}.partial-${Deno.pid}` : dir;
  await Deno.mkdir(work, { recursive: true });
  const partials: string[] = [];
  try {
    for (const [i, shard] of shards.entries()) {
      partials.push(
        await writeSafetensorsStream(`${work}/${names[i]}`, shard, (name) => produce(name), {
          metadata: options.metadata ?? { format: "pt" },
          onTensor: options.onTensor,
          deferRename: true,
        }),
      );
    }
  } catch (e) {
    if (empty) await Deno.remove(work, { recursive: true }).catch(() => {});
    else await Promise.all(partials.map((p) => Deno.remove(p).catch(() => {})));
    throw e;
  }
  if (!empty) await Deno.remove(`${dir}/${INDEX}`).catch(() => {}); // the old index goes first, the new one last
  for (const [i, p] of partials.entries()) await Deno.rename(p, `${work}/${names[i]}`);
  if (n > 1) {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => shard.forEach((s) => (weightMap[s.name] = names[i])));
    const index = { metadata: { total_size: specs.reduce((a, s) => a + size(s), 0) }, weight_map: weightMap };
    const tmp = `${work}/${INDEX}.partial-${Deno.pid}`;
    await Deno.writeTextFile(tmp, JSON.stringify(index, null, 2));
    await Deno.rename(tmp, `${work}/${INDEX}`);
  }
  if (empty) {
    if (existing) await Deno.remove(dir);
    await Deno.rename(work, dir);
  }
  return names;
}

function pad5(i: number): string {
  return String(i).padStart(5, "0");
}
