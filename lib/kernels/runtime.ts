/**
 * The WebAssembly kernel runtime: one shared `WebAssembly.Memory` for all kernels (so Workers can share
 * it), a first-fit allocator over it, token buffers that live in it (zero-copy routing), and detection
 * of SIMD / relaxed-SIMD support at load time. Loads from embedded bytes: no permission needed.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, OptionError } from "../core/errors.ts";
import { GATE_WASM_PLAIN, GATE_WASM_RELAXED } from "./gate_wasm.ts";
import { backendReport } from "../routing/backend.ts";

/** The exports of the gate kernel. */
export interface GateKernel {
  gemm_nt(x: number, w: number, out: number, T: number, d: number, E: number): void;
  softmax_sums(logits: number, rows: number, E: number, out: number): void;
  sigmoid_map(logits: number, n: number, out: number): void;
  topk_rows(logits: number, rows: number, E: number, k: number, idx: number, tmp: number): void;
}

function decode(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const PAGE = 65536, RESERVED = 1024, ALIGN = 64; // RESERVED and PAGE are multiples of ALIGN

interface Runtime {
  memory: WebAssembly.Memory;
  kernel: GateKernel;
  module: WebAssembly.Module;
  simd: "relaxed" | "plain";
  buffers: WeakSet<ArrayBufferLike>;
  free: { start: number; end: number }[]; // sorted, disjoint free ranges
  used: Map<number, number>; // start → size
}

let runtime: Runtime | null | undefined;

function load(): Runtime | null {
  if (runtime !== undefined) return runtime;
  runtime = null;
  try {
    if (typeof WebAssembly !== "object" || typeof SharedArrayBuffer !== "function") return null;
    const relaxed = decode(GATE_WASM_RELAXED), plain = decode(GATE_WASM_PLAIN);
    const useRelaxed = WebAssembly.validate(relaxed);
    if (!useRelaxed && !WebAssembly.validate(plain)) return null;
    const memory = new WebAssembly.Memory({ initial: 64, maximum: 65536, shared: true });
    const module = new WebAssembly.Module(useRelaxed ? relaxed : plain);
    const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as GateKernel;
    runtime = {
      memory,
      kernel,
      module,
      simd: useRelaxed ? "relaxed" : "plain",
      buffers: new WeakSet([memory.buffer]),
      free: [{ start: RESERVED, end: memory.buffer.byteLength }],
      used: new Map(),
    };
  } catch {
    runtime = null;
  }
  return runtime;
}

/** What the WebAssembly runtime found (internal; {@link kernelInfo} adds the backend choice). */
export function wasmInfo(): { wasm: boolean; simd: "relaxed" | "plain" | "none"; memoryBytes: number } {
  const rt = load();
  return { wasm: rt !== null, simd: rt?.simd ?? "none", memoryBytes: rt?.memory.buffer.byteLength ?? 0 };
}

/**
 * What the kernels found on this machine: WebAssembly SIMD support, the backend `backend: "auto"` picks,
 * and for every registered backend whether it is available and why (e.g. why native was not picked).
 *
 * @example
 * ```ts
 * import { kernelInfo } from "@moekit/moekit/kernels";
 * import assert from "node:assert/strict";
 * const info = kernelInfo();
 * assert.ok(["relaxed", "plain", "none"].includes(info.simd));
 * assert.ok(info.backends.some((b) => b.name === info.backend && b.available));
 * ```
 */
export function kernelInfo(): {
  wasm: boolean;
  simd: "relaxed" | "plain" | "none";
  memoryBytes: number;
  backend: string;
  backends: { name: string; priority: number; available: boolean; reason: string; detail?: unknown }[];
} {
  const report = backendReport();
  return { ...wasmInfo(), backend: report.auto, backends: report.backends };
}

/** The loaded runtime, or a clear error when WebAssembly SIMD is not available. */
export function requireRuntime(): Runtime {
  const rt = load();
  if (!rt) {
    throw new MoekitError(
      `the "wasm" backend needs WebAssembly SIMD and SharedArrayBuffer; use backend: "js"`,
    );
  }
  return rt;
}

/** The current view of the whole kernel memory (re-read after growth). */
export function heapF32(rt: Runtime): Float32Array {
  const buf = rt.memory.buffer;
  rt.buffers.add(buf);
  return new Float32Array(buf);
}

/**
 * Allocates `bytes` in kernel memory, growing it when needed; returns the offset, 64-byte aligned (a cache
 * line: token buffers and the native kernel's packed weight never put a vector load across two lines,
 * which cost that kernel 15–40 %).
 */
export function allocBytes(rt: Runtime, bytes: number): number {
  const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
  for (let i = 0; i < rt.free.length; i++) {
    const f = rt.free[i];
    if (f.end - f.start >= size) {
      const start = f.start;
      f.start += size;
      if (f.start === f.end) rt.free.splice(i, 1);
      rt.used.set(start, size);
      return start;
    }
  }
  const oldEnd = rt.memory.buffer.byteLength, pages = Math.ceil(size / PAGE) + Math.ceil(oldEnd / PAGE / 4);
  try {
    rt.memory.grow(pages);
  } catch {
    throw new MoekitError(
      `kernel memory cannot grow by ${
        pages * PAGE
      } bytes (now ${oldEnd}); free token buffers or use smaller batches`,
    );
  }
  rt.buffers.add(rt.memory.buffer);
  const last = rt.free[rt.free.length - 1];
  if (last && last.end === oldEnd) last.end = rt.memory.buffer.byteLength;
  else rt.free.push({ start: oldEnd, end: rt.memory.buffer.byteLength });
  return allocBytes(rt, bytes);
}

/** Returns an allocation to the free list (coalescing neighbours). */
export function freeBytes(rt: Runtime, start: number): void {
  const size = rt.used.get(start);
  if (size === undefined) {
    throw new MoekitError(`kernel memory: offset ${start} is not an allocation (freed twice?)`);
  }
  rt.used.delete(start);
  const end = start + size;
  let i = 0;
  while (i < rt.free.length && rt.free[i].start < start) i++;
  rt.free.splice(i, 0, { start, end });
  for (let j = Math.max(0, i - 1); j + 1 < rt.free.length;) {
    if (rt.free[j].end === rt.free[j + 1].start) {
      rt.free[j].end = rt.free[j + 1].end;
      rt.free.splice(j + 1, 1);
    } else if (j >= i) break;
    else j++;
  }
}

/** Whether a matrix's data lives in kernel memory (then kernels read it in place). */
export function inKernelMemory(rt: Runtime, m: Mat): boolean {
  return rt.buffers.has(m.data.buffer);
}

/** A rows × cols matrix allocated in kernel memory (zero-filled). */
export function allocMat(rt: Runtime, rows: number, cols: number): Mat {
  const ptr = allocBytes(rt, rows * cols * 4);
  const data = heapF32(rt).subarray(ptr / 4, ptr / 4 + rows * cols);
  data.fill(0);
  return { rows, cols, data };
}

/**
 * Allocates a token matrix `[rows, cols]` inside the kernel memory. Routers on the `"wasm"` backend read
 * it in place, with no copy per call (worth up to a third of the time on memory-bound shapes). Fill it
 * like any matrix; release it with {@link freeTokens}.
 *
 * @example
 * ```ts
 * import { allocTokens, freeTokens, matrix, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = allocTokens(64, 32);
 * x.data.set(matrix.randn(64, 32, { seed: 1 }).data);
 * const r = topKRouter({ weight: matrix.randn(8, 32, { seed: 2 }), k: 2 }).route(x);
 * freeTokens(x);
 * assert.equal(r.tokens, 64);
 * ```
 */
export function allocTokens(rows: number, cols: number): Mat {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 0) {
    throw new OptionError("allocTokens", `${rows}×${cols}`, "rows and cols must be integers ≥ 0");
  }
  const rt = load();
  return rt ? allocMat(rt, rows, cols) : matrix.zeros(rows, cols);
}

/**
 * Releases a matrix from {@link allocTokens} (a no-op for ordinary matrices). Do not use it afterwards.
 *
 * @example
 * ```ts
 * import { allocTokens, freeTokens } from "@moekit/moekit/kernels";
 * import assert from "node:assert/strict";
 * const x = allocTokens(4, 4);
 * assert.equal(x.data.length, 16);
 * freeTokens(x);
 * ```
 */
export function freeTokens(m: Mat): void {
  const rt = load();
  if (rt && inKernelMemory(rt, m)) freeBytes(rt, m.data.byteOffset);
}
