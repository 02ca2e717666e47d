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
import { decodeFloats, decodeFloatsInPlace, decodeFloatsInto, type Dtype, DTYPE_BYTES } from "../io/dtype.ts";
import { CheckpointError, clip } from "../io/errors.ts";
import { checkOutputFolder, stageOutput } from "../io/output.ts";
import {
  type EncodedBytes,
  openSafetensors,
  type TensorData,
  writeSafetensorsFile,
} from "../io/safetensors.ts";
import type { MergePlan, MergeProgress, PlannedTensor } from "./checkpoint_merge.ts";
import { merge, mergeBlockPlanner, type MergeOptions } from "./merge.ts";
import { decodePool, mergeKernel } from "./kernel_run.ts";

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
  /**
   * A buffer of the run's pool for this job's float32 result (its pages are faulted in: no fresh memory).
   * Used by jobs merged a chunk at a time (see `runJob`); otherwise given back (`giveBack`) or freed.
   */
  readonly out?: ArrayBuffer;
  /**
   * A block of a blocked tensor: the plans of its chunks (`chunkStarts` of its length), so that it is
   * merged a chunk at a time like a whole tensor.
   */
  readonly chunkPlans?: readonly BlockPlans[];
  /**
   * The buffers the job is done with — its raw inputs, an unused `out` — go back with the result (to the
   * run's pool) instead of being freed.
   */
  readonly giveBack?: boolean;
  /**
   * The output dtype when it is 16-bit: the Worker encodes the result into it (`encodeFloats`' bytes) and
   * replies with the bytes (`encoded`), so that the calling thread writes them as they are.
   */
  readonly encode?: "BF16" | "F16";
}

type Reply =
  | {
    id: number;
    shape: number[];
    data?: Float32Array | Float64Array;
    /** The result encoded in the job's `encode` dtype (instead of `data`). */
    encoded?: Uint8Array;
    /** The buffers a `giveBack` job is done with. */
    spent?: ArrayBuffer[];
    warning?: undefined;
    error?: undefined;
  }
  | { id: number; warning: string; error?: undefined }
  | { id: -1; ready: true; warning?: undefined; error?: undefined }
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
    {
      resolve: (d: Float32Array | Float64Array | EncodedBytes) => void;
      reject: (e: Error) => void;
      work: number;
    }
  >();
  #work = 0;
  #next = 0;
  #ready = false;
  #dead?: Error;

  /** `onSpent`: receives the buffers `giveBack` jobs are done with. */
  constructor(onSpent?: (buffers: ArrayBuffer[]) => void) {
    this.#worker = new Worker(new URL("./merge_worker.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (ev: MessageEvent<Reply>) => {
      const r = ev.data, p = this.#pending.get(r.id);
      if ("ready" in r) return void (this.#ready = true);
      if (r.warning !== undefined) return console.warn(r.warning);
      if ("spent" in r && r.spent?.length) onSpent?.(r.spent);
      if (!p) return;
      this.#pending.delete(r.id);
      this.#work -= p.work;
      if (r.error) p.reject(rebuildError(r.error));
      else {
        const d = r as { data?: Float32Array | Float64Array; encoded?: Uint8Array };
        p.resolve(d.encoded ? { encoded: d.encoded } : d.data!);
      }
    };
    this.#worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      this.#dead = new MoekitError(`the merge Worker stopped: ${ev.message}`);
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
      this.#work = 0;
    };
  }

  /** Whether the Worker has started (loaded its modules, compiled the kernel). */
  get ready(): boolean {
    return this.#ready && !this.#dead;
  }

  /** Jobs posted and not yet answered. */
  get queued(): number {
    return this.#pending.size;
  }

  /** The entries of the jobs posted and not yet answered. */
  get work(): number {
    return this.#work;
  }

  /** Posts a job of `work` entries; its result. */
  run(job: Omit<ComputeJob, "id">, work = 0): Promise<Float32Array | Float64Array | EncodedBytes> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#next++;
    const buffers = new Set<ArrayBuffer>();
    for (const t of [job.base, ...job.models.map((m) => m.tensor)]) {
      if (t && t.bytes.buffer instanceof ArrayBuffer) buffers.add(t.bytes.buffer);
    }
    if (job.out) buffers.add(job.out);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, work });
      this.#work += work;
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

/** Entries per chunk of a job merged straight from its 16-bit bytes (see `mergeChunked`). */
const RAW_CHUNK = 1 << 16;

/**
 * Methods whose jobs are merged a chunk at a time also when their block planner reads the data first,
 * with float32 inputs too (`chunkSource`): the magnitude cuts (a counting pass over the chunks, and a
 * gather pass only when the boundary falls outside the sub-buckets the counting pass gathered) and DARE's
 * norm sums. Measured faster than their whole-tensor merges; SLERP's pass is not (it keeps its blocks).
 */
const CHUNK_READ_PASS = new Set([
  "ties",
  "magnitude_prune",
  "breadcrumbs",
  "breadcrumbs_ties",
  "dare_ties",
  "dare_linear",
]);

/** Frees the buffers of a job's raw tensors that are all theirs (detaching releases them at once). */
function freeRaw(raw: readonly (RawTensor | undefined)[]): void {
  for (const t of raw) if (t) free(t.bytes);
}

/** Block plans of a tensor, as `MergeOptions.block.plans`. */
type BlockPlans = NonNullable<MergeOptions["block"]>["plans"];

/**
 * The inputs of a job with bf16/f16 inputs, a chunk of entries at a time: `chunk(k, off, len)` decodes
 * entries [off, off + len) of input k (0 the base, if any, then the models) into the kernel's pool (a
 * chunk-sized slot per input, reused) or views float32/float64 inputs. Null when the kernel, the pool or
 * the inputs do not allow it (no 16-bit input, too small, inputs of different shapes). `release()` ends it.
 */
function chunkSource(job: Omit<ComputeJob, "id">) {
  const K = mergeKernel(), raw = [job.base, ...job.models.map((m) => m.tensor)];
  const is16 = (t?: RawTensor) => t?.dtype === "BF16" || t?.dtype === "F16";
  const ref = job.base ?? job.models[0]?.tensor;
  // float32 inputs too for the magnitude cuts (their chunked selection beats the whole-tensor one)
  if (!K || !decodePool() || !ref || !(raw.some(is16) || CHUNK_READ_PASS.has(job.options.method))) {
    return null;
  }
  const n = numel(ref);
  if (n < 2 * RAW_CHUNK || raw.some((t) => t && t.shape.join() !== ref.shape.join())) return null;
  const at = raw.map((t) => (is16(t) ? K.reserve(4 * RAW_CHUNK) : 0));
  if (at.some((a) => a < 0)) {
    K.releasePool();
    return null;
  }
  // float32/float64 inputs: views over their bytes (as a whole-tensor merge reads them)
  const wide = raw.map((t) => (t && !is16(t) ? decodeFloats(t.bytes, t.dtype) : undefined));
  const chunk = (k: number, off: number, len: number) => {
    const t = raw[k]!;
    return is16(t)
      ? K.decode16(t.bytes.subarray(2 * off, 2 * (off + len)), t.dtype as "BF16" | "F16", at[k])
      : wide[k]!.subarray(off, off + len);
  };
  return {
    n,
    ref,
    raw,
    chunk,
    /** Every input a pool slot or a view of our own bytes (the kernels may overwrite them). */
    allPooled: raw.every((t) => !t || is16(t)),
    release: () => K.releasePool(),
  };
}

/**
 * The block planner for these options, or null when the method merges whole tensors or its parameters are
 * invalid (merge() then raises the error with its own wording, naming the tensor).
 */
function plannerOrNull(
  options: Parameters<typeof mergeBlockPlanner>[0],
): ReturnType<typeof mergeBlockPlanner> {
  try {
    return mergeBlockPlanner(options);
  } catch {
    return null;
  }
}

/** The block planner of a job's method for its whole tensor of `n` entries (see {@link plannerOrNull}). */
const jobPlanner = (job: Omit<ComputeJob, "id">, n: number) =>
  plannerOrNull({
    method: job.options.method,
    params: job.options.params,
    models: job.models.map((m) => ({ params: m.params })),
    numel: n,
    name: job.options.name,
    seed: job.options.seed,
  });

/**
 * Feeds the planner's read passes (magnitude cuts: a histogram, then the boundary bucket) with the
 * chunks starting at `starts` (in index order), decoded again each pass (cheaper than float32 copies).
 */
function feedPlanner(
  pl: NonNullable<ReturnType<typeof mergeBlockPlanner>>,
  src: NonNullable<ReturnType<typeof chunkSource>>,
  starts: readonly number[],
): void {
  for (let pass = 0; pass < pl.passes; pass++) {
    if (!pl.needs(pass)) continue;
    for (const [i, off] of starts.entries()) {
      const len = (starts[i + 1] ?? src.n) - off;
      const inputs = src.raw.map((t, k) => (t ? src.chunk(k, off, len) : undefined));
      pl.add(pass, {
        offset: off,
        base: inputs[0],
        models: inputs.slice(1) as (Float32Array | Float64Array)[],
      });
    }
  }
}

/** Chunk starts of a range of `len` entries: every RAW_CHUNK entries. */
function chunkStarts(len: number): number[] {
  return Array.from({ length: Math.ceil(len / RAW_CHUNK) }, (_, i) => i * RAW_CHUNK);
}

/**
 * A job with bf16/f16 inputs merged a chunk of entries at a time (see `chunkSource`): no float32 copy of
 * the inputs is made, so no fresh pages to fault in and 2 bytes per input entry held instead of 4. Each
 * chunk is a `block` of the tensor (`MergeOptions.block`), whose result is the same bytes as that range
 * of the whole-tensor merge. For methods whose block plans need no pre-pass (linear, task arithmetic,
 * DARE without a norm rescale, …) or whose pre-pass reads chunks well (`CHUNK_READ_PASS`: the planner's
 * passes run over the chunks first); null otherwise (the caller merges it whole).
 */
function mergeChunked(
  job: Omit<ComputeJob, "id">,
  onWarning?: (message: string) => void,
): { shape: readonly number[]; data: ArrayLike<number>; spent: ArrayBuffer[] } | null {
  const o = job.options;
  // a block of a blocked tensor: its plans hold no per-entry state unless they carry a magnitude cut
  // (then each chunk's plan must be given)
  if (o.block?.plans?.some((p) => p.cut) && !job.chunkPlans) return null;
  const ref = job.base ?? job.models[0]?.tensor;
  const pl = o.block || !ref ? null : jobPlanner(job, numel(ref));
  if (!o.block && (!pl || (pl.passes > 0 && !CHUNK_READ_PASS.has(o.method)))) return null;
  const src = chunkSource(job);
  if (!src) return null;
  const { n, chunk } = src, starts = chunkStarts(n), given = o.block?.plans;
  if (job.chunkPlans && job.chunkPlans.length !== starts.length) {
    src.release();
    return null;
  }
  const plans = (off: number, i: number): BlockPlans => (pl ? pl.plans(off) : job.chunkPlans?.[i] ?? given);
  const consume = src.allPooled || (o.consumeInputs ?? false);
  const out = o.output !== "f32"
    ? new Float64Array(n)
    : job.out && !job.out.detached && job.out.byteLength >= 4 * n
    ? new Float32Array(job.out, 0, n)
    : new Float32Array(n);
  const offset0 = o.block?.offset ?? 0;
  try {
    if (pl) feedPlanner(pl, src, starts);
    for (const [i, off] of starts.entries()) {
      const len = (starts[i + 1] ?? n) - off;
      const r = merge({
        ...o,
        base: job.base && { shape: [len], data: chunk(0, off, len) },
        models: job.models.map((m, k) => ({
          tensor: { shape: [len], data: chunk(k + 1, off, len) },
          params: m.params,
        })),
        block: { offset: offset0 + off, plans: plans(off, i) },
        consumeInputs: consume,
        ...(onWarning ? { onWarning } : {}),
      });
      out.set(r.data, off);
    }
  } finally {
    src.release();
  }
  if (!job.giveBack) freeRaw(src.raw);
  return { shape: src.ref.shape, data: out, spent: job.giveBack ? spentOf(src.raw, out.buffer) : [] };
}

/** The distinct buffers of a job's raw tensors that are all theirs, other than `keep`'s. */
function spentOf(raw: readonly (RawTensor | undefined)[], keep: ArrayBufferLike): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const t of raw) {
    const b = t?.bytes.buffer;
    if (b instanceof ArrayBuffer && !b.detached && b !== keep) out.add(b);
  }
  return [...out];
}

/**
 * Decodes a job's tensors and merges them: the same code on the Worker and on the calling thread. The
 * buffers the job is done with (its inputs, an unused `out`) are freed at once, or with `job.giveBack`
 * returned as `spent` (for the run's pool).
 */
export function runJob(
  job: Omit<ComputeJob, "id">,
  onWarning?: (message: string) => void,
): { shape: readonly number[]; data: ArrayLike<number>; spent: ArrayBuffer[] } {
  const chunked = mergeChunked(job, onWarning);
  if (chunked) return chunked;
  const keep = job.giveBack;
  if (job.out && !keep) free(new Uint8Array(job.out)); // not needed: released at once
  const inputs = new Set<ArrayBuffer>(job.out && keep ? [job.out] : []);
  // bf16/f16 inputs decode into the merge kernel's memory (its pages are reused from tensor to tensor)
  // when the pool takes this size (see MergeKernel.poolFits); otherwise into their own buffers
  const K = mergeKernel(), raw = [job.base, ...job.models.map((m) => m.tensor)];
  const is16 = (t?: RawTensor): t is RawTensor => t?.dtype === "BF16" || t?.dtype === "F16";
  const need = raw.reduce((a, t) => a + (is16(t) ? 2 * t.bytes.byteLength + 16 : 0), 0);
  let slots: number[] | null = K && decodePool() && need > 0 && K.poolFits(need) ? [] : null;
  for (const t of raw) {
    if (!slots || !is16(t)) continue;
    const at = K!.reserve(2 * t.bytes.byteLength);
    if (at < 0) slots = null;
    else slots.push(at);
  }
  if (!slots) K?.releasePool();
  let slot = 0;
  const decode = (t: RawTensor) => {
    let data: Float32Array | Float64Array;
    if (slots && is16(t)) {
      data = K!.decode16(t.bytes, t.dtype as "BF16" | "F16", slots[slot++]);
      // the raw bytes are copied: a buffer of their own is freed at once (detaching releases it), or
      // given back
      const b = t.bytes.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
      if (
        !keep && b instanceof ArrayBuffer && t.bytes.byteOffset === 0 && t.bytes.byteLength === b.byteLength
      ) b.transfer?.(0);
    } else {
      // otherwise bf16/f16 decode into a float32 array of their own (the raw bytes are freed at once,
      // or kept to be given back)
      data = keep ? decodeFloats(t.bytes, t.dtype) : decodeFloatsInPlace(t.bytes, t.dtype);
    }
    for (const b of [t.bytes.buffer, data.buffer]) {
      if (b instanceof ArrayBuffer && !b.detached && !K?.owns(new Uint8Array(b, 0, 0))) inputs.add(b);
    }
    return { shape: t.shape, data };
  };
  let out;
  try {
    out = merge({
      ...job.options,
      base: job.base && decode(job.base),
      models: job.models.map((m) => ({ tensor: decode(m.tensor), params: m.params })),
      ...(onWarning ? { onWarning } : {}),
      // the result must not land in the pool
      ...(slots ? { consumeInputs: false } : {}),
    });
  } finally {
    if (slots) K!.releasePool();
  }
  inputs.delete(out.data.buffer as ArrayBuffer);
  if (keep) return { shape: out.shape, data: out.data, spent: [...inputs] };
  // the inputs are ours and merged: free their memory now (detaching releases it at once), not at the
  // next garbage collection of whichever thread holds them last
  for (const b of inputs) (b as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer }).transfer?.(0);
  return { shape: out.shape, data: out.data, spent: [] };
}

/** The tensor stream of a run: `take` in write order, `written` after each write, `close` at the end. */
export interface MergeStream {
  /**
   * The output data of a tensor: merged floats, raw bytes of a copied tensor, or — for a tensor merged in
   * blocks of rows — its blocks as pieces (`TensorChunks`), each read and merged when the writer
   * asks for it.
   */
  take(name: string): Promise<TensorData>;
  /** Marks a tensor as written (its memory is free): lets the next reads start. */
  written(name: string): void;
  /** Input bytes read so far. */
  readonly bytesRead: number;
  /**
   * Worker threads the run merges on beside the calling thread: 1 with `overlap` when the run's
   * estimated one-thread time reaches `minWorkerMs`, else 0.
   */
  readonly workers: number;
  /** Stops the Worker. */
  close(): void;
}

/** A tensor merged in blocks of rows under a memory cap. Internal. */
export interface TensorBlocks {
  /** Rows (the first dimension; 1 for a scalar). */
  readonly rows: number;
  /** Entries per row (the product of the other dimensions). */
  readonly rowElems: number;
  /** Rows per block (the last block may have fewer). */
  readonly rowsPerBlock: number;
  /**
   * Read passes over the blocks before the merge pass: 0 for element-wise methods, 1 for DARE's rescale
   * norms, 2 for magnitude cuts (a histogram, then the boundary bucket).
   */
  readonly passes: number;
}

/**
 * Jobs queued on a Worker from which the calling thread merges the next job itself (see `mergeStream`):
 * measured faster than two Workers on two cores (their start, ~0.1 s each, blocks the calling thread,
 * and their first jobs run slowly while they warm up).
 */
const WORKER_QUEUE = 2;

/**
 * One thread's time per entry and input of a method's merge, in nanoseconds: a whole run — reads, planning
 * passes, merges, writes — divided by its entries × inputs (measured on a 2-core Zen 5 EPYC, 29M entries
 * per checkpoint, bf16 and f32 inputs warm in the page cache; the larger of the two). Used only to decide
 * whether a run repays a Worker's start ({@link runCostMs}); methods not listed: 15.
 */
const NS_PER_INPUT_ENTRY: Readonly<Record<string, number>> = {
  linear: 5,
  task_arithmetic: 5,
  nuslerp: 9,
  slerp: 9,
  ties: 11,
  magnitude_prune: 11,
  dare_linear: 13,
  dare_ties: 15,
  breadcrumbs: 16,
  breadcrumbs_ties: 16,
  della: 65,
  della_linear: 65,
};

/**
 * The estimated one-thread time of a run from which the stream starts a Worker (see `mergeStream`).
 * Starting one is not free: Deno builds the Worker's runtime while the calling thread waits (40–100 ms
 * measured), then the Worker loads its modules and compiles its kernel (~0.1–0.2 s of CPU, which on two
 * busy cores slows the calling thread), and its first jobs run cold. Runs below this measured slower with
 * the Worker than on one thread, so they run on the calling thread alone (the same bytes either way).
 *
 * @example
 * ```ts
 * import { minWorkerMs, WORKER_MIN_MS } from "./merge_run.ts";
 * import assert from "node:assert/strict";
 * assert.equal(WORKER_MIN_MS, 4000);
 * assert.equal(minWorkerMs(undefined), WORKER_MIN_MS); // the default of the `minWorkerMs` option
 * ```
 */
export const WORKER_MIN_MS = 4000;

/**
 * The estimated one-thread time, in milliseconds, of merging `list` (a plan's tensors) by `method`: entries
 * × inputs (the base and the models) × the method's cost per entry and input ({@link NS_PER_INPUT_ENTRY});
 * tensors copied as they are count nothing. Internal.
 *
 * @example
 * ```ts
 * import { runCostMs } from "./merge_run.ts";
 * import assert from "node:assert/strict";
 * const t = { name: "w", shape: [1000, 1000], dtype: "BF16" as const, t: 0, params: {}, passthrough: false };
 * const src = { model: "a", tensor: "w", params: {} };
 * // 10⁶ entries × 4 inputs × 5 ns
 * assert.equal(runCostMs("linear", [{ ...t, sources: [src, src, src, src] }]), 20);
 * assert.equal(runCostMs("linear", [{ ...t, sources: [src, src, src, src], passthrough: true }]), 0);
 * ```
 */
export function runCostMs(method: string, list: readonly PlannedTensor[]): number {
  const ns = NS_PER_INPUT_ENTRY[method] ?? 15;
  let ms = 0;
  for (const t of list) {
    if (!t.passthrough) ms += (numel(t) * ((t.base ? 1 : 0) + t.sources.length) * ns) / 1e6;
  }
  return ms;
}

/**
 * The `minWorkerMs` option, checked: a number of milliseconds ≥ 0 (Infinity: never a Worker), default
 * {@link WORKER_MIN_MS}; anything else is an `OptionError`. Internal.
 *
 * @example
 * ```ts
 * import { minWorkerMs } from "./merge_run.ts";
 * import { OptionError } from "../core/errors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(minWorkerMs(0), 0);
 * assert.equal(minWorkerMs(Infinity), Infinity);
 * assert.throws(() => minWorkerMs(-1), OptionError);
 * assert.throws(() => minWorkerMs(NaN), /minWorkerMs/);
 * ```
 */
export function minWorkerMs(value: number | undefined): number {
  if (value === undefined) return WORKER_MIN_MS;
  if (typeof value !== "number" || !(value >= 0)) {
    throw new OptionError("minWorkerMs", value, "must be a number of milliseconds ≥ 0 (0: always a Worker)");
  }
  return value;
}

/** Entries from which a tensor is split into blocks of rows by the stream (see `mergeStream`). */
const SPLIT_MIN = 1 << 20;
/**
 * Entries per block of such a split (whole rows; at least two blocks). Smaller blocks keep the run's
 * buffers (the pool holds a few blocks' inputs and results) small: every fresh page costs a page fault on
 * first touch (13–19 µs each measured on the 2-core VM), more than the per-block overhead. 2¹⁸ measured
 * 9–13 % faster than 2²⁰ end to end (SLERP f32/bf16, TIES bf16 with and without a Worker; 2¹⁷ no better).
 */
const SPLIT_BLOCK = 1 << 18;

/** Bytes of working set per entry of a tensor: its decoded inputs and its result, in float32. */
const bytesPerEntry = (t: PlannedTensor) => 4 * ((t.base ? 1 : 0) + t.sources.length + 1);

/** The plan's method's planner of blocks for tensor `t` (see {@link plannerOrNull}). */
const blockPlanner = (plan: MergePlan, t: PlannedTensor, seed?: number) =>
  plannerOrNull({
    method: plan.method,
    params: t.params,
    models: t.sources.map((s) => ({ params: s.params })),
    numel: numel(t),
    name: t.name,
    seed,
  });

/**
 * Which tensors of a plan a memory cap splits into blocks of rows, and how. A tensor's working set is
 * its decoded inputs and its result in float32 — `(inputs + 1) × 4` bytes per entry; a tensor whose
 * working set exceeds `maxBlockBytes` is merged in blocks of as many rows as fit, when its method allows
 * it (`blocked`), or whole (`whole`, for a note). A cap below one row of such a tensor is an
 * `OptionError` (named `option`) that names the tensor and the smallest cap that works. Internal.
 */
export function planBlocks(
  plan: MergePlan,
  maxBlockBytes: number | undefined,
  option = "maxBlockBytes",
): { blocked: Map<string, TensorBlocks>; whole: PlannedTensor[] } {
  const blocked = new Map<string, TensorBlocks>(), whole: PlannedTensor[] = [];
  if (maxBlockBytes === undefined) return { blocked, whole };
  if (!(maxBlockBytes > 0) || !Number.isFinite(maxBlockBytes)) {
    throw new OptionError(option, maxBlockBytes, "the block size cap must be a number of bytes > 0");
  }
  const known = blockLayouts.get(plan)?.get(maxBlockBytes);
  if (known) return known;
  let worst: { t: PlannedTensor; need: number } | undefined;
  for (const t of plan.tensors) {
    const n = numel(t), per = bytesPerEntry(t);
    if (t.passthrough || n === 0 || n * per <= maxBlockBytes) continue;
    const planner = blockPlanner(plan, t);
    if (!planner) {
      whole.push(t);
      continue;
    }
    const rows = t.shape.length ? t.shape[0] : 1, rowElems = n / rows;
    const rowsPerBlock = Math.min(rows, Math.floor(maxBlockBytes / (rowElems * per)));
    if (rowsPerBlock < 1) {
      if (!worst || rowElems * per > worst.need) worst = { t, need: rowElems * per };
      continue;
    }
    blocked.set(t.name, { rows, rowElems, rowsPerBlock, passes: planner.passes });
  }
  if (!worst) {
    if (!blockLayouts.has(plan)) blockLayouts.set(plan, new Map());
    blockLayouts.get(plan)!.set(maxBlockBytes, { blocked, whole });
  }
  if (worst) {
    const { t, need } = worst;
    throw new OptionError(
      option,
      maxBlockBytes,
      `a block is at least one row: tensor ${clip(t.name, 80)} [${
        t.shape.join(",")
      }] needs ${need} bytes per ` +
        `row (${need / bytesPerEntry(t)} entries × ${bytesPerEntry(t)} bytes: its ${
          bytesPerEntry(t) / 4 - 1
        } inputs and the result in float32); use a cap of at least ${need} bytes`,
    );
  }
  return { blocked, whole };
}

/** Block layouts already planned (the CLI plans them to check the cap, the run again). */
const blockLayouts = new WeakMap<
  MergePlan,
  Map<number, { blocked: Map<string, TensorBlocks>; whole: PlannedTensor[] }>
>();

/** Frees a buffer of ours at once (detaching it releases its memory), not at the next collection. */
function free(data: unknown): void {
  if (!ArrayBuffer.isView(data)) return;
  const b = data.buffer as ArrayBuffer & { transfer?: (n: number) => ArrayBuffer };
  // only a buffer that is all this array's own (not a view into shared or WebAssembly memory)
  if (
    !(b instanceof ArrayBuffer) || b.detached || data.byteOffset !== 0 || data.byteLength !== b.byteLength
  ) return;
  try {
    b.transfer?.(0);
  } catch {
    // not transferable: left to the garbage collector
  }
}

/** One unit of work of the stream: a whole tensor, or one block of rows of a tensor. */
interface Unit {
  readonly tensor: number;
  /** Rows [r0, r1) of a blocked tensor; undefined: the whole tensor. */
  readonly rows?: readonly [number, number];
  /** Entries it holds in flight. */
  readonly elems: number;
  job?: Promise<TensorData>;
  /** A whole tensor's result while the writer writes it. */
  result?: TensorData;
  released?: boolean;
}

/** The smallest buffer of a {@link BufferPool} (and four times the step of its smallest size classes). */
const POOL_MIN = 4096;

/**
 * The buffers of a merge run, allocated once and reused from job to job: a fresh buffer costs a page fault
 * per 4 KiB page on first touch (measured ~11 µs each on a VM: more than reading and merging the bytes in
 * it), a buffer that served an earlier job costs none. Every buffer of the stream comes from here and goes
 * back once used — the reads of inputs (on this thread, then to a Worker and back), the float32 results,
 * the encoded outputs once written, the buffers of the planners' read passes. Buffers are kept by size
 * class: a power of two and the three quarter-steps above it (at most 25 % above the size asked; at least
 * {@link POOL_MIN} bytes). `take(bytes)` hands out a free buffer of the class of `bytes` (a new one when
 * there is none); `give(buffer)` files a buffer under the largest class it holds, or frees it when the pool
 * already keeps `limit` bytes. Internal.
 *
 * @example
 * ```ts
 * import { BufferPool } from "./merge_run.ts";
 * import assert from "node:assert/strict";
 * const pool = new BufferPool(1 << 20);
 * const a = pool.take(5000);
 * assert.equal(a.length, 5000);
 * assert.equal(a.buffer.byteLength, 5120); // the class of 5000 bytes: 4096 + 1024
 * pool.give(a.buffer);
 * assert.equal(pool.take(5100).buffer, a.buffer); // the same memory again
 * ```
 */
export class BufferPool {
  readonly #free = new Map<number, ArrayBuffer[]>();
  #held = 0;
  #made = 0;

  /** `limit`: the bytes kept free at most (a buffer given back beyond them is freed at once). */
  constructor(readonly limit: number) {}

  /** The size class that holds `bytes` bytes: the buffer size `take(bytes)` hands out. */
  static classOf(bytes: number): number {
    if (bytes <= POOL_MIN) return POOL_MIN;
    const step = 2 ** Math.floor(Math.log2(bytes)) / 4;
    return Math.ceil(bytes / step) * step;
  }

  /** Bytes held free. */
  get held(): number {
    return this.#held;
  }

  /** Bytes of the buffers made so far (fresh memory): constant once the pool serves every request. */
  get made(): number {
    return this.#made;
  }

  /** A view of `bytes` bytes at the start of a buffer of their class: a free one, or a new one. */
  take(bytes: number): Uint8Array {
    const c = BufferPool.classOf(bytes), b = this.#free.get(c)?.pop();
    if (b) this.#held -= b.byteLength;
    else this.#made += c;
    return new Uint8Array(b ?? new ArrayBuffer(c), 0, bytes);
  }

  /**
   * Keeps a buffer we are done with (nothing else may use it afterwards) under the largest class it holds;
   * frees it when the pool is full. Detached buffers and buffers below {@link POOL_MIN} are ignored.
   */
  give(buffer: ArrayBufferLike | undefined): void {
    if (!(buffer instanceof ArrayBuffer) || buffer.detached || buffer.byteLength < POOL_MIN) return;
    if (this.#held + buffer.byteLength > this.limit) return free(new Uint8Array(buffer));
    const n = buffer.byteLength, step = 2 ** Math.floor(Math.log2(n)) / 4, c = Math.floor(n / step) * step;
    const list = this.#free.get(c);
    if (list) list.push(buffer);
    else this.#free.set(c, [buffer]);
    this.#held += n;
  }

  /** Frees every buffer held. */
  clear(): void {
    for (const list of this.#free.values()) for (const b of list) free(new Uint8Array(b));
    this.#free.clear();
    this.#held = 0;
  }
}

/**
 * Streams the merged tensors of `list` (a plan's tensors in write order) with reads, compute and writes
 * overlapped: the compute runs on a Worker, and on the calling thread while the Worker has not started or
 * has `WORKER_QUEUE` jobs queued, so the calling thread reads tensor i + 1 and writes tensor i − 1 while
 * tensor i merges. Work goes in units — a tensor, one block of rows of a tensor that `maxBlockBytes`
 * splits ({@link planBlocks}), or a block of about 2¹⁸ entries of a large tensor whose method merges in
 * blocks (after its planner's read passes over the blocks, if any) — and a unit starts (its inputs are
 * read) only when the units in flight — started and not yet written — together hold no more entries than
 * the largest unit (a few blocks of a tensor split that way), or when nothing else is in flight: the peak
 * memory stays that of merging the largest unit alone. Every buffer comes from one {@link BufferPool}
 * and goes back to it once used (no fresh memory per tensor). A blocked tensor is read, merged and
 * written block by block (the writer takes it as pieces). With `overlap: false`, where no Worker can
 * start, or when the run's estimated one-thread time ({@link runCostMs}) is below `minWorkerMs` (default
 * {@link WORKER_MIN_MS}: a smaller run does not repay the Worker's start), everything runs on the calling
 * thread (its reads and writes still overlap its merges); the results are the same bytes either way, and
 * with or without blocks.
 */
export function mergeStream(
  plan: MergePlan,
  list: readonly PlannedTensor[],
  options: {
    readonly seed?: number;
    readonly overlap?: boolean;
    readonly maxBlockBytes?: number;
    readonly log?: (line: string) => void;
    /** The pool the run's buffers come from (default: a pool of its own, sized for the run). */
    readonly pool?: BufferPool;
    /**
     * With `overlap`, the estimated one-thread time in ms ({@link runCostMs}) from which the run starts a
     * Worker: default {@link WORKER_MIN_MS}; 0 starts one for any run with something to merge.
     */
    readonly minWorkerMs?: number;
  } = {},
): MergeStream {
  const { blocked: capped, whole } = planBlocks(plan, options.maxBlockBytes);
  minWorkerMs(options.minWorkerMs); // a bad value is refused with or without overlap
  // a Worker only when the run's work repays its start (see WORKER_MIN_MS)
  const useWorker = options.overlap !== false && typeof Worker !== "undefined" &&
    new URL(import.meta.url).protocol === "file:" && list.some((t) => !t.passthrough) &&
    runCostMs(plan.method, list) >= minWorkerMs(options.minWorkerMs);
  // compute threads: this one and one Worker; this thread also reads and writes, and merges a job only
  // when the Worker has WORKER_QUEUE jobs queued (or has not started yet)
  const nWorkers = useWorker ? 1 : 0;
  // a large tensor whose method merges in blocks goes in blocks of about SPLIT_BLOCK entries (whole rows,
  // at least two blocks), after its planner's read passes over them if it has any (magnitude cuts,
  // DARE's rescale norms, SLERP's sums): its reads, merges (on the Worker and this thread) and writes overlap, through
  // a few of the pool's buffers instead of fresh memory for the whole tensor; the blocks' results are
  // the bytes of the whole-tensor merge
  const blocked = new Map(capped), split = new Set<string>();
  const ck = (m: string) => plan.checkpoints.get(m)!;
  for (const t of list) {
    const n = numel(t), rows = t.shape.length ? t.shape[0] : 1;
    if (t.passthrough || blocked.has(t.name) || n < SPLIT_MIN || rows < 2) continue;
    const passes = blockPlanner(plan, t, options.seed)?.passes;
    if (passes === undefined) continue;
    const rowsPerBlock = Math.max(1, Math.min(Math.ceil(rows / 2), Math.floor(SPLIT_BLOCK / (n / rows))));
    blocked.set(t.name, { rows, rowElems: n / rows, rowsPerBlock, passes });
    split.add(t.name);
  }
  if (whole.length) {
    const big = whole.reduce((a, t) => (numel(t) * bytesPerEntry(t) > numel(a) * bytesPerEntry(a) ? t : a));
    (options.log ?? ((l: string) => console.error(l)))(
      `moekit: ${plan.method} cannot merge a tensor in blocks of rows: ${whole.length} tensor${
        whole.length > 1 ? "s" : ""
      } above the block cap of ${options.maxBlockBytes} bytes ${
        whole.length > 1 ? "are" : "is"
      } merged whole ` +
        `(the largest, ${clip(big.name, 80)}, works on ${numel(big) * bytesPerEntry(big)} bytes)`,
    );
  }
  const units: Unit[] = [], first = new Map<string, number>();
  for (const [i, t] of list.entries()) {
    first.set(t.name, units.length);
    const b = blocked.get(t.name);
    if (!b) units.push({ tensor: i, elems: numel(t) });
    else {
      for (let r0 = 0; r0 < b.rows; r0 += b.rowsPerBlock) {
        const r1 = Math.min(b.rows, r0 + b.rowsPerBlock);
        units.push({ tensor: i, rows: [r0, r1], elems: (r1 - r0) * b.rowElems });
      }
    }
  }
  const chunkable = new Map<string, boolean>();
  /** Whether a tensor's jobs merge a chunk at a time from their 16-bit bytes (see `mergeChunked`). */
  const isChunkable = (e: PlannedTensor) => {
    let c = chunkable.get(e.name);
    if (c === undefined) {
      const srcs = [...(e.base ? [e.base] : []), ...e.sources];
      c = e.dtype === "BF16" || e.dtype === "F32";
      c &&= srcs.every((x) => {
        const d = ck(x.model).info(x.tensor)!.dtype;
        return d === "BF16" || d === "F16";
      });
      const passes = blocked.has(e.name)
        ? blocked.get(e.name)!.passes
        : blockPlanner(plan, e, options.seed)?.passes;
      c &&= passes === 0 || blocked.has(e.name) || (passes !== undefined && CHUNK_READ_PASS.has(plan.method));
      chunkable.set(e.name, c);
    }
    return c;
  };
  /**
   * What a unit counts towards the memory bound: its entries, or half of them for a unit merged a chunk at
   * a time from 16-bit inputs (it holds 2 bytes per input entry and its float32 result, not a float32 copy
   * of every input: two such units in flight stay below the bound of one merged whole).
   */
  const weight = (u: Unit) => {
    const e = list[u.tensor];
    return !e.passthrough && (u.rows || u.elems >= 2 * RAW_CHUNK) && isChunkable(e) ? u.elems / 2 : u.elems;
  };
  // the memory bound: the largest unit, or a few blocks of a tensor the stream split (enough to keep
  // every compute thread busy while this thread reads the next block and the writer writes one)
  const ahead = 2 * nWorkers + 2;
  const largest = Math.max(
    0,
    ...units.map((u) => (split.has(list[u.tensor].name) ? ahead * weight(u) : u.elems)),
  );
  // the pool keeps free at most what the units in flight use (their inputs and results)
  const pool = options.pool ?? new BufferPool(
    largest * Math.max(4, ...list.map((t) => (t.passthrough ? 4 : bytesPerEntry(t)))),
  );
  const refModel = plan.config.baseModel ?? plan.config.models[0]?.model ??
    plan.config.slices?.[0]?.sources[0]?.model;
  let next = 0, inFlight = 0, bytesRead = 0, closed = false;
  // the Worker starts once the first reads are under way (creating it blocks this thread while Deno builds
  // its runtime: that wait then overlaps the reads; loading its modules and compiling its kernel overlap the
  // first merges); until it is up, this thread merges every job. The buffers a job is done with come back
  // to the pool
  const workers: ComputeWorker[] = [];
  let spawning = nWorkers === 0, timer: ReturnType<typeof setTimeout> | undefined;
  const spawn = () => {
    if (spawning) return;
    spawning = true;
    timer = setTimeout(() => {
      timer = undefined;
      if (!closed) workers.push(new ComputeWorker((bufs) => bufs.forEach((b) => pool.give(b))));
    }, 0);
  };

  /** Entries per row of a source tensor (1 for a scalar). */
  const rowOf = (t: { shape: readonly number[] }) => (t.shape.length ? numel(t) / t.shape[0] : 1);
  /**
   * Rows [r0, r1) of a source (all of it without `rows`), as raw bytes of the output tensor's shape, read
   * into a buffer of the pool; `pass`: a read pass (not counted in `bytesRead`).
   */
  const raw = async (
    e: PlannedTensor,
    s: { model: string; tensor: string },
    rows?: readonly [number, number],
    pass = false,
  ): Promise<RawTensor> => {
    const c = ck(s.model), info = c.info(s.tensor)!;
    if (!rows) {
      const size = info.end - info.begin;
      const bytes = await c.readRange(s.tensor, 0, size, pool.take(size));
      bytesRead += size;
      return { shape: info.shape, dtype: info.dtype, bytes };
    }
    const [r0, r1] = rows, size = DTYPE_BYTES[info.dtype], out = rowOf(e), own = rowOf(info);
    const shape = e.shape.length ? [r1 - r0, ...e.shape.slice(1)] : [];
    const bytes = await c.readRange(
      s.tensor,
      r0 * own * size,
      r1 * own * size,
      pool.take((r1 - r0) * own * size),
    );
    if (!pass) bytesRead += bytes.length; // the progress counts the merge pass
    if (own === out) return { shape, dtype: info.dtype, bytes };
    // a model with extra rows or columns (an embedding) gives the leading columns of the same rows:
    // compacted in place (each row moves to a lower offset)
    for (let r = 0; r < r1 - r0; r++) {
      bytes.copyWithin(r * out * size, r * own * size, (r * own + out) * size);
    }
    return { shape, dtype: info.dtype, bytes: bytes.subarray(0, (r1 - r0) * out * size) };
  };

  /** A block's plans: the block's, and its chunks' (`chunkStarts` of its length) after read passes. */
  type Planned = { block: BlockPlans; chunks?: BlockPlans[] };
  /**
   * The plans of a blocked tensor's blocks (by entry offset), from its method's block planner fed with
   * the read passes over the blocks on this thread, a chunk at a time (magnitude cuts, DARE's rescale
   * norms, SLERP's sums) — made once per tensor, when the last block of the tensor before it starts (its
   * passes overlap that tensor's merges; they hold a block's inputs at a time) or by its first block.
   */
  const planners = new Map<number, Promise<Map<number, Planned>>>();
  const plansOf = (tensor: number) => {
    if (!planners.has(tensor)) {
      const p = prepare(tensor);
      p.catch(() => {}); // surfaces when (if) a block of the tensor runs
      planners.set(tensor, p);
    }
    return planners.get(tensor)!;
  };
  const prepare = async (tensor: number) => {
    const e = list[tensor], b = blocked.get(e.name)!;
    const pl = blockPlanner(plan, e, options.seed);
    if (!pl) throw new MoekitError(`tensor ${clip(e.name, 80)}: ${plan.method} cannot merge it in blocks`);
    const srcs = [...(e.base ? [e.base] : []), ...e.sources];
    /** Reads every input of the block of rows from `r0`. */
    const read = (r0: number) => {
      const p = Promise.all(srcs.map((x) => raw(e, x, [r0, Math.min(b.rows, r0 + b.rowsPerBlock)], true)));
      p.catch(() => {}); // surfaces when awaited
      return p;
    };
    const giveAll = (ts: readonly RawTensor[]) => ts.forEach((t) => pool.give(t.bytes.buffer));
    for (let pass = 0; pass < pl.passes; pass++) {
      if (!pl.needs(pass)) continue;
      // one block read ahead: the next block's reads run (off this thread) while this one is counted
      let ahead: Promise<RawTensor[]> | undefined = read(0);
      try {
        for (let r0 = 0; r0 < b.rows; r0 += b.rowsPerBlock) {
          const len = (Math.min(b.rows, r0 + b.rowsPerBlock) - r0) * b.rowElems;
          const ts = await ahead!;
          const r1 = r0 + b.rowsPerBlock;
          ahead = r1 < b.rows && !closed ? read(r1) : undefined;
          try {
            if (closed) throw new MoekitError("the merge was stopped");
            feedBlock(pl, pass, r0 * b.rowElems, len, ts, !!e.base, plan.method, pool);
          } finally {
            giveAll(ts);
          }
        }
      } finally {
        // a read started for a pass that stopped: its buffers back to the pool once it lands
        ahead?.then(giveAll, () => {});
      }
    }
    // every block's plans now (a few numbers per model), so that the planner's memory — histograms, the
    // boundary entries — is free before the merge pass; with read passes, each chunk's too (the planner
    // saw the blocks a chunk at a time)
    const plans = new Map<number, Planned>();
    for (let r0 = 0; r0 < b.rows; r0 += b.rowsPerBlock) {
      const s0 = r0 * b.rowElems, len = (Math.min(b.rows, r0 + b.rowsPerBlock) - r0) * b.rowElems;
      plans.set(s0, {
        block: pl.plans(s0),
        ...(pl.passes ? { chunks: chunkStarts(len).map((o) => pl.plans(s0 + o)) } : {}),
      });
    }
    return plans;
  };

  /** A written result's buffer back to the pool (a view into the kernel's memory excepted). */
  const recycle = (data: unknown) => {
    const v = typeof data === "object" && data !== null && "encoded" in data
      ? (data as EncodedBytes).encoded
      : data;
    if (!ArrayBuffer.isView(v) || !(v.buffer instanceof ArrayBuffer) || closed) return;
    if (mergeKernel()?.owns(new Uint8Array(v.buffer, 0, 0))) return;
    pool.give(v.buffer);
  };

  /** Reads and merges one unit. */
  const run = async (u: Unit): Promise<TensorData> => {
    const e = list[u.tensor];
    if (e.passthrough) return (await raw(e, e.base ?? { model: refModel!, tensor: e.name })).bytes;
    // a block of a tensor: its plans first (the read passes of its first block), before its own reads
    let block: MergeOptions["block"], chunkPlans: BlockPlans[] | undefined;
    if (u.rows) {
      const b = blocked.get(e.name)!, offset = u.rows[0] * b.rowElems;
      const p = (await plansOf(u.tensor)).get(offset)!;
      block = { offset, plans: p.block };
      chunkPlans = p.chunks;
      if (u.rows[1] === b.rows) planners.delete(u.tensor); // the last block
    }
    // raw bytes here; decoded where the merge runs (the Worker, or below on this thread)
    const [base, ...ts] = await Promise.all([
      e.base ? raw(e, e.base, u.rows) : undefined,
      ...e.sources.map((s) => raw(e, s, u.rows)),
    ]);
    const models = ts.map((tensor, i) => ({ tensor: tensor!, params: e.sources[i].params }));
    const opts: ComputeJob["options"] = {
      method: plan.method,
      params: e.params,
      name: e.name,
      seed: options.seed,
      ...(block ? { block } : {}),
      // the inputs are ours (decoded for this merge): the kernels may overwrite them
      consumeInputs: true,
      // bf16 and f32 outputs encode through float32: a Float32Array result gives the same bytes
      output: e.dtype === "BF16" || e.dtype === "F32" ? "f32" : "f64",
    };
    if (closed) throw new MoekitError("the merge was stopped");
    const job: Omit<ComputeJob, "id"> = {
      options: opts,
      base,
      models,
      // the pool's buffer for the float32 result; the inputs (and an unused result buffer) come back
      ...(opts.output === "f32" ? { out: pool.take(4 * u.elems).buffer as ArrayBuffer } : {}),
      ...(chunkPlans ? { chunkPlans } : {}),
      giveBack: true,
    };
    const enc = e.dtype === "BF16" || e.dtype === "F16" ? e.dtype : undefined;
    // the started Worker with the fewest entries queued (equal: the first); 16-bit outputs are encoded
    // there: this thread only writes the bytes. While no Worker has started yet (~0.1–0.25 s), this
    // thread merges the job itself
    const up = workers.filter((w) => w.ready && w.queued < WORKER_QUEUE);
    if (up.length) {
      const w = up.reduce((a, b) => (b.work < a.work ? b : a));
      return await w.run({ ...job, ...(enc ? { encode: enc } : {}) }, u.elems);
    }
    const r = runJob(job);
    for (const b of r.spent) pool.give(b);
    // a 16-bit output: encoded by the kernel, in place over the result (as the Worker does)
    const data = r.data;
    if (enc && (data instanceof Float32Array || data instanceof Float64Array)) {
      const K = data.buffer instanceof ArrayBuffer ? mergeKernel() : null;
      if (K && !K.owns(data)) return { encoded: K.encode16(data, enc) };
    }
    return data;
  };
  const start = (j: number) => {
    const u = units[j];
    inFlight += weight(u);
    u.job = run(u);
    u.job.catch(() => {}); // surfaces when (if) the unit is taken
    spawn();
    // the last unit of a tensor: the read passes of the next tensor start now
    const t = units[j + 1]?.tensor;
    if (t !== undefined && t !== u.tensor && (blocked.get(list[t].name)?.passes ?? 0) > 0) plansOf(t);
  };
  const fill = () => {
    while (!closed && next < units.length && (inFlight === 0 || inFlight + weight(units[next]) <= largest)) {
      start(next++);
    }
  };
  const release = (u: Unit) => {
    if (u.released) return;
    u.released = true;
    inFlight -= weight(u);
    fill();
  };
  /** The result of unit j, started now if it has not been (out of the writer's order: start it anyway). */
  const result = (j: number) => {
    fill();
    while (next <= j) start(next++);
    const u = units[j], p = u.job!;
    u.job = undefined;
    return p;
  };
  async function* blocks(j0: number, tensor: number): AsyncGenerator<ArrayLike<number> | EncodedBytes> {
    for (let j = j0; j < units.length && units[j].tensor === tensor; j++) {
      const data = await result(j) as ArrayLike<number> | EncodedBytes;
      yield data; // resumed when the writer has written it
      recycle(data); // the block's result is ours and written
      release(units[j]);
    }
  }
  return {
    take(name) {
      const j = first.get(name);
      if (j === undefined) {
        return Promise.reject(new MoekitError(`tensor ${clip(name, 80)} is not in this merge`));
      }
      if (units[j].rows) return Promise.resolve({ chunks: blocks(j, units[j].tensor) });
      return result(j).then((d) => (units[j].result = d));
    },
    written(name) {
      const j = first.get(name);
      if (j === undefined) return;
      if (units[j].result) recycle(units[j].result); // written: its memory serves the next jobs
      units[j].result = undefined;
      for (let k = j; k < units.length && units[k].tensor === units[j].tensor; k++) release(units[k]);
    },
    get bytesRead() {
      return bytesRead;
    },
    workers: nWorkers,
    close() {
      closed = true;
      clearTimeout(timer);
      for (const w of workers) w.close();
      pool.clear();
    },
  };
}

/**
 * Feeds one block of `len` entries at entry `offset` (its raw inputs `ts`, the base first when `hasBase`)
 * to pass `pass` of a block planner, a chunk at a time (`chunkStarts`, so that every chunk has a plan):
 * 16-bit inputs decoded into the kernel's pool where it takes them (see `chunkSource`), otherwise the block
 * decoded into a float32 buffer of the pool.
 */
function feedBlock(
  pl: NonNullable<ReturnType<typeof mergeBlockPlanner>>,
  pass: number,
  offset: number,
  len: number,
  ts: readonly RawTensor[],
  hasBase: boolean,
  method: string,
  pool: BufferPool,
): void {
  const starts = chunkStarts(len), flat = ts.map((t) => ({ ...t, shape: [len] }));
  const src = chunkSource({
    options: { method },
    base: hasBase ? flat[0] : undefined,
    models: flat.slice(hasBase ? 1 : 0).map((tensor) => ({ tensor, params: undefined })),
  });
  const is16 = (d: Dtype) => d === "BF16" || d === "F16";
  const f32 = src ? [] : ts.map((t) => (is16(t.dtype) ? pool.take(4 * len) : undefined));
  try {
    // without the kernel's pool: each input decoded whole (float32 inputs are views of their bytes)
    const data = src
      ? []
      : ts.map((t, k) =>
        f32[k]
          ? decodeFloatsInto(t.bytes, t.dtype, new Float32Array(f32[k]!.buffer, 0, len))
          : decodeFloats(t.bytes, t.dtype)
      );
    for (const [i, off] of starts.entries()) {
      const m = (starts[i + 1] ?? len) - off;
      const inputs = src
        ? [...(hasBase ? [] : [undefined]), ...ts.map((_, k) => src.chunk(k + (hasBase ? 0 : 1), off, m))]
        : [...(hasBase ? [] : [undefined]), ...data.map((d) => d.subarray(off, off + m))];
      // the planner keeps counts, sums and copies of boundary entries, not the chunk
      pl.add(pass, {
        offset: offset + off,
        base: inputs[0],
        models: inputs.slice(1) as (Float32Array | Float64Array)[],
      });
    }
  } finally {
    src?.release();
    for (const b of f32) pool.give(b?.buffer);
  }
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
    readonly minWorkerMs?: number;
    readonly maxBlockBytes?: number;
    readonly overwrite?: boolean;
    readonly inputs: readonly string[];
    readonly sideFiles: readonly ExtraFile[];
    readonly metadata: Record<string, string>;
    readonly log?: (line: string) => void;
    readonly onProgress?: (p: MergeProgress) => void;
  },
): Promise<{ files: string[]; seconds: number; bytesRead: number }> {
  const start = performance.now();
  minWorkerMs(options.minWorkerMs); // refused before anything is written
  const { files, mine, configHash, planHash } = await planPart(plan, part, options);
  planBlocks(plan, options.maxBlockBytes); // a cap below one row: refused before anything is written
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
          `run \`merge <config> <out-dir> --shard ${i}/${n}\` with the same other flags as the parts that ran (--out-shard-size, --seed) and finalize again`,
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
