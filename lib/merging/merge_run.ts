/**
 * The execution side of a checkpoint merge: the output layout (which tensor goes into which shard
 * file), the overlapped tensor stream (read tensor i + 1 while tensor i merges on a Worker and tensor
 * i − 1 is written), and merges split into parts across processes or machines (`--shard i/n`) with the
 * check-and-assemble step (`--finalize`). Folders are written only through `lib/io/output.ts`.
 * @module
 */

import { resolve } from "node:path";
import { MoekitError, NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";
import { type ExtraFile, shardLayout } from "../io/checkpoint.ts";
import { decodeFloatsInPlace, type Dtype } from "../io/dtype.ts";
import { CheckpointError, clip } from "../io/errors.ts";
import { checkOutputFolder, stageOutput } from "../io/output.ts";
import { openSafetensors, writeSafetensorsFile } from "../io/safetensors.ts";
import type { MergePlan, MergeProgress, PlannedTensor } from "./checkpoint_merge.ts";
import { merge, type MergeOptions } from "./merge.ts";

/** One output shard file: its name, its tensors in file order, and their data bytes. */
export interface OutputFile {
  readonly name: string;
  readonly tensors: readonly PlannedTensor[];
  readonly bytes: number;
}

const numel = (t: { shape: readonly number[] }) => t.shape.reduce((a, b) => a * b, 1);
const pad5 = (i: number) => String(i).padStart(5, "0");

/**
 * The output's shard files, as `writeCheckpoint` lays them out: tensors in plan order, a new file when
 * the next tensor would take the current one past `shardBytes`; one file is `model.safetensors`, more
 * are `model-0000k-of-0000n.safetensors`.
 */
export function outputLayout(tensors: readonly PlannedTensor[], shardBytes: number): OutputFile[] {
  return shardLayout(tensors, shardBytes);
}

/**
 * Splits the output files into `count` parts balanced by bytes, deterministically: files taken from the
 * largest to the smallest (equal sizes: lower file number first), each given to the part with the
 * fewest bytes so far (equal: the lower part number). Returns each part's file indices in file order.
 */
export function assignParts(files: readonly { bytes: number }[], count: number): number[][] {
  const order = files.map((_, i) => i).sort((a, b) => files[b].bytes - files[a].bytes || a - b);
  const load = new Array<number>(count).fill(0), parts: number[][] = Array.from({ length: count }, () => []);
  for (const f of order) {
    let best = 0;
    for (let p = 1; p < count; p++) if (load[p] < load[best]) best = p;
    parts[best].push(f);
    load[best] += files[f].bytes;
  }
  return parts.map((p) => p.sort((a, b) => a - b));
}

// ---------------------------------------------------------------------------------------------------
// The overlapped tensor stream

/** A tensor as read from its file: raw bytes, decoded on the Worker. Internal. */
export interface RawTensor {
  readonly shape: readonly number[];
  readonly dtype: Dtype;
  readonly bytes: Uint8Array;
}

/**
 * A compute job for the Worker: one `merge()` call without callbacks, its base and model tensors still
 * encoded (decoding them is compute too, so it happens there). Internal.
 */
export interface ComputeJob {
  readonly id: number;
  readonly options: Omit<MergeOptions, "onWarning" | "base" | "models">;
  readonly base?: RawTensor;
  readonly models: readonly {
    readonly tensor: RawTensor;
    readonly params: MergeOptions["models"][number]["params"];
  }[];
}

type Reply =
  | { id: number; shape: number[]; data: Float32Array | Float64Array; warning?: undefined; error?: undefined }
  | { id: number; warning: string; error?: undefined }
  | {
    id: number;
    error: { name: string; message: string; fields: Record<string, unknown> };
    warning?: undefined;
  };

const ERROR_CLASSES: Record<string, { prototype: object }> = {
  MoekitError,
  ShapeError,
  NonFiniteError,
  OptionError,
};

/** Rebuilds an error that crossed from the Worker with its class (moekit's error classes) and fields. */
function rebuildError(e: { name: string; message: string; fields: Record<string, unknown> }): Error {
  const err = Object.create((ERROR_CLASSES[e.name] ?? Error).prototype) as Error;
  Object.defineProperty(err, "message", { value: e.message, writable: true, configurable: true });
  Object.assign(err, e.fields);
  err.name = e.name;
  err.stack = `${e.name}: ${e.message}\n    at merge() on the merge Worker`;
  return err;
}

/** One Worker that runs `merge()` jobs in order; inputs and results move by transfer. */
class ComputeWorker {
  #worker: Worker;
  #pending = new Map<
    number,
    { resolve: (d: Float32Array | Float64Array) => void; reject: (e: Error) => void }
  >();
  #next = 0;
  #dead?: Error;

  constructor() {
    this.#worker = new Worker(new URL("./merge_worker.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (ev: MessageEvent<Reply>) => {
      const r = ev.data, p = this.#pending.get(r.id);
      if (r.warning !== undefined) return console.warn(r.warning);
      if (!p) return;
      this.#pending.delete(r.id);
      if (r.error) p.reject(rebuildError(r.error));
      else p.resolve((r as { data: Float32Array | Float64Array }).data);
    };
    this.#worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      this.#dead = new MoekitError(`the merge Worker stopped: ${ev.message}`);
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
    };
  }

  run(job: Omit<ComputeJob, "id">): Promise<Float32Array | Float64Array> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#next++;
    const buffers = new Set<ArrayBuffer>();
    for (const t of [job.base, ...job.models.map((m) => m.tensor)]) {
      if (t && t.bytes.buffer instanceof ArrayBuffer) buffers.add(t.bytes.buffer);
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, ...job } satisfies ComputeJob, [...buffers]);
    });
  }

  close(): void {
    this.#worker.terminate();
    const closed = new MoekitError("the merge was stopped");
    for (const p of this.#pending.values()) p.reject(closed);
    this.#pending.clear();
  }
}

/** Decodes a job's tensors and merges them: the same code on the Worker and on the calling thread. */
export function runJob(
  job: Omit<ComputeJob, "id">,
  onWarning?: (message: string) => void,
): { shape: readonly number[]; data: ArrayLike<number> } {
  const inputs = new Set<ArrayBuffer>();
  const decode = (t: RawTensor) => {
    // bf16/f16: decoded into the raw buffer grown to float32 (the raw bytes are freed at once)
    const data = decodeFloatsInPlace(t.bytes, t.dtype);
    for (const b of [t.bytes.buffer, data.buffer]) {
      if (b instanceof ArrayBuffer && !b.detached) inputs.add(b);
    }
    return { shape: t.shape, data };
  };
  const out = merge({
    ...job.options,
    base: job.base && decode(job.base),
    models: job.models.map((m) => ({ tensor: decode(m.tensor), params: m.params })),
    ...(onWarning ? { onWarning } : {}),
  });
  inputs.delete(out.data.buffer as ArrayBuffer);
  // the inputs are ours and merged: free their memory now (detaching releases it at once), not at the
  // next garbage collection of whichever thread holds them last
  for (const b of inputs) (b as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer }).transfer?.(0);
  return { shape: out.shape, data: out.data };
}

/** The tensor stream of a run: `take` in write order, `written` after each write, `close` at the end. */
export interface MergeStream {
  /** The output data of a tensor (merged floats, or raw bytes of a copied tensor). */
  take(name: string): Promise<ArrayLike<number> | Uint8Array>;
  /** Marks a tensor as written (its memory is free): lets the next reads start. */
  written(name: string): void;
  /** Input bytes read so far. */
  readonly bytesRead: number;
  /** Stops the Worker. */
  close(): void;
}

/**
 * Streams the merged tensors of `list` (a plan's tensors in write order) with reads, compute and writes
 * overlapped: the compute runs on one Worker, so the calling thread reads tensor i + 1 and writes tensor
 * i − 1 while tensor i merges. A tensor starts (its inputs are read) only when the tensors in flight —
 * started and not yet written — together hold no more elements than the largest tensor of the list, or
 * when nothing else is in flight: the peak memory stays that of merging the largest tensor alone.
 * With `overlap: false` (or where no Worker can start) everything runs on the calling thread, one tensor
 * at a time; the results are the same bytes either way.
 */
export function mergeStream(
  plan: MergePlan,
  list: readonly PlannedTensor[],
  options: { readonly seed?: number; readonly overlap?: boolean } = {},
): MergeStream {
  const at = new Map(list.map((t, i) => [t.name, i]));
  const largest = Math.max(0, ...list.map(numel));
  const jobs: (Promise<ArrayLike<number> | Uint8Array> | undefined)[] = [];
  const refModel = plan.config.baseModel ?? plan.config.models[0]?.model ??
    plan.config.slices?.[0]?.sources[0]?.model;
  const ck = (m: string) => plan.checkpoints.get(m)!;
  let next = 0, oldest = 0, inFlight = 0, bytesRead = 0, closed = false;
  const useWorker = options.overlap !== false && typeof Worker !== "undefined" &&
    new URL(import.meta.url).protocol === "file:";
  let worker: ComputeWorker | undefined;

  const run = async (e: PlannedTensor): Promise<ArrayLike<number> | Uint8Array> => {
    if (e.passthrough) {
      const src = e.base ?? { model: refModel!, tensor: e.name };
      const bytes = await ck(src.model).readBytes(src.tensor);
      bytesRead += bytes.length;
      return bytes;
    }
    // raw bytes here; decoded where the merge runs (the Worker, or below on this thread)
    const raw = async (s: { model: string; tensor: string }): Promise<RawTensor> => {
      const info = ck(s.model).info(s.tensor)!, bytes = await ck(s.model).readBytes(s.tensor);
      bytesRead += bytes.length;
      return { shape: info.shape, dtype: info.dtype, bytes };
    };
    const [base, ...ts] = await Promise.all([e.base ? raw(e.base) : undefined, ...e.sources.map(raw)]);
    const models = ts.map((tensor, i) => ({ tensor: tensor!, params: e.sources[i].params }));
    const opts: ComputeJob["options"] = {
      method: plan.method,
      params: e.params,
      name: e.name,
      seed: options.seed,
      // the inputs are ours (decoded for this merge): the kernels may overwrite them
      consumeInputs: true,
      // bf16 and f32 outputs encode through float32: a Float32Array result gives the same bytes
      output: e.dtype === "BF16" || e.dtype === "F32" ? "f32" : "f64",
    };
    if (closed) throw new MoekitError("the merge was stopped");
    if (useWorker) {
      worker ??= new ComputeWorker();
      return await worker.run({ options: opts, base, models });
    }
    return runJob({ options: opts, base, models }).data;
  };
  const start = (j: number) => {
    inFlight += numel(list[j]);
    const p = run(list[j]);
    p.catch(() => {}); // surfaces when (if) the tensor is taken
    jobs[j] = p;
  };
  const fill = () => {
    while (!closed && next < list.length && (next === oldest || inFlight + numel(list[next]) <= largest)) {
      start(next++);
    }
  };
  return {
    async take(name) {
      const j = at.get(name);
      if (j === undefined) throw new MoekitError(`tensor ${clip(name, 80)} is not in this merge`);
      fill();
      while (next <= j) start(next++); // out of order (not the writer's way): start it anyway
      const p = jobs[j]!;
      jobs[j] = undefined;
      return await p;
    },
    written(name) {
      const j = at.get(name);
      if (j === undefined) return;
      inFlight -= numel(list[j]);
      oldest = Math.max(oldest, j + 1);
      fill();
    },
    get bytesRead() {
      return bytesRead;
    },
    close() {
      closed = true;
      worker?.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Parts: `--shard i/n` and `--finalize`

/** The record a part leaves in its folder, which `--finalize` checks. */
interface PartRecord {
  readonly format: "moekit-merge-part/1";
  readonly part: number;
  readonly parts: number;
  readonly configHash: string;
  readonly planHash: string;
  readonly totalFiles: number;
  readonly totalSize: number;
  readonly files: readonly {
    readonly index: number;
    readonly name: string;
    readonly size: number;
    readonly tensors: readonly { name: string; dtype: string; shape: readonly number[] }[];
  }[];
  readonly sideFiles: readonly { name: string; size: number }[];
  readonly inputs: readonly string[];
}

const RECORD = "moekit-part.json";
const PART_DIR = /^part-(\d{5})-of-(\d{5})$/;

async function sha256(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The folder holding the parts of the output `outDir`: `<out-dir>.parts`. */
export function partsFolder(outDir: string): string {
  return `${resolve(outDir)}.parts`;
}

/** Parses `i/n` (0 ≤ i < n) as given to `--shard`; an `OptionError` otherwise. */
export function parsePart(spec: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
  if (!m) throw new OptionError("--shard", spec, "use i/n with 0 ≤ i < n, for example 0/4 … 3/4");
  const part = { index: Number(m[1]), count: Number(m[2]) };
  checkPart(part);
  return part;
}

function checkPart(part: { index: number; count: number }): void {
  const { index, count } = part;
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new OptionError("--shard", `${index}/${count}`, "the number of parts n must be an integer ≥ 1");
  }
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new OptionError(
      "--shard",
      `${index}/${count}`,
      `the part i must be an integer in 0..${count - 1} (parts are numbered from 0, as Slurm array and ` +
        "Kubernetes completion indexes are)",
    );
  }
}

/**
 * What a part of a merge is: the output files it writes and the hashes that tie it to its config and
 * plan. Raised here (before any read): a bad part number, or fewer output files than parts.
 */
export async function planPart(
  plan: MergePlan,
  part: { index: number; count: number },
  options: { readonly shardBytes?: number; readonly seed?: number },
): Promise<{ files: OutputFile[]; mine: number[]; configHash: string; planHash: string }> {
  checkPart(part);
  const shardBytes = options.shardBytes ?? 5e9;
  const files = outputLayout(plan.tensors, shardBytes);
  if (files.length < part.count) {
    const total = files.reduce((a, f) => a + f.bytes, 0);
    throw new OptionError(
      "--shard",
      `${part.index}/${part.count}`,
      `the output has ${files.length} shard file${
        files.length > 1 ? "s" : ""
      } at --out-shard-size ${shardBytes}, ` +
        `fewer than the ${part.count} parts (a part writes whole files); use at most ${files.length} parts or ` +
        `a smaller --out-shard-size (about ${
          Math.max(1, Math.floor(total / part.count))
        } gives ${part.count} or more files)`,
    );
  }
  const configHash = await sha256(JSON.stringify(plan.config));
  const planHash = await sha256(JSON.stringify({
    method: plan.method,
    seed: options.seed ?? 0,
    shardBytes,
    parts: part.count,
    files: files.map((f) => ({
      name: f.name,
      tensors: f.tensors.map((t) => [
        t.name,
        t.dtype,
        t.shape,
        t.t,
        t.params,
        t.passthrough,
        t.base?.tensor ?? null,
        t.sources.map((s) => [s.tensor, s.params]),
      ]),
    })),
  }));
  return { files, mine: assignParts(files, part.count)[part.index], configHash, planHash };
}

/** Writes the side files (`config.json`, tokenizer files) into a folder. */
async function writeSideFiles(dir: string, files: readonly ExtraFile[]): Promise<void> {
  for (const f of files) {
    const to = `${dir}/${f.name}`;
    if (f.copyFrom !== undefined) await Deno.copyFile(f.copyFrom, to);
    else if (typeof f.data === "string") await Deno.writeTextFile(to, f.data, { createNew: true });
    else await Deno.writeFile(to, f.data ?? new Uint8Array(0), { createNew: true });
  }
}

/**
 * Writes part `index` of `count` of a merge into `<out-dir>.parts/part-<i>-of-<n>/` (through a private
 * temporary folder, renamed into place when complete): its shard files with their final names, the side
 * files (part 0 only) and the part record. `<out-dir>` itself is only checked (it will be writable by
 * `finalizeCheckpointMerge`).
 */
export async function writeMergePart(
  plan: MergePlan,
  outDir: string,
  part: { index: number; count: number },
  options: {
    readonly shardBytes?: number;
    readonly seed?: number;
    readonly overlap?: boolean;
    readonly overwrite?: boolean;
    readonly inputs: readonly string[];
    readonly sideFiles: readonly ExtraFile[];
    readonly metadata: Record<string, string>;
    readonly log?: (line: string) => void;
    readonly onProgress?: (p: MergeProgress) => void;
  },
): Promise<{ files: string[]; seconds: number; bytesRead: number }> {
  const start = performance.now();
  const { files, mine, configHash, planHash } = await planPart(plan, part, options);
  await checkOutputFolder(outDir, { overwrite: options.overwrite, inputs: options.inputs });
  const dir = `${partsFolder(outDir)}/part-${pad5(part.index)}-of-${pad5(part.count)}`;
  const staged = await stageOutput(dir, { overwrite: true, inputs: options.inputs, log: options.log });
  const list = mine.flatMap((f) => files[f].tensors);
  const stream = mergeStream(plan, list, options);
  const inputsOf = (t: PlannedTensor) =>
    t.passthrough ? 0 : [...(t.base ? [t.base] : []), ...t.sources].reduce((a, s) => {
      const i = plan.checkpoints.get(s.model)!.info(s.tensor)!;
      return a + i.end - i.begin;
    }, 0);
  const bytesTotal = list.reduce((a, t) => a + inputsOf(t), 0);
  let done = 0;
  try {
    for (const f of mine) {
      await writeSafetensorsFile(
        `${staged.content}/${files[f].name}`,
        files[f].tensors,
        (n) => stream.take(n),
        {
          metadata: options.metadata,
          onTensor: (name) => {
            stream.written(name);
            done++;
            options.onProgress?.({
              done,
              total: list.length,
              bytesRead: stream.bytesRead,
              bytesTotal,
              seconds: (performance.now() - start) / 1000,
            });
          },
        },
      );
    }
    const side = part.index === 0 ? options.sideFiles : [];
    if (side.length) {
      await Deno.mkdir(`${staged.content}/files`);
      await writeSideFiles(`${staged.content}/files`, side);
    }
    const record: PartRecord = {
      format: "moekit-merge-part/1",
      part: part.index,
      parts: part.count,
      configHash,
      planHash,
      totalFiles: files.length,
      totalSize: files.reduce((a, f) => a + f.bytes, 0),
      files: await Promise.all(mine.map(async (f) => ({
        index: f,
        name: files[f].name,
        size: (await Deno.stat(`${staged.content}/${files[f].name}`)).size,
        tensors: files[f].tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
      }))),
      sideFiles: await Promise.all(
        side.map(async (s) => ({
          name: s.name,
          size: (await Deno.stat(`${staged.content}/files/${s.name}`)).size,
        })),
      ),
      inputs: options.inputs.map((p) => resolve(p)),
    };
    await Deno.writeTextFile(`${staged.content}/${RECORD}`, JSON.stringify(record, null, 2), {
      createNew: true,
    });
  } catch (e) {
    await staged.abort();
    throw e;
  } finally {
    stream.close();
  }
  await staged.commit();
  return {
    files: mine.map((f) => files[f].name),
    seconds: (performance.now() - start) / 1000,
    bytesRead: stream.bytesRead,
  };
}

/** Reads and checks one part record's shape. */
async function readRecord(dir: string): Promise<PartRecord> {
  const path = `${dir}/${RECORD}`;
  let r: PartRecord;
  try {
    r = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new CheckpointError(
      path,
      `cannot read the part record (${clip((e as Error).message, 200)}); re-run this part`,
    );
  }
  const ok = r && r.format === "moekit-merge-part/1" && Number.isSafeInteger(r.part) &&
    Number.isSafeInteger(r.parts) && typeof r.configHash === "string" && typeof r.planHash === "string" &&
    Array.isArray(r.files) && Array.isArray(r.sideFiles) && Number.isSafeInteger(r.totalFiles) &&
    Number.isSafeInteger(r.totalSize) && Array.isArray(r.inputs);
  if (!ok) {
    throw new CheckpointError(
      path,
      "is not a moekit part record (format moekit-merge-part/1); re-run this part",
    );
  }
  return r;
}

/**
 * Checks that every part of a merge split with `--shard i/n` is present and complete, then writes the
 * output folder `outDir` atomically: the parts' shard files (hard-linked, or copied where links are not
 * possible), `model.safetensors.index.json` and the side files, renamed into place as a whole (an
 * existing non-empty `outDir` only with `overwrite: true`). The parts folder `<out-dir>.parts` is
 * removed afterwards. Every problem — a missing or unfinished part, a part of another config, plan or
 * split, a shard file whose tensors or size differ from its record — is a `CheckpointError` raised before
 * anything is written.
 *
 * @example
 * ```ts
 * import { finalizeCheckpointMerge, parseMergeConfig, planCheckpointMerge, runCheckpointMerge } from "@moekit/moekit/merging";
 * import { openCheckpoint, writeCheckpoint } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const specs = ["a", "b", "c"].map((name) => ({ name, dtype: "F32" as const, shape: [2] }));
 * for (const [m, v] of [["base", 1], ["x", 3]] as const) await writeCheckpoint(`${dir}/${m}`, specs, () => [v, v]);
 * const config = parseMergeConfig("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - {model: x, parameters: {weight: 0.5}}\n");
 * const plan = await planCheckpointMerge(config, { configDir: dir });
 * for (const index of [0, 1]) { // in practice: two processes or machines
 *   await runCheckpointMerge(plan, `${dir}/out`, { shardBytes: 8, part: { index, count: 2 } });
 * }
 * plan.close();
 * await finalizeCheckpointMerge(`${dir}/out`);
 * const ck = await openCheckpoint(`${dir}/out`);
 * assert.deepEqual(Array.from((await ck.read("c")).data), [2, 2]); // 1 + 0.5 · (3 − 1)
 * ck.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function finalizeCheckpointMerge(
  outDir: string,
  options: {
    /** Replace an existing non-empty `outDir` as a whole. Default false (refused). */
    readonly overwrite?: boolean;
    /** Where notes go. Default stderr. */
    readonly log?: (line: string) => void;
  } = {},
): Promise<{ files: string[]; parts: number }> {
  const partsDir = partsFolder(outDir), log = options.log ?? ((l: string) => console.error(l));
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(partsDir));
  } catch (e) {
    throw new CheckpointError(
      partsDir,
      e instanceof Deno.errors.NotFound
        ? "no parts folder: run `merge <config> <out-dir> --shard i/n` for every i first"
        : `cannot read the parts folder (${(e as Error).message})`,
    );
  }
  const dirs = entries.filter((e) => e.isDirectory && PART_DIR.test(e.name)).map((e) => e.name).sort();
  const unfinished = entries.filter((e) => e.isDirectory && /^part-\d{5}-of-\d{5}\.partial-/.test(e.name))
    .map((e) => e.name);
  if (!dirs.length) {
    throw new CheckpointError(
      partsDir,
      "holds no finished part: run `merge <config> <out-dir> --shard i/n` first",
    );
  }
  const records = new Map<string, PartRecord>();
  for (const d of dirs) records.set(d, await readRecord(`${partsDir}/${d}`));
  const [firstDir, first] = [...records.entries()][0];
  for (const [d, r] of records) {
    const [, i, n] = PART_DIR.exec(d)!;
    if (r.part !== Number(i) || r.parts !== Number(n)) {
      throw new CheckpointError(
        `${partsDir}/${d}`,
        `its record says part ${r.part}/${r.parts}; re-run this part`,
      );
    }
    if (r.parts !== first.parts) {
      throw new CheckpointError(
        `${partsDir}/${d}`,
        `is part of a split into ${r.parts}, ${firstDir} of a split into ${first.parts}; remove the parts of the ` +
          "other split (or the whole parts folder) and re-run",
      );
    }
    if (r.configHash !== first.configHash) {
      throw new CheckpointError(
        `${partsDir}/${d}`,
        `was made from another config than ${firstDir} (config hash ${r.configHash.slice(0, 12)}… vs ` +
          `${first.configHash.slice(0, 12)}…); re-run every part with the same config`,
      );
    }
    if (r.planHash !== first.planHash) {
      throw new CheckpointError(
        `${partsDir}/${d}`,
        `was made with another plan than ${firstDir} (--seed, --out-shard-size or the models' tensors differ: ` +
          `plan hash ${r.planHash.slice(0, 12)}… vs ${
            first.planHash.slice(0, 12)
          }…); re-run every part with ` +
          "the same flags and inputs",
      );
    }
  }
  const n = first.parts;
  for (let i = 0; i < n; i++) {
    const name = `part-${pad5(i)}-of-${pad5(n)}`;
    if (!records.has(name)) {
      const running = unfinished.filter((u) => u.startsWith(`${name}.partial-`));
      throw new CheckpointError(
        `${partsDir}/${name}`,
        `part ${i}/${n} is missing${
          running.length ? " (it has an unfinished temporary folder: still running, or killed)" : ""
        }; ` +
          `run \`merge <config> <out-dir> --shard ${i}/${n}\` and finalize again`,
      );
    }
  }
  // every output file exactly once, each complete: its header lists the recorded tensors and its size is
  // the recorded one (the header check also proves the data runs to the end of the file)
  const byIndex = new Map<number, { dir: string; file: PartRecord["files"][number] }>();
  for (const [d, r] of records) {
    for (const f of r.files) {
      if (byIndex.has(f.index)) {
        throw new CheckpointError(
          `${partsDir}/${d}`,
          `file ${f.name} is also in ${byIndex.get(f.index)!.dir}`,
        );
      }
      byIndex.set(f.index, { dir: d, file: f });
    }
  }
  for (let k = 0; k < first.totalFiles; k++) {
    if (!byIndex.has(k)) {
      throw new CheckpointError(partsDir, `no part holds output file ${k + 1} of ${first.totalFiles}`);
    }
  }
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < first.totalFiles; k++) {
    const { dir, file } = byIndex.get(k)!, path = `${partsDir}/${dir}/${file.name}`;
    const size = await Deno.stat(path).then((s) => s.size, () => -1);
    if (size < 0) throw new CheckpointError(path, `is missing from part ${dir}; re-run this part`);
    if (size !== file.size) {
      throw new CheckpointError(
        path,
        `has ${size} bytes, its part record says ${file.size}; re-run part ${dir}`,
      );
    }
    const st = await openSafetensors(path); // validates the header against the file size
    try {
      const got = [...st.tensors.values()];
      const same = got.length === file.tensors.length &&
        file.tensors.every((t, j) =>
          got[j].name === t.name && got[j].dtype === t.dtype && got[j].shape.join() === t.shape.join()
        );
      if (!same) {
        throw new CheckpointError(path, `its tensors differ from its part record; re-run part ${dir}`);
      }
    } finally {
      st.close();
    }
    for (const t of file.tensors) weightMap[t.name] = file.name;
  }
  const zero = records.get(`part-${pad5(0)}-of-${pad5(n)}`)!;
  for (const s of zero.sideFiles) {
    const path = `${partsDir}/part-${pad5(0)}-of-${pad5(n)}/files/${s.name}`;
    const size = await Deno.stat(path).then((x) => x.size, () => -1);
    if (size !== s.size) throw new CheckpointError(path, "is missing or incomplete; re-run part 0");
  }
  // all checked: write the output as a whole
  const staged = await stageOutput(outDir, { overwrite: options.overwrite, inputs: first.inputs, log });
  const place = async (from: string, to: string) => {
    try {
      await Deno.link(from, to);
    } catch {
      await Deno.copyFile(from, to);
    }
  };
  const names: string[] = [];
  try {
    for (let k = 0; k < first.totalFiles; k++) {
      const { dir, file } = byIndex.get(k)!;
      await place(`${partsDir}/${dir}/${file.name}`, `${staged.content}/${file.name}`);
      names.push(file.name);
    }
    if (first.totalFiles > 1) {
      const index = { metadata: { total_size: first.totalSize }, weight_map: weightMap };
      await Deno.writeTextFile(
        `${staged.content}/model.safetensors.index.json`,
        JSON.stringify(index, null, 2),
        {
          createNew: true,
        },
      );
    }
    for (const s of zero.sideFiles) {
      await place(`${partsDir}/part-${pad5(0)}-of-${pad5(n)}/files/${s.name}`, `${staged.content}/${s.name}`);
    }
  } catch (e) {
    await staged.abort();
    throw e;
  }
  await staged.commit();
  await Deno.remove(partsDir, { recursive: true }).catch((e) =>
    log(`moekit: the output is complete; could not remove ${partsDir} (${(e as Error).message})`)
  );
  return { files: names, parts: n };
}
