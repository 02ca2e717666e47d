/**
 * Worker threads for routing: `useThreads(n)` starts n − 1 Workers that share the kernel memory; a
 * route call wakes them through `Atomics.notify` on a shared control array (no messages per call), and
 * all n threads take tiles of tokens from a shared atomic counter until none is left. Workers rebuild
 * the selector from its serialisable spec through routing's selector registry (loaded by URL, so this
 * folder imports nothing from routing but the backend interface's types).
 * @module
 */

import { MoekitError, NonFiniteError, OptionError } from "../core/errors.ts";
import type { ParallelJob, SelectionBuffers } from "../routing/backend.ts";
import { allocBytes, freeBytes, heapF32, inKernelMemory, requireRuntime } from "./runtime.ts";

/** Control words per worker: [0] job sequence (−1 = stop), [1] done sequence, [2] status, [3] job bytes. */
const CTL = 16, JOB_BYTES = 1 << 16;

interface Pool {
  workers: Worker[];
  ctl: Int32Array;
  jobPtrs: number[];
  seq: number;
  staging: { ptr: number; bytes: number };
}

let pool: Pool | undefined;

/**
 * Sets how many threads routing uses (the calling thread plus n − 1 Workers on the shared kernel
 * memory). `useThreads(1)` stops the Workers; call it before exit so the process can end.
 *
 * @example
 * ```ts
 * import { matrix, threadCount, topKRouter, useThreads } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * await useThreads(2);
 * const r = topKRouter({ weight: matrix.randn(8, 32, { seed: 1 }), k: 2 }).route(matrix.randn(512, 32, { seed: 2 }));
 * assert.equal(threadCount(), 2);
 * assert.equal(r.tokens, 512);
 * await useThreads(1);
 * ```
 */
export async function useThreads(n: number): Promise<void> {
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new OptionError("threads", n, "must be an integer in 1..64");
  }
  if (pool) {
    for (let i = 0; i < pool.workers.length; i++) {
      Atomics.store(pool.ctl, i * CTL, -1);
      Atomics.notify(pool.ctl, i * CTL);
      pool.workers[i].terminate();
      freeBytes(requireRuntime(), pool.jobPtrs[i]);
    }
    if (pool.staging.bytes > 0) freeBytes(requireRuntime(), pool.staging.ptr);
    pool = undefined;
  }
  if (n === 1) return;
  const rt = requireRuntime();
  // per worker CTL words, then one shared tile counter
  const ctl = new Int32Array(new SharedArrayBuffer(((n - 1) * CTL + 1) * 4));
  const workers: Worker[] = [], jobPtrs: number[] = [];
  await Promise.all(Array.from({ length: n - 1 }, (_, i) => {
    const w = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    workers.push(w);
    jobPtrs.push(allocBytes(rt, JOB_BYTES));
    return new Promise<void>((resolve, reject) => {
      w.onmessage = (
        e,
      ) => (e.data === "ready" ? resolve() : reject(new MoekitError(`worker ${i}: ${e.data}`)));
      w.onerror = (e) => {
        e.preventDefault();
        reject(new MoekitError(`worker ${i} failed to start: ${e.message}`));
      };
      w.postMessage({ memory: rt.memory, module: rt.module, ctl, index: i, jobPtr: jobPtrs[i] });
    });
  }));
  pool = { workers, ctl, jobPtrs, seq: 0, staging: { ptr: 0, bytes: 0 } };
}

/**
 * The number of threads routing uses (1 unless {@link useThreads} started Workers).
 *
 * @example
 * ```ts
 * import { threadCount } from "@moekit/moekit/kernels";
 * import assert from "node:assert/strict";
 * assert.ok(threadCount() >= 1);
 * ```
 */
export function threadCount(): number {
  return pool ? pool.workers.length + 1 : 1;
}

/** A job as a Worker reads it: tiles of `tile` rows of X are taken from a shared counter until none is left. */
export interface ThreadJob {
  x: number;
  w: number;
  d: number;
  E: number;
  k: number;
  rows: number;
  tile: number;
  counter: number;
  scratch: number;
  epi: number;
  indices: number;
  weights: number;
  scores: number;
  selector: ParallelJob["selector"];
  training: boolean;
  seed: number;
  bias?: number[];
}

/**
 * Runs a tiled route over worker threads when possible: returns false (and does nothing) when there are
 * no Workers or too few tiles. Otherwise every thread, this one included, takes the next tile from a
 * shared atomic counter until all are done (so a slower thread simply takes fewer tiles); selections
 * land in shared staging arrays and are copied to `job.out`.
 */
export function parallelSelect(weightPtr: number, E: number, job: ParallelJob): boolean {
  if (!pool) return false;
  const { x, k, tileTokens: tile } = job;
  const T = x.rows, n = pool.workers.length + 1;
  if (T < 2 * n * tile) return false;
  const rt = requireRuntime(), p = pool, d = x.cols;
  const tiles = Math.ceil(T / tile), counterIndex = (n - 1) * CTL;
  // shared staging: the three output arrays, then per worker a logits tile and an epilogue buffer
  const need = (3 * T * k + (n - 1) * (2 * tile * E + 4)) * 4;
  if (p.staging.bytes < need) {
    if (p.staging.bytes > 0) freeBytes(rt, p.staging.ptr);
    p.staging = { ptr: allocBytes(rt, need), bytes: need };
  }
  let xPtr = x.data.byteOffset, staged = 0;
  if (!inKernelMemory(rt, x)) {
    staged = xPtr = allocBytes(rt, x.data.length * 4);
    heapF32(rt).set(x.data, xPtr / 4);
  }
  const heap = heapF32(rt), s0 = p.staging.ptr;
  const staging: SelectionBuffers = {
    indices: new Int32Array(heap.buffer, s0, T * k),
    weights: heap.subarray(s0 / 4 + T * k, s0 / 4 + 2 * T * k),
    scores: heap.subarray(s0 / 4 + 2 * T * k, s0 / 4 + 3 * T * k),
  };
  const bias = job.bias ? Array.from(job.bias) : undefined;
  const seq = ++p.seq;
  Atomics.store(p.ctl, counterIndex, 0);
  try {
    for (let i = 0; i < n - 1; i++) {
      const own = s0 + (3 * T * k + i * (2 * tile * E + 4)) * 4;
      const spec: ThreadJob = {
        x: xPtr,
        w: weightPtr,
        d,
        E,
        k,
        rows: T,
        tile,
        counter: counterIndex,
        scratch: own,
        epi: own + tile * E * 4,
        indices: s0,
        weights: s0 + T * k * 4,
        scores: s0 + 2 * T * k * 4,
        selector: job.selector,
        training: job.training,
        seed: job.seed,
        ...(bias ? { bias } : {}),
      };
      const bytes = new TextEncoder().encode(JSON.stringify(spec));
      if (bytes.length > JOB_BYTES) {
        throw new MoekitError(`thread job description too large (${bytes.length} bytes)`);
      }
      new Uint8Array(rt.memory.buffer, p.jobPtrs[i], bytes.length).set(bytes);
      Atomics.store(p.ctl, i * CTL + 3, bytes.length);
      Atomics.store(p.ctl, i * CTL, seq);
      Atomics.notify(p.ctl, i * CTL);
    }
    let failure: Error | undefined;
    try {
      for (let t = Atomics.add(p.ctl, counterIndex, 1); t < tiles; t = Atomics.add(p.ctl, counterIndex, 1)) {
        job.runTiles(t * tile, Math.min(T, (t + 1) * tile), staging);
      }
    } catch (e) {
      failure = e as Error;
      Atomics.store(p.ctl, counterIndex, tiles); // stop the others early
    }
    for (let i = 0; i < n - 1; i++) {
      for (
        let done = Atomics.load(p.ctl, i * CTL + 1);
        done !== seq;
        done = Atomics.load(p.ctl, i * CTL + 1)
      ) {
        Atomics.wait(p.ctl, i * CTL + 1, done, 100);
      }
      if (Atomics.load(p.ctl, i * CTL + 2) !== 0) {
        const msgLen = Atomics.load(p.ctl, i * CTL + 3);
        failure ??= workerError(
          new TextDecoder().decode(new Uint8Array(rt.memory.buffer, p.jobPtrs[i], msgLen).slice()),
        );
      }
    }
    if (failure) throw failure;
    job.out.indices.set(staging.indices);
    job.out.weights.set(staging.weights);
    job.out.scores.set(staging.scores);
  } finally {
    if (staged) freeBytes(rt, staged);
  }
  return true;
}

/** Rebuilds a worker's error (sent as JSON `{ name, message, row, col }`) with its type where known. */
function workerError(text: string): Error {
  try {
    const e = JSON.parse(text) as { name: string; message: string; row?: number; col?: number };
    if (e.name === "NonFiniteError") {
      const err = new MoekitError(e.message);
      Object.setPrototypeOf(err, NonFiniteError.prototype);
      Object.assign(err, { name: "NonFiniteError", row: e.row, col: e.col });
      return err;
    }
    return new MoekitError(e.message);
  } catch {
    return new MoekitError(text);
  }
}
