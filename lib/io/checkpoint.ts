/**
 * Checkpoints as folders of safetensors shards: `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`. Reading resolves every tensor to its shard and validates every
 * header up front. Writing checks the output folder before any tensor is produced, plans the shards from
 * the tensor sizes, writes everything into a private temporary folder, and renames the finished folder
 * into place (see `output.ts` for the rules).
 * @module
 */

import { MoekitError } from "../core/errors.ts";
import { type Dtype, DTYPE_BYTES } from "./dtype.ts";
import { CheckpointError, clip } from "./errors.ts";
import { type OutputOptions, stageOutput, testHold } from "./output.ts";
import {
  openSafetensors,
  type SafetensorsFile,
  type TensorData,
  type TensorInfo,
  type TensorSpec,
  writeSafetensorsFile,
} from "./safetensors.ts";
import type { Tensor } from "./tensor.ts";

/**
 * A checkpoint opened for reading, tensor by tensor. Reads may run concurrently.
 *
 * @example
 * ```ts
 * import { type Checkpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const count = (c: Checkpoint) => c.names.length;
 * assert.equal(count({ names: ["a", "b"] } as unknown as Checkpoint), 2);
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
  /**
   * Reads bytes `[start, end)` of a tensor's data (offsets from the tensor's first byte): a block of rows
   * `[r0, r1)` of a row-major tensor with `c` entries per row of `s` bytes is `[r0·c·s, r1·c·s)`. With
   * `into` (at least `end − start` bytes) the bytes go into its start and a view of them is returned (a
   * buffer reused across reads). A range outside the tensor, or an `into` too short, is a
   * `SafetensorsError` (rule `range`) raised before anything is read.
   */
  readRange(name: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array>;
  /** Total bytes of tensor data. */
  readonly totalBytes: number;
  /** Closes all shards. */
  close(): void;
}

const INDEX = "model.safetensors.index.json";

/**
 * Opens a checkpoint folder (sharded with an index, a single `model.safetensors`, or every
 * `*.safetensors` in it) or a single file, validating every shard's header. Problems are a
 * `CheckpointError` (or its subclass `SafetensorsError`) naming the file.
 *
 * @example
 * ```ts
 * import { openCheckpoint, writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await writeCheckpoint(`${dir}/ck`, [{ name: "w", dtype: "F32", shape: [2] }], () => [1, 2]);
 * const ck = await openCheckpoint(`${dir}/ck`);
 * assert.deepEqual(ck.names, ["w"]);
 * assert.deepEqual(Array.from((await ck.read("w")).data), [1, 2]);
 * ck.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  let files: string[];
  let weightMap: Record<string, string> | undefined;
  const stat = await Deno.stat(path).catch((e) => {
    throw new CheckpointError(
      path,
      e instanceof Deno.errors.NotFound ? "checkpoint does not exist" : `cannot open (${e.message})`,
    );
  });
  if (stat.isFile) files = [path];
  else if (!stat.isDirectory) throw new CheckpointError(path, "is neither a file nor a folder");
  else {
    const indexPath = `${path}/${INDEX}`;
    const index = await Deno.readTextFile(indexPath).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw new CheckpointError(indexPath, `cannot read (${e.message})`);
    });
    if (index !== undefined) {
      weightMap = parseIndex(indexPath, index);
      files = [...new Set(Object.values(weightMap))].map((f) => `${path}/${f}`);
    } else {
      files = [];
      for await (const e of Deno.readDir(path)) {
        if (e.isFile && e.name.endsWith(".safetensors")) files.push(`${path}/${e.name}`);
      }
      files.sort();
      if (files.length === 0) {
        throw new CheckpointError(path, `checkpoint has no ${INDEX} and no .safetensors files`);
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
  try {
    const where = new Map<string, SafetensorsFile>(), names: string[] = [];
    let totalBytes = 0;
    for (const s of shards) {
      for (const [name, info] of s.tensors) {
        if (where.has(name)) {
          throw new CheckpointError(
            path,
            `tensor ${clip(name, 80)} is in both ${where.get(name)!.path} and ${s.path}`,
          );
        }
        if (weightMap && weightMap[name] !== undefined && `${path}/${weightMap[name]}` !== s.path) {
          throw new CheckpointError(
            `${path}/${INDEX}`,
            `the index puts ${clip(name, 80)} in ${clip(weightMap[name], 80)}, but it is in ${s.path}`,
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
          throw new CheckpointError(
            `${path}/${INDEX}`,
            `the index lists ${clip(name, 80)}, which no shard holds`,
          );
        }
      }
    }
    const shardOf = (name: string) => {
      const s = where.get(name);
      if (!s) throw new CheckpointError(path, `checkpoint has no tensor ${clip(name, 80)}`);
      return s;
    };
    return {
      path,
      names,
      totalBytes,
      info: (name) => where.get(name)?.tensors.get(name),
      read: async (name) => await shardOf(name).read(name),
      readBytes: async (name) => await shardOf(name).readBytes(name),
      readRange: async (name, start, end, into) => await shardOf(name).readRange(name, start, end, into),
      close: () => shards.forEach((s) => s.close()),
    };
  } catch (e) {
    shards.forEach((s) => s.close());
    throw e;
  }
}

/** Validates an index file's JSON: `{ "weight_map": { name: "shard file", … } }` with plain shard names. */
function parseIndex(indexPath: string, text: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(indexPath, `is not valid JSON (${clip((e as Error).message, 200)})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CheckpointError(indexPath, "must hold a JSON object with a weight_map");
  }
  const map = (parsed as { weight_map?: unknown }).weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new CheckpointError(indexPath, "has no weight_map object (tensor name → shard file)");
  }
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string") {
      throw new CheckpointError(indexPath, `weight_map entry ${clip(name, 80)} is not a file name`);
    }
    if (file === "" || file.startsWith("/") || file.split("/").some((p) => p === ".." || p === "")) {
      throw new CheckpointError(
        indexPath,
        `weight_map entry ${clip(name, 80)} names ${clip(file, 80)}: shards must be files inside the folder`,
      );
    }
  }
  return map as Record<string, string>;
}

/**
 * A file written next to the shards (for example `config.json`): its contents, or a file to copy.
 *
 * @example
 * ```ts
 * import { type ExtraFile } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const f: ExtraFile = { name: "config.json", data: '{"model_type": "mixtral"}' };
 * assert.equal(f.name, "config.json");
 * ```
 */
export interface ExtraFile {
  /** File name inside the output folder (no `/`). */
  readonly name: string;
  /** Contents. */
  readonly data?: string | Uint8Array;
  /** Or a file to copy. */
  readonly copyFrom?: string;
}

/**
 * Options of {@link writeCheckpoint}.
 *
 * @example
 * ```ts
 * import { type WriteCheckpointOptions } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const o: WriteCheckpointOptions = { shardBytes: 1e9, metadata: { format: "pt" }, overwrite: true };
 * assert.equal(o.shardBytes, 1e9);
 * ```
 */
export interface WriteCheckpointOptions extends OutputOptions {
  /** Bytes per shard (tensor data). Default 5e9, as mergekit's `--out-shard-size 5B` (bytes). */
  readonly shardBytes?: number;
  /** `__metadata__` of every shard. Default `{ format: "pt" }`. */
  readonly metadata?: Record<string, string>;
  /** Called after each tensor is written. */
  readonly onTensor?: (name: string, bytes: number) => void;
  /** Files written beside the shards (`config.json`, tokenizer files). */
  readonly files?: readonly ExtraFile[];
}

/**
 * Writes a checkpoint folder tensor by tensor. Before anything is produced, the output is checked: not
 * an input (`options.inputs`), not an existing file, and an existing non-empty folder only with
 * `overwrite: true`. Shards are planned from the sizes (in `specs` order, a new shard when the next
 * tensor would exceed `shardBytes`), `produce(name)` is awaited once per tensor in that order (it may
 * return the tensor whole or in pieces, a `TensorChunks`), and everything is written into a private
 * temporary folder beside the output, which is renamed into place when complete (replacing an old folder
 * as a whole). On any error nothing changes at `dir`.
 * Returns the shard file names.
 *
 * @example
 * ```ts
 * import { writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const specs = ["a", "b", "c"].map((name) => ({ name, dtype: "F32" as const, shape: [4] }));
 * const files = await writeCheckpoint(`${dir}/out`, specs, () => [1, 2, 3, 4], { shardBytes: 32 });
 * assert.deepEqual(files, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
 * await assert.rejects(() => writeCheckpoint(`${dir}/out`, specs, () => [0, 0, 0, 0]), /not empty/);
 * await writeCheckpoint(`${dir}/out`, specs.slice(0, 1), () => [0, 0, 0, 0], { overwrite: true });
 * assert.deepEqual([...Deno.readDirSync(`${dir}/out`)].map((e) => e.name), ["model.safetensors"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeCheckpoint(
  dir: string,
  specs: readonly TensorSpec[],
  produce: (name: string) => TensorData | Promise<TensorData>,
  options: WriteCheckpointOptions = {},
): Promise<string[]> {
  const limit = options.shardBytes ?? 5e9;
  if (!(limit > 0)) throw new MoekitError(`shardBytes must be > 0, got ${limit}`);
  for (const f of options.files ?? []) {
    if (
      !f.name || f.name.includes("/") || f.name === "." || f.name === ".." || f.name.endsWith(".safetensors")
    ) {
      throw new MoekitError(`extra file ${clip(f.name, 80)}: use a plain file name that is not a shard name`);
    }
  }
  const layout = shardLayout(specs, limit);
  const shards = layout.map((f) => f.tensors), names = layout.map((f) => f.name), n = layout.length;
  const staged = await stageOutput(dir, options);
  try {
    await testHold("before-first-tensor");
    const half = Math.floor(specs.length / 2);
    let global = 0;
    for (const [i, shard] of shards.entries()) {
      const first = global;
      await writeSafetensorsFile(`${staged.content}/${names[i]}`, shard, (name) => produce(name), {
        metadata: options.metadata ?? { format: "pt" },
        onTensor: options.onTensor,
        midTensor: (j) => (first + j === half ? testHold("mid-tensor") : Promise.resolve()),
      });
      global += shard.length;
    }
    if (n > 1) {
      const weightMap: Record<string, string> = {};
      shards.forEach((shard, i) => shard.forEach((s) => (weightMap[s.name] = names[i])));
      const index = {
        metadata: { total_size: layout.reduce((a, f) => a + f.bytes, 0) },
        weight_map: weightMap,
      };
      await Deno.writeTextFile(`${staged.content}/${INDEX}`, JSON.stringify(index, null, 2), {
        createNew: true,
      });
    }
    for (const f of options.files ?? []) {
      const to = `${staged.content}/${f.name}`;
      if (f.copyFrom !== undefined) await Deno.copyFile(f.copyFrom, to);
      else if (typeof f.data === "string") await Deno.writeTextFile(to, f.data, { createNew: true });
      else await Deno.writeFile(to, f.data ?? new Uint8Array(0), { createNew: true });
    }
  } catch (e) {
    await staged.abort();
    throw e;
  }
  await staged.commit();
  return names;
}

/**
 * The shard files of a checkpoint as {@link writeCheckpoint} lays them out: tensors in the given order,
 * a new file when the next tensor would take the current one past `shardBytes` (a tensor larger than
 * that gets a file of its own); one file is `model.safetensors`, more are
 * `model-0000k-of-0000n.safetensors`. Each file has its tensors and their data bytes.
 */
export function shardLayout<T extends { readonly dtype: Dtype; readonly shape: readonly number[] }>(
  tensors: readonly T[],
  shardBytes: number,
): { name: string; tensors: T[]; bytes: number }[] {
  const size = (t: T) => t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
  const groups: { tensors: T[]; bytes: number }[] = [{ tensors: [], bytes: 0 }];
  for (const t of tensors) {
    let cur = groups[groups.length - 1];
    if (cur.bytes > 0 && cur.bytes + size(t) > shardBytes) groups.push(cur = { tensors: [], bytes: 0 });
    cur.tensors.push(t);
    cur.bytes += size(t);
  }
  const n = groups.length, pad5 = (i: number) => String(i).padStart(5, "0");
  return groups.map((g, i) => ({
    name: n === 1 ? "model.safetensors" : `model-${pad5(i + 1)}-of-${pad5(n)}.safetensors`,
    ...g,
  }));
}
