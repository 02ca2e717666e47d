/**
 * Worker threads for routing: `useThreads(n)` starts n − 1 Workers that share the kernel memory; a
 * route call wakes them through `Atomics.notify` on a shared control array (no messages per call), and
 * all n threads take tiles of tokens from a shared atomic counter until none is left. Workers rebuild
 * the selector from its serialisable spec through routing's selector registry (loaded by URL, so this
 * folder imports from routing only the backend interface), or, for softmax top-k, run the kernel's fused
 * epilogue instead (`fusedTopK`; with the native gate kernel, its own epilogue). Tiles are multiplied on
 * the WebAssembly kernel, or for the native backend with moekit's native gate kernel or a 1-thread
 * `cblas_sgemm` per thread.
 * @module
 */

import { MoekitError, NonFiniteError, OptionError } from "../core/errors.ts";
import { checkLogitsFinite, type ParallelJob, type SelectionBuffers } from "../routing/backend.ts";
import { type Mat, matrix } from "../core/matrix.ts";
import { topKWeights, type WasmGemm } from "./gemm.ts";
import {
  allocBytes,
  freeBytes,
  type GateKernel,
  heapF32,
  inKernelMemory,
  requireRuntime,
} from "./runtime.ts";
import { Rng } from "../core/random.ts";
import { nativeSgemm } from "./native.ts";
import { GATE_MAX_K, gateLogits, gatePackedFloats, gateSoftmaxTopK } from "./native/gate.ts";

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

/** Threads asked for by the last {@link useThreads} (the Workers may be stopped while idle). */
let wanted = 1;
/** Idle time after which the Workers stop (see {@link ThreadOptions.idleMs}). */
let idleMs = 1000;
/** How long a thread spins for the next job or result before it sleeps (see {@link ThreadOptions.spinMs}). */
let spinMs = 1;
/** Bumped by every useThreads call: a restart that finishes after one is dropped. */
let generation = 0;
let idleTimer: ReturnType<typeof setTimeout> | undefined, lastUse = 0, restarting = false;

/** Options of {@link useThreads}. */
export interface ThreadOptions {
  /**
   * Milliseconds without a parallel route after which the Workers stop, so that a program ends on its
   * own (running Workers keep Deno from exiting); the next route restarts them (it runs on the calling
   * thread meanwhile). Default 1000; `Infinity` keeps them until `useThreads(1)`.
   */
  idleMs?: number;
  /**
   * Milliseconds a Worker keeps polling for the next route after finishing one (and the calling thread for
   * the Workers' results) before it sleeps: waking a sleeping thread costs 0.1–0.3 ms on a VM, a tenth of
   * a 4096-token Switch route. Default 1; 0 sleeps at once (no CPU used between routes).
   */
  spinMs?: number;
}

/**
 * Sets how many threads routing uses (the calling thread plus n − 1 Workers on the shared kernel
 * memory). Workers idle for `idleMs` (default 1 s) stop by themselves, so a script ends on its own
 * (at most that long after its last route); the next route starts them again. `useThreads(1)` stops them
 * at once. With moekit imported from a local folder, Deno needs `--allow-read` to start a Worker.
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
 * assert.equal(threadCount(), 1);
 * ```
 */
export async function useThreads(n: number, opts: ThreadOptions = {}): Promise<void> {
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new OptionError("threads", n, "must be an integer in 1..64");
  }
  const idle = opts.idleMs ?? 1000, spin = opts.spinMs ?? 1;
  if (!(idle >= 0)) {
    throw new OptionError("idleMs", idle, "must be a number of milliseconds ≥ 0, or Infinity");
  }
  if (!(spin >= 0 && spin <= 1000)) {
    throw new OptionError("spinMs", spin, "must be a number of milliseconds in 0..1000");
  }
  generation++;
  stopPool();
  wanted = n;
  idleMs = idle;
  spinMs = spin;
  if (n === 1) return;
  const started = await startPool(n, generation);
  if (started) {
    pool = started;
    touchPool();
  }
}

/** Stops the running Workers (if any); `wanted` is kept. */
function stopPool(): void {
  if (idleTimer !== undefined) clearTimeout(idleTimer);
  idleTimer = undefined;
  if (pool) discard(pool);
  pool = undefined;
}

/** Stops a pool's Workers and frees its buffers. */
function discard(p: Pool): void {
  const rt = requireRuntime();
  for (let i = 0; i < p.workers.length; i++) {
    Atomics.store(p.ctl, i * CTL, -1);
    Atomics.notify(p.ctl, i * CTL);
    p.workers[i].terminate();
    if (i < p.jobPtrs.length) freeBytes(rt, p.jobPtrs[i]);
  }
  if (p.staging.bytes > 0) freeBytes(rt, p.staging.ptr);
}

/**
 * Starts n − 1 Workers; on any failure stops those started and throws. Returns undefined (stopping them)
 * when useThreads was called again meanwhile.
 */
async function startPool(n: number, gen: number): Promise<Pool | undefined> {
  const rt = requireRuntime();
  // per worker CTL words, then one shared tile counter
  const ctl = new Int32Array(new SharedArrayBuffer(((n - 1) * CTL + 1) * 4));
  const workers: Worker[] = [], jobPtrs: number[] = [];
  const p: Pool = { workers, ctl, jobPtrs, seq: 0, staging: { ptr: 0, bytes: 0 } };
  try {
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
        w.postMessage({ memory: rt.memory, module: rt.module, ctl, index: i, jobPtr: jobPtrs[i], spinMs });
      });
    }));
  } catch (e) {
    discard(p);
    throw e;
  }
  if (gen !== generation) {
    discard(p);
    return undefined;
  }
  return p;
}

/** Notes a use of the Workers, and arms the idle timer (unref'd: it never keeps the process alive). */
function touchPool(): void {
  lastUse = performance.now();
  if (idleTimer === undefined && Number.isFinite(idleMs)) armIdle(idleMs);
}

function armIdle(ms: number): void {
  const timer = setTimeout(() => {
    idleTimer = undefined;
    const left = lastUse + idleMs - performance.now();
    if (left > 0) armIdle(left);
    else stopPool();
  }, ms);
  if (typeof Deno !== "undefined") Deno.unrefTimer(timer);
  idleTimer = timer;
}

/** Restarts idle-stopped Workers in the background (the current route runs on the calling thread). */
function restartPool(): void {
  if (restarting || pool || wanted < 2) return;
  restarting = true;
  const gen = generation;
  startPool(wanted, gen).then(
    (p) => {
      restarting = false;
      if (!p) return;
      if (pool) discard(p);
      else {
        pool = p;
        touchPool();
      }
    },
    () => {
      restarting = false; // superseded, or failed as at the first start: stay on one thread
      if (gen === generation) wanted = 1;
    },
  );
}

/**
 * Polls `ctl[index]` while it holds `value`, for at most `ms` milliseconds; true when it changed. A thread
 * calls it before `Atomics.wait`, which would put it to sleep (a wake-up takes 0.1–0.3 ms on a VM).
 *
 * @example
 * ```ts
 * import { spinUntilChanged } from "./threads.ts";
 * import assert from "node:assert/strict";
 * const ctl = new Int32Array(new SharedArrayBuffer(8));
 * assert.equal(spinUntilChanged(ctl, 0, 0, 1), false); // nobody changed it within 1 ms
 * assert.equal(spinUntilChanged(ctl, 1, 5, 1), true); // it is not 5
 * ```
 */
export function spinUntilChanged(ctl: Int32Array, index: number, value: number, ms: number): boolean {
  if (ms <= 0) return Atomics.load(ctl, index) !== value;
  const until = performance.now() + ms;
  for (;;) {
    for (let i = 0; i < 512; i++) if (Atomics.load(ctl, index) !== value) return true;
    if (performance.now() > until) return false;
  }
}

/**
 * How many Workers are running now: `threadCount() − 1` after {@link useThreads}, 0 while they are stopped
 * (by `useThreads(1)`, or while idle until the next route starts them again).
 *
 * @example
 * ```ts
 * import { useThreads, workersRunning } from "./threads.ts";
 * import assert from "node:assert/strict";
 * await useThreads(2, { idleMs: Infinity });
 * assert.equal(workersRunning(), 1);
 * await useThreads(1);
 * assert.equal(workersRunning(), 0);
 * ```
 */
export function workersRunning(): number {
  return pool ? pool.workers.length : 0;
}

/**
 * The number of threads routing uses (1 unless {@link useThreads} asked for more; Workers stopped while idle
 * count, as the next route starts them again).
 *
 * @example
 * ```ts
 * import { threadCount } from "@moekit/moekit/kernels";
 * import assert from "node:assert/strict";
 * assert.ok(threadCount() >= 1);
 * ```
 */
export function threadCount(): number {
  return wanted;
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
  /**
   * Multiply tiles natively: `"blas"` with the library's `cblas_sgemm` (1 thread per caller; `w` is then
   * Wᵀ [d,E]), `"gate"` with moekit's own native gate kernel (`w` is then its packed weight).
   */
  native?: "blas" | "gate";
  /** Select with the kernel's fused softmax top-k epilogue (see {@link fusedTopK}), straight into the outputs. */
  fused?: { k: number; norm: boolean };
  /** Scratch for the fused epilogue: the tile's selected experts (tile·k ints), then max(k, 16) floats. */
  tmp: number;
  /**
   * Tile boundaries when tiles are not all `tile` rows (tile i is rows `bounds[i] .. bounds[i+1]`), from
   * {@link guidedTiles}; only for jobs whose results do not depend on the tiling.
   */
  bounds?: number[];
}

/**
 * Tile boundaries that shrink towards the end (guided scheduling): each tile takes a 2n-th of the rows
 * left, at most `max` and at least `min` rows (multiples of 16 but the last), so n threads finish within
 * about a small tile of each other instead of a whole one. Returns `[0, …, T]`.
 *
 * @example
 * ```ts
 * import { guidedTiles } from "./threads.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(guidedTiles(4096, 2, 1024, 64).slice(0, 4), [0, 1024, 1792, 2368]);
 * assert.deepEqual(guidedTiles(100, 2, 1024, 64), [0, 64, 100]);
 * ```
 */
export function guidedTiles(T: number, n: number, max: number, min: number): number[] {
  const bounds = [0];
  for (let t = 0; t < T;) {
    const size = Math.max(min, Math.min(max, Math.floor((T - t) / (2 * n) / 16) * 16));
    t = Math.min(T, t + size);
    bounds.push(t);
  }
  return bounds;
}

/** The part of a selector a thread calls (structurally routing's `Selector`). */
export interface TileSelector {
  select(
    logits: Mat,
    tokenOffset: number,
    out: { indices: Int32Array; weights: Float32Array; scores: Float32Array },
    ctx: Record<string, unknown>,
  ): unknown;
}

/**
 * Runs the tiles of a job, each taken from the shared counter until none is left: on a Worker, or on the
 * calling thread for native and fused jobs. Selections land in the job's shared output arrays.
 */
export function runTileJob(
  job: ThreadJob,
  memory: WebAssembly.Memory,
  ctl: Int32Array,
  kernel: GateKernel,
  selector: TileSelector | undefined,
): void {
  const heap = new Float32Array(memory.buffer), { E, d, k, tile, rows: T } = job;
  const out = {
    indices: new Int32Array(memory.buffer, job.indices, T * k),
    weights: new Float32Array(memory.buffer, job.weights, T * k),
    scores: new Float32Array(memory.buffer, job.scores, T * k),
  };
  const epilogue = job.selector.epilogue, random = job.selector.random;
  const callRng = new Rng(job.seed), bounds = job.bounds;
  const tiles = bounds ? bounds.length - 1 : Math.ceil(T / tile);
  for (let t = Atomics.add(ctl, job.counter, 1); t < tiles; t = Atomics.add(ctl, job.counter, 1)) {
    const t0 = bounds ? bounds[t] : t * tile, n = bounds ? bounds[t + 1] - t0 : Math.min(tile, T - t0);
    const xt = job.x + t0 * d * 4;
    const logits: Mat = { rows: n, cols: E, data: heap.subarray(job.scratch / 4, job.scratch / 4 + n * E) };
    const xTile = () => ({ rows: n, cols: d, data: heap.subarray(xt / 4, xt / 4 + n * d) });
    if (job.native === "gate") {
      const packed = heap.subarray(job.w / 4, job.w / 4 + gatePackedFloats(E, d));
      gateLogits(xTile().data, n, d, packed, E, logits.data, E);
    } else if (job.native === "blas") {
      const wt = heap.subarray(job.w / 4, job.w / 4 + E * d); // Wᵀ [d,E]
      nativeSgemm(false, false, n, E, d, 1, xTile().data, d, wt, E, 0, logits.data, E);
    } else kernel.gemm_nt(xt, job.w, job.scratch, n, d, E);
    if (job.fused && job.native === "gate" && k <= GATE_MAX_K) {
      const o0 = t0 * k, o1 = (t0 + n) * k;
      const bad = gateSoftmaxTopK(
        logits.data,
        n,
        E,
        k,
        job.fused.norm,
        out.indices.subarray(o0, o1),
        out.weights.subarray(o0, o1),
        out.scores.subarray(o0, o1),
      );
      if (bad >= 0) {
        checkLogitsFinite(logits, xTile(), t0);
        throw new MoekitError(`non-finite logit in token ${t0 + bad}`);
      }
      continue;
    }
    if (job.fused) {
      // a non-finite logit makes its row's softmax sum NaN or ∞: check the tile only then (and throw)
      kernel.softmax_sums(job.scratch, n, E, job.epi);
      for (let i = job.epi / 4; i < job.epi / 4 + n; i++) {
        if (!(heap[i] > 0 && heap[i] < Infinity)) {
          checkLogitsFinite(logits, xTile(), t0);
          throw new MoekitError(`softmax sum of token ${t0 + i - job.epi / 4} is ${heap[i]}`);
        }
      }
      kernel.topk_rows(job.scratch, n, E, k, job.tmp, job.tmp + n * k * 4);
      const idx = new Int32Array(memory.buffer, job.tmp, n * k),
        sums = heap.subarray(job.epi / 4, job.epi / 4 + n);
      topKWeights(logits.data, E, k, job.fused.norm, sums, idx, out, t0);
      continue;
    }
    if (job.bias) {
      for (let i = 0; i < n; i++) for (let e = 0; e < E; e++) logits.data[i * E + e] += job.bias[e];
    }
    checkLogitsFinite(logits, xTile(), t0);
    const ctx: Record<string, unknown> = {
      training: job.training,
      rng: random ? callRng.derive("tile", t0) : callRng,
      tokens: T,
    };
    if (epilogue === "softmaxSums") {
      kernel.softmax_sums(job.scratch, n, E, job.epi);
      ctx.softmaxSums = heap.subarray(job.epi / 4, job.epi / 4 + n);
    } else if (epilogue === "sigmoid") {
      kernel.sigmoid_map(job.scratch, n * E, job.epi);
      ctx.sigmoid = heap.subarray(job.epi / 4, job.epi / 4 + n * E);
    }
    if (!selector) throw new MoekitError("a thread job without a selector must be fused");
    selector.select(logits, t0, out, ctx);
  }
}

/**
 * Runs a tiled route over worker threads when possible: returns false (and does nothing) when there are
 * no Workers or too few tiles, or for a native BLAS job whose selector has no fused epilogue. Otherwise every
 * thread, this one included, takes the next tile from a shared atomic counter until all are done (so a
 * slower thread simply takes fewer tiles); selections land in shared staging arrays and are copied to
 * `job.out`. With `native: "blas"`, each thread multiplies its tiles with a 1-thread `cblas_sgemm` (the
 * caller sets the library to 1 thread; softmax top-k only) and `weightPtr` points at Wᵀ `[d,E]`; with
 * `native: "gate"`, with moekit's native gate kernel and its packed weight. `tile` overrides the job's tile size.
 */
export function parallelSelect(
  weightPtr: number,
  E: number,
  job: ParallelJob,
  opts: { native?: "blas" | "gate"; tile?: number; guided?: { max: number; min: number } } = {},
): boolean {
  if (!pool) {
    restartPool();
    return false;
  }
  const { x, k } = job, fused = fusedTopK(job);
  const T = x.rows, n = pool.workers.length + 1;
  if (T < 2 * n * (opts.tile ?? job.tileTokens) || (opts.native === "blas" && !fused)) return false;
  // guided tiles only where the results do not depend on the tiling (the fused epilogue selects row by row)
  const bounds = opts.guided && fused ? guidedTiles(T, n, opts.guided.max, opts.guided.min) : undefined;
  const tile = bounds ? opts.guided!.max : opts.tile ?? job.tileTokens;
  const rt = requireRuntime(), p = pool, d = x.cols;
  const tiles = bounds ? bounds.length - 1 : Math.ceil(T / tile), counterIndex = (n - 1) * CTL;
  // shared staging: the three output arrays, then per thread a logits tile and an epilogue buffer (softmax
  // sums or sigmoids, then the fused epilogue's scratch)
  const epiFloats = Math.ceil(Math.max(tile * E + 4, tile + 4 + tile * k + Math.max(k, 16)) / 4) * 4,
    own = tile * E + epiFloats;
  const need = (3 * T * k + n * own) * 4;
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
  const spec = (i: number): ThreadJob => {
    const mine = s0 + (3 * T * k + i * own) * 4;
    return {
      x: xPtr,
      w: weightPtr,
      d,
      E,
      k,
      rows: T,
      tile,
      counter: counterIndex,
      scratch: mine,
      epi: mine + tile * E * 4,
      tmp: mine + (tile * E + tile + 4) * 4,
      indices: s0,
      weights: s0 + T * k * 4,
      scores: s0 + 2 * T * k * 4,
      selector: job.selector,
      training: job.training,
      seed: job.seed,
      ...(bias ? { bias } : {}),
      ...(opts.native ? { native: opts.native } : {}),
      ...(fused ? { fused } : {}),
      ...(bounds ? { bounds } : {}),
    };
  };
  Atomics.store(p.ctl, counterIndex, 0);
  try {
    for (let i = 0; i < n - 1; i++) {
      const bytes = new TextEncoder().encode(JSON.stringify(spec(i)));
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
      if (fused) runTileJob(spec(n - 1), rt.memory, p.ctl, rt.kernel, undefined);
      else {
        for (
          let t = Atomics.add(p.ctl, counterIndex, 1);
          t < tiles;
          t = Atomics.add(p.ctl, counterIndex, 1)
        ) {
          job.runTiles(t * tile, Math.min(T, (t + 1) * tile), staging);
        }
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
        if (spinUntilChanged(p.ctl, i * CTL + 1, done, spinMs)) continue;
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
    touchPool();
  }
  return true;
}

/**
 * Whether a tiled route can run the kernel's fused softmax top-k epilogue (`WasmGemm.softmaxTopK`)
 * instead of the JS selector: a selector that declares `fusedTopK` (routing's `softmaxTopK`), no bias, no draws.
 * Returns its k and whether the weights are renormalised, or undefined.
 */
export function fusedTopK(job: ParallelJob): { k: number; norm: boolean } | undefined {
  const f = job.selector.fusedTopK;
  if (!f || job.bias || job.selector.random || f.k !== job.k) return undefined;
  return { k: f.k, norm: f.normalize };
}

/**
 * Routes all tokens of `job` on the calling thread with the fused softmax top-k epilogue when it applies
 * (see {@link fusedTopK}): blocks of `block` tokens are multiplied by `gemm` into the kernel scratch and
 * selected there at once. Returns false (doing nothing) when the epilogue does not apply.
 */
export function serialFused(
  g: WasmGemm,
  job: ParallelJob,
  gemm: (x: Mat, out: Mat) => void,
  block: number,
): boolean {
  const f = fusedTopK(job);
  if (!f) return false;
  const T = job.x.rows;
  for (let t0 = 0; t0 < T; t0 += block) {
    const t1 = Math.min(T, t0 + block), xs = matrix.rowSlice(job.x, t0, t1), L = g.scratch(t1 - t0);
    gemm(xs, L);
    if (!g.softmaxTopK(L, f.k, f.norm, job.out, t0)) {
      checkLogitsFinite(L, xs, t0); // throws on a non-finite logit
      job.runTiles(t0, t1, job.out);
    }
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
